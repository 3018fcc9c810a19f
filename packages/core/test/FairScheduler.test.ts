import { FairScheduler, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Scheduler } from "effect"
import { Counter, Journal } from "./fixtures.ts"

/** Holds the thread for `millis` of wall time, like a handler doing synchronous work. */
const busy = (millis: number) =>
  Effect.sync(() => {
    const until = performance.now() + millis
    while (performance.now() < until) {
      // spin
    }
  })

/** Resolves after the `setImmediate` callbacks queued before it ran (they run in order). */
const afterQueuedImmediates = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

describe("FairScheduler", () => {
  it.live("a timer runs while many fibers are busy, not after every one of them took a step", () =>
    Effect.gen(function*() {
      const fibers = 50
      const steps = 4
      let done = 0
      let doneWhenTimerRan = -1
      const work = Effect.forEach(
        Array.from({ length: fibers }, (_, i) => i),
        () =>
          Effect.gen(function*() {
            // forEach starts its fibers on the spot, inside one task: yield first so each step is a task.
            yield* Effect.yieldNow
            for (let step = 0; step < steps; step++) {
              yield* busy(2)
              done++
              yield* Effect.yieldNow
            }
          }),
        { concurrency: "unbounded", discard: true }
      )
      yield* Effect.sync(() => setTimeout(() => (doneWhenTimerRan = done), 0))
      yield* work
      assert.strictEqual(done, fibers * steps)
      assert.isAtLeast(doneWhenTimerRan, 0)
      // A 10 ms slice holds about 5 steps of 2 ms; Effect's default scheduler runs all 50 first steps
      // (about 100 ms) before the loop gets a turn.
      assert.isBelow(doneWhenTimerRan, fibers / 2)
    }).pipe(Effect.provide(FairScheduler.layer({ sliceMillis: 10 }))))

  it.live("programs run on it as usual: 1,000 concurrent increments of one object make 1,000", () =>
    Effect.gen(function*() {
      yield* Effect.forEach(
        Array.from({ length: 1_000 }, (_, i) => i),
        () => Counter.client("fair").increment({ amount: 1 }),
        { concurrency: "unbounded", discard: true }
      )
      assert.strictEqual(yield* Counter.client("fair").get(), 1_000)
    }).pipe(
      Effect.provide(
        Counter.layer.pipe(
          Layer.provide(Storage.layerMemory),
          Layer.provide(Layer.succeed(Journal, { entries: [] }))
        )
      ),
      Effect.provide(FairScheduler.layer())
    ))

  it.live("tasks run by priority, lower first, and in arrival order within a priority", () =>
    Effect.gen(function*() {
      const dispatcher = FairScheduler.make().makeDispatcher()
      const order: Array<string> = []
      for (const [name, priority] of [["a", 1], ["b", 0], ["c", 1], ["d", 0], ["e", -1]] as const) {
        dispatcher.scheduleTask(() => order.push(name), priority)
      }
      yield* afterQueuedImmediates
      assert.deepStrictEqual(order, ["e", "b", "d", "a", "c"])
    }))

  it.live("flush runs every queued task at once, including tasks they queue", () =>
    Effect.sync(() => {
      const dispatcher = FairScheduler.make().makeDispatcher()
      const order: Array<number> = []
      dispatcher.scheduleTask(() => {
        order.push(1)
        dispatcher.scheduleTask(() => order.push(3), 0)
      }, 0)
      dispatcher.scheduleTask(() => order.push(2), 0)
      dispatcher.flush()
      assert.deepStrictEqual(order, [1, 2, 3])
    }))

  it.live("the scheduler in a fiber's context is the fair one, for fibers forked inside too", () =>
    Effect.gen(function*() {
      const scheduler = FairScheduler.make()
      const seen = yield* Effect.forkChild(Effect.withFiber((fiber) => Effect.succeed(fiber.cache.scheduler))).pipe(
        Effect.flatMap(Fiber.join),
        Effect.provideService(Scheduler.Scheduler, scheduler)
      )
      assert.strictEqual(seen, scheduler)
    }))

  it("refuses a slice that is not a positive number of milliseconds", () => {
    for (const sliceMillis of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => FairScheduler.make({ sliceMillis }), RangeError)
    }
  })
})
