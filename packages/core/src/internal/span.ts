/**
 * Spans for the runtime's hot paths.
 *
 * @internal
 */
import { Context, Effect, type Fiber, References, Tracer } from "effect"

/**
 * Whether spans made on `fiber` can be seen by anyone: tracing is on and a tracer other than Effect's
 * default in-memory one (which exports nothing) is installed.
 */
export const tracing = (fiber: Fiber.Fiber<unknown, unknown>): boolean => {
  const cache = fiber.cache
  return cache.tracerEnabled && cache.tracer !== undefined && cache.tracer !== Tracer.nativeTracer
}

/** `tracing` for work run in `context` (its tracer and whether tracing is on). */
export const tracingIn = (context: Context.Context<never>): boolean =>
  Context.get(context, References.TracerEnabled) && Context.get(context, Tracer.Tracer) !== Tracer.nativeTracer

/**
 * Wraps an effect in a span without capturing a stack trace: the data-last `Effect.withSpan` captures one on
 * every call (an `Error` per span), which costs more than the rest of a call. Our span names and attributes
 * already say where they come from. Without a tracer that can export it (see `tracing`) no span is made:
 * nobody could see it, and it would cost more than many of the operations it would wrap.
 */
export const span = (name: string, attributes: Record<string, unknown>) => <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.withFiber((fiber) =>
    tracing(fiber) ? Effect.withSpan(self, name, { attributes, captureStackTrace: false }) : self
  )
