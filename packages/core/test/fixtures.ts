import { DurableObject, Errors, Storage } from "@durable-object/core"
import { Clock, Context, DateTime, Deferred, Effect, Layer, Schema } from "effect"

export class LimitExceeded extends Schema.TaggedError<LimitExceeded>()("LimitExceeded", { limit: Schema.Number }) {}

/** Records what hooks and handlers did, so tests can observe side effects outside state. */
export class Journal extends Context.Service<Journal, { readonly entries: Array<string> }>()("test/Journal") {}

/** A gate a handler can wait on, so tests control when it finishes. */
export class Gate extends Context.Service<Gate, { readonly wait: (key: string) => Effect.Effect<void> }>()(
  "test/Gate"
) {}

export const Counter = DurableObject.defineObject({
  name: "Counter",
  state: Schema.Struct({ count: Schema.Number, lastIncrementedAt: Schema.NullOr(Schema.DateTimeUtc) }),
  initialState: () => ({ count: 0, lastIncrementedAt: null }),
  services: [Journal],
  handlers: {
    increment: {
      payload: Schema.Struct({ amount: Schema.Number }),
      success: Schema.Number,
      error: LimitExceeded,
      handle: ({ amount }, ctx) =>
        Effect.gen(function*() {
          const state = yield* ctx.state.get
          const count = state.count + amount
          if (count > 1_000_000) return yield* new LimitExceeded({ limit: 1_000_000 })
          const now = yield* Clock.currentTimeMillis
          yield* ctx.state.set({ count, lastIncrementedAt: DateTime.makeUnsafe(now) })
          return count
        })
    },
    get: { success: Schema.Number, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.count) },
    reset: { handle: (_, ctx) => ctx.state.update((s) => ({ ...s, count: 0 })) },
    /** Changes state, then fails: the change must not survive. */
    incrementThenFail: {
      error: LimitExceeded,
      handle: (_, ctx) =>
        Effect.gen(function*() {
          yield* ctx.state.update((s) => ({ ...s, count: s.count + 100 }))
          return yield* new LimitExceeded({ limit: 0 })
        })
    },
    /** Changes state, then dies. */
    incrementThenDie: {
      handle: (_, ctx) =>
        Effect.gen(function*() {
          yield* ctx.state.update((s) => ({ ...s, count: s.count + 100 }))
          return yield* Effect.die(new Error("boom"))
        })
    },
    /** Changes state, then sleeps for `millis` (so a timeout or an interruption lands mid-handler). */
    incrementThenSleep: {
      payload: Schema.Struct({ millis: Schema.Number }),
      success: Schema.Number,
      handle: ({ millis }, ctx) =>
        Effect.gen(function*() {
          yield* ctx.state.update((s) => ({ ...s, count: s.count + 100 }))
          yield* Effect.sleep(millis)
          return (yield* ctx.state.get).count
        })
    },
    /** Calls its own object: must fail fast instead of deadlocking. */
    callSelf: {
      success: Schema.Number,
      error: Errors.DurableObjectError,
      // The outer caller's context has this runtime, so the inner call resolves; the cast hides the cycle.
      handle: (_, ctx): Effect.Effect<number, Errors.DurableObjectError> =>
        DurableObject.call(Counter, ctx.id, "get") as any
    },
    log: {
      payload: Schema.String,
      handle: (message) => Effect.flatMap(Journal, (j) => Effect.sync(() => j.entries.push(message)))
    }
  },
  onLoad: (ctx) => Effect.flatMap(Journal, (j) => Effect.sync(() => j.entries.push(`load:${ctx.id}`))),
  onShutdown: (ctx) => Effect.flatMap(Journal, (j) => Effect.sync(() => j.entries.push(`shutdown:${ctx.id}`))),
  options: { hibernateAfter: "5 minutes", shutdownAfter: "1 hour", mailboxCapacity: 1024, callTimeout: "5 seconds" }
})

