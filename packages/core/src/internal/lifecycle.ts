/**
 * An object's life outside its calls: activation (load, decode, `onLoad`), graceful stop (`onShutdown`),
 * `stop`, `delete` and `status`, the idle sweeper that hibernates and shuts down idle objects, and the
 * runtime's own graceful stop when its layer closes.
 *
 * @internal
 */
import { Cause, type Context, Effect, Exit, Metric } from "effect"
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
import type { StoredObject } from "./records.ts"
import { span, tracing } from "./span.ts"

/** Objects stopped at once by the graceful stop (their `onShutdown` handlers run concurrently). */
const stopConcurrency = 16

/** Objects one graceful-stop worker stops before it yields (a few milliseconds of synchronous stops). */
const stopSlice = 64

/** Idle objects the sweeper handles in one synchronous step (each takes about a microsecond). */
const sweepSlice = 1024

/** The scheduling priority of the sweeper between slices: ahead of ordinary fibers (0). */
const sweepPriority = -1

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

  /**
   * With the lock held, what an activation does once its row is read: decode it, make the copy active, run
   * `onLoad`. Without `onLoad` (the usual case) it is all one synchronous step: every due alarm of a drain is
   * the first call to its object, so an activation is paid per alarm.
   */
  const activated = (
    inst: Instance,
    chain: ReadonlyArray<string>,
    stored: StoredObject | undefined,
    context: Context.Context<never>
  ): Effect.Effect<void, unknown> => {
    let state: unknown
    let version = 0
    if (stored !== undefined) {
      // A row the storage could not use (edited by hand, or past its limits) fails like one that does not decode.
      if (stored.invalid !== undefined) {
        return Effect.fail(new StateDecodeError({ objectType, objectId: inst.id, issue: stored.invalid }))
      }
      const decoded = codec.decode(stored.state)
      if (Exit.isFailure(decoded)) {
        return Effect.fail(
          new StateDecodeError({ objectType, objectId: inst.id, issue: Cause.pretty(decoded.cause) })
        )
      }
      state = decoded.value
      version = stored.version
    } else {
      state = def.initialState()
    }
    // Keep our own canonical JSON, so "did the state change?" is a string comparison against it.
    const json = codec.encode(state)
    if (Exit.isFailure(json)) {
      return Effect.fail(
        new HandlerDefect({
          objectType,
          objectId: inst.id,
          handler: stored === undefined ? "initialState" : "load",
          defect: json.cause,
          pretty: `the state does not encode with the state schema: ${Cause.pretty(json.cause)}`
        })
      )
    }
    registry.activated(inst, state, json.value, version)
    registry.reportLoadedUnsafe(context)
    activationCounter.updateUnsafe(1, context)
    const onLoad = def.onLoad
    if (onLoad === undefined) return Effect.void
    const cell = makeCell(state)
    return user.run(inst, "onLoad", chain, Effect.suspend(() => onLoad(makeContext(inst.id, cell)))).pipe(
      Effect.andThen(Effect.uninterruptible(Effect.suspend(() => commits.commitCell(inst, "onLoad", cell)))),
      Effect.onError(() =>
        Effect.suspend(() => {
          registry.unload(inst)
          return registry.reportLoaded
        })
      )
    )
  }

  const activate: Lifecycle["activate"] = (inst, chain) =>
    Effect.withFiber((fiber) => {
      const context = fiber.context
      const activation = Effect.flatMap(own.load(objectType, inst.id), (stored) =>
        activated(inst, chain, stored, context))
      // The span (and its attributes) only when someone can see it: see `span.ts`.
      return tracing(fiber)
        ? Effect.withSpan(activation, Telemetry.spanActivate, {
          attributes: spanAttributes(inst),
          captureStackTrace: false
        })
        : activation
    })

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
      const onShutdown = def.onShutdown
      // Only `onShutdown` reads the state: without one, a hibernated object stops without being decoded.
      if (onShutdown !== undefined && inst.status === "hibernated") yield* registry.wake(inst)
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

  /**
   * Handles one due expiry. What needs no effect (a relist, a hibernation, the shutdown of an object without
   * `onShutdown` while no span is exported) is done at once and `undefined` returned; otherwise the effect
   * that does it.
   */
  const expire = (
    inst: Instance,
    action: "hibernate" | "shutdown",
    traced: boolean
  ): Effect.Effect<void> | undefined => {
    const eligible = action === "hibernate" ? inst.status === "active" : isLoaded(inst)
    if (inst.busy || !eligible) {
      // A busy object is listed again when its call finishes.
      registry.relist(inst, undefined)
      return undefined
    }
    if (inst.lastActive > inst.idleAt) {
      // Active since it was listed: back to its place in line.
      registry.relist(inst, inst.lastActive)
      return undefined
    }
    if (inst.commits.length > 0) {
      // Its last commit has not landed yet: look again after another idle period.
      registry.relist(inst, clock.currentTimeMillisUnsafe())
      return undefined
    }
    if (action === "hibernate") {
      registry.hibernate(inst)
      return undefined
    }
    if (!Mailbox.tryAcquire(inst)) return undefined
    if (def.onShutdown === undefined && !traced) {
      // What `shutdownLocked` and the release below do, without an effect per object.
      registry.markStopped(inst)
      registry.release(inst)
      return undefined
    }
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

  /** What the sweeper does after a sweep: wait for news, sleep until the next expiry, go on, or run an effect. */
  type Sweep =
    | { readonly _tag: "Idle" }
    | { readonly _tag: "Sleep"; readonly millis: number }
    | { readonly _tag: "More" }
    | { readonly _tag: "Run"; readonly effect: Effect.Effect<void> }
  const idle: Sweep = { _tag: "Idle" }
  const more: Sweep = { _tag: "More" }

  /** Handles due expiries synchronously, at most `sweepSlice` of them, until one needs an effect. */
  const sweep = (traced: boolean): Sweep => {
    for (let n = 0; n < sweepSlice; n++) {
      const next = nextExpiry()
      if (next === undefined) return idle
      const now = clock.currentTimeMillisUnsafe()
      if (next.at > now) return { _tag: "Sleep", millis: next.at - now }
      const effect = expire(next.inst, next.action, traced)
      if (effect !== undefined) return { _tag: "Run", effect }
    }
    return more
  }

  // Idle objects are swept in synchronous slices rather than an effect each: under a closed loop of callers
  // that never suspend, every scheduler round runs each caller for a full `MaxOpsBeforeYield` budget, and a
  // sweeper that got one such budget per round (about 128 objects) fell so far behind 100,000 activations a
  // second that a million objects were loaded at once (the churn scenario: ~900 MB of heap, GC pauses of
  // 100–400 ms). Between slices it yields ahead of ordinary fibers: what it does frees memory, and a slice is
  // short.
  const sweeper: Effect.Effect<never> = Effect.withFiber((fiber) =>
    Effect.gen(function*() {
      const wake = registry.wakeSweeper
      while (true) {
        wake.closeUnsafe()
        const loadedBefore = registry.loaded
        const step = sweep(tracing(fiber))
        if (registry.loaded !== loadedBefore) yield* registry.reportLoaded
        switch (step._tag) {
          case "Idle":
            yield* wake.await
            break
          case "Sleep":
            yield* Effect.raceFirst(Effect.sleep(step.millis), wake.await)
            break
          case "More":
            yield* Effect.yieldNowWith(sweepPriority)
            break
          case "Run":
            yield* step.effect
        }
      }
    })
  )

  const stopOne = (inst: Instance) =>
    withLock(inst, inst.status === "stopped" ? Effect.void : shutdownLocked(inst)).pipe(
      Effect.catchCause(shutdownFailed(inst, "the graceful stop failed"))
    )

  const stopAll: Effect.Effect<void> = Effect.suspend(() => {
    registry.close()
    const all = Array.from(registry.objects.values())
    let next = 0
    // A stop without `onShutdown` completes synchronously, and `Effect.forEach` runs children that complete
    // synchronously in one loop: 100,000 loaded objects held the event loop ~0.6 s. Each worker yields every
    // `stopSlice` objects instead, so the loop gets a turn between slices.
    const worker = Effect.gen(function*() {
      let sinceYield = 0
      while (next < all.length) {
        yield* stopOne(all[next++]!)
        if (++sinceYield >= stopSlice) {
          sinceYield = 0
          yield* Effect.yieldNow
        }
      }
    })
    return Effect.all(Array.from({ length: stopConcurrency }, () => worker), {
      concurrency: "unbounded",
      discard: true
    })
  })

  const drop: Lifecycle["drop"] = (id) =>
    Effect.suspend(() => {
      const inst = registry.objects.get(id)
      if (inst === undefined || !isLoaded(inst)) return Effect.void
      return withLock(inst, Effect.sync(() => registry.unload(inst))).pipe(Effect.catchCause(() => Effect.void))
    })

  return { activate, stop, delete: delete_, status, sweeper, stopAll, drop }
}
