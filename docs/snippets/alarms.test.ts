// #region test
import { DurableObjectTest } from "@durable-object/core"
import { assert, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { Mailer, MailError, Subscription } from "./alarms.ts"

/** A mailer that records what it sends, and fails the first `failures` sends. */
const recordingMailer = (failures: number) => {
  const sent: Array<string> = []
  let attempts = 0
  const layer = Layer.succeed(Mailer, {
    send: (mail) =>
      Effect.suspend(() =>
        ++attempts <= failures
          ? Effect.fail(new MailError({ reason: "SMTP is down" }))
          : Effect.sync(() => sent.push(`${mail.to}: ${mail.subject}`))
      )
  })
  return { sent, layer }
}

it.effect("the trial ends after 14 days of virtual time", () => {
  const mailer = recordingMailer(0)
  return Effect.gen(function*() {
    yield* Subscription.client("s1").startTrial({ email: "ada@example.com" })
    yield* TestClock.adjust("1 millis") // the scheduler fires what is due
    assert.deepStrictEqual(mailer.sent, ["ada@example.com: Welcome!"])

    yield* TestClock.adjust("14 days")
    const state = yield* DurableObjectTest.persistedState(Subscription, "s1")
    assert.strictEqual(state?.plan, "expired")
    assert.strictEqual(state?.digests, 2) // two Monday mornings in 14 days
    assert.deepStrictEqual(mailer.sent, ["ada@example.com: Welcome!", "ada@example.com: Your trial has ended"])
  }).pipe(Effect.provide(DurableObjectTest.layer(Subscription).pipe(Layer.provide(mailer.layer))))
})

it.effect("a failing alarm is retried with backoff until it succeeds", () => {
  const mailer = recordingMailer(2)
  return Effect.gen(function*() {
    yield* Subscription.client("s2").startTrial({ email: "grace@example.com" })
    yield* TestClock.adjust("1 millis") // attempt 1 fails; retry in 5 s
    yield* TestClock.adjust("5 seconds") // attempt 2 fails; retry in 10 s
    assert.deepStrictEqual(mailer.sent, [])
    yield* TestClock.adjust("10 seconds") // attempt 3 succeeds
    assert.deepStrictEqual(mailer.sent, ["grace@example.com: Welcome!"])
  }).pipe(Effect.provide(DurableObjectTest.layer(Subscription).pipe(Layer.provide(mailer.layer))))
})
// #endregion test