/** An object whose handler waits on a gate, for mailbox and ordering tests. */
export const Slow = DurableObject.defineObject({
  name: "Slow",
  state: Schema.Struct({ log: Schema.Array(Schema.String) }),
  initialState: () => ({ log: [] }),
  services: [Gate],
  handlers: {
    append: {
      payload: Schema.Struct({ entry: Schema.String, gate: Schema.optional(Schema.String) }),
      success: Schema.Array(Schema.String),
      handle: ({ entry, gate }, ctx) =>
        Effect.gen(function*() {
          const before = yield* ctx.state.get
          if (gate !== undefined) yield* Effect.flatMap(Gate, (g) => g.wait(gate))
          const log = [...before.log, entry]
          yield* ctx.state.set({ log })
          return log
        })
    },
    /** Like `append` with a gate, but the wait cannot be interrupted (so a timeout cannot free the lock). */
    appendStubborn: {
      payload: Schema.Struct({ entry: Schema.String, gate: Schema.String }),
      success: Schema.Array(Schema.String),
      handle: ({ entry, gate }, ctx) =>
        Effect.gen(function*() {
          const before = yield* ctx.state.get
          yield* Effect.uninterruptible(Effect.flatMap(Gate, (g) => g.wait(gate)))
          const log = [...before.log, entry]
          yield* ctx.state.set({ log })
          return log
        })
    },
    read: { success: Schema.Array(Schema.String), handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.log) }
  },
  options: { mailboxCapacity: 2, callTimeout: "1 minute" }
})

/** A ping-pong pair for cross-object reentrancy: A calls B calls A. */
export const PingA = DurableObject.defineObject({
  name: "PingA",
  state: Schema.Struct({}),
  initialState: () => ({}),
  handlers: {
    viaB: {
      success: Schema.String,
      error: Errors.DurableObjectError,
      handle: (_, ctx): Effect.Effect<string, Errors.DurableObjectError> =>
        DurableObject.call(PingB, ctx.id, "backToA") as any
    },
    hello: { success: Schema.String, handle: () => Effect.succeed("hello from A") }
  }
})
export const PingB = DurableObject.defineObject({
  name: "PingB",
  state: Schema.Struct({}),
  initialState: () => ({}),
  handlers: {
    backToA: {
      success: Schema.String,
      error: Errors.DurableObjectError,
      handle: (_, ctx): Effect.Effect<string, Errors.DurableObjectError> =>
        DurableObject.call(PingA, ctx.id, "hello") as any
    }
  }
})

export const makeJournal = () => Layer.succeed(Journal, { entries: [] })

/** Gates keyed by name: `wait` blocks until `open(name)`. */
export const makeGates = Effect.gen(function*() {
  const gates = new Map<string, Deferred.Deferred<void>>()
  const gate = (key: string) => {
    let d = gates.get(key)
    if (d === undefined) {
      d = Deferred.makeUnsafe<void>()
      gates.set(key, d)
    }
    return d
  }
  return {
    layer: Layer.succeed(Gate, { wait: (key) => Deferred.await(gate(key)) }),
    open: (key: string) => Deferred.succeed(gate(key), undefined)
  }
})

/** A storage shared between several runtimes in one test (each build of the layer gets its own scheduler). */
export const sharedMemoryStorage = Effect.map(Storage.makeMemory, (s) => Storage.layerWithScheduler(Effect.succeed(s)))

/** The Elixir original's README rate limiter, as written there: schedule in onLoad, reset and reschedule in the alarm. */
export const RateLimiter = DurableObject.defineObject({
  name: "RateLimiter",
  state: Schema.Struct({ requests: Schema.Number, windowStart: Schema.NullOr(Schema.DateTimeUtc) }),
  initialState: () => ({ requests: 0, windowStart: null }),
  handlers: {
    check: {
      payload: Schema.Struct({ limit: Schema.Number }),
      success: Schema.Literals(["allowed", "rate_limited"]),
      handle: ({ limit }, ctx) =>
        ctx.state.modify((s) =>
          s.requests < limit ? ["allowed" as const, { ...s, requests: s.requests + 1 }] : ["rate_limited" as const, s]
        )
    }
  },
  alarms: {
    resetWindow: {
      handle: (_, ctx) =>
        Effect.gen(function*() {
          const now = yield* DateTime.now
          yield* ctx.state.set({ requests: 0, windowStart: now })
          yield* ctx.alarms.schedule("resetWindow", { in: "1 minute" })
        })
    }
  },
  onLoad: (ctx) =>
    Effect.gen(function*() {
      const state = yield* ctx.state.get
      if (state.windowStart === null) {
        yield* ctx.state.set({ ...state, windowStart: yield* DateTime.now })
        yield* ctx.alarms.schedule("resetWindow", { in: "1 minute" })
      }
    })
})

