/**
 * `init` and `gen object`: plan the changes to a project, print the plan, then carry it out. Nothing that exists
 * is ever overwritten; `--dry-run` stops after the plan.
 */
import { Console, Effect, FileSystem, Path } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { fileURLToPath } from "node:url"
import { CliFailure, failWith } from "./failure.ts"
import * as Templates from "./templates.ts"

/** A package manager `init` knows how to drive. */
export type PackageManager = "npm" | "pnpm" | "yarn"

/** One step of a plan. */
export type Step =
  | { readonly _tag: "Write"; readonly path: string; readonly content: string }
  | { readonly _tag: "Skip"; readonly path: string }
  | {
    readonly _tag: "Install"
    readonly manager: PackageManager
    readonly dev: boolean
    readonly specs: ReadonlyArray<string>
  }
  | { readonly _tag: "AddToManifest"; readonly dev: boolean; readonly specs: ReadonlyArray<string> }

/** The argument list of a package manager's "add these packages" command. */
export const installArgs = (manager: PackageManager, dev: boolean, specs: ReadonlyArray<string>) =>
  manager === "npm"
    ? ["install", ...(dev ? ["--save-dev"] : []), ...specs]
    : ["add", ...(dev ? ["-D"] : []), ...specs]

/** A step as a line of the printed plan (paths relative to the project). */
export const describeStep = (step: Step, relative: (path: string) => string): string => {
  switch (step._tag) {
    case "Write":
      return `create  ${relative(step.path)}`
    case "Skip":
      return `keep    ${relative(step.path)} (exists; not overwritten)`
    case "Install":
      return `run     ${[step.manager, ...installArgs(step.manager, step.dev, step.specs)].join(" ")}`
    case "AddToManifest":
      return `add     ${step.specs.join(" ")} to package.json ${step.dev ? "devDependencies" : "dependencies"}`
  }
}

const fileSteps = (files: ReadonlyArray<readonly [path: string, content: string]>) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const steps: Array<Step> = []
    for (const [path, content] of files) {
      steps.push((yield* fs.exists(path)) ? { _tag: "Skip", path } : { _tag: "Write", path, content })
    }
    return steps
  })

/** Carries a plan out, printing each step as it goes. */
const apply = (steps: ReadonlyArray<Step>, cwd: string, relative: (path: string) => string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
    for (const step of steps) {
      switch (step._tag) {
        case "Write": {
          yield* fs.makeDirectory(path.dirname(step.path), { recursive: true })
          // `wx`: if the file appeared since the plan was made, fail rather than overwrite it.
          yield* fs.writeFileString(step.path, step.content, { flag: "wx" })
          break
        }
        case "Install": {
          const code = yield* spawner.exitCode(
            ChildProcess.make(step.manager, installArgs(step.manager, step.dev, step.specs), {
              cwd,
              stdout: "inherit",
              stderr: "inherit"
            })
          )
          if (code !== 0) {
            return yield* new CliFailure({
              message: `${step.manager} exited with status ${code}; the files above are written, install the` +
                ` packages by hand: ${step.manager} ${installArgs(step.manager, step.dev, step.specs).join(" ")}`
            })
          }
          break
        }
        case "AddToManifest": {
          const file = path.join(cwd, "package.json")
          const manifest = JSON.parse(yield* fs.readFileString(file))
          const key = step.dev ? "devDependencies" : "dependencies"
          const entries = { ...manifest[key] }
          for (const spec of step.specs) {
            const at = spec.lastIndexOf("@")
            entries[spec.slice(0, at)] = spec.slice(at + 1)
          }
          manifest[key] = Object.fromEntries(Object.entries(entries).toSorted(([a], [b]) => a.localeCompare(b)))
          yield* fs.writeFileString(file, `${JSON.stringify(manifest, null, 2)}\n`)
          break
        }
        case "Skip":
          break
      }
      if (step._tag !== "Skip") yield* Console.log(`done: ${describeStep(step, relative).replace(/ +/, " ")}`)
    }
  })

/** The package manager of a project: from `packageManager`, else its lockfile, else npm. */
export const detectManager = (cwd: string, manifest: { readonly packageManager?: unknown }) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const declared = typeof manifest.packageManager === "string" ? manifest.packageManager.split("@")[0] : undefined
    if (declared === "pnpm" || declared === "yarn" || declared === "npm") return declared as PackageManager
    if (yield* fs.exists(path.join(cwd, "pnpm-lock.yaml"))) return "pnpm" as const
    if (yield* fs.exists(path.join(cwd, "yarn.lock"))) return "yarn" as const
    return "npm" as const
  })

/** The extension generated imports use: `.ts` when the project's tsconfig allows importing them, else `.js`. */
const importExtension = (cwd: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const tsconfig = path.join(cwd, "tsconfig.json")
    if (!(yield* fs.exists(tsconfig))) return ".js" as const
    const text = yield* fs.readFileString(tsconfig)
    return /"allowImportingTsExtensions"\s*:\s*true/.test(text) ? ".ts" as const : ".js" as const
  })

/** This CLI's own dependency ranges (its package.json): the versions `init` installs. */
const ownRanges = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const file = path.join(path.dirname(path.dirname(path.dirname(fileURLToPath(import.meta.url)))), "package.json")
  const manifest = JSON.parse(yield* fs.readFileString(file))
  return { ...manifest.dependencies, ...Templates.devDependencyRanges } as Record<string, string>
})

const dirFlag = Flag.String("dir").pipe(
  Flag.withDescription("where the object files go, relative to the project"),
  Flag.withDefault("src/objects")
)
const dryRunFlag = Flag.Boolean("dry-run").pipe(
  Flag.withDescription("print the plan and change nothing"),
  Flag.withDefault(false)
)

