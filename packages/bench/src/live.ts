/**
 * Scenario 8, live-state subscribers: what 100 subscribers to `client(id).changes` cost the objects they
 * watch. Each subscriber reads every state it is given (decoded), as a browser's SSE stream would.
 *
 * - hot: `increment` on one active object on in-memory storage by 1,000 concurrent callers (scenario 1's
 *   single object, with a write handler, so that every commit publishes), 100 subscribers on that object;
 * - durable: scenario 2's workload (`increment` on 1,000 objects on SQLite), 100 subscribers on 100 of them.
 *
 * Baseline: the same workload in the same run without subscribers. Runs alternate A B B A B A A B (after a
 * warm-up run), and each row is the mean of its four runs, so drift during the run counts against neither.
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { Effect, Layer, Stream } from "effect"
import { join } from "node:path"
import { tempDirectory } from "./backends.ts"
import type { Config } from "./config.ts"
import { Counter } from "./objects.ts"
import { sqliteLayer } from "./sqlite.ts"
import { closedLoop, count, type LoadResult, loadRow, ratioTo, type Row } from "./stats.ts"
import { objectIds, pick } from "./workloads.ts"

const scenario = "8 live-state subscribers"
const subscribers = 100

/** Runs the workload on a fresh runtime over `storage`, with `watchers` subscribers on `watched` objects. */
const measure = <E>(
  config: Config,
  storage: Layer.Layer<Storage.Storage | Storage.Scheduler, E>,
  ids: ReadonlyArray<string>,
  watchers: number
): Effect.Effect<{ readonly result: LoadResult; readonly received: number }, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(Counter.layer.pipe(Layer.provide(storage)))
    yield* Effect.forEach(ids, (id) => Counter.client(id).increment(), {
      concurrency: config.concurrency,
      discard: true
    }).pipe(Effect.provideContext(context))
    const received = { states: 0 }
    for (let i = 0; i < watchers; i++) {
      yield* Effect.forkScoped(
        Stream.runForEach(Counter.client(ids[i % ids.length]!).changes, (snapshot) =>
          Effect.sync(() => {
            if (snapshot.state.count >= 0) received.states++
          })).pipe(Effect.provideContext(context))
      )
    }
    // Every subscriber has its current state before the clock starts.
    while (received.states < watchers) yield* Effect.sleep("1 millis")
    const before = received.states
    const result = yield* closedLoop({
      concurrency: config.concurrency,
      warmupMs: config.warmupMs,
      durationMs: config.durationMs,
      call: () => Counter.client(pick(ids)).increment()
    }).pipe(Effect.provideContext(context))
    return { result, received: received.states - before }
  }))

const mean = (list: ReadonlyArray<{ readonly result: LoadResult }>) =>
  list.reduce((sum, run) => sum + run.result.throughput, 0) / list.length
const throughputs = (list: ReadonlyArray<{ readonly result: LoadResult }>) =>
  list.map((run) => Math.round(run.result.throughput))

/** The order of the runs without (A) and with (B) subscribers: balanced, so linear drift cancels out. */
const order = "ABBABAAB"

/**
 * The rows of one workload: a discarded warm-up run (JIT), then runs without and with subscribers in a
 * balanced order, so that drift during the run (the machine's other load, the JIT) weighs on both equally;
 * each row is the mean of its runs.
 */
const compare = <E>(
  config: Config,
  name: string,
  label: string,
  storage: (run: string) => Layer.Layer<Storage.Storage | Storage.Scheduler, E>,
  ids: ReadonlyArray<string>
) =>
  Effect.gen(function*() {
    yield* measure(config, storage("warmup"), ids, 0)
    const runs: Record<string, Array<{ readonly result: LoadResult; readonly received: number }>> = { A: [], B: [] }
    for (const [i, kind] of Array.from(order).entries()) {
      runs[kind]!.push(yield* measure(config, storage(`${kind}${i}`), ids, kind === "A" ? 0 : subscribers))
    }
    const none = mean(runs.A!)
    const subs = mean(runs.B!)
    const baseline = loadRow(
      { id: `live.${name}.none`, scenario, label: `${label}, no subscribers`, kind: "baseline" },
      { ...runs.A![0]!.result, throughput: none },
      "calls/s",
      { details: { runs: throughputs(runs.A!) } }
    )
    const measured = loadRow(
      { id: `live.${name}.subscribed`, scenario, label: `${label}, ${subscribers} subscribers`, kind: "measure" },
      { ...runs.B![0]!.result, throughput: subs },
      "calls/s",
      {
        ratios: [ratioTo(subs, baseline, "no subscribers")],
        targets: [{ label: "≥ 0.9× no subscribers", pass: subs >= 0.9 * none }],
        details: {
          runs: throughputs(runs.B!),
          statesDelivered: runs.B!.reduce((sum, run) => sum + run.received, 0)
        }
      }
    )
    return [baseline, measured]
  })

export const run = (config: Config): Effect.Effect<ReadonlyArray<Row>, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const hot = yield* compare(config, "hot", "1 object, increment (memory)", () => Storage.layerMemory, ["live-0"])
    const dir = yield* tempDirectory
    const durable = yield* compare(
      config,
      "durable",
      `${count(config.durableObjects)} objects, durable increment (SQLite)`,
      (run) => SqlStorage.layer().pipe(Layer.provide(sqliteLayer(join(dir, `live-${run}.db`)))),
      objectIds("live", config.durableObjects)
    )
    return [...hot, ...durable]
  }))
