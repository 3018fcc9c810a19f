/**
 * Spans for the runtime's hot paths.
 *
 * @internal
 */
import { Effect, type Fiber, Tracer } from "effect"

/**
 * Wraps an effect in a span without capturing a stack trace: the data-last `Effect.withSpan` captures one on
 * every call (an `Error` per span), which costs more than the rest of a call. Our span names and attributes
 * already say where they come from.
 */
export const span = (name: string, attributes: Record<string, unknown>) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.withSpan(self, name, { attributes, captureStackTrace: false })

/**
 * Whether spans made on this fiber reach a tracing backend. With tracing off, or only Effect's built-in
 * tracer installed, nobody can see a span, and making one costs as much as a good part of a call.
 */
export const tracing = (fiber: Fiber.Fiber<unknown, unknown>): boolean => {
  const cache = fiber.cache
  return cache.tracerEnabled && cache.tracer !== undefined && cache.tracer !== Tracer.nativeTracer
}
