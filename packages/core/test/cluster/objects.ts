/**
 * The object the cluster tests run on several processes: a counter whose replies name the runner that served
 * them, with a recurring-free alarm and an `onShutdown` that records where it ran.
 */
import { DurableObject } from "@durable-object/core"
import { Context, Effect, Schema } from "effect"

/** The name of the runner process a handler runs on. */
export class RunnerName extends Context.Service<RunnerName, string>()("test/cluster/RunnerName") {}

const Served = Schema.Struct({ count: Schema.Number, runner: Schema.String })

export const Tally = DurableObject.defineObject({
  name: "Tally",
  state: Schema.Struct({
    count: Schema.Number,
    ticks: Schema.Number,
    tickRunners: Schema.Array(Schema.String),
    shutdownBy: Schema.Array(Schema.String)
  }),
  initialState: () => ({ count: 0, ticks: 0, tickRunners: [], shutdownBy: [] }),
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
          yield* ctx.state.update((s) => ({ ...s, ticks: s.ticks + 1, tickRunners: [...s.tickRunners, runner] }))
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
