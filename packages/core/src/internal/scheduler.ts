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
import { Cause, Clock, Duration, Effect, Exit, FiberSet, Latch, Metric, type Scope } from "effect"
import * as Telemetry from "../Telemetry.ts"
import type { ClaimedAlarm, SchedulerOptions, SchedulerService, StorageService } from "./records.ts"

/** The longest the loop dispatches without yielding to the event loop. */
const sliceMillis = 4

const randomId = (): string => globalThis.crypto.randomUUID()

/** The first wait after a failed read of due alarms; it doubles per failure in a row, up to the poll interval. */
const backoffMillis = 100

const readFailures = {
  alarm_claim: Metric.withAttributes(Telemetry.backgroundFailures, { operation: "alarm_claim" }),
  alarm_next: Metric.withAttributes(Telemetry.backgroundFailures, { operation: "alarm_next" })
} satisfies Partial<Record<Telemetry.BackgroundOperation, Metric.Metric<number, unknown>>>

/**
 * Expired replies of keyed calls are removed when the earliest one is due, at most once per `purgeGapMillis`
 * (so a steady stream of expiries costs one purge a minute, not one per reply), `purgeBatch` per statement.
 */
const purgeGapMillis = 60_000
const purgeBatch = 1000

const purgeFailures = Metric.withAttributes(Telemetry.backgroundFailures, { operation: "reply_purge" })

/** The purge of expired replies failed: counted and logged; it is retried a minute later. */
const purgeFailed = (what: string) => (cause: Cause.Cause<unknown>) =>
  Effect.andThen(
    Metric.update(purgeFailures, 1),
    Effect.logWarning(`durable-object: could not ${what}; retrying in a minute`).pipe(
      Effect.annotateLogs({ cause: Cause.pretty(cause) })
    )
  )

/** A read of due alarms failed: counted (no caller can be told) and logged with its cause. */
const readFailed = (operation: keyof typeof readFailures, retryMillis: number) => (cause: Cause.Cause<unknown>) =>
  Effect.andThen(
    Metric.update(readFailures[operation], 1),
    Effect.logWarning(
      `durable-object: alarm scheduler could not ${
        operation === "alarm_claim" ? "claim due alarms" : "read the next alarm time"
      }; retrying in ${retryMillis} ms`
    ).pipe(Effect.annotateLogs({ cause: Cause.pretty(cause) }))
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
  storage: StorageService,
  options?: SchedulerOptions
): Effect.Effect<SchedulerService, never, Scope.Scope> =>
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
    // Failed reads in a row: a storage that fails (a database down, a row it cannot read) is retried with
    // backoff instead of at once, so the scheduler neither spins on it nor waits a whole poll to recover.
    let failures = 0
    const backOff = (operation: keyof typeof readFailures, cause: Cause.Cause<unknown>) =>
      Effect.suspend(() => {
        failures++
        const wait = Math.min(pollMillis, backoffMillis * 2 ** Math.min(20, failures - 1))
        return Effect.andThen(readFailed(operation, wait)(cause), Effect.sleep(wait))
      })
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
        const claim = yield* Effect.exit(storage.claimDueAlarms({
          objectTypes,
          now,
          claim: `${owner}:${++claims}`,
          leaseMillis,
          limit: batchSize
        }))
        if (Exit.isFailure(claim)) {
          yield* backOff("alarm_claim", claim.cause)
          continue
        }
        const claimed = claim.value
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
        const nextRead = yield* Effect.exit(storage.nextAlarmAt(objectTypes))
        if (Exit.isFailure(nextRead)) {
          yield* backOff("alarm_next", nextRead.cause)
          continue
        }
        failures = 0
        // A time that is no number (a hand-edited row) would make the sleep below NaN, that is no sleep at all.
        const next = nextRead.value !== undefined && Number.isFinite(nextRead.value) ? nextRead.value : undefined
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

    // Expired replies of keyed calls go in batches, through the storage's expiry index, when the earliest is
    // due. With none stored, the purge waits to hear of one: it never wakes on a timer for nothing.
    const purgeSignal = Latch.makeUnsafe(false)
    let purgeSleepsUntil = Infinity
    const repliesStored = (expiresAt: number) => {
      if (expiresAt < purgeSleepsUntil) purgeSignal.openUnsafe()
    }
    const purge = Effect.gen(function*() {
      let notBefore = 0
      while (true) {
        purgeSignal.closeUnsafe()
        const next = yield* Effect.exit(storage.nextReplyExpiry)
        if (Exit.isFailure(next)) {
          yield* purgeFailed("read when the next reply expires")(next.cause)
          yield* Effect.sleep(purgeGapMillis)
          continue
        }
        const now = clock.currentTimeMillisUnsafe()
        const at = next.value === undefined ? Infinity : Math.max(next.value, notBefore)
        if (at > now) {
          purgeSleepsUntil = at
          yield* (Number.isFinite(at)
            ? Effect.raceFirst(Effect.sleep(at - now), purgeSignal.await)
            : purgeSignal.await).pipe(Effect.ensuring(Effect.sync(() => {
              purgeSleepsUntil = Infinity
            })))
          continue
        }
        notBefore = now + purgeGapMillis
        let removed = purgeBatch
        while (removed >= purgeBatch) {
          const purged = yield* Effect.exit(storage.purgeReplies(clock.currentTimeMillisUnsafe(), purgeBatch))
          if (Exit.isFailure(purged)) {
            yield* purgeFailed("remove expired replies")(purged.cause)
            break
          }
          removed = purged.value
          yield* Effect.yieldNow
        }
      }
    })

    yield* Effect.forkScoped(loop)
    yield* Effect.forkScoped(purge)
    if (storage.watchAlarms !== undefined) yield* storage.watchAlarms(wake)

    return {
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
      wake,
      repliesStored
    }
  })
