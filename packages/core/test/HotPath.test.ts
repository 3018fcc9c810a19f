/**
 * The hot path of a call (the lock free, the object active, the handler settling without suspending) returns
 * the run's own exit instead of rebuilding it, and tells a settled run from a pending one by the exit brand.
 */
import { Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { isExit } from "../src/internal/call.ts"
import { Counter, Journal } from "./fixtures.ts"

const counters = Counter.layer.pipe(
  Layer.provide(Storage.layerMemory),
  Layer.provide(Layer.succeed(Journal, { entries: [] }))
)

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
})
