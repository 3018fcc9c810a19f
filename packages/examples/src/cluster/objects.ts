/**
 * The cluster demo's object: a visit counter whose replies name the runner process that served them, so the
 * demo can show where each object lives as runners come and go.
 */
import { DurableObject } from "@durable-object/core"
import { Context, Effect, Schema } from "effect"

/** The name of the runner process a handler runs on. */
export class RunnerName extends Context.Service<RunnerName, string>()("examples/cluster/RunnerName") {}

/** A visit counter type named `name`, with `options` (the benchmark makes one that hibernates at once). */
export const defineVisits = <const Name extends string>(name: Name, options?: DurableObject.Options) =>
  DurableObject.defineObject({
    name,
    state: Schema.Struct({ count: Schema.Number }),
    initialState: () => ({ count: 0 }),
    services: [RunnerName],
    handlers: {
      visit: {
        success: Schema.Struct({ count: Schema.Number, runner: Schema.String }),
        handle: (_, ctx) =>
          Effect.gen(function*() {
            const count = yield* ctx.state.modify((s) => [s.count + 1, { count: s.count + 1 }])
            return { count, runner: yield* Effect.service(RunnerName) }
          })
      },
      get: { success: Schema.Number, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.count) }
    },
    options
  })

export const Visits = defineVisits("Visits")
