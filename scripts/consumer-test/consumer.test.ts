/**
 * The packages as a user gets them: `npm pack` every library package of the workspace (its `prepack` builds
 * dist/), install the tarballs with the README's `npm install` line into a fresh project outside the repository
 * (everything else from the registry, at the versions of package-lock.json, through npm's cache when it has them),
 * and there:
 *
 * 1. run the README examples, compiled by `tsc`, on plain `node` with type stripping off, against SQLite files;
 * 2. type-check a consumer's file with `tsc --strict` under `moduleResolution: "nodenext"` and `"bundler"`, and a
 *    file of mistakes that must each be the expected compile error;
 * 3. check that `@durable-object/core/internal/*` is refused, by Node and by the type checker.
 *
 * Nothing here reads our packages from the workspace's node_modules: the project lives under the system's temp
 * directory, and its child processes get neither npm's variables nor the `@durable-object/source` condition.
 * `KEEP_CONSUMER=1` keeps the project for a look afterwards.
 */
import { execFileSync, spawnSync, type SpawnSyncReturns } from "node:child_process"
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  writeFileSync
} from "node:fs"
import { tmpdir } from "node:os"
import { delimiter, dirname, join, relative } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { sourceCondition } from "../../vitest.shared.ts"

const repoRoot = realpathSync(join(import.meta.dirname, "..", ".."))
const fixture = join(import.meta.dirname, "fixture")
const readJson = (path: string): any => JSON.parse(readFileSync(path, "utf8"))

/** The workspace's library packages: the ones not marked private. */
const libraries = (readJson(join(repoRoot, "package.json")).workspaces as Array<string>)
  .flatMap((pattern) => {
    const dir = join(repoRoot, pattern.replace(/\/\*$/, ""))
    return pattern.endsWith("/*")
      ? readdirSync(dir).map((d) => join(dir, d))
      : [join(repoRoot, pattern)]
  })
  .filter((dir) => existsSync(join(dir, "package.json")))
  .map((dir) => ({ dir, manifest: readJson(join(dir, "package.json")) }))
  .filter(({ manifest }) => manifest.private !== true)

/** The packages the README's Install section tells a user to install (its first `npm install` line). */
const readmeInstall = (() => {
  const readme = readFileSync(join(repoRoot, "README.md"), "utf8")
  const section = readme.split(/^## /m).find((s) => s.startsWith("Install\n"))
  const line = section?.split("\n").find((l) => l.startsWith("npm install "))
  if (line === undefined) throw new Error("README.md has no `npm install` line in an Install section")
  return { line, names: line.slice("npm install ".length).trim().split(/\s+/) }
})()

/** The package with the `durable-object` executable. */
const cliPackage = "@durable-object/cli"

/** The version package-lock.json installs for a registry package: what the workspace is tested with. */
const lockedVersion = (name: string): string => {
  const version = readJson(join(repoRoot, "package-lock.json")).packages[`node_modules/${name}`]?.version
  if (typeof version !== "string") throw new Error(`package-lock.json has no version of ${name}`)
  return version
}

/** The environment of a process in the consumer project: no npm variables, no source condition, no repo PATH. */
const consumerEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^npm_/i.test(key) && key !== "NODE_OPTIONS" && key !== "INIT_CWD") env[key] = value
  }
  env.PATH = (process.env.PATH ?? "").split(delimiter).filter((p) => !p.startsWith(repoRoot)).join(delimiter)
  return env
}

/** The first ```ts block of a Markdown text. */
const firstTsBlock = (markdown: string): string | undefined => /^```ts\n([\s\S]*?)\n```$/m.exec(markdown)?.[1]

const timings: Array<string> = []
const timed = <A>(label: string, f: () => A): A => {
  const start = performance.now()
  const result = f()
  timings.push(`${label} ${((performance.now() - start) / 1000).toFixed(1)} s`)
  return result
}

/** Runs a command in the consumer project; returns its result (output as text) without throwing. */
const run = (cwd: string, command: string, args: ReadonlyArray<string>, timeout = 120_000) =>
  spawnSync(command, args, { cwd, env: consumerEnv(), encoding: "utf8", timeout }) as SpawnSyncReturns<string>

const output = (result: SpawnSyncReturns<string>) =>
  `exit ${result.status} ${result.signal ?? ""}\n${result.stdout}${result.stderr}${result.error ?? ""}`

