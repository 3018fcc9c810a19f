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
import { StorageError, VersionConflict } from "./Errors.ts"

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
 * A durable alarm as stored. `fireAt` is in epoch milliseconds; `payload` is the alarm payload schema's
 * encoded form as JSON text (`"null"` when the alarm has none).
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmRecord {
  readonly name: string
  readonly fireAt: number
  readonly payload: string
  /** How many times the alarm has fired without its effect committing (0 for a fresh alarm). */
  readonly attempts: number
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
 * Alarm changes inside a {@link WriteSet}.
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmChanges {
  readonly removeAll: boolean
  readonly remove: ReadonlyArray<string>
  readonly put: ReadonlyArray<AlarmRecord>
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
  /** Commits a write set atomically under version fencing; returns the new version. */
  readonly commit: (write: WriteSet) => Effect.Effect<number, StorageError | VersionConflict>
  /** The alarms of one object, earliest first. */
  readonly listAlarms: (
    objectType: string,
    objectId: string
  ) => Effect.Effect<ReadonlyArray<AlarmRecord>, StorageError>
}>()("@durable-object/core/Storage") {}

interface MemoryObject {
  state: string
  version: number
}

const key = (objectType: string, objectId: string) => `${objectType.length}:${objectType}/${objectId}`

/**
 * Builds an in-memory storage. Each call returns a fresh, empty store.
 *
 * Commits are atomic and fenced exactly like the SQL backends'; nothing survives the process.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<Storage["Service"]> = Effect.sync(() => {
  const objects = new Map<string, MemoryObject>()
  const alarms = new Map<string, Map<string, AlarmRecord>>()

  const sortedAlarms = (k: string): ReadonlyArray<AlarmRecord> => {
    const forObject = alarms.get(k)
    if (forObject === undefined) return []
    return Array.from(forObject.values()).toSorted((a, b) => a.fireAt - b.fireAt || (a.name < b.name ? -1 : 1))
  }

  return Storage.of({
    load: (objectType, objectId) =>
      Effect.sync(() => {
        const stored = objects.get(key(objectType, objectId))
        return stored === undefined ? undefined : { state: stored.state, version: stored.version }
      }),
    commit: (write) =>
      Effect.suspend(() => {
        const k = key(write.objectType, write.objectId)
        const stored = objects.get(k)
        const actual = stored === undefined ? 0 : stored.version
        if (actual !== write.expectedVersion) {
          return Effect.fail(
            new VersionConflict({
              objectType: write.objectType,
              objectId: write.objectId,
              expectedVersion: write.expectedVersion,
              actualVersion: actual
            })
          )
        }
        if (write.state === null) {
          objects.delete(k)
          alarms.delete(k)
          return Effect.succeed(0)
        }
        const version = actual + 1
        objects.set(k, { state: write.state, version })
        const changes = write.alarms
        if (changes !== undefined) {
          let forObject = alarms.get(k)
          if (changes.removeAll) forObject?.clear()
          for (const name of changes.remove) forObject?.delete(name)
          if (changes.put.length > 0) {
            if (forObject === undefined) {
              forObject = new Map()
              alarms.set(k, forObject)
            }
            for (const alarm of changes.put) forObject.set(alarm.name, alarm)
          }
          if (forObject !== undefined && forObject.size === 0) alarms.delete(k)
        }
        return Effect.succeed(version)
      }),
    listAlarms: (objectType, objectId) => Effect.sync(() => sortedAlarms(key(objectType, objectId)))
  })
})

/**
 * In-memory storage: complete, atomic and fenced, but nothing survives the process. Use it in tests (with
 * `TestClock`) and wherever persistence is not wanted.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<Storage> = Layer.effect(Storage, makeMemory)
