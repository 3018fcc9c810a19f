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
import { Context, Effect, Layer } from "effect"
import { AlarmClaimLost, StorageError, VersionConflict } from "./Errors.ts"
import * as Heap from "./internal/heap.ts"
import * as scheduler from "./internal/scheduler.ts"

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
export class Storage extends Context.Service<Storage, {
  /** The committed state of an object, or `undefined` when it has never been written (or was deleted). */
  readonly load: (objectType: string, objectId: string) => Effect.Effect<StoredObject | undefined, StorageError>
  /** Commits a write set atomically under version fencing (and alarm claim checks); returns the new version. */
  readonly commit: (write: WriteSet) => Effect.Effect<number, StorageError | VersionConflict | AlarmClaimLost>
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
  readonly watchAlarms?:
    | ((onAlarm: (fireAt: number) => void) => Effect.Effect<void, never, import("effect").Scope.Scope>)
    | undefined
  /**
   * Optional: why this storage cannot serve a call made with the caller's context `caller`, or `undefined`
   * when it can. The runtime never runs storage work in its caller's context, so a caller holding the
   * storage's only connection (a transaction on the same SQLite database) would wait for itself forever; the
   * storage refuses such calls with a {@link StorageError} instead.
   */
  readonly refuseCaller?: ((caller: Context.Context<never>) => StorageError | undefined) | undefined
}>()("@durable-object/core/Storage") {}

interface MemoryObject {
  state: string
  version: number
}

interface MemoryAlarm extends Heap.HeapItem {
  readonly objectType: string
  readonly objectId: string
  record: AlarmRecord
  claim: string | null
  claimExpiresAt: number | null
  /** Insertion order: the last tie-break, so alarms due at the same time are claimed first in, first out. */
  readonly seq: number
}

/**
 * Everything stored for one object type. Objects and alarms are found by id within their type, so no lookup
 * builds a composite key (a new string to hash on every load and commit). The type's alarms are also
 * indexed so that claiming and finding the next alarm cost O(log n) per alarm instead of a scan of every
 * alarm: `ready` holds the alarms that fire when their time comes (not claimed, or claimed under a lease that
 * expired), earliest first; `leased` holds the claimed ones, by the time their lease expires. Failed alarms
 * are in neither.
 */
interface TypeStore {
  readonly objects: Map<string, MemoryObject>
  readonly alarms: Map<string, Map<string, MemoryAlarm>>
  readonly ready: Heap.Heap<MemoryAlarm>
  readonly leased: Heap.Heap<MemoryAlarm>
}

const byFireAt = (a: AlarmRecord, b: AlarmRecord) => a.fireAt - b.fireAt || (a.name < b.name ? -1 : 1)

const readyBefore = (a: MemoryAlarm, b: MemoryAlarm) =>
  a.record.fireAt !== b.record.fireAt
    ? a.record.fireAt < b.record.fireAt
    : a.record.name !== b.record.name
    ? a.record.name < b.record.name
    : a.seq < b.seq

/** When a claimed alarm becomes claimable again (its lease ran out), as `nextAlarmAt` reports it. */
const leaseEnd = (alarm: MemoryAlarm) => Math.max(alarm.record.fireAt, alarm.claimExpiresAt ?? 0)

const leasedBefore = (a: MemoryAlarm, b: MemoryAlarm) => leaseEnd(a) < leaseEnd(b)

