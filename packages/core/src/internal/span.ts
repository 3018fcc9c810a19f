/**
 * Spans for the runtime's hot paths.
 *
 * @internal
 */
import { Effect } from "effect"

/**
 * Wraps an effect in a span without capturing a stack trace: the data-last `Effect.withSpan` captures one on
 * every call (an `Error` per span), which costs more than the rest of a call. Our span names and attributes
 * already say where they come from.
 */
export const span = (name: string, attributes: Record<string, unknown>) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.withSpan(self, name, { attributes, captureStackTrace: false })
