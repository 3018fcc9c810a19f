/**
 * `init`, `gen object` and `migrations sql`, run as the real executable in throwaway projects: what they plan,
 * what they write, that they never overwrite, and that what they write compiles and its test passes.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DatabaseSync } from "node:sqlite"
import { cli, show, testOutput } from "./run.ts"

const repoRoot = join(import.meta.dirname, "..", "..", "..")
const made: Array<string> = []
afterAll(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true })
})

/** A new project directory with a package.json (and more files); under `within` when the test compiles it. */
const project = (files: Record<string, string> = {}, within = tmpdir()) => {
  mkdirSync(within, { recursive: true })
  const dir = mkdtempSync(join(within, "project-"))
  made.push(dir)
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "app", type: "module" }, null, 2))
  for (const [name, content] of Object.entries(files)) writeFileSync(join(dir, name), content)
  return dir
}

/** Every file under `dir` with its content, to show that a command changed nothing. */
const snapshot = (dir: string): Record<string, string> =>
  Object.fromEntries(
    readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => {
      const path = join(e.parentPath, e.name)
      return [path.slice(dir.length), readFileSync(path, "utf8")]
    })
  )

describe("durable-object --help", () => {
  it("lists every command, and exits 0", () => {
    const r = cli(["--help"])
    expect(r.status, show(r)).toBe(0)
    for (const command of ["init", "migrate", "migrations", "gen", "objects", "alarms", "inspect"]) {
      expect(r.stdout, command).toMatch(new RegExp(`^  ${command}\\s`, "m"))
    }
  })

  it("refuses an unknown command with exit status 1", () => {
    const r = cli(["frobnicate"])
    expect(r.status, show(r)).toBe(1)
    expect(r.stderr).toContain("frobnicate")
  })
})

describe("init", () => {
  it("--dry-run prints the plan for an npm project and changes nothing", () => {
    const dir = project({ "package-lock.json": "{}" })
    const before = snapshot(dir)
    const r = cli(["init", "--dry-run"], { cwd: dir })
    expect(r.status, show(r)).toBe(0)
    expect(r.stdout).toContain("dry run")
    expect(r.stdout).toMatch(/run +npm install @durable-object\/core@\S+ @durable-object\/sql-sqlite-node@\S+ effect@/)
    expect(r.stdout).toMatch(/run +npm install --save-dev @effect\/vitest@\S+ vitest@/)
    for (const file of ["storage.ts", "Counter.ts", "Counter.test.ts"]) {
      expect(r.stdout).toMatch(new RegExp(`create +src/objects/${file.replace(".", "\\.")}`))
    }
    expect(snapshot(dir)).toEqual(before)
  })

  it("detects pnpm from its lockfile, and adds only the packages the project lacks", () => {
    const dir = project({ "pnpm-lock.yaml": "" })
    writeFileSync(
      join(dir, "package.json"),
      JSON.stringify({ name: "app", type: "module", dependencies: { effect: "^4.1.5" } })
    )
    const r = cli(["init", "--dry-run", "--storage", "postgres"], { cwd: dir })
    expect(r.status, show(r)).toBe(0)
    expect(r.stdout).toMatch(/run +pnpm add @durable-object\/core@\S+ @effect\/sql-pg@\S+\n/)
    expect(r.stdout).toMatch(/run +pnpm add -D @effect\/vitest@\S+ vitest@\S+\n/)
    expect(r.stdout).not.toMatch(/ effect@/)
  })

  it("writes the dependencies and the files, and a second run keeps every existing file as it is", () => {
    const dir = project()
    const first = cli(["init", "--skip-install", "--storage", "postgres"], { cwd: dir })
    expect(first.status, show(first)).toBe(0)
    const manifest = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"))
    expect(Object.keys(manifest.dependencies)).toEqual(["@durable-object/core", "@effect/sql-pg", "effect"])
    expect(Object.keys(manifest.devDependencies)).toEqual(["@effect/vitest", "vitest"])
    expect(readFileSync(join(dir, "src/objects/storage.ts"), "utf8")).toContain("PgClient.layerConfig")

    writeFileSync(join(dir, "src/objects/Counter.ts"), "// mine now\n")
    const second = cli(["init", "--skip-install"], { cwd: dir })
    expect(second.status, show(second)).toBe(0)
    expect(second.stdout).toMatch(/keep +src\/objects\/Counter\.ts \(exists; not overwritten\)/)
    expect(readFileSync(join(dir, "src/objects/Counter.ts"), "utf8")).toBe("// mine now\n")
    expect(readFileSync(join(dir, "src/objects/storage.ts"), "utf8")).toContain("PgClient.layerConfig")
  })

  it("refuses a directory without package.json, and writes nothing", () => {
    const dir = mkdtempSync(join(tmpdir(), "empty-"))
    made.push(dir)
    const r = cli(["init"], { cwd: dir })
    expect(r.status, show(r)).toBe(1)
    expect(r.stderr).toContain("no package.json")
    expect(readdirSync(dir)).toEqual([])
  })
})

