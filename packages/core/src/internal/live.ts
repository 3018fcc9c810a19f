/**
 * Live state: the subscribers of one object type's committed changes and events, in this runtime.
 *
 * Publishing happens where a commit becomes durable (`commit.ts`, in `drain`) and where an object is deleted
 * (`lifecycle.ts`). Only objects with a subscriber have a topic, and the publishing side checks the topic map
 * before doing anything else: an object nobody watches pays one map-size check per commit (plus, when the
 * storage broadcasts commits to other runtimes, one queued notification).
 *
 * An object's topic keeps its last 16 changes in a ring, shared by its subscribers: publishing a change is one
 * write to the ring, whatever the number of subscribers, plus waking those parked waiting for one. Each
 * subscriber reads the ring from its own cursor when its stream is pulled, so one that reads slowly costs the
 * publisher nothing, and one more than 16 changes behind skips to the 16 newest (a sliding buffer). Every
 * change carries its version, and a subscriber drops any change not newer than the last one it emitted, so the
 * stream is in commit order whatever order its sources (the initial load, local commits, reloads after another
 * runtime's commit) deliver in. A change carries the state's JSON, decoded at most once, by the first
 * subscriber that reads it (so skipped changes are never decoded).
 *
 * Events are not states (none may be skipped while the subscriber keeps up), so each events subscriber has a
 * queue of its own.
 *
 * @internal
 */
import { Array as Arr, Cause, Channel, Effect, Exit, type Pull, Queue, Result, Schedule, Scope, Stream } from "effect"
import { StorageError } from "../Errors.ts"
import type { StorageService, StoredObject } from "./records.ts"
import type { JsonCodec } from "./stateCodec.ts"

/** A committed state of one object, as published: its version and JSON, decoded on first use. */
export class Change {
  readonly version: number
  readonly json: string
  /** Set by a delete: the versions start over, so this change is emitted whatever came before. */
  readonly reset: boolean
  private decoded: Result.Result<unknown, StorageError> | undefined = undefined
  constructor(version: number, json: string, reset: boolean) {
    this.version = version
    this.json = json
    this.reset = reset
  }
  /** The decoded state (decoded once, shared by every subscriber). */
  decode(codec: JsonCodec): Result.Result<unknown, StorageError> {
    if (this.decoded === undefined) {
      const exit = codec.decode(this.json)
      this.decoded = Exit.isSuccess(exit) ? Result.succeed(exit.value) : Result.fail(
        new StorageError({
          operation: "load",
          detail: `the stored state does not decode with the state schema: ${Cause.pretty(exit.cause)}`
        })
      )
    }
    return this.decoded
  }
}

/** A committed state as a subscriber receives it. */
interface Snapshot {
  readonly version: number
  readonly state: unknown
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
  /** The last `ring.length` changes: change number `n` is at `n % ring.length`. */
  readonly ring: Array<Change | undefined>
  /** How many changes were published (the number the next one gets). */
  published: number
  /** Subscribers parked until the next change. */
  readonly parked: Set<() => void>
  /** How many `changes` streams are open. */
  subscribers: number
  readonly events: Set<Queue.Queue<Emitted, Cause.Done>>
}

