/**
 * Keeps a synchronous database fair to the event loop.
 *
 * `node:sqlite` blocks the thread for every statement, and a fiber waiting on the connection is resumed on the
 * spot when the previous holder releases it. Many queued fibers therefore run statement after statement in one
 * synchronous chain, and timers, I/O and HTTP requests starve until the queue drains. A time slice bounds that
 * chain: once a slice has used its budget without the event loop getting a turn, the next statement first waits
 * for a `setImmediate`, which runs after the loop has polled for I/O.
 */
import { Effect } from "effect"
import { performance } from "node:perf_hooks"

/** Wraps an effect so that it starts only when the current slice has budget left. */
export type Gate = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

/**
 * A gate with a budget in milliseconds; `Infinity` (or a non-finite budget) turns it into the identity.
 *
 * Real time (`performance.now()`) and not Effect's `Clock`: the budget is about how long the real event loop is
 * blocked, and a `TestClock` must neither stop nor trigger the yields.
 */
export const make = (budgetMillis: number): Gate => {
  if (!Number.isFinite(budgetMillis)) return (effect) => effect
  let sliceStart = 0
  // A marker immediate is scheduled at the start of each slice; while it has not run, the event loop has not had
  // a turn since the slice started. Cheaper than timing every statement against the loop.
  let inSlice = false
  const endSlice = () => {
    inSlice = false
  }
  const startSlice = () => {
    inSlice = true
    sliceStart = performance.now()
    setImmediate(endSlice)
  }
  const yieldToEventLoop = Effect.callback<void>((resume) => {
    const handle = setImmediate(() => resume(Effect.void))
    return Effect.sync(() => clearImmediate(handle))
  })
  return <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.suspend(() => {
      if (!inSlice) {
        startSlice()
        return effect
      }
      if (performance.now() - sliceStart < budgetMillis) return effect
      return Effect.andThen(
        yieldToEventLoop,
        Effect.suspend(() => {
          startSlice()
          return effect
        })
      )
    })
}
