/**
 * Type-level guarantees, checked by `tsc` (every `@ts-expect-error` must be an error) and by vitest.
 */
import { DurableObject, DurableObjectCluster, Errors, Storage } from "@durable-object/core"
import { describe, expectTypeOf, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import type { Sharding } from "effect/cluster/Sharding"
import { Counter, Journal, LimitExceeded, Reminders } from "./fixtures.ts"

/** Only compiled, never run. */
const notRun = () => {
  // @ts-expect-error amount must be a number
  Counter.client("a").increment({ amount: "1" })
  // @ts-expect-error get takes no payload
  Counter.client("a").get({ amount: 1 })
  // @ts-expect-error there is no such handler
  Counter.client("a").explode()
}

describe("types", () => {
  it("a call needs the object's runtime: forgetting its layer is a type error where the program runs", () => {
    const call = Counter.client("a").increment({ amount: 1 })
    expectTypeOf(call).toEqualTypeOf<
      Effect.Effect<number, LimitExceeded | DurableObject.CallError, DurableObject.Runtime<"Counter">>
    >()
    const withStorageOnly = call.pipe(Effect.provide(Storage.layerMemory))
    // @ts-expect-error Runtime<"Counter"> is still required
    const run = () => Effect.runPromise(withStorageOnly)
    const complete = call.pipe(
      Effect.provide(
        Counter.layer.pipe(Layer.provide(Storage.layerMemory), Layer.provide(Layer.succeed(Journal, { entries: [] })))
      )
    )
    expectTypeOf(complete).toEqualTypeOf<Effect.Effect<number, LimitExceeded | DurableObject.CallError>>()
    expectTypeOf(run).toBeFunction()
  })

  it("in cluster mode clients keep their exact types: the cluster layers provide the same runtime", () => {
    expectTypeOf(DurableObjectCluster.layer(Counter)).toEqualTypeOf<
      Layer.Layer<DurableObject.Runtime<"Counter">, never, Sharding | Storage.Storage | Storage.Scheduler | Journal>
    >()
    expectTypeOf(DurableObjectCluster.layerClient(Counter)).toEqualTypeOf<
      Layer.Layer<DurableObject.Runtime<"Counter">, never, Sharding>
    >()
    const call = Counter.client("a").increment({ amount: 1 }).pipe(
      Effect.provide(DurableObjectCluster.layerClient(Counter))
    )
    expectTypeOf(call).toEqualTypeOf<Effect.Effect<number, LimitExceeded | DurableObject.CallError, Sharding>>()
  })

  it("a layer requires the services its handlers declare", () => {
    expectTypeOf(Counter.layer).toEqualTypeOf<
      Layer.Layer<
        DurableObject.Runtime<"Counter">,
        never,
        Storage.Storage | import("@durable-object/core").Alarms.Scheduler | Journal
      >
    >()
  })

  it("payloads, replies and errors are typed from the schemas", () => {
    expectTypeOf(notRun).toBeFunction()
    expectTypeOf(Counter.client("a").get()).toEqualTypeOf<
      Effect.Effect<number, DurableObject.CallError, DurableObject.Runtime<"Counter">>
    >()
  })

  it("a handler returning the wrong type, or failing with an undeclared error, does not compile", () => {
    DurableObject.defineObject({
      name: "Bad",
      state: Schema.Struct({ n: Schema.Number }),
      initialState: () => ({ n: 0 }),
      handlers: {
        // @ts-expect-error the reply must be a string
        wrongReply: { success: Schema.String, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.n) },
        // @ts-expect-error LimitExceeded is not this handler's error
        wrongError: { success: Schema.Number, handle: () => Effect.fail(new LimitExceeded({ limit: 1 })) },
        // @ts-expect-error Journal is not a declared service
        undeclared: { success: Schema.Void, handle: () => Effect.asVoid(Journal) }
      }
    })
  })

  it("alarm names and payloads are typed", () => {
    // @ts-expect-error note takes a { text } payload
    DurableObject.scheduleAlarm(Reminders, "r", "note", { in: "1 second" }, { nope: 1 })
    // @ts-expect-error no such alarm
    DurableObject.cancelAlarm(Reminders, "r", "nope")
    expectTypeOf(Errors.DurableObjectError.Type).not.toBeNever()
  })
})
