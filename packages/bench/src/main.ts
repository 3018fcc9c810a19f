/**
 * The benchmark runner: `npm run bench [-- options]`.
 *
 * Runs each scenario in its own Node process (`--expose-gc`, so heap measurements are exact and one
 * scenario's heap or JIT state never leaks into the next), starts a throwaway PostgreSQL (fsync on) when a
 * scenario needs one and none was given, prints the table and writes it as JSON. Every scenario runs on
 * `FairScheduler` (as a server should) unless `--default-scheduler` is given.
 *
 *   --only a,b           scenarios by name or number (default: all); see --help
 *   --scale X            multiply object counts and durations by X (default 1)
 *   --smoke              tiny sizes, to check every scenario still works (never judges performance)
 *   --json PATH          where to write the results (default bench-results/latest.json)
 *   --markdown           also print the table as markdown
 *   --write-doc          also replace the results section of docs/performance.md with this run
 *   --postgres-url URL   use this server (default: $DURABLE_OBJECT_BENCH_POSTGRES_URL, else start one)
 *   --in-process         run the scenarios in this process (faster start, less isolation)
 *   --default-scheduler  run on Effect's default scheduler instead of FairScheduler
 */
import { FairScheduler } from "@durable-object/core"
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Cause, Console, DateTime, Effect, FileSystem, Path, Schema } from "effect"
import { ChildProcess, ChildProcessSpawner } from "effect/process"
import { SqlClient } from "effect/sql"
import { availableParallelism, cpus, loadavg, totalmem } from "node:os"
import { fileURLToPath } from "node:url"
import { pgLayer } from "./backends.ts"
import * as BenchConfig from "./config.ts"
import { markdownTable, notes, type Row, textTable } from "./stats.ts"

interface Scenario {
  readonly name: string
  readonly number: number
  readonly title: string
  readonly postgres: boolean
  readonly load: () => Promise<
    { readonly run: (config: BenchConfig.Config) => Effect.Effect<ReadonlyArray<Row>, unknown> }
  >
}

/** The scenarios, in run order. Each module is loaded only by the process that runs it. */
export const scenarios: ReadonlyArray<Scenario> = [
  { name: "hot", number: 1, title: "hot calls (memory)", postgres: false, load: () => import("./hot.ts") },
  {
    name: "sqlite",
    number: 2,
    title: "durable calls (SQLite)",
    postgres: false,
    load: () => import("./durableSqlite.ts")
  },
  {
    name: "postgres",
    number: 3,
    title: "durable calls (PostgreSQL)",
    postgres: true,
    load: () => import("./durablePostgres.ts")
  },
  { name: "cluster", number: 4, title: "vs effect/cluster entity", postgres: true, load: () => import("./cluster.ts") },
  {
    name: "activation",
    number: 5,
    title: "cold activation (SQLite)",
    postgres: false,
    load: () => import("./activation.ts")
  },
  { name: "memory", number: 5, title: "heap per object, churn", postgres: false, load: () => import("./memory.ts") },
  { name: "alarms", number: 6, title: "alarm drain and lateness", postgres: true, load: () => import("./alarms.ts") },
  { name: "latency", number: 7, title: "latency at low load", postgres: true, load: () => import("./latency.ts") },
  { name: "live", number: 8, title: "live-state subscribers", postgres: false, load: () => import("./live.ts") },
  {
    name: "clusterMode",
    number: 9,
    title: "cluster mode: 3 runners, re-home",
    postgres: true,
    load: () => import("./clusterMode.ts")
  }
]

/** The command line could not be understood; the message says why, followed by the usage. */
class UsageError extends Schema.TaggedError<UsageError>()("UsageError", { message: Schema.String }) {}

/** A step of the run failed (a scenario's process, PostgreSQL's start, the results file). */
class BenchError extends Schema.TaggedError<BenchError>()("BenchError", { message: Schema.String }) {}

interface Args {
  readonly only: ReadonlyArray<string> | undefined
  readonly scale: number
  readonly smoke: boolean
  readonly json: string
  readonly markdown: boolean
  readonly writeDoc: boolean
  readonly postgresUrl: string | undefined
  readonly inProcess: boolean
  readonly defaultScheduler: boolean
  readonly child: string | undefined
  readonly out: string | undefined
  readonly help: boolean
}

