/**
 * Scenario 1, hot calls: a read handler on objects that are already active, through the public client, on
 * in-memory storage, under 1,000 concurrent callers; on one object, then spread over 10,000.
 *
 * Baseline: the same callers through a bare `Semaphore(1)`-serialised function, the floor of any serial
 * actor in Effect.
 */
import { Storage } from "@durable-object/core"
import { Effect, Layer, Semaphore } from "effect"
import type { Config } from "./config.ts"
import { Counter } from "./objects.ts"
import { closedLoop, count, loadRow, ratioTo, type Row } from "./stats.ts"

const scenario = "1 hot calls (memory)"

export const run = (config: Config): Effect.Effect<ReadonlyArray<Row>> =>
  Effect.scoped(Effect.gen(function*() {
    const load = { concurrency: config.concurrency, warmupMs: config.warmupMs, durationMs: config.durationMs }

    const semaphore = yield* Semaphore.make(1)
    const cell = { count: 0 }
    const floorResult = yield* closedLoop({
      ...load,
      call: () => semaphore.withPermit(Effect.sync(() => cell.count))
    })
    const floor = loadRow(
      { id: "hot.floor", scenario, label: "Semaphore(1) call", kind: "baseline" },
      floorResult,
      "calls/s"
    )

    const context = yield* Layer.build(Counter.layer.pipe(Layer.provide(Storage.layerMemory)))
    const target = (value: number, ratio: number) => [
      { label: `≥ ${ratio}× floor`, pass: value >= ratio * floor.value }
    ]

    yield* Counter.client("hot-0").get().pipe(Effect.provideContext(context))
    const oneResult = yield* closedLoop({ ...load, call: () => Counter.client("hot-0").get() }).pipe(
      Effect.provideContext(context)
    )
    const one = loadRow(
      { id: "hot.one", scenario, label: "1 object, read handler", kind: "measure" },
      oneResult,
      "calls/s",
      { ratios: [ratioTo(oneResult.throughput, floor, "floor")], targets: target(oneResult.throughput, 0.5) }
    )

    const ids = Array.from({ length: config.hotObjects }, (_, i) => `hot-${i}`)
    yield* Effect.forEach(ids, (id) => Counter.client(id).get(), { concurrency: config.concurrency, discard: true })
      .pipe(Effect.provideContext(context))
    const manyResult = yield* closedLoop({
      ...load,
      call: () => Counter.client(ids[Math.floor(Math.random() * ids.length)]!).get()
    }).pipe(Effect.provideContext(context))
    const many = loadRow(
      { id: "hot.many", scenario, label: `${count(ids.length)} objects, read handler`, kind: "measure" },
      manyResult,
      "calls/s",
      { ratios: [ratioTo(manyResult.throughput, floor, "floor")], targets: target(manyResult.throughput, 0.35) }
    )
    return [floor, one, many]
  })).pipe(Effect.orDie)
