/**
 * The shapes storage and the runtime exchange: stored objects and alarms, write sets, claims, and the service
 * interfaces of a storage and of its alarm scheduler. A leaf module: `Storage.ts` re-exports the public ones,
 * and the scheduler and the memory backend use them without importing the public module that composes them.
 *
 * @internal
 */
import type { Context, Duration, Effect, Exit, Scope } from "effect"
import type { AlarmClaimLost, StorageError, VersionConflict } from "../Errors.ts"

/**
 * An object's committed state as stored: the state schema's encoded form as JSON text, and its version
 * (1 after the first commit, plus one per commit).
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredObject {
  readonly state: string
  readonly version: number
  /**
   * Set when the row is there but cannot be used (edited by hand, or written past today's limits): why. The
   * runtime then fails the object's calls with `StateDecodeError` and leaves the row alone. `state` is then
   * empty, and `version` is the stored one when it is valid, else 0: a delete at that version removes the row.
   */
  readonly invalid?: string | undefined
}

/**
 * An alarm to schedule (or replace, by name). `fireAt` is in epoch milliseconds; `payload` is the alarm
 * payload schema's encoded form as JSON text (`"null"` when the alarm has none); `cron`, for a recurring
 * alarm, is its schedule as JSON text (`{"expression": …, "timeZone": …}`).
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmPut {
  readonly name: string
  readonly fireAt: number
  readonly payload: string
  readonly cron: string | null
}

/**
 * A durable alarm as stored.
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmRecord extends AlarmPut {
  /** How many times the alarm has been claimed to fire since it was scheduled (0 for a fresh alarm). */
  readonly attempts: number
  /** When the alarm gave up after its last retry (epoch ms), or `null`. A failed alarm does not fire again. */
  readonly failedAt: number | null
  /** The last handler failure, rendered, or `null`. */
  readonly lastError: string | null
  /**
   * Set by a storage when a column of the row did not read back as the runtime wrote it (a hand edit, or a
   * payload too large to read): why. Such an alarm is listed with this reason and, once claimed, marked failed
   * without running its handler.
   */
  readonly invalid?: string | undefined
  /**
   * Filled by `listAlarms` and `listFailedAlarms` (not by claims): when the current claim on the alarm ends
   * (epoch ms), or `null` when nobody holds it. A claim whose end has passed is held by nobody.
   */
  readonly claimExpiresAt?: number | null | undefined
  /** Filled by `listAlarms` and `listFailedAlarms`: when the alarm was last scheduled (epoch ms). */
  readonly createdAt?: number | undefined
}

/**
 * One page of a keyset-paged listing of an object type's stored objects, in id order (Unicode code point
 * order, the same on every backend): at most `limit` objects whose id is greater than `after` and starts
 * with `prefix`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ListObjectsRequest {
  readonly after?: string | undefined
  readonly prefix?: string | undefined
  readonly limit: number
}

/**
 * A stored object as listed: its id, version and the times it was created and last committed (epoch ms),
 * without its state. `invalid` as in {@link StoredObject}.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredObjectInfo {
  readonly objectId: string
  readonly version: number
  readonly createdAt: number
  readonly updatedAt: number
  readonly invalid?: string | undefined
}

/**
 * An object's stored row in full: its state (as {@link StoredObject}) and its times.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredObjectDetails extends StoredObject {
  readonly createdAt: number
  readonly updatedAt: number
}

/**
 * One page of an object type's failed alarms, in (object id, name) order: at most `limit` after `after`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ListFailedAlarmsRequest {
  readonly after?: { readonly objectId: string; readonly name: string } | undefined
  readonly limit: number
}

/**
 * A failed alarm as listed across an object type: the alarm and the object it belongs to.
 *
 * @since 0.1.0
 * @category models
 */
export interface FailedAlarmRecord extends AlarmRecord {
  readonly objectId: string
}

/**
 * An alarm claimed by one scheduler to fire: nobody else fires it until `claim` is released or its lease
 * expires.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClaimedAlarm extends AlarmRecord {
  readonly objectType: string
  readonly objectId: string
  /** The claim token; the commit of the alarm's effect and any release must present it. */
  readonly claim: string
}

/**
 * Everything one handler (or hook) changed, committed atomically.
 *
 * - `expectedVersion` is the version the changes were computed from (0: the object had no stored row).
 * - `state` is the new state as JSON text, or `null` to delete the object together with all its alarms.
 * - `alarms` are replaced by name (`put`) or removed by name (`remove`), after `removeAll` when set.
 * - `replies` are the stored replies of calls made with idempotency keys (replacing any stored under the same
 *   key), committed with the state they produced. A delete removes the object's replies too.
 *
 * @since 0.1.0
 * @category models
 */
export interface WriteSet {
  readonly objectType: string
  readonly objectId: string
  readonly expectedVersion: number
  readonly state: string | null
  readonly alarms?: AlarmChanges | undefined
  readonly replies?: ReadonlyArray<ReplyPut> | undefined
}

