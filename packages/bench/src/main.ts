/**
 * The benchmark runner: `npm run bench [-- options]`.
 *
 * Runs each scenario in its own Node process (`--expose-gc`, so heap measurements are exact and one
 * scenario's heap or JIT state never leaks into the next), starts a throwaway PostgreSQL (fsync on) when a
 * scenario needs one and none was given, prints the table and writes it as JSON.
 *
 *   --only a,b          scenarios by name or number (default: all); see --help
 *   --scale X           multiply object counts and durations by X (default 1)
 *   --smoke             tiny sizes, to check every scenario still works (never judges performance)
 *   --json PATH         where to write the results (default bench-results/latest.json)
 *   --markdown          also print the table as markdown
 *   --write-doc         also replace the results section of docs/performance.md with this run
 *   --postgres-url URL  use this server (default: $DURABLE_OBJECT_BENCH_POSTGRES_URL, else start one)
 *   --in-process        run the scenarios in this process (faster start, less isolation)
 */
import { DateTime, Effect } from "effect"
import { SqlClient } from "effect/sql"
import { execFileSync, spawnSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from "node:os"
import { dirname, join, resolve } from "node:path"
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
  { name: "latency", number: 7, title: "latency at low load", postgres: true, load: () => import("./latency.ts") }
]

interface Args {
  readonly only: ReadonlyArray<string> | undefined
  readonly scale: number
  readonly smoke: boolean
  readonly json: string
  readonly markdown: boolean
  readonly writeDoc: boolean
  readonly postgresUrl: string | undefined
  readonly inProcess: boolean
  readonly child: string | undefined
  readonly out: string | undefined
  readonly help: boolean
}

const usage = `usage: npm run bench [-- options]

  --only a,b          run only these scenarios (names or numbers):
${scenarios.map((s) => `                        ${s.number} ${s.name.padEnd(11)} ${s.title}`).join("\n")}
  --scale X           multiply object counts and durations by X (default 1)
  --smoke             tiny sizes: checks every scenario works, judges nothing
  --json PATH         write the results there (default bench-results/latest.json)
  --markdown          also print the table as markdown
  --write-doc         also put this run's table into docs/performance.md (between its
                      bench:results markers)
  --postgres-url URL  PostgreSQL server to use (default $DURABLE_OBJECT_BENCH_POSTGRES_URL, else
                      scripts/postgres.sh starts a throwaway one with fsync on)
  --in-process        run every scenario in this process instead of one process each`

const parseArgs = (argv: ReadonlyArray<string>): Args => {
  const args: {
    -readonly [K in keyof Args]: Args[K]
  } = {
    only: undefined,
    scale: 1,
    smoke: false,
    json: "bench-results/latest.json",
    markdown: false,
    writeDoc: false,
    postgresUrl: process.env.DURABLE_OBJECT_BENCH_POSTGRES_URL || undefined,
    inProcess: false,
    child: undefined,
    out: undefined,
    help: false
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const [flag, inline] = arg.startsWith("--") && arg.includes("=") ? arg.split("=", 2) as [string, string] : [arg]
    const value = () => {
      const v = inline ?? argv[++i]
      if (v === undefined) throw new Error(`${flag} needs a value`)
      return v
    }
    switch (flag) {
      case "--only":
        args.only = value().split(",").map((s) => s.trim()).filter((s) => s !== "")
        break
      case "--scale": {
        const scale = Number(value())
        if (!(scale > 0)) throw new Error("--scale must be a positive number")
        args.scale = scale
        break
      }
      case "--smoke":
        args.smoke = true
        break
      case "--json":
        args.json = value()
        break
      case "--markdown":
        args.markdown = true
        break
      case "--write-doc":
        args.writeDoc = true
        break
      case "--postgres-url":
        args.postgresUrl = value()
        break
      case "--in-process":
        args.inProcess = true
        break
      case "--child":
        args.child = value()
        break
      case "--out":
        args.out = value()
        break
      case "--help":
      case "-h":
        args.help = true
        break
      default:
        throw new Error(`unknown option ${arg}\n\n${usage}`)
    }
  }
  return args
}

const select = (only: ReadonlyArray<string> | undefined): ReadonlyArray<Scenario> => {
  if (only === undefined) return scenarios
  for (const key of only) {
    if (!scenarios.some((s) => s.name === key || String(s.number) === key)) {
      throw new Error(`unknown scenario ${JSON.stringify(key)}\n\n${usage}`)
    }
  }
  return scenarios.filter((s) => only.includes(s.name) || only.includes(String(s.number)))
}

