/**
 * An object's life outside its calls: activation (load, decode, `onLoad`), graceful stop (`onShutdown`),
 * `stop`, `delete` and `status`, the idle sweeper that hibernates and shuts down idle objects, and the
 * runtime's own graceful stop when its layer closes.
 *
 * @internal
 */
import { Cause, Effect, Exit, Metric } from "effect"
import {
  HandlerDefect,
  type InvalidObjectId,
  StateDecodeError,
  type StorageError,
  type ValueTooLarge,
  type VersionConflict
} from "../Errors.ts"
import * as Telemetry from "../Telemetry.ts"
import { makeCell } from "./context.ts"
import type { Status } from "./definition.ts"
import { type Instance, isLoaded } from "./instance.ts"
import * as Mailbox from "./mailbox.ts"
import type { RuntimeParts } from "./parts.ts"
import { span } from "./span.ts"

export interface Lifecycle {
  /** With the lock held: loads `inst` from storage, decodes it, runs `onLoad` and commits what it changed. */
  readonly activate: (inst: Instance, chain: ReadonlyArray<string>) => Effect.Effect<void, unknown>
  readonly stop: (
    id: string
  ) => Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict | HandlerDefect | ValueTooLarge>
  readonly delete: (id: string) => Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict>
  readonly status: (id: string) => Effect.Effect<Status>
  /** Hibernates and shuts down idle objects, forever (fork it in the runtime's scope). */
  readonly sweeper: Effect.Effect<never>
  /** Stops every loaded object gracefully (the layer is closing): waits for its calls, runs `onShutdown`. */
  readonly stopAll: Effect.Effect<void>
  /**
   * Forgets the in-memory copy of `id` without running `onShutdown` (it may be stale): after the calls already
   * in line and the queued commits, so every call that comes later reads storage again.
   */
  readonly drop: (id: string) => Effect.Effect<void>
}