describe("gen object", () => {
  it("writes a definition and its test, and refuses to overwrite either", () => {
    const dir = project()
    const r = cli(["gen", "object", "ShoppingCart", "--dir", "lib"], { cwd: dir })
    expect(r.status, show(r)).toBe(0)
    expect(readFileSync(join(dir, "lib/ShoppingCart.ts"), "utf8")).toContain("export const ShoppingCart =")
    expect(readFileSync(join(dir, "lib/ShoppingCart.test.ts"), "utf8")).toContain(`from "./ShoppingCart.js"`)

    rmSync(join(dir, "lib/ShoppingCart.ts"))
    const again = cli(["gen", "object", "ShoppingCart", "--dir", "lib"], { cwd: dir })
    expect(again.status, show(again)).toBe(1)
    expect(again.stderr).toContain("lib/ShoppingCart.test.ts already exists: nothing was written")
    expect(existsSync(join(dir, "lib/ShoppingCart.ts"))).toBe(false)
  })

  it("refuses a name that is not PascalCase", () => {
    const dir = project()
    const r = cli(["gen", "object", "shopping-cart"], { cwd: dir })
    expect(r.status, show(r)).toBe(1)
    expect(r.stderr).toContain("not a PascalCase name")
    expect(existsSync(join(dir, "src"))).toBe(false)
  })

  it("imports with .ts when the project's tsconfig allows it", () => {
    const dir = project({ "tsconfig.json": `{ "compilerOptions": { "allowImportingTsExtensions": true } }` })
    const r = cli(["gen", "object", "Room", "--dry-run"], { cwd: dir })
    expect(r.status, show(r)).toBe(0)
    expect(existsSync(join(dir, "src"))).toBe(false)
    expect(cli(["gen", "object", "Room"], { cwd: dir }).status).toBe(0)
    expect(readFileSync(join(dir, "src/objects/Room.test.ts"), "utf8")).toContain(`from "./Room.ts"`)
  })
})

describe("what init and gen write", () => {
  it("type-checks under strict settings, and the generated tests pass", () => {
    const dir = project({}, testOutput)
    expect(cli(["init", "--skip-install"], { cwd: dir }).status).toBe(0)
    expect(cli(["gen", "object", "Inventory"], { cwd: dir }).status).toBe(0)
    // The repository's compiler settings (strict, exactOptionalPropertyTypes, …) and its packages from source.
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({ extends: join(repoRoot, "tsconfig.json"), include: ["src/**/*.ts"], compilerOptions: {} })
    )
    const tsc = spawnSync(process.execPath, [join(repoRoot, "node_modules/typescript/bin/tsc"), "-p", dir], {
      encoding: "utf8",
      timeout: 120_000
    })
    expect(tsc.status, `${tsc.stdout}${tsc.stderr}`).toBe(0)

    writeFileSync(
      join(dir, "vitest.config.ts"),
      `import { defineConfig } from "vitest/config"\nimport { fromSource } from ${
        JSON.stringify(join(repoRoot, "vitest.shared.ts"))
      }\nexport default defineConfig({ ...fromSource, test: { include: ["src/**/*.test.ts"] } })\n`
    )
    const vitest = spawnSync(
      process.execPath,
      [join(repoRoot, "node_modules/vitest/vitest.mjs"), "run", "--root", dir, "--reporter", "verbose"],
      { cwd: dir, encoding: "utf8", timeout: 120_000, env: { ...process.env, NO_COLOR: "1" } }
    )
    expect(vitest.status, `${vitest.stdout}${vitest.stderr}`).toBe(0)
    expect(vitest.stdout).toMatch(/✓ src\/objects\/Counter\.test\.ts > Counter > adds up increments/)
    expect(vitest.stdout).toMatch(/✓ src\/objects\/Inventory\.test\.ts > Inventory > adds up increments/)
  })
})

describe("migrations sql", () => {
  it("prints the SQLite DDL, which builds tables that migrate then finds complete", () => {
    const r = cli(["migrations", "sql", "--dialect", "sqlite"])
    expect(r.status, show(r)).toBe(0)
    expect(r.stdout).toContain(`CREATE TABLE IF NOT EXISTS "durable_objects"`)
    const dir = mkdtempSync(join(tmpdir(), "ddl-"))
    made.push(dir)
    const file = join(dir, "app.sqlite")
    const db = new DatabaseSync(file)
    db.exec(r.stdout)
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all()
    db.close()
    expect(tables.map((t) => t.name)).toEqual(["durable_object_alarms", "durable_object_replies", "durable_objects"])

    const down = cli(["migrations", "sql", "--dialect", "sqlite", "--down"])
    expect(down.status, show(down)).toBe(0)
    const again = new DatabaseSync(file)
    again.exec(down.stdout)
    expect(again.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()).toEqual([])
    again.close()
  })

  it("qualifies PostgreSQL tables with --schema and --table-prefix", () => {
    const r = cli(["migrations", "sql", "--dialect", "pg", "--schema", "ops", "--table-prefix", "app_"])
    expect(r.status, show(r)).toBe(0)
    expect(r.stdout).toContain(`CREATE TABLE IF NOT EXISTS "ops"."app_durable_objects"`)
    expect(r.stdout).toContain("state jsonb NOT NULL")
  })

  it("refuses a dialect it does not know, and a schema for SQLite", () => {
    const bad = cli(["migrations", "sql", "--dialect", "mysql"])
    expect(bad.status, show(bad)).toBe(1)
    expect(bad.stderr).toContain(`Invalid value for flag --dialect: "mysql"`)
    const schema = cli(["migrations", "sql", "--dialect", "sqlite", "--schema", "ops"])
    expect(schema.status, show(schema)).toBe(1)
    expect(schema.stderr).toContain("--schema is for PostgreSQL only")
  })
})
