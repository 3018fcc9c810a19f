import { DurableObject } from "@durable-object/core"
import { Context, Effect, Schema } from "effect"

export class LimitExceeded extends Schema.TaggedError<LimitExceeded>()("LimitExceeded", { limit: Schema.Number }) {}

export const Counter = DurableObject.defineObject({
  name: "Counter",
  state: Schema.Struct({ count: Schema.Number, lastIncrementedAt: Schema.NullOr(Schema.DateTimeUtc) }),
  initialState: () => ({ count: 0, lastIncrementedAt: null }),
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
          const now = yield* Effect.map(
            Effect.clockWith((c) => Effect.succeed(c.currentTimeMillisUnsafe())),
            (ms) => ms
          )
          yield* ctx.state.set({ count, lastIncrementedAt: DateTimeFromMillis(now) })
          return count
        })
    },
    get: { success: Schema.Number, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.count) },
    reset: { handle: (_, ctx) => ctx.state.update((s) => ({ ...s, count: 0 })) }
  },
  options: { hibernateAfter: "5 minutes", shutdownAfter: "1 hour", mailboxCapacity: 1024, callTimeout: "5 seconds" }
})

import { DateTime } from "effect"
const DateTimeFromMillis = (ms: number) => DateTime.makeUnsafe(ms)

export class Greeting extends Context.Service<Greeting, { readonly prefix: string }>()("test/Greeting") {}
