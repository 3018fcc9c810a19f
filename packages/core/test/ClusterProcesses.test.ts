/**
 * Cluster mode across processes: three runner processes (`cluster/runner.ts`) and a client-only node
 * (`cluster/client.ts`) on the test PostgreSQL, with effect/cluster's shard locks and runner registry under a
 * prefix of each test's own, in the fast failure-detection profile (`examples/src/cluster/transport.ts`: locks expire after
 * 5 s, refreshed every second, assignments read every 500 ms). Runners are killed with SIGKILL, stopped with
 * SIGTERM, frozen with SIGSTOP, and restarted one by one, while the client increments counters; the histories
 * the client prints, and the states left in the database, must show no lost and no doubled update.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { freePort } from "../../examples/src/cluster/runners.ts"
import * as SqlStorage from "../src/SqlStorage.ts"
import * as Storage from "../src/Storage.ts"
import { postgresUrl } from "./backends.ts"
import { clientFor } from "./databases.ts"

const dir = join(import.meta.dirname, "cluster")
/** Lock expiration + lock refresh of the fast profile, plus 2 s: the longest a dead runner's objects may stall. */
const rehomeBoundMillis = 5_000 + 1_000 + 2_000

const now = () => Math.round(performance.timeOrigin + performance.now())

interface Worker {
  readonly name: string
  readonly child: ChildProcess
  readonly lines: Array<string>
  readonly ready: Promise<void>
  readonly exited: Promise<void>
  stderr: string
}

