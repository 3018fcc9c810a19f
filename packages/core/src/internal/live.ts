/**
 * Live state: the subscribers of one object type's committed changes and events, in this runtime.
 *
 * Publishing happens where a commit becomes durable (`commit.ts`, in `drain`) and where an object is deleted
 * (`lifecycle.ts`). Only objects with a subscriber have a topic, and the publishing side checks the topic map
 * before doing anything else: an object nobody watches pays one map-size check per commit (plus, when the
 * storage broadcasts commits to other runtimes, one queued notification).
 *
 * A subscriber owns a sliding buffer: it never makes a publisher wait, and one that falls behind skips to the
 * newest states. Every change carries its version, and a subscriber drops any change not newer than the last
 * one it emitted, so the stream is in commit order whatever order its sources (the initial load, local
 * commits, reloads after another runtime's commit) deliver in. A change carries the state's JSON, decoded at
 * most once, by the first subscriber that reads it (so skipped changes are never decoded).
 *
 * @internal
 */
import { Cause, Effect, Exit, Queue, Schedule, Scope, Stream } from "effect"
import { StorageError } from "../Errors.ts"
import type { StorageService, StoredObject } from "./records.ts"
import type { JsonCodec } from "./stateCodec.ts"

/** A committed state of one object, as published: its version and JSON, decoded on first use. */
export class Change {
  readonly version: number
  readonly json: string
  /** Set by a delete: the versions start over, so this change is emitted whatever came before. */
  readonly reset: boolean
  private decoded: Exit.Exit<unknown, StorageError> | undefined = undefined
  constructor(version: number, json: string, reset: boolean) {
    this.version = version
    this.json = json
    this.reset = reset
  }
  /** The decoded state (decoded once, shared by every subscriber). */
  decode(codec: JsonCodec): Exit.Exit<unknown, StorageError> {
    if (this.decoded === undefined) {
      const exit = codec.decode(this.json)
      this.decoded = Exit.isSuccess(exit) ? Exit.succeed(exit.value) : Exit.fail(
        new StorageError({
          operation: "load",
          detail: `the stored state does not decode with the state schema: ${Cause.pretty(exit.cause)}`
        })
      )
    }
    return this.decoded!
  }
}

/** An event a handler emitted, published once its commit is durable. */
export interface Emitted {
  readonly name: string
  readonly value: unknown
}

/** The subscribers of one object. */
interface Topic {
  /** The newest version published here (so this runtime's own announcements, echoed back, cost nothing). */
  version: number
  readonly changes: Set<Queue.Queue<Change, StorageError | Cause.Done>>
  readonly events: Set<Queue.Queue<Emitted, Cause.Done>>
}

/** The live-state hub of one object type's runtime. */
export interface Live {
  /** Whether any object of this type has a subscriber here (the publishers' fast check). */
  readonly watched: () => boolean
  /** A commit of `id` became durable at `version` with state `json` (and `events`, when it has any). */
  readonly committed: (id: string, version: number, json: string, events: ReadonlyArray<Emitted> | undefined) => void
  /** `id` was deleted: its subscribers see the initial state again. */
  readonly deleted: (id: string) => void
  /** Events of a run that committed nothing (no commit to wait for): delivered now. */
  readonly emitted: (id: string, events: ReadonlyArray<Emitted>) => void
  /** The committed states of `id`: the current one first, then one per commit. */
  readonly changes: (id: string) => Stream.Stream<{ readonly version: number; readonly state: unknown }, StorageError>
  /** The events of `id` emitted by committed runs, from now on. */
  readonly events: (id: string) => Stream.Stream<Emitted>
  /** Follows commits made by other runtimes (when the storage tells of them), for as long as the scope lasts. */
  readonly follow: Effect.Effect<void, never, Scope.Scope>
  /** Ends every subscriber's stream (the runtime is closing). */
  readonly close: Effect.Effect<void>
}

/**
 * Buffer sizes. States slide with room for a short burst, so a subscriber reading at the commit rate sees
 * every commit while one that stalls gets the newest. Events are not states, so their buffer is larger.
 */
const changeBuffer = 16
const eventBuffer = 1024