interface Packed {
  readonly name: string
  readonly filename: string
  readonly size: number
  readonly unpackedSize: number
  readonly files: ReadonlyArray<{ readonly path: string; readonly size: number }>
}

let project = ""
let packed: ReadonlyArray<Packed> = []
const tsc = () => join(project, "node_modules", "typescript", "bin", "tsc")

/** Plain Node, no type stripping: only JavaScript can load. */
const node = (...args: ReadonlyArray<string>) =>
  run(project, process.execPath, ["--no-experimental-strip-types", "--disable-warning=ExperimentalWarning", ...args])

beforeAll(() => {
  project = mkdtempSync(join(realpathSync(tmpdir()), "durable-object-consumer-"))
  expect(relative(repoRoot, project).startsWith(".."), `${project} is outside ${repoRoot}`).toBe(true)
  const tarballs = join(project, "tarballs")
  mkdirSync(tarballs)

  // `npm pack` as a publisher runs it (prepack builds dist/), with the repository's npm environment.
  const json = timed("pack", () =>
    execFileSync(
      "npm",
      [
        "pack",
        ...libraries.map(({ manifest }) => `--workspace=${manifest.name}`),
        "--pack-destination",
        tarballs,
        "--json"
      ],
      { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 120_000 }
    ))
  packed = JSON.parse(json.slice(json.indexOf("[")))
  console.log(
    `consumer test: packed ${
      packed.map((p) => `${p.filename} (${p.files.length} files, ${p.size} B, ${p.unpackedSize} B unpacked)`).join(", ")
    }`
  )

  // The README's install line, ours from the tarballs and the rest at the versions the workspace is tested with.
  const ours = new Map(packed.map((p) => [p.name, `file:./tarballs/${p.filename}`]))
  const dependencies = Object.fromEntries(
    readmeInstall.names.map((name) => [name, ours.get(name) ?? lockedVersion(name)])
  )
  // The command line is a development tool: installed beside the library, as its README says.
  const cli = ours.get(cliPackage)
  if (cli === undefined) throw new Error(`${cliPackage} was not packed`)
  writeFileSync(
    join(project, "package.json"),
    JSON.stringify(
      {
        name: "durable-object-consumer",
        private: true,
        type: "module",
        dependencies,
        devDependencies: {
          typescript: lockedVersion("typescript"),
          "@types/node": lockedVersion("@types/node"),
          [cliPackage]: cli
        }
      },
      null,
      2
    )
  )
  const install = timed(
    "install",
    () => run(project, "npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--loglevel=error"], 300_000)
  )
  expect(install.status, output(install)).toBe(0)

  mkdirSync(join(project, "src"))
  cpSync(join(repoRoot, "docs", "snippets", "readme.ts"), join(project, "src", "readme.ts"))
  for (const file of ["consumer.ts", "negative.ts", "sqlite.ts"]) {
    cpSync(join(fixture, file), join(project, "src", file))
  }
  // skipLibCheck as most projects have it; tsconfig.dts.json checks our declarations without it.
  const compilerOptions = { strict: true, target: "ES2022", lib: ["ES2024"], types: ["node"], skipLibCheck: true }
  const tsconfig = (name: string, options: object, files: ReadonlyArray<string>) =>
    writeFileSync(
      join(project, name),
      JSON.stringify({ compilerOptions: { ...compilerOptions, ...options }, files: files.map((f) => `src/${f}`) })
    )
  const programs = ["readme.ts", "sqlite.ts", "consumer.ts"]
  // nodenext also emits the JavaScript that Node runs below.
  tsconfig(
    "tsconfig.json",
    { module: "nodenext", moduleResolution: "nodenext", outDir: "dist", rootDir: "src" },
    programs
  )
  tsconfig("tsconfig.bundler.json", { module: "preserve", moduleResolution: "bundler", noEmit: true }, programs)
  tsconfig(
    "tsconfig.dts.json",
    { module: "nodenext", moduleResolution: "nodenext", noEmit: true, skipLibCheck: false },
    ["consumer.ts"]
  )
  tsconfig("tsconfig.negative.json", { module: "nodenext", moduleResolution: "nodenext", noEmit: true }, [
    "negative.ts"
  ])
  tsconfig(
    "tsconfig.negative.bundler.json",
    { module: "preserve", moduleResolution: "bundler", noEmit: true },
    ["negative.ts"]
  )
}, 600_000)

