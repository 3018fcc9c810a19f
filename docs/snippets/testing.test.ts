import { DurableObject, DurableObjectTest } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Mailer, Subscription } from "./alarms.ts"
import { Account, Audit } from "./defining-objects.ts"

// #region layer
const AuditTest = Layer.succeed(Audit, { record: () => Effect.void })

// A fresh in-memory storage (and alarm scheduler) for each test that provides it, plus the Account runtime.
const AccountTest = DurableObjectTest.layer(Account).pipe(Layer.provide(AuditTest))
// #endregion layer

describe("Account", () => {
  // #region persisted
  it.effect("a deposit is committed before its reply", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* Account.client("a").deposit({ amount: 10 }), 10)
      const stored = yield* DurableObjectTest.persistedState(Account, "a") // decoded with the state schema
      assert.strictEqual(stored?.balance, 10)
      // Version 1 is onLoad's commit (it set openedAt), version 2 the deposit's.
      assert.strictEqual(yield* DurableObjectTest.persistedVersion(Account, "a"), 2)
    }).pipe(Effect.provide(AccountTest)))

  it.effect("a refused withdrawal leaves no trace", () =>
    Effect.gen(function*() {
      yield* Account.client("b").deposit({ amount: 10 })
      const error = yield* Effect.flip(Account.client("b").withdraw({ amount: 50 }))
      assert.strictEqual(error._tag, "Overdrawn")
      assert.strictEqual(yield* DurableObjectTest.persistedVersion(Account, "b"), 2) // nothing written
    }).pipe(Effect.provide(AccountTest)))
  // #endregion persisted

  // #region clock
  it.effect("an idle account hibernates after 1 minute and leaves memory after 15", () =>
    Effect.gen(function*() {
      yield* Account.client("c").deposit({ amount: 1 })
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* DurableObject.status(Account, "c"), "hibernated")
      yield* TestClock.adjust("14 minutes")
      assert.strictEqual(yield* DurableObject.status(Account, "c"), "stopped")
      assert.strictEqual(yield* Account.client("c").balance(), 1) // activated again from storage
    }).pipe(Effect.provide(AccountTest)))
  // #endregion clock

  // #region handler
  it.effect("runHandler runs one handler against a given state, without a runtime or storage", () =>
    Effect.gen(function*() {
      const state = { balance: 100, history: [], openedAt: null }
      const run = yield* DurableObjectTest.runHandler(Account, "withdraw", { state, payload: { amount: 30 } })
      assert.strictEqual(run.reply, 70)
      assert.strictEqual(run.state.balance, 70)
      const refused = yield* Effect.flip(
        DurableObjectTest.runHandler(Account, "withdraw", { state, payload: { amount: 300 } })
      )
      assert.strictEqual(refused.requested, 300)
    }).pipe(Effect.provide(AuditTest)))

  it.effect("runAlarm runs one alarm handler, and shows the alarms a handler scheduled", () =>
    Effect.gen(function*() {
      const started = yield* DurableObjectTest.runHandler(Subscription, "startTrial", {
        state: { email: "", plan: "none", digests: 0 },
        payload: { email: "ada@example.com" }
      })
      assert.deepStrictEqual(started.alarms.scheduled.map((a) => a.name), ["welcome", "trialEnds", "digest"])
      const ended = yield* DurableObjectTest.runAlarm(Subscription, "trialEnds", {
        state: started.state,
        payload: { reminder: "Bye" }
      })
      assert.strictEqual(ended.state.plan, "expired")
    }).pipe(Effect.provide(Layer.succeed(Mailer, { send: () => Effect.void }))))
  // #endregion handler
})