const spawnWorker = (script: string, name: string, config: unknown, onLine?: (line: string) => void): Worker => {
  const child = spawn(process.execPath, [join(dir, script), JSON.stringify(config)], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  const { promise: ready, resolve: markReady } = Promise.withResolvers<void>()
  const worker: Worker = {
    name,
    child,
    lines: [],
    ready,
    exited: new Promise<void>((resolve) => child.on("close", () => resolve())),
    stderr: ""
  }
  child.stderr!.on("data", (chunk: Buffer) => {
    worker.stderr += chunk.toString()
  })
  createInterface({ input: child.stdout! }).on("line", (text) => {
    worker.lines.push(text)
    if (text === "ready") markReady()
    onLine?.(text)
  })
  return worker
}

const sleep = (millis: number) => new Promise((resolve) => setTimeout(resolve, millis))

/** One test's cluster: its database tables, its runners, and what they printed. */
const makeCluster = (label: string) => {
  const unique = `c${process.pid}_${label}_${Math.random().toString(36).slice(2, 7)}_`
  const base = { url: postgresUrl(), tablePrefix: unique, clusterPrefix: `${unique}cluster` }
  const runners: Array<Worker> = []
  let started = 0
  const startRunner = async (onLine?: (line: string) => void) => {
    const name = `r${++started}`
    const runner = spawnWorker("runner.ts", name, { ...base, port: await Effect.runPromise(freePort), name }, onLine)
    runners.push(runner)
    await Promise.race([
      runner.ready,
      runner.exited.then(() => {
        throw new Error(`runner ${name} exited before it was ready: ${runner.stderr}`)
      })
    ])
    return runner
  }
  const runClient = (ids: ReadonlyArray<string>, options: { durationMillis: number; ticksIn?: number }) => {
    const client = spawnWorker("client.ts", "client", { ...base, ids, pauseMillis: 20, ...options })
    return {
      client,
      done: client.exited.then(() => {
        if (client.lines.at(-1) !== "done") throw new Error(`the client failed: ${client.stderr}`)
        return parseHistory(client.lines)
      })
    }
  }
  const runErrorsClient = (options?: { readonly unreachable: boolean }) => {
    const client = spawnWorker("errorsClient.ts", "errors", { ...base, ...options })
    return client.exited.then(() => {
      if (client.lines.at(-1) !== "done") throw new Error(`the errors client failed: ${client.stderr}`)
      return client.lines
    })
  }
  const stopAll = async () => {
    for (const runner of runners) {
      if (runner.child.exitCode === null && runner.child.signalCode === null) runner.child.kill("SIGKILL")
    }
    await Promise.all(runners.map((r) => r.exited))
  }
  /** The stored states of `ids`, read through the library's own storage. */
  const states = (ids: ReadonlyArray<string>) =>
    Effect.gen(function*() {
      const storage = yield* Storage.Storage
      const result = new Map<
        string,
        {
          count: number
          ticks: number
          tickRunners: Array<string>
          tickTimes: Array<number>
          shutdownBy: Array<string>
        }
      >()
      for (const id of ids) {
        const stored = yield* storage.load("Tally", id)
        result.set(
          id,
          stored === undefined
            ? { count: 0, ticks: 0, tickRunners: [], tickTimes: [], shutdownBy: [] }
            : JSON.parse(stored.state)
        )
      }
      const alarms = yield* Effect.forEach(ids, (id) => storage.listAlarms("Tally", id))
      return { states: result, alarms: alarms.flat() }
    }).pipe(
      Effect.provide(
        SqlStorage.layer({ tablePrefix: unique }).pipe(
          Layer.provide(clientFor({ backend: "PostgreSQL", url: base.url, tablePrefix: unique }))
        )
      ),
      Effect.orDie
    )
  return { runners, startRunner, runClient, runErrorsClient, stopAll, states }
}

interface Ack {
  readonly count: number
  readonly runner: string
  readonly at: number
}

interface History {
  readonly started: Map<string, number>
  readonly acks: Map<string, Array<Ack>>
  readonly failures: Array<string>
}

const parseHistory = (lines: ReadonlyArray<string>): History => {
  const started = new Map<string, number>()
  const acks = new Map<string, Array<Ack>>()
  const failures: Array<string> = []
  for (const text of lines) {
    const [kind, id, a, b, c] = text.split(" ")
    if (kind === "start") started.set(id!, (started.get(id!) ?? 0) + 1)
    else if (kind === "ack") {
      const list = acks.get(id!) ?? []
      list.push({ count: Number(a), runner: b!, at: Number(c) })
      acks.set(id!, list)
    } else if (kind === "fail") failures.push(`${id} ${a}`)
  }
  return { started, acks, failures }
}

/**
 * Every acknowledged count kept, acknowledged counts distinct and increasing (each object has one sequential
 * caller), and no update applied that was not started: `acks ≤ final ≤ started`.
 */
const checkCounts = (
  history: History,
  states: ReadonlyMap<string, { readonly count: number }>,
  ids: ReadonlyArray<string>
) => {
  for (const id of ids) {
    const acks = history.acks.get(id) ?? []
    const final = states.get(id)?.count ?? 0
    const started = history.started.get(id) ?? 0
    for (let i = 1; i < acks.length; i++) {
      assert.isAbove(acks[i]!.count, acks[i - 1]!.count, `${id}: acknowledged counts must increase`)
    }
    assert.isAtLeast(final, acks.at(-1)?.count ?? 0, `${id}: an acknowledged count was lost`)
    assert.isAtLeast(final, acks.length, `${id}: fewer updates stored than acknowledged`)
    assert.isAtMost(final, started, `${id}: an update was applied more often than it was started`)
  }
}

/** For objects served by `runner` before `at`: how long until each was served again (by anyone). */
const rehomeTimes = (history: History, runner: string, at: number): Array<number> => {
  const times: Array<number> = []
  for (const acks of history.acks.values()) {
    const before = acks.filter((a) => a.at <= at)
    if (before.at(-1)?.runner !== runner) continue
    const after = acks.find((a) => a.at > at)
    if (after !== undefined) times.push(after.at - at)
  }
  return times
}

/** The longest time between two acknowledgements of one object. */
const maxStall = (history: History): number => {
  let max = 0
  for (const acks of history.acks.values()) {
    for (let i = 1; i < acks.length; i++) max = Math.max(max, acks[i]!.at - acks[i - 1]!.at)
  }
  return max
}

const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`)

const runners = (names: ReadonlyArray<string>) => new Set(names)

describe("Cluster mode across processes", () => {
  it.live(
    "3 runners and a client: replies name their runner; kill -9 under load loses and doubles nothing, and the dead runner's objects re-home",
    () =>
      Effect.gen(function*() {
        const cluster = makeCluster("kill")
        const objects = ids("k", 24)
        try {
          yield* Effect.promise(() =>
            Promise.all([cluster.startRunner(), cluster.startRunner(), cluster.startRunner()])
          )
          const { client, done } = cluster.runClient(objects, { durationMillis: 15_000 })
          // At a random moment, kill the runner that served the latest acknowledgement (one that serves
          // objects, whatever the shards' spread), then start a new one.
          yield* Effect.promise(() => sleep(3_000 + Math.random() * 2_000))
          const latest = client.lines.findLast((l) => l.startsWith("ack "))?.split(" ")[3]
          const victim = cluster.runners.find((r) => r.name === latest) ?? cluster.runners[0]!
          const killedAt = now()
          victim.child.kill("SIGKILL")
          yield* Effect.promise(() => sleep(4_000 + Math.random() * 1_000))
          yield* Effect.promise(() => cluster.startRunner())
          const history = yield* Effect.promise(() => done)
          const { states } = yield* cluster.states(objects)
          checkCounts(history, states, objects)
          const served = runners(Array.from(history.acks.values()).flatMap((acks) => acks.map((a) => a.runner)))
          assert.isAtLeast(served.size, 2, "replies name the runners that served them")
          const rehome = rehomeTimes(history, victim.name, killedAt)
          assert.isAbove(rehome.length, 0, "the killed runner served some objects")
          for (const millis of rehome) assert.isAtMost(millis, rehomeBoundMillis, "re-home took too long")
          assert.deepStrictEqual(history.failures.filter((f) => f.endsWith("VersionConflict")), [], "two live copies")
          console.log(
            `cluster kill -9: ${Array.from(history.acks.values()).reduce((n, a) => n + a.length, 0)} acks, ` +
              `${history.failures.length} failed (${history.failures.slice(0, 5).join(", ")}), re-home ` +
              `${Math.min(...rehome)}–${Math.max(...rehome)} ms over ${rehome.length} objects`
          )
        } finally {
          yield* Effect.promise(() => cluster.stopAll())
        }
      }),
    90_000
  )

  it.live(
    "errors keep their classes across runners; a chain coming back across runners fails fast with ReentrantCall",
    () =>
      Effect.gen(function*() {
        const cluster = makeCluster("errors")
        try {
          yield* Effect.promise(() =>
            Promise.all([cluster.startRunner(), cluster.startRunner(), cluster.startRunner()])
          )
          const lines = yield* Effect.promise(() => cluster.runErrorsClient())
          const results = new Map(
            lines.filter((l) => l.startsWith("result ")).map((l) => {
              const [, name, ...outcome] = l.split(" ")
              return [name!, outcome.join(" ")] as const
            })
          )
          const [, firstRunner, secondRunner] = lines.find((l) => l.startsWith("pair "))!.split(" ")
          assert.notStrictEqual(firstRunner, secondRunner, "the chain crosses runners")
          assert.strictEqual(results.get("reentrant"), "ReentrantCall true")
          assert.strictEqual(results.get("typed"), "RelayError true")
          assert.strictEqual(results.get("defect"), "HandlerDefect true")
          assert.strictEqual(results.get("invalid"), "InvalidPayload true")
          assert.strictEqual(results.get("unknown"), "UnknownHandler true")
          assert.strictEqual(results.get("timeout"), "CallTimeout true")
          const overloads = [0, 1, 2, 3].map((i) => results.get(`overload${i}`))
          assert.include(overloads, "ok")
          assert.include(overloads, "ObjectOverloaded true")
        } finally {
          yield* Effect.promise(() => cluster.stopAll())
        }
      }),
    60_000
  )

  it.live(
    "routing is bounded: with no runner up, a call fails with CallTimeout after callTimeout + commitTimeout + routeTimeout",
    () =>
      Effect.gen(function*() {
        const cluster = makeCluster("unreachable")
        const lines = yield* Effect.promise(() => cluster.runErrorsClient({ unreachable: true }))
        assert.include(lines, "result unreachable CallTimeout true")
        const elapsed = Number(lines.find((l) => l.startsWith("elapsed "))!.split(" ")[1])
        // Relay: callTimeout 1 s, commitTimeout 1 s; the client's routeTimeout 1 s.
        assert.isAtLeast(elapsed, 2_900)
        assert.isBelow(elapsed, 8_000)
      }),
    60_000
  )

  it.live(
    "a call committed on a runner killed before it replied is applied exactly once",
    () =>
      Effect.gen(function*() {
        const cluster = makeCluster("slow")
        try {
          let committedOn: Worker | undefined
          const onLine = (name: () => Worker) => (text: string) => {
            if (text === "committed slow-1" && committedOn === undefined) {
              committedOn = name()
              committedOn.child.kill("SIGKILL")
            }
          }
          const started: Array<Worker> = []
          for (let i = 0; i < 3; i++) {
            const index = i
            started.push(yield* Effect.promise(() => cluster.startRunner(onLine(() => started[index]!))))
          }
          const { done } = cluster.runClient(["slow-1"], { durationMillis: 1 })
          const history = yield* Effect.promise(() => done)
          const { states } = yield* cluster.states(["slow-1"])
          assert.isDefined(committedOn, "the owner committed and was killed before replying")
          assert.deepStrictEqual(history.acks.get("slow-1")?.map((a) => a.count), [1])
          assert.strictEqual(states.get("slow-1")?.count, 1, "the re-sent call ran again")
        } finally {
          yield* Effect.promise(() => cluster.stopAll())
        }
      }),
    60_000
  )

  it.live(
    "SIGTERM hands objects off gracefully: onShutdown commits on the old runner, the new owner serves within a second or so",
    () =>
      Effect.gen(function*() {
        const cluster = makeCluster("term")
        const objects = ids("t", 15)
        try {
          yield* Effect.promise(() =>
            Promise.all([cluster.startRunner(), cluster.startRunner(), cluster.startRunner()])
          )
          const { done } = cluster.runClient(objects, { durationMillis: 9_000 })
          yield* Effect.promise(() => sleep(4_000))
          const leaving = cluster.runners[0]!
          const termAt = now()
          leaving.child.kill("SIGTERM")
          const history = yield* Effect.promise(() => done)
          yield* Effect.promise(() => leaving.exited)
          // Interrupted by the signal, the runner's main fiber ends and the process exits by itself (code 130).
          assert.isNull(leaving.child.signalCode, `the runner did not stop by itself: ${leaving.stderr}`)
          const { states } = yield* cluster.states(objects)
          checkCounts(history, states, objects)
          const handedOff = objects.filter((id) =>
            (history.acks.get(id) ?? []).filter((a) => a.at <= termAt).at(-1)?.runner === leaving.name
          )
          assert.isAbove(handedOff.length, 0, "the stopped runner served some objects")
          for (const id of handedOff) {
            assert.include(
              states.get(id)?.shutdownBy ?? [],
              leaving.name,
              `${id}: onShutdown did not commit on ${leaving.name}`
            )
          }
          const rehome = rehomeTimes(history, leaving.name, termAt)
          for (const millis of rehome) assert.isAtMost(millis, 3_000, "graceful re-home took too long")
          console.log(
            `cluster SIGTERM: re-home ${Math.min(...rehome)}–${Math.max(...rehome)} ms over ${rehome.length} objects`
          )
        } finally {
          yield* Effect.promise(() => cluster.stopAll())
        }
      }),
    60_000
  )

  it.live(
    "alarms due while their owner is dead run once, on the then-owner, and none is marked failed",
    () =>
      Effect.gen(function*() {
        const cluster = makeCluster("alarm")
        const objects = ids("a", 20)
        try {
          yield* Effect.promise(() =>
            Promise.all([cluster.startRunner(), cluster.startRunner(), cluster.startRunner()])
          )
          const { client, done } = cluster.runClient(objects, { durationMillis: 0, ticksIn: 3_000 })
          yield* Effect.promise(() => done)
          const dueAt = Number(client.lines.find((l) => l.startsWith("due "))!.split(" ")[1])
          const victim = cluster.runners[1]!
          const killedAt = now()
          victim.child.kill("SIGKILL")
          assert.isBelow(killedAt, dueAt, "the alarms were scheduled and the runner killed before they were due")
          // The dead runner's shards move about 5 s after the kill.
          yield* Effect.promise(() => sleep(dueAt - killedAt + rehomeBoundMillis + 2_000))
          const { alarms, states } = yield* cluster.states(objects)
          for (const id of objects) {
            const state = states.get(id)!
            assert.strictEqual(state.ticks, 1, `${id}: the alarm's effect was applied ${state.ticks} times`)
            assert.isFalse(
              state.tickRunners[0] === victim.name && state.tickTimes[0]! >= killedAt,
              `${id}: the alarm ran on a dead runner`
            )
            assert.isAtLeast(state.tickTimes[0]!, dueAt, `${id}: the alarm ran early`)
          }
          assert.deepStrictEqual(alarms.filter((a) => a.failedAt !== null), [], "an alarm was marked failed")
          assert.deepStrictEqual(alarms, [], "every alarm fired and was removed")
        } finally {
          yield* Effect.promise(() => cluster.stopAll())
        }
      }),
    60_000
  )

  it.live(
    "a runner frozen past its lock expiry (SIGSTOP, then SIGCONT) loses no update and serves no stale copy",
    () =>
      Effect.gen(function*() {
        const cluster = makeCluster("stop")
        const objects = ids("s", 15)
        try {
          yield* Effect.promise(() =>
            Promise.all([cluster.startRunner(), cluster.startRunner(), cluster.startRunner()])
          )
          const { done } = cluster.runClient(objects, { durationMillis: 16_000 })
          yield* Effect.promise(() => sleep(3_000))
          const frozen = cluster.runners[2]!
          frozen.child.kill("SIGSTOP")
          yield* Effect.promise(() => sleep(8_000))
          frozen.child.kill("SIGCONT")
          const history = yield* Effect.promise(() => done)
          const { states } = yield* cluster.states(objects)
          // A stale copy would acknowledge a count another runner already acknowledged: counts must increase.
          checkCounts(history, states, objects)
          console.log(
            `cluster SIGSTOP 8 s: ${history.failures.length} failed calls (${history.failures.join(", ")}), ` +
              `longest stall ${maxStall(history)} ms`
          )
        } finally {
          yield* Effect.promise(() => cluster.stopAll())
        }
      }),
    60_000
  )

  it.live(
    "a rolling restart of every runner under load loses and doubles nothing, with bounded stalls",
    () =>
      Effect.gen(function*() {
        const cluster = makeCluster("roll")
        const objects = ids("r", 15)
        try {
          yield* Effect.promise(() =>
            Promise.all([cluster.startRunner(), cluster.startRunner(), cluster.startRunner()])
          )
          const { done } = cluster.runClient(objects, { durationMillis: 18_000 })
          yield* Effect.promise(() => sleep(2_000))
          for (const old of cluster.runners.slice(0, 3)) {
            old.child.kill("SIGTERM")
            yield* Effect.promise(() => old.exited)
            yield* Effect.promise(() => cluster.startRunner())
            yield* Effect.promise(() => sleep(1_500))
          }
          const history = yield* Effect.promise(() => done)
          const { states } = yield* cluster.states(objects)
          checkCounts(history, states, objects)
          const stall = maxStall(history)
          assert.isAtMost(stall, rehomeBoundMillis, "a rolling restart stalled an object too long")
          console.log(`cluster rolling restart: longest stall ${stall} ms, ${history.failures.length} failed calls`)
        } finally {
          yield* Effect.promise(() => cluster.stopAll())
        }
      }),
    90_000
  )
})
