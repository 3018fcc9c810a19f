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
import { type Context, Duration, Effect, Layer } from "effect"
import type { AlarmNotFound, InvalidListOptions, StorageError, UnknownHandler } from "./Errors.ts"
import type { FailedAlarmPage, ListFailedOptions, RetryPolicy } from "./internal/alarmTypes.ts"
import type { CallError, ObjectRuntime, Runtime } from "./internal/definition.ts"
import type { SchedulerOptions as Options } from "./internal/records.ts"
import * as scheduler from "./internal/scheduler.ts"
import * as Storage from "./Storage.ts"

export type {
  AlarmDetails,
  AlarmInfo,
  AlarmsAccess,
  FailedAlarm,
  FailedAlarmCursor,
  FailedAlarmPage,
  FiredAlarm,
  ListFailedOptions,
  RetryPolicy,
  When
} from "./internal/alarmTypes.ts"

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

// ---------------------------------------------------------------------------------------------------------
// Operating alarms
// ---------------------------------------------------------------------------------------------------------

/** What the operations below need of a definition (any `DurableObject.Definition` is one). */
interface WithRuntime<Name extends string, AP> {
  readonly runtime: Context.Service<Runtime<Name>, ObjectRuntime<any, any, any, AP>>
}

/**
 * A page of an object type's failed alarms (those that gave up after their last retry), in (object id, alarm
 * name) order, each with its last error, attempts and payload. Keyset-paged: pass the page's `next` as
 * `after`. Each page is one read of a partial index holding only failed alarms, however many alarms are
 * pending.
 *
 * @since 0.1.0
 * @category operations
 */
export const listFailed = <Name extends string, AP>(
  definition: WithRuntime<Name, AP>,
  options?: ListFailedOptions | undefined
): Effect.Effect<FailedAlarmPage<keyof AP & string>, InvalidListOptions | StorageError, Runtime<Name>> =>
  definition.runtime.use((rt) => rt.listFailedAlarms(options))

/**
 * Makes a stored alarm fire now: it is scheduled again under its name, due immediately, with its payload and
 * schedule, its attempts and failure cleared. Meant for failed alarms (after fixing what made them fail); a
 * pending one simply fires early. Serialized with the object's calls and committed fenced like any commit
 * before this returns. Fails with `AlarmNotFound` when the object has no such alarm (nothing changes).
 *
 * @since 0.1.0
 * @category operations
 */
export const retry = <Name extends string, AP>(
  definition: WithRuntime<Name, AP>,
  id: string,
  name: (keyof AP & string) | (string & {})
): Effect.Effect<void, CallError | AlarmNotFound, Runtime<Name>> =>
  definition.runtime.use((rt) => rt.retryAlarm(id, name))

/**
 * Cancels a stored alarm, failed or not (`DurableObject.cancelAlarm` for operators): also one the
 * definition no longer declares, which `UnknownHandler` refuses only when it is not stored either.
 * Serialized with the object's calls and committed like any commit.
 *
 * @since 0.1.0
 * @category operations
 */
export const cancel = <Name extends string, AP>(
  definition: WithRuntime<Name, AP>,
  id: string,
  name: (keyof AP & string) | (string & {})
): Effect.Effect<void, CallError | UnknownHandler, Runtime<Name>> =>
  definition.runtime.use((rt) => rt.cancelAlarm(id, name as keyof AP & string))
