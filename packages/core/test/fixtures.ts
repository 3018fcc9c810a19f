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

/** A storage shared between several runtimes in one test. */
export const sharedMemoryStorage = Effect.map(Storage.makeMemory, (s) => Layer.succeed(Storage.Storage, s))
