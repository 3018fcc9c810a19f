/**
 * The object definitions the scenarios call: a counter (a read handler and a durable write handler) and an
 * object with an alarm that reports how late it fired.
 */
import { DurableObject } from "@durable-object/core"
import { Clock, Context, Effect, Schema } from "effect"

const CounterState = Schema.Struct({ count: Schema.Number })

/** A counter: `get` only reads its state; `increment` changes it, so its reply waits for the commit. */
export const makeCounter = <const Name extends string>(name: Name, options?: DurableObject.Options) =>
  DurableObject.defineObject({
    name,
    state: CounterState,
    initialState: () => ({ count: 0 }),
    handlers: {
      get: { success: Schema.Number, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.count) },
      increment: {
        success: Schema.Number,
        handle: (_, ctx) => ctx.state.modify((s) => [s.count + 1, { count: s.count + 1 }])
      }
    },
    // Under a closed loop of 1,000 callers a call may wait long behind others; the benchmark measures that
    // wait instead of failing it.
    options: { callTimeout: "5 minutes", ...options }
  })

export const Counter = makeCounter("BenchCounter")

/** Where alarm handlers report: how late each alarm fired, in milliseconds. */
export class AlarmRecorder extends Context.Service<AlarmRecorder, {
  readonly fired: (latenessMs: number) => Effect.Effect<void>
}>()("@durable-object/bench/AlarmRecorder") {}

/** An object with one alarm, `tick`, that counts its firings and reports its lateness. */
export const Alarmed = DurableObject.defineObject({
  name: "BenchAlarmed",
  state: CounterState,
  initialState: () => ({ count: 0 }),
  services: [AlarmRecorder],
  handlers: {
    arm: {
      payload: Schema.Struct({ at: Schema.Number }),
      handle: ({ at }, ctx) => ctx.alarms.schedule("tick", { at })
    }
  },
  alarms: {
    tick: {
      handle: (_, ctx) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          yield* ctx.state.update((s) => ({ count: s.count + 1 }))
          const recorder = yield* AlarmRecorder
          yield* recorder.fired(now - ctx.alarm.scheduledAt.epochMilliseconds)
        })
    }
  },
  options: { callTimeout: "5 minutes" }
})