afterAll(() => {
  console.log(`consumer test: ${timings.join(", ")}${project === "" ? "" : ` (project ${project})`}`)
  if (project !== "" && process.env.KEEP_CONSUMER !== "1") rmSync(project, { recursive: true, force: true })
})

describe("inside the repository", () => {
  it("every tool resolves our packages from source through the same condition, placed first in each export", () => {
    const tsconfig = readFileSync(join(repoRoot, "tsconfig.json"), "utf8")
    expect(tsconfig).toContain(`"customConditions": ["${sourceCondition}"]`)
    expect(readFileSync(join(repoRoot, ".npmrc"), "utf8")).toContain(`node-options=--conditions=${sourceCondition}`)
    for (const { manifest } of libraries) {
      for (const [subpath, target] of Object.entries(manifest.exports as Record<string, unknown>)) {
        if (target === null || typeof target === "string") continue
        expect(Object.keys(target as object), `${manifest.name} ${subpath}`).toEqual([
          sourceCondition,
          "types",
          "import",
          "default"
        ])
      }
      expect(manifest.exports["./internal/*"], manifest.name).toBeNull()
    }
  })
})

describe("the packed packages", () => {
  it("hold dist/ (JavaScript, .d.ts, source maps), src/, README.md, LICENSE and package.json, and no tests", () => {
    expect(packed.map((p) => p.name).toSorted()).toEqual(libraries.map(({ manifest }) => manifest.name).toSorted())
    for (const pkg of packed) {
      const paths = new Set(pkg.files.map((f) => f.path))
      const sources = [...paths].filter((p) => p.startsWith("src/") && p.endsWith(".ts"))
      expect(sources.length, pkg.name).toBeGreaterThan(0)
      for (const source of sources) {
        const base = `dist/${source.slice("src/".length, -".ts".length)}`
        for (const ext of [".js", ".js.map", ".d.ts", ".d.ts.map"]) {
          expect(paths.has(base + ext), `${pkg.name}: ${base}${ext} for ${source}`).toBe(true)
        }
      }
      for (const file of ["package.json", "README.md", "LICENSE"]) {
        expect(paths.has(file), `${pkg.name}: ${file}`).toBe(true)
      }
      const unexpected = [...paths].filter((p) =>
        !["package.json", "README.md", "LICENSE", "CHANGELOG.md"].includes(p) && !/^(dist|src)\//.test(p)
      )
      expect(unexpected, `${pkg.name}: files outside dist/ and src/`).toEqual([])
      expect([...paths].filter((p) => /(^|\/)test\/|\.test\.|tsbuildinfo/.test(p)), pkg.name).toEqual([])
    }
  })

  it("are installed as copies inside the consumer project, not links into the workspace", () => {
    for (const pkg of packed) {
      const dir = join(project, "node_modules", ...pkg.name.split("/"))
      expect(lstatSync(dir).isSymbolicLink(), dir).toBe(false)
      expect(realpathSync(dir).startsWith(project), dir).toBe(true)
      const resolved = node(
        "--input-type=module",
        "-e",
        `console.log(import.meta.resolve(${JSON.stringify(pkg.name)}))`
      )
      expect(resolved.status, output(resolved)).toBe(0)
      expect(resolved.stdout.trim()).toBe(`file://${join(dir, "dist", "index.js")}`)
    }
  })

  it("have source maps and declaration maps that point at sources shipped in the package", () => {
    for (const pkg of packed) {
      const root = join(project, "node_modules", ...pkg.name.split("/"))
      const maps = pkg.files.filter((f) => f.path.endsWith(".map")).map((f) => f.path)
      expect(maps.length, pkg.name).toBeGreaterThan(0)
      for (const map of maps) {
        const sources = readJson(join(root, map)).sources as Array<string>
        expect(sources.length, map).toBeGreaterThan(0)
        for (const source of sources) {
          const target = join(root, dirname(map), source)
          expect(target.startsWith(join(root, "src")) && existsSync(target), `${pkg.name}/${map}: ${source}`).toBe(true)
        }
      }
    }
  })

  it("carry a README whose install line is the repository README's and whose example is the one run here", () => {
    const examples: Record<string, string> = {
      "@durable-object/core": readFileSync(join(repoRoot, "docs", "snippets", "readme.ts"), "utf8"),
      "@durable-object/sql-sqlite-node": readFileSync(join(fixture, "sqlite.ts"), "utf8")
    }
    for (const pkg of packed) {
      const readme = readFileSync(join(project, "node_modules", ...pkg.name.split("/"), "README.md"), "utf8")
      expect(readme, pkg.name).toContain("npm install ")
      if (pkg.name === cliPackage) {
        // The command line's README shows commands, not a TypeScript example.
        expect(readme).toContain(`npm install --save-dev ${cliPackage}`)
        expect(readme).toContain("npx durable-object --help")
        continue
      }
      expect(examples[pkg.name], `an example for ${pkg.name}`).toBeDefined()
      expect(firstTsBlock(readme), pkg.name).toBe(examples[pkg.name]!.trimEnd())
    }
    const core = readFileSync(join(project, "node_modules", "@durable-object", "core", "README.md"), "utf8")
    expect(core).toContain(readmeInstall.line)
  })
})