const usage = `usage: npm run bench [-- options]

  --only a,b           run only these scenarios (names or numbers):
${scenarios.map((s) => `                         ${s.number} ${s.name.padEnd(11)} ${s.title}`).join("\n")}
  --scale X            multiply object counts and durations by X (default 1)
  --smoke              tiny sizes: checks every scenario works, judges nothing
  --json PATH          write the results there (default bench-results/latest.json)
  --markdown           also print the table as markdown
  --write-doc          also put this run's table into docs/performance.md (between its
                       bench:results markers)
  --postgres-url URL   PostgreSQL server to use (default $DURABLE_OBJECT_BENCH_POSTGRES_URL, else
                       scripts/postgres.sh starts a throwaway one with fsync on)
  --in-process         run every scenario in this process instead of one process each
  --default-scheduler  run on Effect's default scheduler instead of FairScheduler (to compare the
                       event loop's delays)`

const usageError = (message: string) => Effect.fail(new UsageError({ message: `${message}\n\n${usage}` }))

const parseArgs = (argv: ReadonlyArray<string>): Effect.Effect<Args, UsageError> =>
  Effect.suspend(() => {
    const args: { -readonly [K in keyof Args]: Args[K] } = {
      only: undefined,
      scale: 1,
      smoke: false,
      json: "bench-results/latest.json",
      markdown: false,
      writeDoc: false,
      postgresUrl: process.env.DURABLE_OBJECT_BENCH_POSTGRES_URL || undefined,
      inProcess: false,
      defaultScheduler: false,
      child: undefined,
      out: undefined,
      help: false
    }
    for (let i = 0; i < argv.length; i++) {
      const arg = argv[i]!
      const [flag, inline] = arg.startsWith("--") && arg.includes("=") ? arg.split("=", 2) as [string, string] : [arg]
      const takesValue = ["--only", "--scale", "--json", "--postgres-url", "--child", "--out"].includes(flag)
      const value = takesValue ? inline ?? argv[++i] : undefined
      if (takesValue && value === undefined) return usageError(`${flag} needs a value`)
      switch (flag) {
        case "--only":
          args.only = value!.split(",").map((s) => s.trim()).filter((s) => s !== "")
          break
        case "--scale": {
          const scale = Number(value)
          if (!(scale > 0)) return usageError("--scale must be a positive number")
          args.scale = scale
          break
        }
        case "--smoke":
          args.smoke = true
          break
        case "--json":
          args.json = value!
          break
        case "--markdown":
          args.markdown = true
          break
        case "--write-doc":
          args.writeDoc = true
          break
        case "--postgres-url":
          args.postgresUrl = value!
          break
        case "--in-process":
          args.inProcess = true
          break
        case "--default-scheduler":
          args.defaultScheduler = true
          break
        case "--child":
          args.child = value!
          break
        case "--out":
          args.out = value!
          break
        case "--help":
        case "-h":
          args.help = true
          break
        default:
          return usageError(`unknown option ${arg}`)
      }
    }
    if (args.only !== undefined) {
      const unknown = args.only.find((key) => !scenarios.some((s) => s.name === key || String(s.number) === key))
      if (unknown !== undefined) return usageError(`unknown scenario ${JSON.stringify(unknown)}`)
    }
    return Effect.succeed(args)
  })

const select = (only: ReadonlyArray<string> | undefined): ReadonlyArray<Scenario> =>
  only === undefined
    ? scenarios
    : scenarios.filter((s) => only.includes(s.name) || only.includes(String(s.number)))

/** Runs one scenario in this process, on the fair scheduler unless told otherwise. */
const runScenario = (scenario: Scenario, args: Args): Effect.Effect<ReadonlyArray<Row>, BenchError> =>
  Effect.tryPromise({
    try: () => scenario.load(),
    catch: (cause) => new BenchError({ message: `could not load the ${scenario.name} scenario: ${String(cause)}` })
  }).pipe(
    Effect.flatMap((module) => {
      const run = module.run(BenchConfig.make({ smoke: args.smoke, scale: args.scale }))
      return args.defaultScheduler ? run : run.pipe(Effect.provide(FairScheduler.layer()))
    }),
    Effect.mapError((error) =>
      error instanceof BenchError ? error : new BenchError({ message: `${scenario.name}: ${String(error)}` })
    ),
    Effect.catchDefect((defect) => Effect.fail(new BenchError({ message: `${scenario.name}: ${String(defect)}` })))
  )

