/**
 * The shapes of alarms as the public API shows them (re-exported by `Alarms.ts`), in a leaf module so the
 * definition shapes can use them without importing the public module, which builds on those shapes.
 *
 * @internal
 */
import type { DateTime, Duration, Effect } from "effect"
import type { StorageError } from "../Errors.ts"

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
 * An alarm as an operator sees it (`DurableObject.inspect`, `Alarms.listFailed`): what {@link AlarmInfo}
 * says, plus what the scheduler knows about it.
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmDetails<Name extends string = string, Payload = unknown> extends AlarmInfo<Name, Payload> {
  /** The payload exactly as stored: the payload schema's encoded form, as JSON text. */
  readonly payloadJson: string
  /**
   * When the claim of the scheduler firing it ends, while one holds it (it is being fired, or its runtime
   * died while firing it and it is claimable again at that time); `undefined` when nobody holds it.
   */
  readonly claimedUntil: DateTime.Utc | undefined
  /** The failure of its last attempt, also while it waits for a retry; `undefined` when none failed. */
  readonly lastError: string | undefined
  /** When it was scheduled (or last rescheduled). */
  readonly scheduledAt: DateTime.Utc | undefined
}

/**
 * A failed alarm, listed across its object type by `Alarms.listFailed`.
 *
 * @since 0.1.0
 * @category models
 */
export interface FailedAlarm<Name extends string = string> extends AlarmDetails<Name> {
  /** The id of the object it belongs to. */
  readonly id: string
}

/**
 * Where a page of failed alarms starts: after this alarm, in (object id, name) order.
 *
 * @since 0.1.0
 * @category models
 */
export interface FailedAlarmCursor {
  readonly id: string
  readonly name: string
}

/**
 * Options of `Alarms.listFailed`: the page starts after `after` (none: at the first failed alarm) and holds
 * at most `limit` alarms (default 100, at most 1,000).
 *
 * @since 0.1.0
 * @category models
 */
export interface ListFailedOptions {
  readonly after?: FailedAlarmCursor | undefined
  readonly limit?: number | undefined
}

/**
 * A page of failed alarms, in (object id, name) order; `next` is where the next page starts, `undefined` on
 * the last page.
 *
 * @since 0.1.0
 * @category models
 */
export interface FailedAlarmPage<Name extends string = string> {
  readonly alarms: ReadonlyArray<FailedAlarm<Name>>
  readonly next: FailedAlarmCursor | undefined
}
