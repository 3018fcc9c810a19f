/**
 * Commit announcements between processes on one PostgreSQL database (LISTEN/NOTIFY), for live state: after a
 * commit lands, its runtime announces `(type, id, version)`; runtimes with subscribers to that object reload
 * its state from storage. The state itself never travels in a notification (PostgreSQL caps a payload at 8000
 * bytes), so subscribers always read what storage holds.
 *
 * Announcing never waits: commits are queued and sent by a short-lived fiber, many per notification, the
 * newest version per object only. A lost notification (the connection dropped) only delays subscribers until
 * that object's next commit.
 *
 * @internal
 */
import { Effect, Fiber, Queue, Result, Schedule, type Scope } from "effect"

/** One announced commit: object type, object id, version (0: deleted). */
type Announced = readonly [objectType: string, objectId: string, version: number]

/** Keeps a notification's payload well under PostgreSQL's 8000-byte limit. */
const maxPayload = 7000

/** Encodes `commits` into payloads of at most `maxPayload` characters (a JSON array of triples each). */
export const encode = (commits: Iterable<Announced>): Array<string> => {
  const payloads: Array<string> = []
  let current: Array<string> = []
  let size = 2
  for (const commit of commits) {
    const item = JSON.stringify(commit)
    if (current.length > 0 && size + item.length + 1 > maxPayload) {
      payloads.push(`[${current.join(",")}]`)
      current = []
      size = 2
    }
    current.push(item)
    size += item.length + 1
  }
  if (current.length > 0) payloads.push(`[${current.join(",")}]`)
  return payloads
}

/** Decodes a payload; anything malformed (another program on the channel) is ignored. */
export const decode = (payload: string): Array<Announced> => {
  const parsed = Result.try(() => JSON.parse(payload) as unknown)
  if (Result.isFailure(parsed) || !Array.isArray(parsed.success)) return []
  return parsed.success.filter((item): item is Announced =>
    Array.isArray(item) && typeof item[0] === "string" && typeof item[1] === "string" &&
    typeof item[2] === "number"
  )
}

type OnCommit = (objectType: string, objectId: string, version: number) => void

/**
 * Listens on the channel until interrupted, handing every announced commit to the current `watchers`;
 * reconnects after a failure.
 */
const listenLoop = (
  listen: Effect.Effect<Queue.Dequeue<{ readonly payload: string }, unknown>, unknown, Scope.Scope>,
  watchers: ReadonlySet<OnCommit>
): Effect.Effect<never> =>
  Effect.scoped(Effect.gen(function*() {
    const notifications = yield* listen
    while (true) {
      const notification = yield* Queue.take(notifications)
      for (const [objectType, objectId, version] of decode(notification.payload)) {
        for (const watcher of watchers) watcher(objectType, objectId, version)
      }
    }
  })).pipe(
    Effect.tapCause((cause) =>
      Effect.logWarning("durable-object: commit LISTEN failed; retrying").pipe(
        Effect.annotateLogs({ cause: String(cause) })
      )
    ),
    Effect.retry(Schedule.spaced("1 second")),
    Effect.orDie
  )

/** The announcing and watching halves, over a channel. */
export const make = (deps: {
  /** Sends one notification on the channel. */
  readonly notify: (payload: string) => Effect.Effect<unknown, unknown>
  /** Listens on the channel for as long as the scope lasts. */
  readonly listen: Effect.Effect<Queue.Dequeue<{ readonly payload: string }, unknown>, unknown, Scope.Scope>
}) =>
  Effect.map(Effect.context<never>(), (context) => {
    const pending = new Map<string, Announced>()
    let sending = false

    // Sends what is pending, then whatever was announced meanwhile; ends when nothing is left.
    const send: Effect.Effect<void> = Effect.suspend(() => {
      if (pending.size === 0) {
        sending = false
        return Effect.void
      }
      const payloads = encode(pending.values())
      pending.clear()
      return Effect.forEach(payloads, deps.notify, { discard: true }).pipe(
        Effect.catchCause((cause) =>
          Effect.logWarning("durable-object: announcing commits failed; other runtimes' subscribers wait for the next")
            .pipe(Effect.annotateLogs({ cause: String(cause) }))
        ),
        Effect.andThen(send)
      )
    })

    const announce = (objectType: string, objectId: string, version: number): void => {
      pending.set(`${objectType}\u0000${objectId}`, [objectType, objectId, version])
      if (sending) return
      sending = true
      // Started in the next turn, so the commits landing in this one share a notification.
      Effect.runForkWith(context)(Effect.andThen(Effect.yieldNow, send))
    }

    // One LISTEN (one reserved connection) per storage, shared by every runtime on it, held only while a
    // runtime watches.
    const watchers = new Set<OnCommit>()
    let listening: Fiber.Fiber<never> | undefined
    const watch = (onCommit: OnCommit): Effect.Effect<void, never, Scope.Scope> =>
      Effect.andThen(
        Effect.sync(() => {
          watchers.add(onCommit)
          if (listening === undefined) listening = Effect.runForkWith(context)(listenLoop(deps.listen, watchers))
        }),
        Effect.addFinalizer(() =>
          Effect.suspend(() => {
            watchers.delete(onCommit)
            if (watchers.size > 0 || listening === undefined) return Effect.void
            const fiber = listening
            listening = undefined
            return Fiber.interrupt(fiber)
          })
        )
      )

    return { announce, watch }
  })
