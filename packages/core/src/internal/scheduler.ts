/**
 * The alarm scheduler: one fiber per storage (per runtime), for every object type on it.
 *
 * It claims due alarms from storage in batches (atomically, under a lease, so two schedulers never run one
 * alarm at once), hands each to its object type's runtime with bounded concurrency, and sleeps until the
 * earliest alarm it knows of or the next poll. Commits in this process wake it early when they schedule an
 * earlier alarm, so near alarms fire within milliseconds; the poll finds alarms written by other processes
 * and alarms whose claim expired (a crashed owner).
 *
 * @internal
 */
import { Cause, Clock, Context, Duration, Effect, FiberSet, Latch } from "effect"
import type { ClaimedAlarm, Storage } from "../Storage.ts"

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

/** The scheduler service. */
export class Scheduler extends Context.Service<Scheduler, {
  /** Registers an object type's alarm handler for the life of the current scope. */
  readonly register: (
    objectType: string,
    fire: (alarm: ClaimedAlarm) => Effect.Effect<void>
  ) => Effect.Effect<void, never, import("effect").Scope.Scope>
  /** Tells the scheduler an alarm was scheduled at `fireAt` in this process, so it wakes in time for it. */
  readonly wake: (fireAt: number) => void
}>()("@durable-object/core/Alarms/Scheduler") {}

/** The longest the loop dispatches without yielding to the event loop. */
const sliceMillis = 4

const randomId = (): string => globalThis.crypto.randomUUID()

const logFailure = (what: string) => (cause: Cause.Cause<unknown>) =>
  Effect.logWarning(`durable-object: alarm scheduler could not ${what}; retrying at the next poll`).pipe(
    Effect.annotateLogs({ cause: Cause.pretty(cause) })
  )

const logDied = (alarm: ClaimedAlarm) => (cause: Cause.Cause<unknown>) =>
  Effect.logError("durable-object: alarm handling died").pipe(
    Effect.annotateLogs({
      objectType: alarm.objectType,
      objectId: alarm.objectId,
      alarm: alarm.name,
      cause: Cause.pretty(cause)
    })
  )

/** Builds the scheduler over `storage`, running in the current scope. */
export const make = (
  storage: Storage["Service"],
  options?: SchedulerOptions
): Effect.Effect<Scheduler["Service"], never, import("effect").Scope.Scope> =>
  Effect.gen(function*() {
    const clock = yield* Clock.Clock
    const pollMillis = Duration.toMillis(options?.pollInterval ?? "5 seconds")
    const leaseMillis = Duration.toMillis(options?.leaseDuration ?? "60 seconds")
    const batchSize = options?.batchSize ?? 256
    const concurrency = Math.max(1, options?.concurrency ?? 256)
    const fibers = yield* FiberSet.make<void, never>()
    const handlers = new Map<string, (alarm: ClaimedAlarm) => Effect.Effect<void>>()
    const signal = Latch.makeUnsafe(false)
    // Opened whenever a firing ends, so the loop, waiting for a free slot, can dispatch the next alarm.
    const slotFreed = Latch.makeUnsafe(false)
    const owner = randomId()
    let claims = 0
    let inFlight = 0
    let sleeping = false
    let sleepingUntil = 0

    const wake = (fireAt: number) => {
      if (!sleeping || fireAt < sleepingUntil) signal.openUnsafe()
    }

    const hasSlot = () => inFlight < concurrency

    const finished = Effect.sync(() => {
      inFlight--
      slotFreed.openUnsafe()
    })

    /** Starts firing `alarm` in its own fiber once fewer than `concurrency` firings are under way. */
    const dispatch = (alarm: ClaimedAlarm): Effect.Effect<void> => {
      const fire = handlers.get(alarm.objectType)
      // The type unregistered after the claim: leave the claim to expire so another runtime takes it.
      if (fire === undefined) return Effect.void
      const start = Effect.suspend(() => {
        inFlight++
        return FiberSet.run(fibers, fire(alarm).pipe(Effect.catchCause(logDied(alarm)), Effect.ensuring(finished)))
      })
      if (hasSlot()) return Effect.asVoid(start)
      return Effect.gen(function*() {
        while (!hasSlot()) {
          slotFreed.closeUnsafe()
          yield* slotFreed.await
        }
        yield* start
      })
    }

    const loop = Effect.gen(function*() {
      while (true) {
        signal.closeUnsafe()
        if (handlers.size === 0) {
          yield* signal.await
          continue
        }
        const objectTypes = Array.from(handlers.keys())
        const now = clock.currentTimeMillisUnsafe()
        const claimed = yield* storage.claimDueAlarms({
          objectTypes,
          now,
          claim: `${owner}:${++claims}`,
          leaseMillis,
          limit: batchSize
        }).pipe(Effect.catchCause((cause) => Effect.as(logFailure("claim due alarms")(cause), [])))
        let sliceStart = clock.currentTimeMillisUnsafe()
        for (const alarm of claimed.toSorted((a, b) => a.fireAt - b.fireAt)) {
          yield* dispatch(alarm)
          // A firing that never suspends (in-memory storage) runs inline: give the event loop a turn every few
          // milliseconds, or a batch of them holds it for its whole length.
          const now = clock.currentTimeMillisUnsafe()
          if (now - sliceStart >= sliceMillis) {
            yield* Effect.yieldNow
            sliceStart = clock.currentTimeMillisUnsafe()
          }
        }
        if (claimed.length >= batchSize) continue
        const next = yield* storage.nextAlarmAt(objectTypes).pipe(
          Effect.catchCause((cause) => Effect.as(logFailure("read the next alarm time")(cause), undefined))
        )
        const after = clock.currentTimeMillisUnsafe()
        const until = Math.min(next ?? Infinity, after + pollMillis)
        if (until <= after && claimed.length > 0) continue
        sleeping = true
        sleepingUntil = until
        yield* Effect.raceFirst(Effect.sleep(Math.max(1, until - after)), signal.await).pipe(
          Effect.ensuring(Effect.sync(() => {
            sleeping = false
          }))
        )
      }
    })

    yield* Effect.forkScoped(loop)
    if (storage.watchAlarms !== undefined) yield* storage.watchAlarms(wake)

    return Scheduler.of({
      register: (objectType, fire) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            handlers.set(objectType, fire)
            signal.openUnsafe()
          }),
          () =>
            Effect.sync(() => {
              if (handlers.get(objectType) === fire) handlers.delete(objectType)
            })
        ),
      wake
    })
  })