const repoRoot = fileURLToPath(new URL("../../..", import.meta.url))
const entry = fileURLToPath(import.meta.url)

/** The output of a command, or a BenchError naming it. */
const output = (command: string, args: ReadonlyArray<string>, stderr: "inherit" | "ignore" = "inherit") =>
  Effect.gen(function*() {
    const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
    return (yield* spawner.string(ChildProcess.make(command, args, { cwd: repoRoot, stderr }))).trim()
  }).pipe(Effect.mapError((error) => new BenchError({ message: `${command} ${args.join(" ")}: ${error.message}` })))

/** A command run to its end with the terminal as its output; fails unless it exits with 0. */
const runCommand = (command: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
    const code = yield* spawner.exitCode(
      // The parent's environment too (NODE_OPTIONS carries the source condition: scenarios run from source).
      ChildProcess.make(command, args, { cwd: repoRoot, env, extendEnv: true, stdout: "inherit", stderr: "inherit" })
    )
    if (code !== 0) return yield* new BenchError({ message: `exited with ${code}` })
  }).pipe(Effect.catchTag("PlatformError", (error) => Effect.fail(new BenchError({ message: error.message }))))

/** A throwaway PostgreSQL from scripts/postgres.sh (fsync on) for the life of the scope; returns its URL. */
const throwawayPostgres = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "durable-object-bench-pg-" }).pipe(
    Effect.mapError((error) => new BenchError({ message: error.message }))
  )
  yield* Console.log("bench: starting a throwaway PostgreSQL (scripts/postgres.sh, fsync on)")
  const script = "scripts/postgres.sh"
  return yield* Effect.acquireRelease(
    output("bash", [script, "start", dir, "on"]),
    () => Effect.ignore(runCommand("bash", [script, "stop", dir]))
  )
})

const postgresVersion = (url: string): Effect.Effect<string> =>
  Effect.scoped(
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ server_version: string }>`SHOW server_version`
      return rows[0]?.server_version ?? "unknown"
    }).pipe(Effect.provide(pgLayer(url, 1)))
  ).pipe(Effect.orElseSucceed(() => "unreachable"))

/** The commit measured, and whether the library's sources differ from it. */
const revision = Effect.gen(function*() {
  const dirty =
    (yield* output("git", ["status", "--porcelain", "--", "packages/core", "packages/sql-sqlite-node"], "ignore")) !==
      ""
  const head = yield* output("git", ["rev-parse", "--short", "HEAD"], "ignore")
  return `${head}${dirty ? " + uncommitted library changes" : ""}`
}).pipe(Effect.orElseSucceed(() => "unknown (not a git checkout)"))

const environment = (postgresUrl: string | undefined) =>
  Effect.gen(function*() {
    const { sqliteVersion } = yield* Effect.promise(() => import("./sqlite.ts"))
    return {
      revision: yield* revision,
      node: process.version,
      cpus: availableParallelism(),
      cpuModel: cpus()[0]?.model ?? "unknown",
      memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
      platform: `${process.platform} ${process.arch}`,
      sqlite: sqliteVersion(),
      postgres: postgresUrl === undefined ? "not used" : yield* postgresVersion(postgresUrl)
    }
  })

type Environment = Effect.Success<ReturnType<typeof environment>>

/** How busy the machine was while a scenario ran: a noisy neighbour shows up here. */
interface ScenarioRun {
  readonly scenario: string
  readonly seconds: number
  /** Share of all CPUs' time not idle (this benchmark and PostgreSQL included). */
  readonly cpuBusy: number
  readonly loadAverage: number
}

const cpuTimes = () =>
  cpus().reduce(
    (acc, cpu) => {
      const t = cpu.times
      return { idle: acc.idle + t.idle, total: acc.total + t.idle + t.user + t.nice + t.sys + t.irq }
    },
    { idle: 0, total: 0 }
  )