/** The live-state hub of one object type's runtime. */
export interface Live {
  /** A commit of `id` became durable at `version` with state `json` (and `events`, when it has any). */
  readonly committed: (id: string, version: number, json: string, events: ReadonlyArray<Emitted> | undefined) => void
  /** `id` was deleted: its subscribers see the initial state again. */
  readonly deleted: (id: string) => void
  /** Events of a run that committed nothing (no commit to wait for): delivered now. */
  readonly emitted: (id: string, events: ReadonlyArray<Emitted>) => void
  /** The committed states of `id`: the current one first, then one per commit. */
  readonly changes: (id: string) => Stream.Stream<Snapshot, StorageError>
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
const ringSize = 16
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
      topic = {
        version: -1,
        ring: Array.from<Change | undefined>({ length: ringSize }),
        published: 0,
        parked: new Set(),
        subscribers: 0,
        events: new Set()
      }
      topics.set(id, topic)
    }
    return topic
  }
  const leave = (id: string, topic: Topic) => {
    if (topic.subscribers === 0 && topic.events.size === 0 && topics.get(id) === topic) topics.delete(id)
  }

  const publish = (topic: Topic, change: Change) => {
    if (change.reset || change.version > topic.version) topic.version = change.version
    if (topic.subscribers === 0) return
    topic.ring[topic.published % ringSize] = change
    topic.published++
    if (topic.parked.size === 0) return
    const parked = Array.from(topic.parked)
    topic.parked.clear()
    for (const wake of parked) wake()
  }
  const deliver = (topic: Topic, events: ReadonlyArray<Emitted>) => {
    if (topic.events.size === 0) return
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

  let closed = false

  const changes: Live["changes"] = (id) =>
    Stream.fromChannel(Channel.fromTransform((_, scope) =>
      Effect.gen(function*() {
        const topic = topicOf(id)
        topic.subscribers++
        let cursor = topic.published
        yield* Scope.addFinalizer(
          scope,
          Effect.sync(() => {
            topic.subscribers--
            leave(id, topic)
          })
        )
        // Subscribed first, loaded second: a commit landing in between is seen by one or the other, and the
        // version filter drops whichever copy is older.
        let initial: Change | undefined = yield* load(id, false)
        if (initial.version > topic.version) topic.version = initial.version
        let last = -1
        /** What the subscriber has not read yet, filtered and decoded; empty when there is nothing new. */
        const take = (): Effect.Effect<Array<Snapshot>, StorageError> => {
          const batch: Array<Snapshot> = []
          const emit = (change: Change): StorageError | undefined => {
            // A reset (a delete) starts the versions over, unless the subscriber is at the initial state already.
            if (change.reset ? last === 0 : change.version <= last) return undefined
            const state = change.decode(codec)
            if (Result.isFailure(state)) return state.failure
            last = change.version
            batch.push({ version: change.version, state: state.success })
            return undefined
          }
          if (initial !== undefined) {
            const failed = emit(initial)
            initial = undefined
            if (failed !== undefined) return Exit.fail(failed)
          }
          // More than a ring behind: the oldest changes are gone, the subscriber skips to those kept.
          for (let n = Math.max(cursor, topic.published - ringSize); n < topic.published; n++) {
            const failed = emit(topic.ring[n % ringSize]!)
            if (failed !== undefined) return Exit.fail(failed)
          }
          cursor = topic.published
          return Exit.succeed(batch)
        }
        const pull: Pull.Pull<Arr.NonEmptyReadonlyArray<Snapshot>, StorageError> = Effect.suspend(() => {
          if (closed) return Cause.done()
          return Effect.flatMap(take(), (batch) =>
            Arr.isArrayNonEmpty(batch) ? Effect.succeed(batch) : Effect.andThen(
              Effect.callback<void>((resume) => {
                const wake = () => resume(Effect.void)
                topic.parked.add(wake)
                return Effect.sync(() => {
                  topic.parked.delete(wake)
                })
              }),
              pull
            ))
        })
        return pull
      })
    ))

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
          const topic = topics.get(id)
          if (change._tag === "Some" && topic !== undefined) publish(topic, change.value)
        }
      })))
    })

  return {
    committed: (id, version, json, emitted) => {
      if (announce !== undefined) announce(objectType, id, version)
      // Nobody watches any object of this type (the usual case): nothing else to do.
      if (topics.size === 0) return
      const topic = topics.get(id)
      if (topic === undefined) return
      publish(topic, new Change(version, json, false))
      if (emitted !== undefined) deliver(topic, emitted)
    },
    deleted: (id) => {
      if (announce !== undefined) announce(objectType, id, 0)
      const topic = topics.get(id)
      if (topic !== undefined) publish(topic, new Change(0, deps.initialJson(), true))
    },
    emitted: (id, emitted) => {
      const topic = topics.size === 0 ? undefined : topics.get(id)
      if (topic !== undefined) deliver(topic, emitted)
    },
    changes,
    events,
    follow,
    close: Effect.sync(() => {
      closed = true
      for (const topic of topics.values()) {
        const parked = Array.from(topic.parked)
        topic.parked.clear()
        for (const wake of parked) wake()
        for (const queue of topic.events) Queue.endUnsafe(queue)
      }
    })
  }
}
