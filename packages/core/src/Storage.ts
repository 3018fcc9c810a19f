/**
 * The storage service behind durable objects: load an object's committed state, and commit a write set
 * atomically under version fencing.
 *
 * The runtime never writes anything but whole write sets. A write set names the version its changes were
 * made against; a backend applies it only if the stored version still is that one, and then bumps the
 * version by one. Two runtimes that share a database can therefore never lose each other's updates: the
 * slower one gets {@link VersionConflict} and reloads.
 *
 * `layerMemory` implements the service completely, with the same semantics as the SQL layer
 * (`SqlStorage.layer`), for tests and for single-process use without persistence.
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, type Scope } from "effect"
import * as limits from "./internal/limits.ts"
import * as memoryStorage from "./internal/memoryStorage.ts"
import type { SchedulerOptions, SchedulerService, StorageLimits, StorageService } from "./internal/records.ts"
import * as scheduler from "./internal/scheduler.ts"

export type {
  AlarmChanges,
  AlarmPut,
  AlarmRecord,
  AlarmRelease,
  ClaimedAlarm,
  ClaimRequest,
  FailedAlarmRecord,
  ListFailedAlarmsRequest,
  ListObjectsRequest,
  ReplyPut,
  SchedulerOptions,
  SchedulerService,
  StorageLimits,
  StorageService,
  StoredObject,
  StoredObjectDetails,
  StoredObjectInfo,
  StoredReply,
  WriteSet
} from "./internal/records.ts"

/**
 * The size limits a storage applies unless configured otherwise (`SqlStorage`'s `maxStateBytes` and
 * `maxAlarmPayloadBytes`): 4 MiB of encoded state per object and 256 KiB of encoded payload per alarm.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultLimits: StorageLimits = limits.defaultLimits

/**
 * The storage service.
 *
 * Guarantees every implementation gives (checked by the shared conformance suite):
 * - `commit` is atomic: all of a write set is applied, or none of it.
 * - `commit` applies a write set only if the stored version equals `expectedVersion` (0 = no row), fails with
 *   {@link VersionConflict} otherwise, and returns the new version (`expectedVersion + 1`, or 0 after a delete).
 * - A committed write set is durable by the time `commit` succeeds (as durable as the backend is configured
 *   to be).
 * - Backend failures are {@link StorageError}s; nothing is half-written.
 *
 * @since 0.1.0
 * @category services
 */
export class Storage extends Context.Service<Storage, StorageService>()("@durable-object/core/Storage") {}

/**
 * The alarm scheduler of a storage: one per storage, serving every object type on it. The storage layers
 * (`layerMemory`, `SqlStorage.layer`, `layerWithScheduler`) provide it; object type runtimes register with it.
 *
 * @since 0.1.0
 * @category services
 */
export class Scheduler
  extends Context.Service<Scheduler, SchedulerService>()("@durable-object/core/Alarms/Scheduler")
{}

/**
 * Builds an in-memory storage. Each call returns a fresh, empty store.
 *
 * Commits are atomic and fenced exactly like the SQL backends'; nothing survives the process.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<Storage["Service"]> = memoryStorage.make

/**
 * Provides a storage together with the alarm scheduler that serves every object type on it (one scheduler
 * per storage). Storage layers are built with this.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWithScheduler = <E, R>(
  make: Effect.Effect<Storage["Service"], E, R>,
  options?: SchedulerOptions
): Layer.Layer<Storage | Scheduler, E, Exclude<R, Scope.Scope>> =>
  Layer.effectContext(
    Effect.gen(function*() {
      const storage = yield* make
      const alarms = yield* scheduler.make(storage, options)
      return Context.make(Storage, storage).pipe(Context.add(Scheduler, alarms))
    })
  )

/**
 * In-memory storage, with its alarm scheduler: complete, atomic and fenced, but nothing survives the
 * process. Use it in tests (with `TestClock`) and wherever persistence is not wanted.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<Storage | Scheduler> = layerWithScheduler(makeMemory)
