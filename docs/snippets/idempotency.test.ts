import { DurableObjectTest } from "@durable-object/core"
import { assert, it } from "@effect/vitest"
import { Effect } from "effect"
import { Account, pay } from "./idempotency.ts"

// #region test
it.effect("a payment sent twice is made once", () =>
  Effect.gen(function*() {
    yield* Account.client("acc-1").deposit({ amount: 100 })
    assert.strictEqual(yield* pay("acc-1", "payment-42", 30), 70)
    assert.strictEqual(yield* pay("acc-1", "payment-42", 30), 70) // the stored reply, not a second payment
    assert.strictEqual(yield* pay("acc-1", "payment-43", 30), 40)

    const reused = yield* Effect.flip(pay("acc-1", "payment-42", 50)) // same key, another payment
    assert.strictEqual(reused._tag, "IdempotencyKeyMismatch")
  }).pipe(Effect.provide(DurableObjectTest.layer(Account))))
// #endregion test
