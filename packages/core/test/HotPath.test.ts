/**
 * The hot path of a call (the lock free, the object active, the handler settling without suspending) returns
 * the run's own exit instead of rebuilding it, tells a settled run from a pending one by the exit brand, reads
 * the clock once, and updates its metric series directly: the values recorded must be what `Metric` itself
 * would record.
 */
import { Storage, Telemetry } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Metric } from "effect"
import { TestClock } from "effect/testing"
import { isExit } from "../src/internal/call.ts"
import * as Series from "../src/internal/series.ts"
import { Counter, Journal } from "./fixtures.ts"

const counters = Counter.layer.pipe(
  Layer.provide(Storage.layerMemory),
  Layer.provide(Layer.succeed(Journal, { entries: [] }))
)

const calls = (attributes: Record<string, string>) => Metric.value(Metric.withAttributes(Telemetry.calls, attributes))
const duration = (handler: string) =>
  Metric.value(Metric.withAttributes(Telemetry.callDuration, { object_type: "Counter", handler }))

describe("hot path", () => {
  it("tells settled runs from pending ones exactly as Exit.isExit does", () => {
    const effects: ReadonlyArray<Effect.Effect<unknown, unknown>> = [
      Exit.succeed(1),
      Exit.void,
      Exit.fail("e"),
      Exit.die(new Error("d")),
      Effect.succeed(1),
      Effect.fail("e"),
      Effect.sync(() => 1),
      Effect.map(Effect.sync(() => 1), (n) => n + 1),
      Effect.never,
      Effect.sleep(1)
    ]
    for (const effect of effects) assert.strictEqual(isExit(effect), Exit.isExit(effect))
  })

  it.effect("a read on an active object replies with its current state, before and after writes", () =>
    Effect.gen(function*() {
      const client = Counter.client("hot")
      assert.strictEqual(yield* client.get(), 0)
      assert.strictEqual(yield* client.increment({ amount: 2 }), 2)
      // Reads and writes interleaved from many callers: every read sees a whole number of increments.
      const results = yield* Effect.forEach(
        Array.from({ length: 200 }, (_, i) => i),
        (i) => i % 2 === 0 ? client.get() : client.increment({ amount: 2 }),
        { concurrency: "unbounded" }
      )
      for (const n of results) assert.strictEqual(n % 2, 0)
      assert.strictEqual(yield* client.get(), 2 + 2 * 100)
      assert.deepStrictEqual(
        yield* Effect.exit(client.increment({ amount: 2_000_000 })).pipe(Effect.map(Exit.isFailure)),
        true
      )
      assert.strictEqual(yield* client.get(), 202)
    }).pipe(Effect.provide(counters)))

  it.effect("call metrics land in the registry's own series, with the caller's contextual attributes", () => {
    const registry: Series.Registry = new Map()
    return Effect.gen(function*() {
      const client = Counter.client("metrics")
      yield* client.get()
      yield* client.get().pipe(Effect.provideService(Metric.CurrentMetricAttributes, { region: "eu" }))
      yield* client.get().pipe(Effect.provideService(Metric.CurrentMetricAttributes, { region: "eu" }))
      yield* Effect.exit(client.incrementThenFail())
      const get = { object_type: "Counter", handler: "get", outcome: "success" }
      assert.strictEqual((yield* calls(get)).count, 1)
      assert.strictEqual((yield* calls({ ...get, region: "eu" })).count, 2)
      assert.strictEqual(
        (yield* calls({ object_type: "Counter", handler: "incrementThenFail", outcome: "failure" })).count,
        1
      )
      const duration = yield* Metric.value(
        Metric.withAttributes(Telemetry.callDuration, { object_type: "Counter", handler: "get", region: "eu" })
      )
      assert.strictEqual(duration.count, 2)
      // The key the call path builds is the registry's own (else every update would go the slow way).
      const series = Telemetry.callSeries({ object_type: "Counter", handler: "get", outcome: "success" }).calls
      assert.isDefined(registry.get(Series.keyOf(series, { region: "eu" })))
      assert.isDefined(registry.get(Series.keyOf(series, {})))
    }).pipe(Effect.provide(counters), Effect.provideService(Metric.MetricRegistry, registry))
  })

  it.effect("a series updated directly records what Metric.updateUnsafe records, and follows a replaced registry", () =>
    Effect.sync(() => {
      const metric = Telemetry.callSeries({ object_type: "T", handler: "h" }).duration
      const series = Series.make(metric)
      for (const attributes of [{}, { region: "eu" }]) {
        const ours: Series.Registry = new Map()
        const theirs: Series.Registry = new Map()
        const context = (registry: Series.Registry) =>
          Context.make(Metric.MetricRegistry, registry).pipe(Context.add(Metric.CurrentMetricAttributes, attributes))
        for (const value of [0, 0.3, 7, 7, 5000]) {
          Series.update(series, value, ours, attributes, context(ours))
          metric.updateUnsafe(value, context(theirs))
        }
        assert.deepStrictEqual(metric.valueUnsafe(context(ours)), metric.valueUnsafe(context(theirs)))
        // A series removed from the registry is made anew on the next update, as Metric does.
        ours.clear()
        Series.update(series, 1, ours, attributes, context(ours))
        assert.strictEqual((metric.valueUnsafe(context(ours)) as { count: number }).count, 1)
      }
    }))

  it.effect("a call that settles at once records 0 ms; one that waits records its wait on the call's clock", () =>
    Effect.gen(function*() {
      const client = Counter.client("durations")
      yield* client.get()
      const waiting = yield* Effect.forkChild(client.incrementThenSleep({ millis: 250 }))
      yield* TestClock.adjust("250 millis")
      yield* Fiber.join(waiting)
      const get = yield* duration("get")
      assert.deepStrictEqual([get.count, get.sum, get.max], [1, 0, 0])
      const slept = yield* duration("incrementThenSleep")
      assert.deepStrictEqual([slept.count, slept.sum], [1, 250])
    }).pipe(Effect.provide(counters), Effect.provideService(Metric.MetricRegistry, new Map())))

  it.effect("a caller calling one object, then another, then the first, runs each handler as its own object", () =>
    Effect.gen(function*() {
      // A handler's context (its call chain) is kept per caller for the object it last called: a context kept
      // for the wrong object would let `callSelf` wait on its own lock instead of failing as reentrant.
      for (const id of ["a", "b", "a", "a", "b"]) {
        const error = yield* Effect.flip(Counter.client(id).callSelf())
        assert.strictEqual(error._tag, "ReentrantCall")
        assert.deepStrictEqual((error as { chain?: ReadonlyArray<string> }).chain, [`Counter/${id}`])
      }
    }).pipe(Effect.provide(counters)))
})
