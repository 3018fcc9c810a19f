/**
 * Durable alarms: future work an object schedules for itself.
 *
 * An object declares its alarms with schemas, like handlers:
 *
 * ```ts
 * alarms: {
 *   resetWindow: { handle: (_, ctx) => ctx.state.update((s) => ({ ...s, requests: 0 })) },
 *   remind: { payload: Schema.Struct({ text: Schema.String }), handle: ({ text }, ctx) => … }
 * }
 * ```
 *
 * and schedules them from handlers and hooks with `ctx.alarms.schedule(name, when, payload)`, where `when` is
 * `{ in: "1 minute" }`, `{ at: dateTime }` or `{ cron: "0 * * * *" }` (recurring). Scheduling a name that is
 * already scheduled replaces it; `cancel`, `cancelAll` and `list` complete the API. Alarm changes commit
 * atomically with the state changes of the same handler.
 *
 * **The guarantee: at-least-once execution, exactly-once effect.** When an alarm fires, its handler runs in
 * the object's serial context; its state changes, its alarm changes and the removal of the fired alarm
 * commit in one transaction, which succeeds only while this scheduler still holds the alarm's claim. A crash
 * before that commit makes the alarm fire again later (its handler may run more than once); a crash after
 * it never repeats it, so the effect on the object's state is applied exactly once.
 *
 * A failing handler is retried with exponential backoff (default: 6 retries from 2 seconds, doubling);
 * after the last retry the alarm stays in `listAlarms` as failed, and in telemetry, instead of vanishing.
 *
 * One scheduler runs per storage (the storage layers start it), for every object type on that storage.
 *
 * @since 0.1.0
 */
import { type DateTime, Duration, Effect, Layer } from "effect"
import type { StorageError } from "./Errors.ts"
import type { SchedulerOptions as Options } from "./internal/records.ts"
import * as scheduler from "./internal/scheduler.ts"
import * as Storage from "./Storage.ts"

/**
 * When an alarm fires: after a delay, at an instant (a `DateTime` or epoch milliseconds), or on every
 * occurrence of a cron schedule (`effect/Cron` syntax, optionally in a time zone).
 *
 * @since 0.1.0
 * @category models
 */
export type When =
  | { readonly in: Duration.Input }
  | { readonly at: DateTime.DateTime | number }
  | { readonly cron: string; readonly timeZone?: string | undefined }

/**
 * A scheduled alarm as listed.
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmInfo<Name extends string = string, Payload = unknown> {
  readonly name: Name
  readonly fireAt: DateTime.Utc
  readonly payload: Payload
  /** Times the alarm has fired without its effect committing. */
  readonly attempts: number
  /** The cron expression of a recurring alarm. */
  readonly cron: string | undefined
  /** Set when the alarm gave up after its last retry; a failed alarm does not fire again until rescheduled. */
  readonly failed: { readonly at: DateTime.Utc; readonly error: string } | undefined
  /**
   * Set when the stored alarm no longer reads back (a payload its schema no longer decodes, an alarm the
   * definition no longer declares, a hand-edited schedule): why. `payload` is then the stored JSON. Such an
   * alarm is marked failed when it fires, without running a handler.
   */
  readonly invalid?: string | undefined
}

/**
 * A handler's view of its object's alarms. Changes are staged with the handler's state changes and commit
 * together with them.
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmsAccess<AP> {
  /** Schedules (or replaces) the alarm `name`. */
  readonly schedule: <K extends keyof AP & string>(
    name: K,
    when: When,
    ...payload: AP[K] extends { readonly Type: infer T } ? [payload: T] : []
  ) => Effect.Effect<void>
  /** Cancels the alarm `name` (nothing happens when it is not scheduled). */
  readonly cancel: (name: keyof AP & string) => Effect.Effect<void>
  /** Cancels every alarm of the object. */
  readonly cancelAll: Effect.Effect<void>
  /** The object's alarms as this handler would leave them, earliest first. */
  readonly list: Effect.Effect<ReadonlyArray<AlarmInfo<keyof AP & string>>, StorageError>
}

/**
 * What an alarm handler learns about the alarm that fired.
 *
 * @since 0.1.0
 * @category models
 */
export interface FiredAlarm {
  readonly name: string
  /** The time the alarm was due. */
  readonly scheduledAt: DateTime.Utc
  /** 1 for the first attempt, 2 for the first retry, … */
  readonly attempt: number
  /** Whether an earlier attempt failed (or its runtime crashed before committing). */
  readonly isRetry: boolean
}

/**
 * Retry policy of an object type's alarms: `maxRetries` retries after the first attempt, waiting
 * `initialDelay × factor^(retry - 1)` (capped at `maxDelay`) before each.
 *
 * @since 0.1.0
 * @category models
 */
export interface RetryPolicy {
  readonly maxRetries?: number | undefined
  readonly initialDelay?: Duration.Input | undefined
  readonly factor?: number | undefined
  readonly maxDelay?: Duration.Input | undefined
}

/**
 * The default retry policy, Cloudflare's: 6 retries, from 2 seconds, doubling, at most 1 hour apart.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultRetryPolicy: Required<{ readonly [K in keyof RetryPolicy]: NonNullable<RetryPolicy[K]> }> = {
  maxRetries: 6,
  initialDelay: "2 seconds",
  factor: 2,
  maxDelay: "1 hour"
}

/**
 * The delay before retry number `retry` (1-based) under `policy`, in milliseconds.
 *
 * @since 0.1.0
 * @category models
 */
export const retryDelayMillis = (policy: RetryPolicy | undefined, retry: number): number => {
  const initial = Duration.toMillis(policy?.initialDelay ?? defaultRetryPolicy.initialDelay)
  const factor = policy?.factor ?? defaultRetryPolicy.factor
  const max = Duration.toMillis(policy?.maxDelay ?? defaultRetryPolicy.maxDelay)
  return Math.min(max, initial * Math.pow(factor, Math.max(0, retry - 1)))
}

/**
 * The alarm scheduler of a runtime: one per storage. Object type runtimes register with it.
 *
 * @since 0.1.0
 * @category services
 */
export const Scheduler = Storage.Scheduler

/**
 * The scheduler's service type.
 *
 * @since 0.1.0
 * @category services
 */
export type Scheduler = Storage.Scheduler

/**
 * Options of the alarm scheduler: `pollInterval` (default 5 s), `leaseDuration` (default 60 s),
 * `concurrency` (default 256) and `batchSize` (default 256).
 *
 * @since 0.1.0
 * @category models
 */
export type SchedulerOptions = Options

/**
 * The alarm scheduler over the `Storage` in context. The built-in storage layers (`Storage.layerMemory`,
 * `SqlStorage.layer`) already include one; use this with a storage of your own.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: SchedulerOptions): Layer.Layer<Scheduler, never, Storage.Storage> =>
  Layer.effect(Scheduler, Effect.flatMap(Storage.Storage, (storage) => scheduler.make(storage, options)))