const runScenario = (scenario: Scenario, config: BenchConfig.Config): Promise<ReadonlyArray<Row>> =>
  scenario.load().then((module) => Effect.runPromise(module.run(config)))

const here = dirname(fileURLToPath(import.meta.url))
const repoRoot = resolve(here, "../../..")

/** Starts a throwaway PostgreSQL with scripts/postgres.sh; returns its URL and how to stop it. */
const startPostgres = () => {
  const dir = mkdtempSync(join(tmpdir(), "durable-object-bench-pg-"))
  const script = join(repoRoot, "scripts/postgres.sh")
  const url = execFileSync("bash", [script, "start", dir, "on"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"]
  }).trim()
  let stopped = false
  const stop = () => {
    if (stopped) return
    stopped = true
    execFileSync("bash", [script, "stop", dir], { stdio: "inherit" })
  }
  return { url, stop }
}

const postgresVersion = (url: string): Promise<string> =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql<{ server_version: string }>`SHOW server_version`
        return rows[0]?.server_version ?? "unknown"
      }).pipe(Effect.provide(pgLayer(url, 1)))
    ).pipe(Effect.orElseSucceed(() => "unreachable"))
  )

const sqliteVersion = (): Promise<string> => import("./sqlite.ts").then((m) => m.sqliteVersion())