describe("a consumer project", () => {
  it("type-checks under nodenext with tsc --strict and compiles the examples to JavaScript", () => {
    const result = timed("tsc nodenext", () => run(project, process.execPath, [tsc(), "-p", "tsconfig.json"]))
    expect(result.status, output(result)).toBe(0)
    expect(existsSync(join(project, "dist", "readme.js"))).toBe(true)
  })

  it("type-checks under bundler resolution with tsc --strict", () => {
    const result = timed("tsc bundler", () => run(project, process.execPath, [tsc(), "-p", "tsconfig.bundler.json"]))
    expect(result.status, output(result)).toBe(0)
  })

  it("finds no error in our packed declaration files under --strict without skipLibCheck", () => {
    const result = timed(
      "tsc declarations",
      () => run(project, process.execPath, [tsc(), "-p", "tsconfig.dts.json", "--pretty", "false"])
    )
    const errors = result.stdout.split("\n").filter((l) => /error TS\d+/.test(l))
    const ours = errors.filter((l) => l.startsWith("node_modules/@durable-object/") || l.startsWith("src/"))
    expect(ours, result.stdout).toEqual([])
    // Any other error is in a dependency's own declarations (effect 4.1.5's need the DOM lib's `Transferable`).
    const theirs = errors.filter((l) => !ours.includes(l))
    if (theirs.length > 0) console.log(`consumer test: not ours, under skipLibCheck: false:\n${theirs.join("\n")}`)
    expect(errors.every((l) => l.startsWith("node_modules/")), result.stdout).toBe(true)
  })

  for (const config of ["tsconfig.negative.json", "tsconfig.negative.bundler.json"]) {
    it(`gets exactly the expected compile errors for the mistakes in negative.ts (${config})`, () => {
      const source = readFileSync(join(fixture, "negative.ts"), "utf8").split("\n")
      const expected = source.flatMap((line, i) => {
        const mark = /\/\/ error (TS\d+)$/.exec(line)
        return mark === null ? [] : [`${i + 1} ${mark[1]}`]
      })
      expect(expected.length).toBeGreaterThan(5)
      const result = run(project, process.execPath, [tsc(), "-p", config, "--pretty", "false"])
      expect(result.status, output(result)).not.toBe(0)
      const actual = [...result.stdout.matchAll(/^src\/negative\.ts\((\d+),\d+\): error (TS\d+):/gm)].map((m) =>
        `${m[1]} ${m[2]}`
      )
      const elsewhere = result.stdout.split("\n").filter((l) => /error TS/.test(l) && !l.startsWith("src/negative.ts("))
      expect(elsewhere, "errors outside negative.ts").toEqual([])
      expect([...new Set(actual)].toSorted(), result.stdout).toEqual(expected.toSorted())
    })
  }

  it("runs the README example on plain node: the count is on disk and goes on from there", () => {
    const first = timed("readme run", () => node("dist/readme.js"))
    expect(first.status, output(first)).toBe(0)
    expect(first.stdout, output(first)).toMatch(/ INFO .*: count: 5$/m)
    expect(existsSync(join(project, "objects.sqlite"))).toBe(true)
    const second = node("dist/readme.js")
    expect(second.status, output(second)).toBe(0)
    expect(second.stdout, output(second)).toMatch(/ INFO .*: count: 10$/m)
  })

  it("runs the SQLite client's README example on plain node", () => {
    const first = node("dist/sqlite.js")
    expect(first.status, output(first)).toBe(0)
    expect(first.stdout, output(first)).toMatch(/notes: 1, last: hello/)
    const second = node("dist/sqlite.js")
    expect(second.stdout, output(second)).toMatch(/notes: 2, last: hello/)
  })

  it("can import the public deep modules, and Node refuses the internal ones", () => {
    const script = `
      const outcome = async (specifier) => import(specifier).then(() => "loaded", (e) => e.code ?? String(e))
      console.log(JSON.stringify({
        deep: await outcome("@durable-object/core/DurableObject"),
        sqliteDeep: await outcome("@durable-object/sql-sqlite-node/SqliteClient"),
        runtime: await outcome("@durable-object/core/internal/runtime"),
        runtimeJs: await outcome("@durable-object/core/internal/runtime.js"),
        sqliteInternal: await outcome("@durable-object/sql-sqlite-node/internal/connection"),
        source: await outcome("@durable-object/core/src/index.ts")
      }))`
    const result = node("--input-type=module", "-e", script)
    expect(result.status, output(result)).toBe(0)
    expect(JSON.parse(result.stdout)).toEqual({
      deep: "loaded",
      sqliteDeep: "loaded",
      runtime: "ERR_PACKAGE_PATH_NOT_EXPORTED",
      runtimeJs: "ERR_PACKAGE_PATH_NOT_EXPORTED",
      sqliteInternal: "ERR_PACKAGE_PATH_NOT_EXPORTED",
      // "./*" maps to dist/*.js: a path into src/ names no built module.
      source: "ERR_MODULE_NOT_FOUND"
    })
  })
})

