/**
 * The in-memory storage backend: complete, atomic and fenced like the SQL backends, with indexed alarms; nothing
 * survives the process.
 *
 * @internal
 */
import { Clock, Effect } from "effect"
import { AlarmClaimLost, StorageError, VersionConflict } from "../Errors.ts"
import * as Heap from "./heap.ts"
import { compareCodePoints, prefixEnd } from "./keyOrder.ts"
import type {
  AlarmRecord,
  ClaimedAlarm,
  FailedAlarmRecord,
  StorageService,
  StoredObjectInfo,
  StoredReply
} from "./records.ts"

interface MemoryObject {
  state: string
  version: number
  readonly createdAt: number
  updatedAt: number
}

interface MemoryAlarm extends Heap.HeapItem {
  readonly objectType: string
  readonly objectId: string
  record: AlarmRecord
  claim: string | null
  claimExpiresAt: number | null
  /** Insertion order: the last tie-break, so alarms due at the same time are claimed first in, first out. */
  readonly seq: number
  readonly createdAt: number
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

/** An alarm as listings report it: with its claim and creation time. */
const listed = (alarm: MemoryAlarm): AlarmRecord => ({
  ...alarm.record,
  claimExpiresAt: alarm.claim === null ? null : alarm.claimExpiresAt,
  createdAt: alarm.createdAt
})

const leasedBefore = (a: MemoryAlarm, b: MemoryAlarm) => leaseEnd(a) < leaseEnd(b)

/**
 * Builds an in-memory storage. Each call returns a fresh, empty store.
 *
 * Commits are atomic and fenced exactly like the SQL backends'; nothing survives the process.
 *
 * @since 0.1.0
 * @category constructors
 */
/** A stored reply, with where it is stored (to remove it when it expires). */
interface MemoryReply extends Heap.HeapItem {
  readonly objectType: string
  readonly objectId: string
  readonly key: string
  readonly reply: StoredReply
}

export const make: Effect.Effect<StorageService> = Effect.sync(() => {
  const types = new Map<string, TypeStore>()
  let seq = 0
  // Replies by object (type, then id, then key), and all of them by expiry for the purge.
  const replies = new Map<string, Map<string, Map<string, MemoryReply>>>()
  const byExpiry = Heap.make<MemoryReply>((a, b) => a.reply.expiresAt < b.reply.expiresAt)

  const repliesOf = (objectType: string, objectId: string, create: boolean) => {
    let forType = replies.get(objectType)
    if (forType === undefined) {
      if (!create) return undefined
      forType = new Map()
      replies.set(objectType, forType)
    }
    let forObject = forType.get(objectId)
    if (forObject === undefined && create) {
      forObject = new Map()
      forType.set(objectId, forObject)
    }
    return forObject
  }

  const dropReply = (entry: MemoryReply) => {
    const forType = replies.get(entry.objectType)
    const forObject = forType?.get(entry.objectId)
    if (forObject?.get(entry.key) !== entry) return
    forObject.delete(entry.key)
    if (forObject.size === 0) forType!.delete(entry.objectId)
  }

  const typeStore = (objectType: string): TypeStore => {
    let store = types.get(objectType)
    if (store === undefined) {
      store = {
        objects: new Map(),
        alarms: new Map(),
        ready: Heap.make(readyBefore),
        leased: Heap.make(leasedBefore)
      }
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

  return ({
    loadReply: (objectType, objectId, key, now) =>
      Effect.sync(() => {
        const entry = repliesOf(objectType, objectId, false)?.get(key)
        return entry === undefined || entry.reply.expiresAt <= now ? undefined : entry.reply
      }),
    purgeReplies: (now, limit) =>
      Effect.sync(() => {
        let removed = 0
        let head = byExpiry.peek()
        while (head !== undefined && head.reply.expiresAt <= now && removed < limit) {
          byExpiry.pop()
          dropReply(head)
          removed++
          head = byExpiry.peek()
        }
        return removed
      }),
    nextReplyExpiry: Effect.sync(() => byExpiry.peek()?.reply.expiresAt),
    load: (objectType, objectId) =>
      Effect.sync(() => {
        const stored = types.get(objectType)?.objects.get(objectId)
        return stored === undefined ? undefined : { state: stored.state, version: stored.version }
      }),
    commit: (write) =>
      // The committing fiber's clock stamps the rows (a `TestClock` in tests).
      Effect.withFiber((fiber): Effect.Effect<number, StorageError | VersionConflict | AlarmClaimLost> => {
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
          const stale = repliesOf(write.objectType, id, false)
          if (stale !== undefined) {
            for (const entry of stale.values()) byExpiry.remove(entry)
            replies.get(write.objectType)!.delete(id)
          }
          return Effect.succeed(0)
        }
        if (write.replies !== undefined && write.replies.length > 0) {
          const forReplies = repliesOf(write.objectType, id, true)!
          for (const put of write.replies) {
            const previous = forReplies.get(put.key)
            if (previous !== undefined) byExpiry.remove(previous)
            const entry: MemoryReply = {
              objectType: write.objectType,
              objectId: id,
              key: put.key,
              reply: { payloadHash: put.payloadHash, reply: put.reply, expiresAt: put.expiresAt },
              heapIndex: -1
            }
            forReplies.set(put.key, entry)
            byExpiry.push(entry)
          }
        }
        const version = actual + 1
        const now = fiber.getRef(Clock.Clock).currentTimeMillisUnsafe()
        if (stored === undefined) {
          store.objects.set(id, { state: write.state, version, createdAt: now, updatedAt: now })
        } else {
          stored.state = write.state
          stored.version = version
          stored.updatedAt = now
        }
        if (changes !== undefined) {
          if (fired !== undefined) {
            drop(fired.name)
          }
          if (changes.removeAll && forObject !== undefined) {
            for (const alarm of forObject.values()) {
              unindex(store, alarm)
            }
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
                createdAt: now,
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
        return Array.from(forObject.values(), listed).toSorted(byFireAt)
      }),
    // Memory has no index by id: a page filters and sorts the type's objects (fine for tests and small sets).
    listObjects: (objectType, request) =>
      Effect.sync(() => {
        const objects = types.get(objectType)?.objects
        if (objects === undefined) return []
        const { after, prefix } = request
        const end = prefix === undefined ? undefined : prefixEnd(prefix)
        const page: Array<StoredObjectInfo> = []
        for (const [objectId, o] of objects) {
          if (after !== undefined && compareCodePoints(objectId, after) <= 0) continue
          if (prefix !== undefined && !objectId.startsWith(prefix)) continue
          if (end !== undefined && compareCodePoints(objectId, end) >= 0) continue
          page.push({ objectId, version: o.version, createdAt: o.createdAt, updatedAt: o.updatedAt })
        }
        return page.toSorted((a, b) => compareCodePoints(a.objectId, b.objectId)).slice(0, request.limit)
      }),
    inspectObject: (objectType, objectId) =>
      Effect.sync(() => {
        const o = types.get(objectType)?.objects.get(objectId)
        return o === undefined
          ? undefined
          : { state: o.state, version: o.version, createdAt: o.createdAt, updatedAt: o.updatedAt }
      }),
    listFailedAlarms: (objectType, request) =>
      Effect.sync(() => {
        const alarms = types.get(objectType)?.alarms
        if (alarms === undefined) return []
        const after = request.after
        const failed: Array<FailedAlarmRecord> = []
        for (const [objectId, forObject] of alarms) {
          const byId = after === undefined ? 1 : compareCodePoints(objectId, after.objectId)
          if (byId < 0) continue
          for (const alarm of forObject.values()) {
            if (alarm.record.failedAt === null) continue
            if (byId === 0 && compareCodePoints(alarm.record.name, after!.name) <= 0) continue
            failed.push({ ...listed(alarm), objectId })
          }
        }
        return failed.toSorted((a, b) => compareCodePoints(a.objectId, b.objectId) || compareCodePoints(a.name, b.name))
          .slice(0, request.limit)
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