const git = (...args: ReadonlyArray<string>) =>
  execFileSync("git", args, { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim()

/** The commit measured, and whether the library's sources differ from it. */
const revision = (): string => {
  try {
    const dirty = git("status", "--porcelain", "--", "packages/core", "packages/sql-sqlite-node") !== ""
    return `${git("rev-parse", "--short", "HEAD")}${dirty ? " + uncommitted library changes" : ""}`
  } catch {
    return "unknown (not a git checkout)"
  }
}

const environment = async (postgresUrl: string | undefined) => ({
  revision: revision(),
  node: process.version,
  cpus: availableParallelism(),
  cpuModel: cpus()[0]?.model ?? "unknown",
  memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
  platform: `${process.platform} ${process.arch}`,
  sqlite: await sqliteVersion(),
  postgres: postgresUrl === undefined ? "not used" : await postgresVersion(postgresUrl)
})

type Environment = Awaited<ReturnType<typeof environment>>

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

const docPath = join(repoRoot, "docs/performance.md")
const docStart = "<!-- bench:results:start -->"
const docEnd = "<!-- bench:results:end -->"

/** The results section of docs/performance.md: when, on what, the table and the notes. */
const docSection = (
  env: Environment,
  args: Args,
  rows: ReadonlyArray<Row>,
  runs: ReadonlyArray<ScenarioRun>,
  totalSeconds: number
) => {
  const date = DateTime.formatIso(Effect.runSync(DateTime.now)).slice(0, 10)
  const command = `npm run bench${args.scale === 1 ? "" : ` -- --scale ${args.scale}`}`
  return [
    `Run of ${date} at commit ${env.revision} (\`${command}\`, ${Math.round(totalSeconds)} s in all, PostgreSQL ${
      args.postgresUrl === undefined ? "started by the runner with fsync on" : "given with --postgres-url"
    }):`,
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
}

const writeDoc = (section: string) => {
  const doc = readFileSync(docPath, "utf8")
  const start = doc.indexOf(docStart)
  const end = doc.indexOf(docEnd)
  if (start < 0 || end < start) throw new Error(`${docPath} has no ${docStart} … ${docEnd} section`)
  writeFileSync(docPath, `${doc.slice(0, start + docStart.length)}\n${section}\n${doc.slice(end)}`)
  console.log(`bench: results section of ${docPath} updated`)
}

const child = async (args: Args) => {
  const scenario = scenarios.find((s) => s.name === args.child)
  if (scenario === undefined || args.out === undefined) throw new Error("--child needs a scenario name and --out")
  const rows = await runScenario(scenario, BenchConfig.make({ smoke: args.smoke, scale: args.scale }))
  writeFileSync(args.out, JSON.stringify(rows))
}

const inChild = (scenario: Scenario, args: Args, postgresUrl: string | undefined): ReadonlyArray<Row> => {
  const dir = mkdtempSync(join(tmpdir(), "durable-object-bench-out-"))
  try {
    const out = join(dir, "rows.json")
    const result = spawnSync(
      process.execPath,
      [
        "--expose-gc",
        fileURLToPath(import.meta.url),
        "--child",
        scenario.name,
        "--out",
        out,
        "--scale",
        String(args.scale),
        ...(args.smoke ? ["--smoke"] : [])
      ],
      {
        stdio: "inherit",
        env: {
          ...process.env,
          ...(postgresUrl === undefined ? {} : { DURABLE_OBJECT_BENCH_POSTGRES_URL: postgresUrl })
        }
      }
    )
    if (result.error !== undefined) throw result.error
    if (result.status !== 0) throw new Error(`exited with ${result.status ?? result.signal}`)
    return JSON.parse(readFileSync(out, "utf8")) as ReadonlyArray<Row>
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

const main = async (args: Args) => {
  const selected = select(args.only)
  const config = BenchConfig.make({ smoke: args.smoke, scale: args.scale })
  const needsPostgres = selected.some((s) => s.postgres)
  let postgresUrl = args.postgresUrl
  let stopPostgres: (() => void) | undefined
  if (needsPostgres && postgresUrl === undefined) {
    console.log("bench: starting a throwaway PostgreSQL (scripts/postgres.sh, fsync on)")
    const pg = startPostgres()
    postgresUrl = pg.url
    stopPostgres = pg.stop
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      process.once(signal, () => {
        pg.stop()
        process.exit(130)
      })
    }
  }
  if (postgresUrl !== undefined) process.env.DURABLE_OBJECT_BENCH_POSTGRES_URL = postgresUrl
  const started = performance.now()
  const rows: Array<Row> = []
  const failures: Array<{ readonly scenario: string; readonly error: string }> = []
  const runs: Array<ScenarioRun> = []
  try {
    const env = await environment(needsPostgres ? postgresUrl : undefined)
    console.log(
      `bench: commit ${env.revision}; Node ${env.node}, ${env.cpus} CPUs (${env.cpuModel}), ${env.memoryGiB} GiB, SQLite ${env.sqlite}, ` +
        `PostgreSQL ${env.postgres}; ${args.smoke ? "smoke sizes" : `scale ${args.scale}`}`
    )
    for (const scenario of selected) {
      const t0 = performance.now()
      const cpu0 = cpuTimes()
      console.log(`bench: ${scenario.number} ${scenario.name}: ${scenario.title}…`)
      try {
        const result = args.inProcess ? await runScenario(scenario, config) : inChild(scenario, args, postgresUrl)
        rows.push(...result)
      } catch (error) {
        const message = error instanceof Error ? error.message : String(error)
        failures.push({ scenario: scenario.name, error: message })
        console.error(`bench: ${scenario.name} failed: ${message}`)
      }
      const run: ScenarioRun = {
        scenario: scenario.name,
        seconds: Math.round(performance.now() - t0) / 1000,
        cpuBusy: busyShare(cpu0, cpuTimes()),
        loadAverage: Math.round(loadavg()[0]! * 100) / 100
      }
      runs.push(run)
      console.log(
        `bench: ${scenario.name} took ${run.seconds.toFixed(1)} s; machine CPU ${
          Math.round(run.cpuBusy * 100)
        }% busy, load average ${run.loadAverage}`
      )
    }
    const totalSeconds = (performance.now() - started) / 1000
    console.log(`\n${textTable(rows)}\n`)
    const rowNotes = notes(rows)
    if (rowNotes !== "") console.log(`${rowNotes}\n`)
    const measured = rows.filter((r) => r.targets.length > 0)
    const missed = measured.filter((r) => !r.targets.every((t) => t.pass))
    console.log(
      `bench: ${measured.length - missed.length} of ${measured.length} measurements meet their targets; ` +
        `${failures.length} scenario(s) failed; ${totalSeconds.toFixed(0)} s in all`
    )
    if (args.markdown) console.log(`\n${markdownTable(rows)}\n`)
    const json = resolve(args.json)
    mkdirSync(dirname(json), { recursive: true })
    writeFileSync(
      json,
      `${
        JSON.stringify(
          {
            environment: env,
            options: { scale: args.scale, smoke: args.smoke, only: args.only ?? null },
            config,
            totalSeconds,
            runs,
            rows,
            failures,
            markdown: markdownTable(rows)
          },
          null,
          2
        )
      }\n`
    )
    console.log(`bench: results written to ${json}`)
    if (args.writeDoc) writeDoc(docSection(env, args, rows, runs, totalSeconds))
  } finally {
    stopPostgres?.()
  }
  if (failures.length > 0) process.exitCode = 1
}

const args = parseArgs(process.argv.slice(2))
if (args.help) console.log(usage)
else if (args.child !== undefined) await child(args)
else await main(args)
