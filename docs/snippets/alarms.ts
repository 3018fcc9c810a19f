import { DurableObject } from "@durable-object/core"
import { Context, DateTime, Effect, Schema } from "effect"

export class MailError extends Schema.TaggedError<MailError>()("MailError", { reason: Schema.String }) {}

/** The application's mail service; `key` lets the provider drop a repeated send. */
export class Mailer extends Context.Service<Mailer, {
  readonly send: (mail: { to: string; subject: string; key: string }) => Effect.Effect<void, MailError>
}>()("app/Mailer") {}

// #region define
export const Subscription = DurableObject.defineObject({
  name: "Subscription",
  state: Schema.Struct({
    email: Schema.String,
    plan: Schema.Literals(["none", "trial", "paid", "expired"]),
    digests: Schema.Int
  }),
  initialState: () => ({ email: "", plan: "none" as const, digests: 0 }),
  services: [Mailer],
  handlers: {
    startTrial: {
      payload: Schema.Struct({ email: Schema.String }),
      success: Schema.Void,
      handle: ({ email }, ctx) =>
        Effect.gen(function*() {
          yield* ctx.state.set({ email, plan: "trial", digests: 0 })
          // These three commit together with the state change, or not at all.
          yield* ctx.alarms.schedule("welcome", { in: 0 }) // due now: the mail goes out once this commits
          yield* ctx.alarms.schedule("trialEnds", { in: "14 days" }, { reminder: "Your trial has ended" })
          yield* ctx.alarms.schedule("digest", { cron: "0 8 * * 1", timeZone: "Europe/Paris" }) // Mondays 8:00
        })
    },
    pay: {
      handle: (_, ctx) =>
        Effect.andThen(ctx.state.update((s) => ({ ...s, plan: "paid" as const })), ctx.alarms.cancel("trialEnds"))
    },
    unsubscribe: {
      handle: (_, ctx) =>
        Effect.andThen(ctx.state.update((s) => ({ ...s, plan: "none" as const })), ctx.alarms.cancelAll)
    }
  },
  alarms: {
    welcome: {
      handle: (_, ctx) =>
        Effect.gen(function*() {
          const { email } = yield* ctx.state.get
          // A failure here retries the alarm with backoff. The handler may run more than once,
          // so the send carries a key that is the same on every attempt.
          yield* Mailer.use((mailer) =>
            mailer.send({
              to: email,
              subject: "Welcome!",
              key: `${ctx.id}/welcome/${ctx.alarm.scheduledAt.epochMilliseconds}`
            })
          )
        })
    },
    trialEnds: {
      payload: Schema.Struct({ reminder: Schema.String }),
      handle: ({ reminder }, ctx) =>
        Effect.gen(function*() {
          const { email } = yield* ctx.state.get
          const key = `${ctx.id}/trialEnds/${ctx.alarm.scheduledAt.epochMilliseconds}`
          yield* Mailer.use((mailer) => mailer.send({ to: email, subject: reminder, key }))
          yield* ctx.state.update((s) => ({ ...s, plan: "expired" as const }))
        })
    },
    digest: {
      // A cron alarm re-arms itself for its next occurrence after each firing.
      handle: (_, ctx) => ctx.state.update((s) => ({ ...s, digests: s.digests + 1 }))
    }
  },
  options: { alarmRetry: { maxRetries: 10, initialDelay: "5 seconds", factor: 2, maxDelay: "10 minutes" } }
})
// #endregion define

// #region outside
// From outside the object: serialized with its calls, committed before these return.
export const extendTrial = (id: string, until: DateTime.Utc) =>
  DurableObject.scheduleAlarm(Subscription, id, "trialEnds", { at: until }, {
    reminder: "Your extended trial has ended"
  })

export const stopDigest = (id: string) => DurableObject.cancelAlarm(Subscription, id, "digest")

export const pendingAlarms = (id: string) =>
  Effect.map(DurableObject.listAlarms(Subscription, id), (alarms) =>
    alarms.map((a) => ({
      name: a.name,
      fireAt: DateTime.formatIso(a.fireAt),
      attempts: a.attempts, // firings that did not commit
      cron: a.cron, // the expression of a recurring alarm
      failed: a.failed?.error // set once the retries are exhausted
    })))
// #endregion outside