/**
 * The stored reply of a call made with an idempotency key: a later call with the same key gets it back
 * instead of running again.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredReply {
  /** A hash of the call's handler and encoded payload: a key reused for another call is refused. */
  readonly payloadHash: string
  /** The reply as JSON text: `{"_tag":"Success","value":…}` or `{"_tag":"Failure","error":…}`, encoded. */
  readonly reply: string
  /** When the reply may be forgotten (epoch ms). */
  readonly expiresAt: number
}

/**
 * A reply to store under its idempotency key.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReplyPut extends StoredReply {
  readonly key: string
}

/**
 * Alarm changes inside a {@link WriteSet}, applied in this order: `fired` (the alarm whose handler produced
 * the write set is removed, and the whole write set fails with `AlarmClaimLost` unless the claim still
 * holds), `removeAll`, `remove`, `put`.
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmChanges {
  readonly fired?: { readonly name: string; readonly claim: string } | undefined
  readonly removeAll: boolean
  readonly remove: ReadonlyArray<string>
  readonly put: ReadonlyArray<AlarmPut>
}

/**
 * What to do with a claimed alarm whose handler did not commit: fire it again at `retryAt`, or (with
 * `retryAt: null`) mark it failed. Either way the claim is released.
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmRelease {
  readonly objectType: string
  readonly objectId: string
  readonly name: string
  readonly claim: string
  readonly retryAt: number | null
  readonly error: string | null
  readonly now: number
  /**
   * The alarm never reached its handler (it could not be delivered to the object's owner): the claim's
   * attempt is not counted, so an outage does not use up the alarm's retries.
   */
  readonly undelivered?: boolean | undefined
}

/**
 * Which due alarms to claim: those of `objectTypes` with `fireAt <= now`, not failed, not claimed (or whose
 * claim expired), earliest first, at most `limit`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClaimRequest {
  readonly objectTypes: ReadonlyArray<string>
  readonly now: number
  readonly claim: string
  readonly leaseMillis: number
  readonly limit: number
}

/**
 * `commit` without a fiber per write: queues `write`, runs its storage work in `context`, and calls `done` with
 * the outcome on the storage's own fiber. The runtime's commit pipeline uses it when a storage's `commit`
 * carries one (see {@link commitUnsafeOf}), and never while a tracer that exports spans is installed (`commit`
 * makes the write's span).
 *
 * @internal
 */
export type CommitUnsafe = (
  write: WriteSet,
  context: Context.Context<never>,
  done: (exit: Exit.Exit<number, StorageError | VersionConflict | AlarmClaimLost>) => void
) => void

const commitUnsafeKey = Symbol.for("@durable-object/core/Storage/commitUnsafe")

/**
 * `commit` with `unsafe` attached. It lives on the function rather than beside it in the service, so a
 * wrapper that replaces `commit` (to inject faults, say) drops it too and is never bypassed.
 *
 * @internal
 */
export const withCommitUnsafe = <F extends StorageService["commit"]>(commit: F, unsafe: CommitUnsafe): F =>
  Object.assign(commit, { [commitUnsafeKey]: unsafe })

/** The callback form attached to `commit` by {@link withCommitUnsafe}, if any. @internal */
export const commitUnsafeOf = (commit: StorageService["commit"]): CommitUnsafe | undefined =>
  (commit as { readonly [commitUnsafeKey]?: CommitUnsafe })[commitUnsafeKey]

/**
 * What a storage provides (see `Storage.Storage` for the guarantees every implementation gives).
 *
 * @since 0.1.0
 * @category models
 */