export const make = (deps: RuntimeParts): Lifecycle => {
  const { checkId, clock, commits, def, live, makeContext, own, registry, user } = deps
  const objectType = def.name
  const options = def.options
  const codec = registry.codec
  const activationCounter = Metric.withAttributes(Telemetry.activations, { object_type: objectType })
  const shutdownFailures = Metric.withAttributes(Telemetry.backgroundFailures, {
    object_type: objectType,
    operation: "shutdown" satisfies Telemetry.BackgroundOperation
  })
  const hibernates = options.hibernateAfterMillis < options.shutdownAfterMillis

  const spanAttributes = (inst: Instance) => ({
    [Telemetry.attributes.objectType]: objectType,
    [Telemetry.attributes.objectId]: inst.id
  })

  const activate: Lifecycle["activate"] = (inst, chain) =>
    Effect.gen(function*() {
      const stored = yield* own.load(objectType, inst.id)
      let state: unknown
      let version = 0
      if (stored !== undefined) {
        // A row the storage could not use (edited by hand, or past its limits) fails like one that does not decode.
        if (stored.invalid !== undefined) {
          return yield* new StateDecodeError({ objectType, objectId: inst.id, issue: stored.invalid })
        }
        const decoded = codec.decode(stored.state)
        if (Exit.isFailure(decoded)) {
          return yield* new StateDecodeError({ objectType, objectId: inst.id, issue: Cause.pretty(decoded.cause) })
        }
        state = decoded.value
        version = stored.version
      } else {
        state = def.initialState()
      }
      // Keep our own canonical JSON, so "did the state change?" is a string comparison against it.
      const json = codec.encode(state)
      if (Exit.isFailure(json)) {
        return yield* new HandlerDefect({
          objectType,
          objectId: inst.id,
          handler: stored === undefined ? "initialState" : "load",
          defect: json.cause,
          pretty: `the state does not encode with the state schema: ${Cause.pretty(json.cause)}`
        })
      }
      registry.activated(inst, state, json.value, version)
      yield* registry.reportLoaded
      yield* Metric.update(activationCounter, 1)
      const onLoad = def.onLoad
      if (onLoad !== undefined) {
        const cell = makeCell(state)
        yield* user.run(inst, "onLoad", chain, Effect.suspend(() => onLoad(makeContext(inst.id, cell)))).pipe(
          Effect.andThen(Effect.uninterruptible(Effect.suspend(() => commits.commitCell(inst, "onLoad", cell)))),
          Effect.onError(() =>
            Effect.suspend(() => {
              registry.unload(inst)
              return registry.reportLoaded
            })
          )
        )
      }
    }).pipe(span(Telemetry.spanActivate, spanAttributes(inst)))

  /** Runs `body` holding the object's lock (waiting in line without a capacity limit), after its commits. */
  const withLock = <A, E>(inst: Instance, body: Effect.Effect<A, E>): Effect.Effect<A, E> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const ticket = Mailbox.makeTicket()
        // No capacity limit: nothing can refuse the place in line.
        const acquired = yield* Effect.exit(restore(Mailbox.acquire(inst, ticket, Infinity, () => undefined)))
        if (!ticket.granted) return yield* (acquired as Exit.Exit<never>)
        // A queued commit that fails has already failed the calls that depended on it and dropped the copy,
        // so what follows works on storage's truth either way.
        const result = yield* Effect.exit(restore(Effect.andThen(commits.quiesce(inst), body)))
        registry.release(inst)
        yield* registry.reportLoaded
        return yield* result
      })
    )

  /** With the lock held: runs `onShutdown` on a loaded object, commits its changes, and forgets it. */
  const shutdownLocked = (inst: Instance) =>
    Effect.gen(function*() {
      if (inst.status === "hibernated") yield* registry.wake(inst)
      const onShutdown = def.onShutdown
      if (inst.status === "active" && onShutdown !== undefined) {
        const cell = makeCell(inst.state)
        yield* user.run(inst, "onShutdown", [], Effect.suspend(() => onShutdown(makeContext(inst.id, cell))))
        yield* commits.commitCell(inst, "onShutdown", cell)
      }
    }).pipe(
      Effect.ensuring(Effect.sync(() => registry.markStopped(inst))),
      span(Telemetry.spanShutdown, spanAttributes(inst))
    )

  /** A shutdown nobody waits for failed: its changes were not stored. Counted and logged. */
  const shutdownFailed = (inst: Instance, what: string) => (cause: Cause.Cause<unknown>) =>
    Effect.andThen(
      Metric.update(shutdownFailures, 1),
      Effect.logError(`durable-object: ${what}; the object stopped without storing onShutdown's changes`).pipe(
        Effect.annotateLogs({ objectType, objectId: inst.id, cause: Cause.pretty(cause) })
      )
    )

  const stop: Lifecycle["stop"] = (id) =>
    Effect.suspend(() => {
      const idError = checkId(id)
      if (idError !== undefined) return Effect.fail(idError)
      const inst = registry.objects.get(id)
      if (inst === undefined) return Effect.void
      // A stop commits no fired alarm, so its claim cannot be lost.
      return withLock(inst, shutdownLocked(inst)).pipe(Effect.catchTag("AlarmClaimLost", Effect.die))
    })

  const delete_: Lifecycle["delete"] = (id) =>
    Effect.suspend(() => {
      const idError = checkId(id)
      if (idError !== undefined) return Effect.fail(idError)
      const inst = registry.instanceFor(id)
      return withLock(
        inst,
        Effect.gen(function*() {
          const version = isLoaded(inst) ? inst.version : ((yield* own.load(objectType, id))?.version ?? 0)
          yield* own.commit({ objectType, objectId: id, expectedVersion: version, state: null }).pipe(
            Effect.onError(() => Effect.sync(() => registry.unload(inst)))
          )
          registry.markStopped(inst)
          live.deleted(id)
        })
      ).pipe(Effect.catchTag("AlarmClaimLost", Effect.die))
    })

  const status: Lifecycle["status"] = (id) =>
    Effect.sync((): Status => {
      const inst = registry.objects.get(id)
      return inst !== undefined && isLoaded(inst) ? inst.status as Status : "stopped"
    })

  // ---------------------------------------------------------------------------------------------------------
  // The sweeper: one fiber per object type that hibernates and shuts down idle objects
  // ---------------------------------------------------------------------------------------------------------

  type Expiry = { readonly inst: Instance; readonly at: number; readonly action: "hibernate" | "shutdown" }

  const nextExpiry = (): Expiry | undefined => {
    let next: Expiry | undefined
    const active = registry.idleActive.head
    if (active !== undefined) {
      // No object on the list was active before its `idleAt`, so none expires before the head's.
      next = hibernates
        ? { inst: active, at: active.idleAt + options.hibernateAfterMillis, action: "hibernate" }
        : { inst: active, at: active.idleAt + options.shutdownAfterMillis, action: "shutdown" }
    }
    const hibernated = registry.idleHibernated.head
    if (hibernated !== undefined) {
      const at = hibernated.idleAt + options.shutdownAfterMillis
      if (next === undefined || at < next.at) next = { inst: hibernated, at, action: "shutdown" }
    }
    return next !== undefined && Number.isFinite(next.at) ? next : undefined
  }

  const expire = (inst: Instance, action: "hibernate" | "shutdown"): Effect.Effect<void> => {
    const eligible = action === "hibernate" ? inst.status === "active" : isLoaded(inst)
    if (inst.busy || !eligible) {
      // A busy object is listed again when its call finishes.
      registry.relist(inst, undefined)
      return Effect.void
    }
    if (inst.lastActive > inst.idleAt) {
      // Active since it was listed: back to its place in line.
      registry.relist(inst, inst.lastActive)
      return Effect.void
    }
    if (inst.commits.length > 0) {
      // Its last commit has not landed yet: look again after another idle period.
      registry.relist(inst, clock.currentTimeMillisUnsafe())
      return Effect.void
    }
    if (action === "hibernate") {
      registry.hibernate(inst)
      return Effect.void
    }
    if (!Mailbox.tryAcquire(inst)) return Effect.void
    return shutdownLocked(inst).pipe(
      Effect.catchCause(shutdownFailed(inst, "onShutdown failed during an idle shutdown")),
      Effect.ensuring(
        Effect.suspend(() => {
          registry.release(inst)
          return registry.reportLoaded
        })
      )
    )
  }

  const sweeper: Effect.Effect<never> = Effect.gen(function*() {
    const wake = registry.wakeSweeper
    while (true) {
      wake.closeUnsafe()
      const next = nextExpiry()
      if (next === undefined) {
        yield* wake.await
        continue
      }
      const now = clock.currentTimeMillisUnsafe()
      if (next.at > now) {
        yield* Effect.raceFirst(Effect.sleep(next.at - now), wake.await)
        continue
      }
      yield* expire(next.inst, next.action)
    }
  })

  const stopAll: Effect.Effect<void> = Effect.suspend(() => {
    registry.close()
    return Effect.forEach(
      Array.from(registry.objects.values()),
      (inst) =>
        withLock(inst, inst.status === "stopped" ? Effect.void : shutdownLocked(inst)).pipe(
          Effect.catchCause(shutdownFailed(inst, "the graceful stop failed"))
        ),
      { concurrency: 16, discard: true }
    )
  })

  const drop: Lifecycle["drop"] = (id) =>
    Effect.suspend(() => {
      const inst = registry.objects.get(id)
      if (inst === undefined || !isLoaded(inst)) return Effect.void
      return withLock(inst, Effect.sync(() => registry.unload(inst))).pipe(Effect.catchCause(() => Effect.void))
    })

  return { activate, stop, delete: delete_, status, sweeper, stopAll, drop }
}