/** `npx durable-object …` in the consumer project, on the Node the tests run on (the CLI needs node:sqlite). */
const npx = (...args: ReadonlyArray<string>) => {
  const env = consumerEnv()
  env.PATH = [dirname(process.execPath), env.PATH].join(delimiter)
  return spawnSync("npx", ["--no-install", "durable-object", ...args], {
    cwd: project,
    env,
    encoding: "utf8",
    timeout: 120_000
  }) as SpawnSyncReturns<string>
}

describe("the packed command line", () => {
  it("installs as the durable-object executable, and npx durable-object --help lists its commands", () => {
    const bin = join(project, "node_modules", ".bin", "durable-object")
    expect(existsSync(bin), bin).toBe(true)
    expect(readFileSync(bin, "utf8").startsWith("#!/usr/bin/env node\n")).toBe(true)
    const help = timed("cli --help", () => npx("--help"))
    expect(help.status, output(help)).toBe(0)
    for (const command of ["init", "migrate", "migrations", "gen", "objects", "alarms", "inspect"]) {
      expect(help.stdout, command).toMatch(new RegExp(`^  ${command}\\s`, "m"))
    }
  })

  it("migrates a SQLite file and prints the DDL", () => {
    const migrate = npx("migrate", "--database", join(project, "cli.sqlite"))
    expect(migrate.status, output(migrate)).toBe(0)
    expect(migrate.stdout).toMatch(/applied migrations 1, 2, 3/)
    const ddl = npx("migrations", "sql", "--dialect", "pg")
    expect(ddl.status, output(ddl)).toBe(0)
    expect(ddl.stdout).toContain(`CREATE TABLE IF NOT EXISTS "durable_objects"`)
  })

  it("init writes a storage layer and an object that compile against the installed packages", () => {
    const init = npx("init", "--skip-install", "--dir", "src/objects")
    expect(init.status, output(init)).toBe(0)
    expect(init.stdout).toMatch(/create +src\/objects\/storage\.ts/)
    writeFileSync(
      join(project, "tsconfig.init.json"),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          target: "ES2022",
          lib: ["ES2024"],
          types: ["node"],
          skipLibCheck: true,
          module: "nodenext",
          moduleResolution: "nodenext",
          noEmit: true
        },
        files: ["src/objects/storage.ts", "src/objects/Counter.ts"]
      })
    )
    const result = run(project, process.execPath, [tsc(), "-p", "tsconfig.init.json"])
    expect(result.status, output(result)).toBe(0)
  })
})
