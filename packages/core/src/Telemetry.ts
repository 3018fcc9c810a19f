/**
 * Span names, attribute keys and metrics of durable-object, in one place so dashboards and tests can rely on
 * them. Export them with `@effect/opentelemetry` like any other Effect telemetry.
 *
 * @since 0.1.0
 */
import { Metric } from "effect"

/**
 * Span around every call through a client or `DurableObject.call`, from validation to reply.
 *
 * @since 0.1.0
 * @category spans
 */
export const spanCall = "durable_object.call"

/**
 * Span around an activation: loading the stored state and running `onLoad`.
 *
 * @since 0.1.0
 * @category spans
 */
export const spanActivate = "durable_object.activate"

/**
 * Span around a graceful stop (`onShutdown` and its commit).
 *
 * @since 0.1.0
 * @category spans
 */
export const spanShutdown = "durable_object.shutdown"

/**
 * Span attribute keys.
 *
 * @since 0.1.0
 * @category spans
 */
export const attributes = {
  objectType: "durable_object.type",
  objectId: "durable_object.id",
  handler: "durable_object.handler",
  outcome: "durable_object.outcome"
} as const

/**
 * How a call ended, as recorded in `durable_object_calls_total`'s `outcome` attribute.
 *
 * @since 0.1.0
 * @category metrics
 */
export type CallOutcome =
  | "success"
  | "failure"
  | "defect"
  | "timeout"
  | "interrupted"
  | "overloaded"
  | "rejected"

/**
 * Calls, by `object_type`, `handler` and `outcome`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const calls = Metric.counter("durable_object_calls_total", {
  description: "Calls to durable objects, by object type, handler and outcome",
  incremental: true
})

const callDurationBoundaries = Metric.exponentialBoundaries({ start: 0.25, factor: 2, count: 16 })

/**
 * Call duration in milliseconds (mailbox wait, handler and commit), by `object_type` and `handler`. A call
 * that settles in the synchronous step it started in (it neither waited for the object, nor suspended, nor
 * waited for a commit) is recorded as 0 without reading the clock again: no time passes on a `TestClock` in
 * such a step, and on the real, millisecond clock it takes well under one (unless user code computes for longer
 * without yielding, which the event loop's delay shows).
 *
 * @since 0.1.0
 * @category metrics
 */
export const callDuration = Metric.histogram("durable_object_call_duration_ms", {
  description: "Duration of durable object calls in milliseconds, waiting and committing included",
  boundaries: callDurationBoundaries
})

/**
 * `calls` and `callDuration` for one fixed set of attributes: the same series as
 * `Metric.withAttributes(calls, attributes)`, but each its own metric, so an update resolves its series
 * without deriving a context first, and series of different handlers do not evict each other's cached key.
 *
 * @internal
 */
export const callSeries = (attributes: Readonly<Record<string, string>>) => ({
  calls: Metric.counter(calls.id, { description: calls.description, incremental: true, attributes }),
  duration: Metric.histogram(callDuration.id, {
    description: callDuration.description,
    boundaries: callDurationBoundaries,
    attributes
  })
})

/**
 * Objects currently loaded in memory (active or hibernated), by `object_type`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const activeObjects = Metric.gauge("durable_object_active_objects", {
  description: "Durable objects currently loaded (active or hibernated), by object type"
})

/**
 * Activations (state loaded from storage), by `object_type`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const activations = Metric.counter("durable_object_activations_total", {
  description: "Durable object activations (state loaded from storage), by object type",
  incremental: true
})

/**
 * Spans around storage operations (the Elixir original's telemetry event names), with the object type, id
 * and outcome as attributes.
 *
 * @since 0.1.0
 * @category spans
 */
export const spanStorage = {
  load: "durable_object.storage.load",
  save: "durable_object.storage.save",
  delete: "durable_object.storage.delete"
} as const

/**
 * Storage operation latency in milliseconds, by `operation` (`load`, `save`, `delete`) and `outcome`
 * (`success`, `conflict`, `error`).
 *
 * @since 0.1.0
 * @category metrics
 */
export const storageDuration = Metric.histogram("durable_object_storage_duration_ms", {
  description: "Latency of durable object storage operations in milliseconds",
  boundaries: Metric.exponentialBoundaries({ start: 0.125, factor: 2, count: 18 })
})

/**
 * Span around an alarm firing: claiming aside, from the handler to the commit (or the retry decision).
 *
 * @since 0.1.0
 * @category spans
 */
export const spanAlarm = "durable_object.alarm"

/**
 * How an alarm firing ended, as recorded in `durable_object_alarms_total`'s `outcome` attribute: `fired`
 * (its effect committed), `retried` (it failed and will fire again), `failed` (it gave up after its last
 * retry), `lost` (another scheduler took it over).
 *
 * @since 0.1.0
 * @category metrics
 */
export type AlarmOutcome = "fired" | "retried" | "failed" | "lost"

/**
 * Alarm firings, by `object_type`, `alarm` and `outcome`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const alarms = Metric.counter("durable_object_alarms_total", {
  description: "Durable object alarm firings, by object type, alarm name and outcome",
  incremental: true
})

/**
 * How late alarms start, in milliseconds after their due time, by `object_type`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const alarmLateness = Metric.histogram("durable_object_alarm_lateness_ms", {
  description: "Delay between an alarm's due time and the start of its handler, in milliseconds",
  boundaries: Metric.exponentialBoundaries({ start: 0.5, factor: 2, count: 20 })
})

/**
 * Background work that failed where no caller could be told, by `operation` and (except for the scheduler's
 * reads, which serve every object type on a storage) `object_type`:
 * `shutdown` (an idle shutdown or a graceful stop whose `onShutdown` or its commit failed: its changes were
 * not stored), `alarm_release` (a failed alarm's claim could not be released after retries: it fires again
 * when its lease expires), `alarm_claim` and `alarm_next` (the scheduler could not read due alarms; it backs
 * off and retries), `reply_purge` (expired replies of keyed calls could not be removed; retried a minute
 * later). Each is also logged with its cause.
 *
 * @since 0.1.0
 * @category metrics
 */
export const backgroundFailures = Metric.counter("durable_object_background_failures_total", {
  description: "Background work that failed with no caller to tell, by object type and operation",
  incremental: true
})

/**
 * The background operations `durable_object_background_failures_total` counts.
 *
 * @since 0.1.0
 * @category metrics
 */
export type BackgroundOperation = "shutdown" | "alarm_release" | "alarm_claim" | "alarm_next" | "reply_purge"