const busyShare = (before: ReturnType<typeof cpuTimes>, after: ReturnType<typeof cpuTimes>) => {
  const total = after.total - before.total
  return total <= 0 ? 0 : 1 - (after.idle - before.idle) / total
}

const docStart = "<!-- bench:results:start -->"
const docEnd = "<!-- bench:results:end -->"

/** The results section of docs/performance.md: when, on what, the table and the notes. */
const docSection = (
  env: Environment,
  args: Args,
  rows: ReadonlyArray<Row>,
  runs: ReadonlyArray<ScenarioRun>,
  totalSeconds: number
) =>
  Effect.map(DateTime.now, (now) => {
    const command = `npm run bench${args.scale === 1 ? "" : ` -- --scale ${args.scale}`}`
    return [
      `Run of ${DateTime.formatIso(now).slice(0, 10)} at commit ${env.revision} (\`${command}\`, ${
        Math.round(totalSeconds)
      } s in all, PostgreSQL ${
        args.postgresUrl === undefined ? "started by the runner with fsync on" : "given with --postgres-url"
      }, ${args.defaultScheduler ? "Effect's default scheduler" : "FairScheduler"}):`,
      `Node ${env.node}, ${env.cpus} CPUs (${env.cpuModel}), ${env.memoryGiB} GiB of memory, ${env.platform}, ` +
      `SQLite ${env.sqlite}, PostgreSQL ${env.postgres}. Machine CPU busy and 1-minute load average per ` +
      `scenario (this run alone keeps about one core busy; more means something else ran): ${
        runs.map((r) => `${r.scenario} ${Math.round(r.cpuBusy * 100)}% / ${r.loadAverage}`).join(", ")
      }.`,
      "",
      markdownTable(rows),
      "",
      notes(rows)
    ].join("\n")
  })

const writeDoc = (section: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const docPath = path.join(repoRoot, "docs/performance.md")
    const doc = yield* fs.readFileString(docPath)
    const start = doc.indexOf(docStart)
    const end = doc.indexOf(docEnd)
    if (start < 0 || end < start) {
      return yield* new BenchError({ message: `${docPath} has no ${docStart} … ${docEnd} section` })
    }
    yield* fs.writeFileString(docPath, `${doc.slice(0, start + docStart.length)}\n${section}\n${doc.slice(end)}`)
    yield* Console.log(`bench: results section of ${docPath} updated`)
  })

/** The child process side: run one scenario, write its rows to `--out`. */
const child = (args: Args) =>
  Effect.gen(function*() {
    const scenario = scenarios.find((s) => s.name === args.child)
    if (scenario === undefined || args.out === undefined) {
      return yield* new UsageError({ message: "--child needs a scenario name and --out" })
    }
    const rows = yield* runScenario(scenario, args)
    const fs = yield* FileSystem.FileSystem
    yield* fs.writeFileString(args.out, JSON.stringify(rows))
  })

/** Runs one scenario in a new Node process and reads back its rows. */
const inChild = (scenario: Scenario, args: Args, postgresUrl: string | undefined) =>
  Effect.scoped(Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const dir = yield* fs.makeTempDirectoryScoped({ prefix: "durable-object-bench-out-" })
    const out = path.join(dir, "rows.json")
    yield* runCommand(
      process.execPath,
      [
        "--expose-gc",
        entry,
        "--child",
        scenario.name,
        "--out",
        out,
        "--scale",
        String(args.scale),
        ...(args.smoke ? ["--smoke"] : []),
        ...(args.defaultScheduler ? ["--default-scheduler"] : [])
      ],
      postgresUrl === undefined ? {} : { DURABLE_OBJECT_BENCH_POSTGRES_URL: postgresUrl }
    )
    return JSON.parse(yield* fs.readFileString(out)) as ReadonlyArray<Row>
  }))

const errorMessage = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return error instanceof Error ? error.message : String(error)
}

