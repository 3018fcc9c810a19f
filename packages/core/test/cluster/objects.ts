/**
 * The object the cluster tests run on several processes: a counter whose replies name the runner that served
 * them, with a recurring-free alarm and an `onShutdown` that records where it ran.
 */
import { DurableObject, Errors } from "@durable-object/core"
import { Clock, Context, Effect, Schema } from "effect"

/** The name of the runner process a handler runs on. */
export class RunnerName extends Context.Service<RunnerName, string>()("test/cluster/RunnerName") {}

const Served = Schema.Struct({ count: Schema.Number, runner: Schema.String })

export const Tally = DurableObject.defineObject({
  name: "Tally",
  state: Schema.Struct({
    count: Schema.Number,
    ticks: Schema.Number,
    tickRunners: Schema.Array(Schema.String),
    /** When each tick ran (epoch milliseconds). */
    tickTimes: Schema.Array(Schema.Number),
    shutdownBy: Schema.Array(Schema.String)
  }),
  initialState: () => ({ count: 0, ticks: 0, tickRunners: [], tickTimes: [], shutdownBy: [] }),
  services: [RunnerName],
  handlers: {
    increment: {
      success: Served,
      handle: (_, ctx) =>
        Effect.gen(function*() {
          const runner = yield* RunnerName
          const state = yield* ctx.state.get
          yield* ctx.state.set({ ...state, count: state.count + 1 })
          return { count: state.count + 1, runner }
        })
    },
    get: {
      success: Served,
      handle: (_, ctx) =>
        Effect.gen(function*() {
          const runner = yield* RunnerName
          return { count: (yield* ctx.state.get).count, runner }
        })
    },
    scheduleTick: {
      payload: Schema.Struct({ at: Schema.Number }),
      handle: ({ at }, ctx) => ctx.alarms.schedule("tick", { at })
    }
  },
  alarms: {
    tick: {
      handle: (_, ctx) =>
        Effect.gen(function*() {
          const runner = yield* RunnerName
          const now = yield* Clock.currentTimeMillis
          yield* ctx.state.update((s) => ({
            ...s,
            ticks: s.ticks + 1,
            tickRunners: [...s.tickRunners, runner],
            tickTimes: [...s.tickTimes, now]
          }))
        })
    }
  },
  onShutdown: (ctx) =>
    Effect.gen(function*() {
      const runner = yield* RunnerName
      yield* ctx.state.update((s) => ({ ...s, shutdownBy: [...s.shutdownBy, runner] }))
    }),
  options: { callTimeout: "5 seconds" }
})

/** A typed error of `Relay`. */
export class RelayError extends Schema.TaggedError<RelayError>()("RelayError", { reason: Schema.String }) {}

/**
 * Calls across runners and the errors they end in: a chain that comes back (`viaPeer` → `back` → `hello`), a
 * typed failure, a defect, a slow handler behind a mailbox of one, and a call timeout of one second.
 */
export const Relay = DurableObject.defineObject({
  name: "Relay",
  state: Schema.Struct({}),
  initialState: () => ({}),
  services: [RunnerName],
  handlers: {
    hello: { success: Schema.String, handle: () => Effect.service(RunnerName) },
    viaPeer: {
      payload: Schema.Struct({ peer: Schema.String }),
      success: Schema.String,
      error: Errors.DurableObjectError,
      handle: ({ peer }, ctx): Effect.Effect<string, Errors.DurableObjectError> =>
        DurableObject.call(Relay, peer, "back", { origin: ctx.id }) as any
    },
    back: {
      payload: Schema.Struct({ origin: Schema.String }),
      success: Schema.String,
      error: Errors.DurableObjectError,
      handle: ({ origin }): Effect.Effect<string, Errors.DurableObjectError> =>
        DurableObject.call(Relay, origin, "hello") as any
    },
    fail: { error: RelayError, handle: () => Effect.fail(new RelayError({ reason: "asked to" })) },
    die: { handle: () => Effect.die(new Error("boom")) },
    sleep: { payload: Schema.Struct({ millis: Schema.Number }), handle: ({ millis }) => Effect.sleep(millis) }
  },
  options: { mailboxCapacity: 1, callTimeout: "1 second" }
})