/** Prints a plan (and carries it out unless a dry run). */
const runPlan = (title: string, steps: ReadonlyArray<Step>, cwd: string, dryRun: boolean) =>
  Effect.gen(function*() {
    const path = yield* Path.Path
    const relative = (p: string) => path.relative(cwd, p) || "."
    yield* Console.log(`${title}${dryRun ? " (dry run: nothing is changed)" : ""}:`)
    for (const step of steps) yield* Console.log(`  ${describeStep(step, relative)}`)
    if (dryRun) return
    yield* Console.log("")
    yield* apply(steps, cwd, relative)
  })

/** `durable-object init`. */
export const init = Command.make("init", {
  storage: Flag.Literals("storage", ["sqlite", "postgres"]).pipe(
    Flag.withDescription("the database the storage layer uses"),
    Flag.withDefault("sqlite" as const)
  ),
  dir: dirFlag,
  dryRun: dryRunFlag,
  skipInstall: Flag.Boolean("skip-install").pipe(
    Flag.withDescription("add the dependencies to package.json without running the package manager"),
    Flag.withDefault(false)
  )
}, (flags) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const cwd = process.cwd()
    const manifestFile = path.join(cwd, "package.json")
    if (!(yield* fs.exists(manifestFile))) {
      return yield* new CliFailure({
        message: `no package.json in ${cwd}: run init in an existing project (npm init -y makes one)`
      })
    }
    const text = yield* fs.readFileString(manifestFile)
    const manifest = yield* Effect.try({
      try: () => JSON.parse(text) as Record<string, any>,
      catch: () => new CliFailure({ message: `${manifestFile} is not valid JSON: nothing was changed` })
    })
    const manager = yield* detectManager(cwd, manifest)
    const ranges = yield* ownRanges
    const present = new Set([
      ...Object.keys(manifest.dependencies ?? {}),
      ...Object.keys(manifest.devDependencies ?? {})
    ])
    const wanted = (names: ReadonlyArray<string>) =>
      names.filter((n) => !present.has(n)).map((n) => `${n}@${ranges[n]}`)
    const driver = flags.storage === "sqlite" ? "@durable-object/sql-sqlite-node" : "@effect/sql-pg"
    const dependencies = wanted(["@durable-object/core", driver, "effect"])
    const devDependencies = wanted(["@effect/vitest", "vitest"])
    const install = (dev: boolean, specs: ReadonlyArray<string>): ReadonlyArray<Step> =>
      specs.length === 0 ? [] : [
        flags.skipInstall ? { _tag: "AddToManifest", dev, specs } : { _tag: "Install", manager, dev, specs }
      ]
    const ext = yield* importExtension(cwd)
    const dir = path.resolve(cwd, flags.dir)
    const files = yield* fileSteps([
      [path.join(dir, "storage.ts"), Templates.storage(flags.storage)],
      [path.join(dir, "Counter.ts"), Templates.object("Counter")],
      [path.join(dir, "Counter.test.ts"), Templates.objectTest("Counter", ext)]
    ])
    const steps = [...install(false, dependencies), ...install(true, devDependencies), ...files]
    yield* runPlan(
      `durable-object init: ${flags.storage === "sqlite" ? "SQLite" : "PostgreSQL"}, ${manager}`,
      steps,
      cwd,
      flags.dryRun
    )
    if (manifest.type !== "module") {
      yield* Console.log(`\nnote: package.json has no "type": "module"; the generated files are ES modules`)
    }
    if (!flags.dryRun) {
      yield* Console.log(
        `\nNext: provide ${path.relative(cwd, path.join(dir, "storage.ts"))}'s StorageLive to Counter.layer,` +
          ` run the test (npx vitest run), and add objects with \`npx durable-object gen object <Name>\`.`
      )
    }
  }).pipe(failWith("init failed"))).pipe(
    Command.withDescription(
      "Add durable-object to this project: dependencies, a storage layer (SQLite or PostgreSQL), an example object" +
        " and its test; never overwrites a file"
    )
  )

/** `durable-object gen object <Name>`. */
const object = Command.make("object", {
  name: Argument.String("Name").pipe(Argument.withDescription("the object type, in PascalCase (e.g. ShoppingCart)")),
  dir: dirFlag,
  dryRun: dryRunFlag
}, (flags) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    if (!/^[A-Z][A-Za-z0-9]{0,63}$/.test(flags.name)) {
      return yield* new CliFailure({
        message: `${JSON.stringify(flags.name)} is not a PascalCase name (a capital letter, then letters and digits)`
      })
    }
    const cwd = process.cwd()
    const dir = path.resolve(cwd, flags.dir)
    const files = [
      [path.join(dir, `${flags.name}.ts`), Templates.object(flags.name)],
      [path.join(dir, `${flags.name}.test.ts`), Templates.objectTest(flags.name, yield* importExtension(cwd))]
    ] as const
    const existing: Array<string> = []
    for (const [file] of files) if (yield* fs.exists(file)) existing.push(path.relative(cwd, file))
    if (existing.length > 0) {
      return yield* new CliFailure({
        message: `${existing.join(" and ")} already exist${existing.length === 1 ? "s" : ""}: nothing was written`
      })
    }
    yield* runPlan(`durable-object gen object ${flags.name}`, yield* fileSteps(files), cwd, flags.dryRun)
  }).pipe(failWith("gen object failed"))).pipe(
    Command.withDescription("Write a new object definition and its test")
  )

/** `durable-object gen …`. */
export const gen = Command.make("gen").pipe(
  Command.withDescription("Generate code"),
  Command.withSubcommands([object])
)