/** The parent side: every selected scenario, the table, the JSON, and the doc if asked. */
const main = (args: Args) =>
  Effect.gen(function*() {
    const selected = select(args.only)
    const config = BenchConfig.make({ smoke: args.smoke, scale: args.scale })
    const needsPostgres = selected.some((s) => s.postgres)
    const postgresUrl = needsPostgres ? args.postgresUrl ?? (yield* throwawayPostgres) : args.postgresUrl
    if (postgresUrl !== undefined) process.env.DURABLE_OBJECT_BENCH_POSTGRES_URL = postgresUrl
    const started = performance.now()
    const rows: Array<Row> = []
    const failures: Array<{ readonly scenario: string; readonly error: string }> = []
    const runs: Array<ScenarioRun> = []
    const env = yield* environment(needsPostgres ? postgresUrl : undefined)
    yield* Console.log(
      `bench: commit ${env.revision}; Node ${env.node}, ${env.cpus} CPUs (${env.cpuModel}), ${env.memoryGiB} GiB, ` +
        `SQLite ${env.sqlite}, PostgreSQL ${env.postgres}; ${args.smoke ? "smoke sizes" : `scale ${args.scale}`}; ` +
        (args.defaultScheduler ? "Effect's default scheduler" : "FairScheduler")
    )
    for (const scenario of selected) {
      const t0 = performance.now()
      const cpu0 = cpuTimes()
      yield* Console.log(`bench: ${scenario.number} ${scenario.name}: ${scenario.title}…`)
      const result = yield* Effect.exit(
        args.inProcess ? runScenario(scenario, args) : inChild(scenario, args, postgresUrl)
      )
      if (result._tag === "Success") {
        rows.push(...result.value)
      } else {
        const error = errorMessage(result.cause)
        failures.push({ scenario: scenario.name, error })
        yield* Console.error(`bench: ${scenario.name} failed: ${error}`)
      }
      const run: ScenarioRun = {
        scenario: scenario.name,
        seconds: Math.round(performance.now() - t0) / 1000,
        cpuBusy: busyShare(cpu0, cpuTimes()),
        loadAverage: Math.round(loadavg()[0]! * 100) / 100
      }
      runs.push(run)
      yield* Console.log(
        `bench: ${scenario.name} took ${run.seconds.toFixed(1)} s; machine CPU ${
          Math.round(run.cpuBusy * 100)
        }% busy, load average ${run.loadAverage}`
      )
    }
    const totalSeconds = (performance.now() - started) / 1000
    yield* Console.log(`\n${textTable(rows)}\n`)
    const rowNotes = notes(rows)
    if (rowNotes !== "") yield* Console.log(`${rowNotes}\n`)
    const measured = rows.filter((r) => r.targets.length > 0)
    const missed = measured.filter((r) => !r.targets.every((t) => t.pass))
    yield* Console.log(
      `bench: ${measured.length - missed.length} of ${measured.length} measurements meet their targets; ` +
        `${failures.length} scenario(s) failed; ${totalSeconds.toFixed(0)} s in all`
    )
    if (args.markdown) yield* Console.log(`\n${markdownTable(rows)}\n`)
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const json = path.resolve(args.json)
    yield* fs.makeDirectory(path.dirname(json), { recursive: true })
    const results = {
      environment: env,
      options: {
        scale: args.scale,
        smoke: args.smoke,
        only: args.only ?? null,
        defaultScheduler: args.defaultScheduler
      },
      config,
      totalSeconds,
      runs,
      rows,
      failures,
      markdown: markdownTable(rows)
    }
    yield* fs.writeFileString(json, `${JSON.stringify(results, null, 2)}\n`)
    yield* Console.log(`bench: results written to ${json}`)
    if (args.writeDoc) yield* writeDoc(yield* docSection(env, args, rows, runs, totalSeconds))
    if (failures.length > 0) {
      return yield* new BenchError({ message: `${failures.length} scenario(s) failed` })
    }
  })

const program = Effect.gen(function*() {
  const args = yield* parseArgs(process.argv.slice(2))
  if (args.help) return yield* Console.log(usage)
  if (args.child !== undefined) return yield* child(args)
  return yield* main(args)
})

program.pipe(
  Effect.scoped,
  Effect.catchTag("UsageError", (error) => Effect.andThen(Console.error(error.message), Effect.fail(error))),
  Effect.provide(NodeServices.layer),
  NodeRuntime.runMain
)