export const make = (deps: {
  readonly objectType: string
  readonly codec: JsonCodec
  readonly initialJson: () => string
  /** Loads committed state in the runtime's own context (see `commit.ts`). */
  readonly load: (objectType: string, objectId: string) => Effect.Effect<StoredObject | undefined, StorageError>
  readonly storage: StorageService
}): Live => {
  const { codec, objectType, storage } = deps
  const topics = new Map<string, Topic>()
  const announce = storage.announceCommit

  const topicOf = (id: string): Topic => {
    let topic = topics.get(id)
    if (topic === undefined) {
      topic = { version: -1, changes: new Set(), events: new Set() }
      topics.set(id, topic)
    }
    return topic
  }
  const leave = (id: string, topic: Topic) => {
    if (topic.changes.size === 0 && topic.events.size === 0 && topics.get(id) === topic) topics.delete(id)
  }

  const publish = (id: string, change: Change) => {
    const topic = topics.get(id)
    if (topic === undefined) return
    if (change.reset || change.version > topic.version) topic.version = change.version
    for (const queue of topic.changes) Queue.offerUnsafe(queue, change)
  }
  const deliver = (id: string, events: ReadonlyArray<Emitted>) => {
    const topic = topics.get(id)
    if (topic === undefined || topic.events.size === 0) return
    for (const queue of topic.events) for (const event of events) Queue.offerUnsafe(queue, event)
  }

  /** The committed state of `id` as a change; a missing row is the initial state (a reset when `deleted`). */
  const load = (id: string, deleted: boolean): Effect.Effect<Change, StorageError> =>
    Effect.map(
      deps.load(objectType, id),
      (stored) =>
        stored === undefined
          ? new Change(0, deps.initialJson(), deleted)
          : new Change(stored.version, stored.state, false)
    )

  const changes: Live["changes"] = (id) => {
    const raw = Stream.callback<Change, StorageError>((queue) =>
      Effect.gen(function*() {
        const topic = topicOf(id)
        topic.changes.add(queue)
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            topic.changes.delete(queue)
            leave(id, topic)
          })
        )
        // Subscribed first, loaded second: a commit landing in between is seen by one or the other, and the
        // version filter below drops whichever copy is older.
        const current = yield* load(id, false)
        if (current.version > topic.version) topic.version = current.version
        Queue.offerUnsafe(queue, current)
      }), { bufferSize: changeBuffer, strategy: "sliding" })
    return Stream.suspend(() => {
      let last = -1
      return raw.pipe(
        Stream.filter((change) => {
          // A reset (a delete) starts the versions over, unless this subscriber is at the initial state already.
          if (change.reset ? last === 0 : change.version <= last) return false
          last = change.version
          return true
        }),
        Stream.mapEffect((change) => Effect.map(change.decode(codec), (state) => ({ version: change.version, state })))
      )
    })
  }

  const events: Live["events"] = (id) =>
    Stream.callback<Emitted>((queue) =>
      Effect.gen(function*() {
        const topic = topicOf(id)
        topic.events.add(queue)
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            topic.events.delete(queue)
            leave(id, topic)
          })
        )
      }), { bufferSize: eventBuffer, strategy: "sliding" })

  // Another runtime committed: reload the objects watched here. One fiber takes the notifications in batches,
  // so an object's reloads never overlap (the version filter would order them anyway) and a burst of
  // notifications for one object costs one load.
  const follow: Live["follow"] = storage.watchCommits === undefined
    ? Effect.void
    : Effect.gen(function*() {
      const inbox = yield* Queue.unbounded<string>()
      yield* storage.watchCommits!((type, id, version) => {
        if (type !== objectType) return
        const topic = topics.get(id)
        if (topic !== undefined && (version > topic.version || (version === 0 && topic.version !== 0))) {
          Queue.offerUnsafe(inbox, id)
        }
      })
      yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
        const ids = new Set(yield* Queue.takeAll(inbox))
        for (const id of ids) {
          if (!topics.has(id)) continue
          const change = yield* load(id, true).pipe(
            Effect.retry({ times: 3, schedule: Schedule.exponential("100 millis") }),
            Effect.tapError((error) =>
              Effect.logWarning("durable-object: reloading a watched object failed").pipe(
                Effect.annotateLogs({ objectType, objectId: id, error: error.message })
              )
            ),
            Effect.option
          )
          if (change._tag === "Some") publish(id, change.value)
        }
      })))
    })

  return {
    watched: () => topics.size !== 0,
    committed: (id, version, json, emitted) => {
      if (announce !== undefined) announce(objectType, id, version)
      if (topics.size === 0) return
      publish(id, new Change(version, json, false))
      if (emitted !== undefined) deliver(id, emitted)
    },
    deleted: (id) => {
      if (announce !== undefined) announce(objectType, id, 0)
      if (topics.size === 0) return
      publish(id, new Change(0, deps.initialJson(), true))
    },
    emitted: (id, emitted) => {
      if (topics.size !== 0) deliver(id, emitted)
    },
    changes,
    events,
    follow,
    close: Effect.sync(() => {
      for (const topic of topics.values()) {
        for (const queue of topic.changes) Queue.endUnsafe(queue)
        for (const queue of topic.events) Queue.endUnsafe(queue)
      }
    })
  }
}