/**
 * Builds an in-memory storage. Each call returns a fresh, empty store.
 *
 * Commits are atomic and fenced exactly like the SQL backends'; nothing survives the process.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<Storage["Service"]> = Effect.sync(() => {
  const types = new Map<string, TypeStore>()
  let seq = 0

  const typeStore = (objectType: string): TypeStore => {
    let store = types.get(objectType)
    if (store === undefined) {
      store = { objects: new Map(), alarms: new Map(), ready: Heap.make(readyBefore), leased: Heap.make(leasedBefore) }
      types.set(objectType, store)
    }
    return store
  }

  const unindex = (store: TypeStore, alarm: MemoryAlarm) => {
    if (!store.ready.remove(alarm)) store.leased.remove(alarm)
  }

  /** Moves the alarms whose lease expired by `now` back to `ready`, where they can be claimed again. */
  const expireLeases = (store: TypeStore, now: number) => {
    let head = store.leased.peek()
    while (head !== undefined && leaseEnd(head) <= now) {
      store.leased.pop()
      store.ready.push(head)
      head = store.leased.peek()
    }
  }

  return Storage.of({
    load: (objectType, objectId) =>
      Effect.sync(() => {
        const stored = types.get(objectType)?.objects.get(objectId)
        return stored === undefined ? undefined : { state: stored.state, version: stored.version }
      }),
    commit: (write) =>
      Effect.suspend((): Effect.Effect<number, StorageError | VersionConflict | AlarmClaimLost> => {
        const store = typeStore(write.objectType)
        const id = write.objectId
        const stored = store.objects.get(id)
        const actual = stored === undefined ? 0 : stored.version
        if (actual !== write.expectedVersion) {
          return Effect.fail(
            new VersionConflict({
              objectType: write.objectType,
              objectId: id,
              expectedVersion: write.expectedVersion,
              actualVersion: actual
            })
          )
        }
        const changes = write.alarms
        let forObject = store.alarms.get(id)
        const fired = changes?.fired
        if (fired !== undefined && forObject?.get(fired.name)?.claim !== fired.claim) {
          return Effect.fail(new AlarmClaimLost({ objectType: write.objectType, objectId: id, name: fired.name }))
        }
        const drop = (name: string) => {
          const alarm = forObject?.get(name)
          if (alarm === undefined) return
          unindex(store, alarm)
          forObject!.delete(name)
        }
        if (write.state === null) {
          store.objects.delete(id)
          if (forObject !== undefined) { for (const alarm of forObject.values()) unindex(store, alarm) }
          store.alarms.delete(id)
          return Effect.succeed(0)
        }
        const version = actual + 1
        if (stored === undefined) store.objects.set(id, { state: write.state, version })
        else {
          stored.state = write.state
          stored.version = version
        }
        if (changes !== undefined) {
          if (fired !== undefined) drop(fired.name)
          if (changes.removeAll && forObject !== undefined) {
            for (const alarm of forObject.values()) unindex(store, alarm)
            forObject.clear()
          }
          for (const name of changes.remove) drop(name)
          if (changes.put.length > 0) {
            if (forObject === undefined) {
              forObject = new Map()
              store.alarms.set(id, forObject)
            }
            for (const put of changes.put) {
              drop(put.name)
              const alarm: MemoryAlarm = {
                objectType: write.objectType,
                objectId: id,
                record: { ...put, attempts: 0, failedAt: null, lastError: null },
                claim: null,
                claimExpiresAt: null,
                seq: seq++,
                heapIndex: -1
              }
              forObject.set(put.name, alarm)
              store.ready.push(alarm)
            }
          }
          if (forObject !== undefined && forObject.size === 0) store.alarms.delete(id)
        }
        return Effect.succeed(version)
      }),
    listAlarms: (objectType, objectId) =>
      Effect.sync(() => {
        const forObject = types.get(objectType)?.alarms.get(objectId)
        if (forObject === undefined) return []
        return Array.from(forObject.values(), (a) => a.record).toSorted(byFireAt)
      }),
    claimDueAlarms: (request) =>
      Effect.sync(() => {
        const now = request.now
        const stores: Array<TypeStore> = []
        for (const objectType of new Set(request.objectTypes)) {
          const store = types.get(objectType)
          if (store === undefined) continue
          expireLeases(store, now)
          stores.push(store)
        }
        const claimed: Array<ClaimedAlarm> = []
        while (claimed.length < request.limit) {
          // The earliest due alarm across the requested types.
          let from: TypeStore | undefined
          for (const store of stores) {
            const head = store.ready.peek()
            if (head === undefined || head.record.fireAt > now) continue
            if (from === undefined || readyBefore(head, from.ready.peek()!)) from = store
          }
          if (from === undefined) break
          const alarm = from.ready.pop()!
          alarm.claim = request.claim
          alarm.claimExpiresAt = now + request.leaseMillis
          alarm.record = { ...alarm.record, attempts: alarm.record.attempts + 1 }
          from.leased.push(alarm)
          claimed.push({
            ...alarm.record,
            objectType: alarm.objectType,
            objectId: alarm.objectId,
            claim: request.claim
          })
        }
        return claimed
      }),
    nextAlarmAt: (objectTypes) =>
      Effect.sync(() => {
        let next: number | undefined
        for (const objectType of objectTypes) {
          const store = types.get(objectType)
          if (store === undefined) continue
          const ready = store.ready.peek()
          if (ready !== undefined && (next === undefined || ready.record.fireAt < next)) next = ready.record.fireAt
          const leased = store.leased.peek()
          if (leased !== undefined && (next === undefined || leaseEnd(leased) < next)) next = leaseEnd(leased)
        }
        return next
      }),
    releaseAlarm: (release) =>
      Effect.sync(() => {
        const store = types.get(release.objectType)
        const alarm = store?.alarms.get(release.objectId)?.get(release.name)
        if (store === undefined || alarm === undefined || alarm.claim !== release.claim) return false
        unindex(store, alarm)
        alarm.claim = null
        alarm.claimExpiresAt = null
        if (release.retryAt === null) {
          alarm.record = { ...alarm.record, failedAt: release.now, lastError: release.error }
        } else {
          alarm.record = { ...alarm.record, fireAt: release.retryAt, lastError: release.error }
          store.ready.push(alarm)
        }
        return true
      })
  })
})

/**
 * Provides a storage together with the alarm scheduler that serves every object type on it (one scheduler
 * per storage). Storage layers are built with this.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWithScheduler = <E, R>(
  make: Effect.Effect<Storage["Service"], E, R>,
  options?: scheduler.SchedulerOptions
): Layer.Layer<Storage | scheduler.Scheduler, E, Exclude<R, import("effect").Scope.Scope>> =>
  Layer.effectContext(
    Effect.gen(function*() {
      const storage = yield* make
      const alarms = yield* scheduler.make(storage, options)
      return Context.make(Storage, storage).pipe(Context.add(scheduler.Scheduler, alarms))
    })
  )

/**
 * In-memory storage, with its alarm scheduler: complete, atomic and fenced, but nothing survives the
 * process. Use it in tests (with `TestClock`) and wherever persistence is not wanted.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<Storage | scheduler.Scheduler> = layerWithScheduler(makeMemory)
