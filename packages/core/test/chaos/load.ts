/**
 * In-process load for the chaos tests: fibers incrementing counters in a loop, every call recorded in a
 * counter history, every failure classified as a typed error (by tag) or not (a defect or an interruption,
 * which the suite never accepts).
 */
import { DurableObject } from "@durable-object/core"
import { Cause, Effect, Exit, Fiber, Schema } from "effect"
import { HistoryRecorder, now } from "./history.ts"

/**
 * A counter like the fixtures' `Counter` (same type name and state, so the same stored rows), with a short
 * call timeout, so a storage that hangs shows up within a second.
 */
export const ChaosCounter = DurableObject.defineObject({
  name: "Counter",
  state: Schema.Struct({ count: Schema.Number, lastIncrementedAt: Schema.NullOr(Schema.DateTimeUtc) }),
  initialState: () => ({ count: 0, lastIncrementedAt: null }),
  handlers: {
    increment: {
      payload: Schema.Struct({ amount: Schema.Number }),
      success: Schema.Number,
      handle: ({ amount }, ctx) =>
        ctx.state.modify((s) => [s.count + amount, { count: s.count + amount, lastIncrementedAt: null }])
    }
  },
  options: { callTimeout: "1 second" }
})

export interface LoadStats {
  readonly history: HistoryRecorder
  /** Typed failures, by tag. */
  readonly errors: Map<string, number>
  /** The first message of each tag. */
  readonly samples: Map<string, string>
  /** Failures that were not typed errors: a defect or an interruption, pretty-printed. */
  readonly untyped: Array<string>
  /** Completion instants (ms, `performance.now()`) of acknowledged calls. */
  readonly ackTimes: Array<number>
  /** The longest call, and when it started (ms). */
  longest: { ms: number; startedAt: number; outcome: string }
}

export const emptyStats = (): LoadStats => ({
  history: new HistoryRecorder(),
  errors: new Map(),
  samples: new Map(),
  untyped: [],
  ackTimes: [],
  longest: { ms: 0, startedAt: 0, outcome: "" }
})

/** The first acknowledgement at or after `since` (ms), or undefined. */
export const firstAckAfter = (stats: LoadStats, since: number) => stats.ackTimes.find((t) => t >= since)

/**
 * Starts `fibers` fibers calling `increment(id)` on random ids among `objects` until `stop` runs; `stop`
 * waits for the calls in flight to finish.
 */
export const startLoad = <E extends { readonly _tag: string }, R>(
  increment: (id: string) => Effect.Effect<number, E, R>,
  options: { readonly objects: number; readonly fibers: number; readonly prefix?: string },
  stats: LoadStats = emptyStats()
) =>
  Effect.gen(function*() {
    const state = { running: true }
    const one = Effect.suspend(() => {
      const id = `${options.prefix ?? ""}obj-${Math.floor(Math.random() * options.objects)}`
      const handle = stats.history.invoke(id)
      const startedAt = performance.now()
      return Effect.map(Effect.exit(increment(id)), (exit) => {
        const ended = performance.now()
        let outcome: string
        if (Exit.isSuccess(exit)) {
          stats.history.ok(handle, exit.value, now())
          stats.ackTimes.push(ended)
          outcome = "ok"
        } else {
          const error = Cause.findError(exit.cause)
          if (error._tag === "Success") {
            outcome = error.success._tag
            stats.errors.set(outcome, (stats.errors.get(outcome) ?? 0) + 1)
            if (!stats.samples.has(outcome)) stats.samples.set(outcome, String((error.success as any).message))
          } else {
            outcome = "untyped"
            if (stats.untyped.length < 5) stats.untyped.push(Cause.pretty(exit.cause))
            else stats.untyped.push("…")
          }
          stats.history.fail(handle, outcome, now())
        }
        if (ended - startedAt > stats.longest.ms) stats.longest = { ms: ended - startedAt, startedAt, outcome }
      })
    })
    const loop = Effect.whileLoop({
      while: () => state.running,
      body: () => Effect.andThen(one, Effect.yieldNow),
      step: () => {}
    })
    const fibers = yield* Effect.forEach(Array.from({ length: options.fibers }), () => Effect.forkChild(loop))
    return {
      stats,
      stop: Effect.andThen(
        Effect.sync(() => {
          state.running = false
        }),
        Fiber.joinAll(fibers)
      )
    }
  })

/** A one-line account of a load run. */
export const describeLoad = (stats: LoadStats) =>
  `${stats.ackTimes.length} acknowledged, errors ${JSON.stringify(Object.fromEntries(stats.errors))}, ` +
  `${stats.untyped.length} untyped, longest call ${Math.round(stats.longest.ms)} ms (${stats.longest.outcome})`