export class AlarmFailure extends Schema.TaggedError<AlarmFailure>()("AlarmFailure", {}) {}

/** An object exercising the alarm API: it records every alarm that fires in its state. */
export const Reminders = DurableObject.defineObject({
  name: "Reminders",
  state: Schema.Struct({
    fired: Schema.Array(Schema.String),
    attempts: Schema.Array(Schema.Number),
    failUntilAttempt: Schema.Number
  }),
  initialState: () => ({ fired: [], attempts: [], failUntilAttempt: 0 }),
  handlers: {
    remind: {
      payload: Schema.Struct({ text: Schema.String, inMillis: Schema.Number }),
      handle: ({ inMillis, text }, ctx) => ctx.alarms.schedule("note", { in: inMillis }, { text })
    },
    remindAt: {
      payload: Schema.Struct({ text: Schema.String, at: Schema.Number }),
      handle: ({ at, text }, ctx) => ctx.alarms.schedule("note", { at }, { text })
    },
    ping: {
      payload: Schema.Struct({ inMillis: Schema.Number }),
      handle: ({ inMillis }, ctx) => ctx.alarms.schedule("ping", { in: inMillis })
    },
    every: {
      payload: Schema.Struct({ cron: Schema.String }),
      handle: ({ cron }, ctx) => ctx.alarms.schedule("tick", { cron })
    },
    cancel: { payload: Schema.String, handle: (name, ctx) => ctx.alarms.cancel(name as "note" | "ping") },
    cancelAll: { handle: (_, ctx) => ctx.alarms.cancelAll },
    list: {
      success: Schema.Array(Schema.String),
      handle: (_, ctx) =>
        Effect.map(
          Effect.orDie(ctx.alarms.list),
          (alarms) => alarms.map((a) => `${a.name}@${a.fireAt.epochMilliseconds}`)
        )
    },
    scheduleThenFail: {
      error: AlarmFailure,
      handle: (_, ctx) => Effect.andThen(ctx.alarms.schedule("ping", { in: 1000 }), Effect.fail(new AlarmFailure()))
    },
    flaky: {
      payload: Schema.Struct({ failUntilAttempt: Schema.Number }),
      handle: ({ failUntilAttempt }, ctx) =>
        Effect.andThen(
          ctx.state.update((s) => ({ ...s, failUntilAttempt })),
          ctx.alarms.schedule("flaky", { in: 1000 })
        )
    },
    read: {
      success: Schema.Struct({ fired: Schema.Array(Schema.String), attempts: Schema.Array(Schema.Number) }),
      handle: (_, ctx) => Effect.map(ctx.state.get, ({ attempts, fired }) => ({ fired, attempts }))
    }
  },
  alarms: {
    note: {
      payload: Schema.Struct({ text: Schema.String }),
      handle: ({ text }, ctx) => ctx.state.update((s) => ({ ...s, fired: [...s.fired, `note:${text}`] }))
    },
    ping: { handle: (_, ctx) => ctx.state.update((s) => ({ ...s, fired: [...s.fired, "ping"] })) },
    tick: { handle: (_, ctx) => ctx.state.update((s) => ({ ...s, fired: [...s.fired, "tick"] })) },
    flaky: {
      handle: (_, ctx) =>
        Effect.gen(function*() {
          const state = yield* ctx.state.get
          yield* ctx.state.set({ ...state, attempts: [...state.attempts, ctx.alarm.attempt] })
          if (ctx.alarm.attempt <= state.failUntilAttempt) return yield* new AlarmFailure()
          yield* ctx.state.update((s) => ({ ...s, fired: [...s.fired, `flaky:${ctx.alarm.isRetry}`] }))
        })
    }
  },
  options: { alarmRetry: { maxRetries: 2, initialDelay: "1 second", factor: 2 } }
})
