import { DurableObject, DurableObjectTest } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { Counter } from "./fixtures.ts"

describe("smoke", () => {
  it.effect("increments and persists", () =>
    Effect.gen(function*() {
      const c = Counter.client("a")
      assert.strictEqual(yield* c.increment({ amount: 2 }), 2)
      assert.strictEqual(yield* c.increment({ amount: 3 }), 5)
      assert.strictEqual(yield* c.get(), 5)
      assert.strictEqual(yield* DurableObject.call(Counter, "a", "get"), 5)
      const stored = yield* DurableObjectTest.persistedState(Counter, "a")
      assert.strictEqual(stored?.count, 5)
      assert.strictEqual(yield* DurableObject.status(Counter, "a"), "active")
    }).pipe(Effect.provide(DurableObjectTest.layer(Counter))))
})