export interface StorageService {
  /** The committed state of an object, or `undefined` when it has never been written (or was deleted). */
  readonly load: (objectType: string, objectId: string) => Effect.Effect<StoredObject | undefined, StorageError>
  /** Commits a write set atomically under version fencing (and alarm claim checks); returns the new version. */
  readonly commit: (write: WriteSet) => Effect.Effect<number, StorageError | VersionConflict | AlarmClaimLost>
  /**
   * A page of the stored objects of a type (see {@link ListObjectsRequest}), through an index on (type, id):
   * a page costs about `limit` rows read, however many objects are stored.
   */
  readonly listObjects: (
    objectType: string,
    request: ListObjectsRequest
  ) => Effect.Effect<ReadonlyArray<StoredObjectInfo>, StorageError>
  /** An object's stored row with its times, or `undefined` when it is not stored. */
  readonly inspectObject: (
    objectType: string,
    objectId: string
  ) => Effect.Effect<StoredObjectDetails | undefined, StorageError>
  /**
   * A page of the failed alarms of a type (see {@link ListFailedAlarmsRequest}), through an index holding
   * only failed alarms: a page costs about `limit` rows read, however many alarms are pending.
   */
  readonly listFailedAlarms: (
    objectType: string,
    request: ListFailedAlarmsRequest
  ) => Effect.Effect<ReadonlyArray<FailedAlarmRecord>, StorageError>
  /** The alarms of one object, earliest first (failed ones included). */
  readonly listAlarms: (
    objectType: string,
    objectId: string
  ) => Effect.Effect<ReadonlyArray<AlarmRecord>, StorageError>
  /**
   * Atomically claims due alarms (see {@link ClaimRequest}), incrementing their `attempts`. Two schedulers
   * never hold a claim on the same alarm at once.
   */
  readonly claimDueAlarms: (request: ClaimRequest) => Effect.Effect<ReadonlyArray<ClaimedAlarm>, StorageError>
  /**
   * The earliest time at which an alarm of `objectTypes` becomes claimable (its fire time, or the expiry of
   * the claim on it), or `undefined` when there is none.
   */
  readonly nextAlarmAt: (objectTypes: ReadonlyArray<string>) => Effect.Effect<number | undefined, StorageError>
  /** Releases a claim for a retry or as failed; `false` when the claim no longer holds (nothing changed). */
  readonly releaseAlarm: (release: AlarmRelease) => Effect.Effect<boolean, StorageError>
  /**
   * Optional: calls `onAlarm(fireAt)` whenever any process commits an alarm, for as long as the scope lasts,
   * so schedulers wake before their next poll (PostgreSQL: LISTEN/NOTIFY). Without it, alarms written by
   * other processes are found by polling.
   */
  /** The reply stored under `key` for an object, or `undefined` (none, or expired by `now`). */
  readonly loadReply: (
    objectType: string,
    objectId: string,
    key: string,
    now: number
  ) => Effect.Effect<StoredReply | undefined, StorageError>
  /**
   * Removes up to `limit` replies that expired by `now`, oldest first (through an index: never a scan of all
   * replies); returns how many it removed.
   */
  readonly purgeReplies: (now: number, limit: number) => Effect.Effect<number, StorageError>
  /** When the earliest stored reply expires (through the expiry index), or `undefined` when none is stored. */
  readonly nextReplyExpiry: Effect.Effect<number | undefined, StorageError>
  readonly watchAlarms?:
    | ((onAlarm: (fireAt: number) => void) => Effect.Effect<void, never, Scope.Scope>)
    | undefined
  /**
   * Optional: why this storage cannot serve a call made with the caller's context `caller`, or `undefined`
   * when it can. The runtime never runs storage work in its caller's context, so a caller holding the
   * storage's only connection (a transaction on the same SQLite database) would wait for itself forever; the
   * storage refuses such calls with a {@link StorageError} instead.
   */
  readonly refuseCaller?: ((caller: Context.Context<never>) => StorageError | undefined) | undefined
  /**
   * Optional: the largest state and alarm payload the runtime may commit to this storage (UTF-8 bytes of their
   * JSON); past them a call fails with `ValueTooLarge` and nothing is written. Without it, `Storage.defaultLimits`.
   */
  readonly limits?: StorageLimits | undefined
  /**
   * Optional: tells other processes on this storage that a commit of an object became durable at `version`
   * (0: deleted). Called by the runtime after every durable commit, so it must not block: queue and coalesce
   * (PostgreSQL: NOTIFY, when enabled).
   */
  readonly announceCommit?: ((objectType: string, objectId: string, version: number) => void) | undefined
  /**
   * Optional: calls `onCommit` for the commits other processes announce, for as long as the scope lasts
   * (PostgreSQL: LISTEN, one per storage however many watch). Without it, subscribers see only this
   * process's commits.
   */
  readonly watchCommits?:
    | ((
      onCommit: (objectType: string, objectId: string, version: number) => void
    ) => Effect.Effect<void, never, Scope.Scope>)
    | undefined
}

/**
 * Size limits of a storage, in UTF-8 bytes of JSON (see `StorageService.limits`).
 *
 * @since 0.1.0
 * @category models
 */
export interface StorageLimits {
  /** The largest encoded state of one object. */
  readonly maxStateBytes: number
  /** The largest encoded payload of one alarm. */
  readonly maxAlarmPayloadBytes: number
}

/** Options of the alarm scheduler. */
export interface SchedulerOptions {
  /** How often storage is polled for alarms this process was not told about. Default 5 seconds. */
  readonly pollInterval?: Duration.Input | undefined
  /** How long a claim lasts before another scheduler may take the alarm over. Default 60 seconds. */
  readonly leaseDuration?: Duration.Input | undefined
  /**
   * Alarms fired at once, across all objects. Default 256: the commits of alarms fired together share
   * transactions, so a backlog of due alarms drains several times faster than with a few at a time.
   */
  readonly concurrency?: number | undefined
  /** Alarms claimed per storage round trip. Default 256. */
  readonly batchSize?: number | undefined
}

/** What the alarm scheduler of a storage provides. */
export interface SchedulerService {
  /** Registers an object type's alarm handler for the life of the current scope. */
  readonly register: (
    objectType: string,
    fire: (alarm: ClaimedAlarm) => Effect.Effect<void>
  ) => Effect.Effect<void, never, Scope.Scope>
  /** Tells the scheduler an alarm was scheduled at `fireAt` in this process, so it wakes in time for it. */
  readonly wake: (fireAt: number) => void
  /** Tells the scheduler a reply expiring at `expiresAt` was stored, so it purges it in time. */
  readonly repliesStored: (expiresAt: number) => void
}
