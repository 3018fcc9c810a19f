/**
 * Firing alarms and scheduling them from outside: runs a claimed alarm's handler in its object's serial context
 * (its changes, its alarm changes and the removal of the fired alarm commit together under the claim),
 * retries failures with backoff, releases claims, re-arms recurring alarms, and counts every outcome.
 *
 * @internal
 */
import { Cause, DateTime, Effect, Exit, Metric, Result, Schedule, Schema } from "effect"
import { type AlarmInfo, defaultRetryPolicy, retryDelayMillis, type When } from "../Alarms.ts"
import { AlarmClaimLost, type InvalidObjectId, InvalidPayload, type StorageError, UnknownHandler } from "../Errors.ts"
import * as Telemetry from "../Telemetry.ts"
import { type AlarmCodecs, nextCron, resolveWhen, storedProblem, toAlarmInfo } from "./alarmCodec.ts"
import type { Calls } from "./call.ts"
import { stageAlarm, touchedAlarm } from "./context.ts"
import type { AlarmContext } from "./definition.ts"
import type { RuntimeParts } from "./parts.ts"
import type { ClaimedAlarm, SchedulerService } from "./records.ts"
import { span, tracing } from "./span.ts"

export interface AlarmRunner {
  /** Fires one claimed alarm (the scheduler calls it). */
  readonly fire: (alarm: ClaimedAlarm) => Effect.Effect<void>
  readonly scheduleAlarm: (id: string, name: string, when: When, payload: unknown) => Effect.Effect<void, unknown>
  readonly cancelAlarm: (id: string, name: string) => Effect.Effect<void, unknown>
  readonly listAlarms: (id: string) => Effect.Effect<ReadonlyArray<AlarmInfo>, InvalidObjectId | StorageError>
}

export const make = (
  deps: RuntimeParts & {
    readonly calls: Calls
    readonly scheduler: SchedulerService
    readonly codecs: AlarmCodecs
  }
): AlarmRunner => {
  const { calls, checkId, clock, codecs, def, makeContext, own, scheduler } = deps
  const objectType = def.name
  const policy = def.options.alarmRetry
  const maxRetries = policy?.maxRetries ?? defaultRetryPolicy.maxRetries
  // By own name only: a name read from storage or a caller ("constructor", "__proto__") must never find
  // something an object inherits.
  const specs = new Map(Object.entries(def.alarms))
  const names = Array.from(specs.keys())
  const validators = new Map<string, (u: unknown) => Exit.Exit<unknown, Schema.SchemaError>>()
  for (const [name, spec] of specs) {
    if (spec.payload !== undefined) {
      validators.set(name, Schema.decodeUnknownExit(Schema.toType(spec.payload) as unknown as Schema.Decoder<unknown>))
    }
  }

  const latenessMetric = Metric.withAttributes(Telemetry.alarmLateness, { object_type: objectType })
  const releaseFailures = Metric.withAttributes(Telemetry.backgroundFailures, {
    object_type: objectType,
    operation: "alarm_release" satisfies Telemetry.BackgroundOperation
  })
  // Made once per declared alarm name (a metric with attributes made per update computes its series key every
  // time). Stored alarms the definition does not declare share one series, so odd rows cannot grow the set.
  const counters = new Map<string, Record<Telemetry.AlarmOutcome, Metric.Metric<number, unknown>>>()
  const counterOf = (name: string, outcome: Telemetry.AlarmOutcome) => {
    const series = specs.has(name) ? name : "(undeclared)"
    let found = counters.get(series)
    if (found === undefined) {
      const counter = (outcome: Telemetry.AlarmOutcome) =>
        Metric.withAttributes(Telemetry.alarms, { object_type: objectType, alarm: series, outcome })
      found = { fired: counter("fired"), retried: counter("retried"), failed: counter("failed"), lost: counter("lost") }
      counters.set(series, found)
    }
    return found[outcome]
  }
  const count = (name: string, outcome: Telemetry.AlarmOutcome) =>
    Effect.withFiber((fiber) => {
      counterOf(name, outcome).updateUnsafe(1, fiber.context)
      return Effect.void
    })

  /**
   * Releases the claim on `alarm` for a retry at `retryAt`, or as failed (`null`). A release that fails is
   * retried a few times; if it still fails the alarm fires again once its lease expires, which is counted and
   * logged.
   */
  const release = (alarm: ClaimedAlarm, retryAt: number | null, error: string) =>
    own.releaseAlarm({
      objectType,
      objectId: alarm.objectId,
      name: alarm.name,
      claim: alarm.claim,
      retryAt,
      error,
      now: clock.currentTimeMillisUnsafe()
    }).pipe(
      Effect.retry({ times: 3, schedule: Schedule.exponential("100 millis") }),
      Effect.flatMap((held) => {
        if (!held) return count(alarm.name, "lost")
        if (retryAt !== null) scheduler.wake(retryAt)
        return count(alarm.name, retryAt === null ? "failed" : "retried")
      }),
      Effect.catchCause((cause) =>
        Effect.andThen(
          Metric.update(releaseFailures, 1),
          Effect.logWarning("durable-object: could not release an alarm claim; it fires again when its lease expires")
            .pipe(Effect.annotateLogs({ objectType, objectId: alarm.objectId, cause: Cause.pretty(cause) }))
        )
      )
    )

  /** Runs the handler of `alarm` in the object's serial context and commits, or releases it for a retry. */
  const run = (alarm: ClaimedAlarm): Effect.Effect<void> => {
    // A row that does not read back as written (a hand edit, a time outside 1970…9999) fails alone, unrun.
    const problem = storedProblem(alarm)
    if (problem !== undefined) return release(alarm, null, problem)
    const spec = specs.get(alarm.name)
    const codec = codecs.get(alarm.name)
    if (spec === undefined || codec === undefined) {
      return release(alarm, null, `${objectType} declares no alarm "${alarm.name}"`)
    }
    if (alarm.attempts > maxRetries + 1) {
      return release(alarm, null, `gave up after ${alarm.attempts - 1} attempts that did not finish`)
    }
    const payload = codec.decode(alarm.payload)
    if (Exit.isFailure(payload)) {
      return release(alarm, null, `the stored payload does not decode: ${Cause.pretty(payload.cause)}`)
    }
    const cron = alarm.cron
    if (cron !== null) {
      const next = nextCron(cron, alarm.fireAt)
      if (Result.isFailure(next)) return release(alarm, null, next.failure)
    }
    const fired = {
      name: alarm.name,
      scheduledAt: DateTime.makeUnsafe(alarm.fireAt),
      attempt: alarm.attempts,
      isRetry: alarm.attempts > 1
    }
    const handle = spec.handle
    const firing = calls.exclusive(alarm.objectId, `alarm:${alarm.name}`, Infinity, [], (inst, cell) => {
      cell.fired = { name: alarm.name, claim: alarm.claim, cron }
      const ctx = makeContext(inst.id, cell, fired) as AlarmContext<unknown, any>
      return Effect.map(handle(payload.value, ctx), () => {
        // A recurring alarm re-arms itself for its next occurrence, unless its handler changed it. (Its
        // schedule parsed above, so it has a next occurrence.)
        if (cron !== null && !touchedAlarm(cell, alarm.name)) {
          const next = nextCron(cron, Math.max(clock.currentTimeMillisUnsafe(), alarm.fireAt))
          if (Result.isSuccess(next)) {
            stageAlarm(cell, { name: alarm.name, fireAt: next.success, payload: alarm.payload, cron })
          }
        }
      })
    })
    return Effect.flatMap(Effect.exit(firing), (exit) => {
      if (Exit.isSuccess(exit)) return count(alarm.name, "fired")
      const error = Cause.findError(exit.cause)
      if (error._tag === "Success" && error.success instanceof AlarmClaimLost) return count(alarm.name, "lost")
      const reason = Cause.pretty(exit.cause)
      if (alarm.attempts > maxRetries) return release(alarm, null, reason)
      return release(alarm, clock.currentTimeMillisUnsafe() + retryDelayMillis(policy, alarm.attempts), reason)
    })
  }

  /**
   * Fires one claimed alarm. Its span is made only when a tracing backend is installed: with Effect's built-in
   * tracer nobody can see it, and it costs as much as a good part of a drained alarm.
   */
  const fire = (alarm: ClaimedAlarm): Effect.Effect<void> =>
    Effect.withFiber((fiber) => {
      latenessMetric.updateUnsafe(Math.max(0, clock.currentTimeMillisUnsafe() - alarm.fireAt), fiber.context)
      const firing = run(alarm)
      if (!tracing(fiber)) return firing
      return span(Telemetry.spanAlarm, {
        [Telemetry.attributes.objectType]: objectType,
        [Telemetry.attributes.objectId]: alarm.objectId,
        "durable_object.alarm": alarm.name,
        "durable_object.alarm.attempt": alarm.attempts
      })(firing)
    })

  const unknownAlarm = (name: string) =>
    new UnknownHandler({ objectType, handler: `alarm:${String(name)}`, known: names.map((n) => `alarm:${n}`) })

  const invalid = (name: string, issue: string) => new InvalidPayload({ objectType, handler: `alarm:${name}`, issue })

  const scheduleAlarm: AlarmRunner["scheduleAlarm"] = (id, name, when, input) =>
    Effect.suspend(() => {
      const idError = checkId(id)
      if (idError !== undefined) return Effect.fail(idError)
      const codec = codecs.get(name)
      if (!specs.has(name) || codec === undefined) return Effect.fail(unknownAlarm(name))
      let payload: unknown = undefined
      const validate = validators.get(name)
      if (validate !== undefined) {
        const valid = validate(input)
        if (Exit.isFailure(valid)) return Effect.fail(invalid(name, Cause.pretty(valid.cause)))
        payload = valid.value
      }
      const encoded = codec.encode(payload)
      if (Exit.isFailure(encoded)) return Effect.fail(invalid(name, Cause.pretty(encoded.cause)))
      const resolved = resolveWhen(when, clock.currentTimeMillisUnsafe())
      if (Result.isFailure(resolved)) return Effect.fail(invalid(name, resolved.failure))
      return Effect.asVoid(calls.exclusive(id, `scheduleAlarm:${name}`, Infinity, [], (_, cell) =>
        Effect.sync(() => {
          stageAlarm(cell, { name, payload: encoded.value, ...resolved.success })
        })))
    })

  const cancelAlarm: AlarmRunner["cancelAlarm"] = (id, name) =>
    Effect.suspend(() => {
      const idError = checkId(id)
      if (idError !== undefined) return Effect.fail(idError)
      if (!specs.has(name)) {
        // An alarm the definition no longer declares can still be stored (an operator cancels it); a name that
        // is neither is a mistake.
        return Effect.asVoid(calls.exclusive(id, `cancelAlarm:${name}`, Infinity, [], (_, cell) =>
          Effect.flatMap(own.listAlarms(objectType, id), (stored) => {
            if (
              !stored.some((alarm) =>
                alarm.name === name
              )
            ) {
              return Effect.fail(unknownAlarm(name))
            }
            cell.alarms = { removeAll: false, remove: new Set([name]), put: new Map() }
            return Effect.void
          })))
      }
      return Effect.asVoid(calls.exclusive(id, `cancelAlarm:${name}`, Infinity, [], (_, cell) =>
        Effect.sync(() => {
          cell.alarms = { removeAll: false, remove: new Set([name]), put: new Map() }
        })))
    })

  const listAlarms: AlarmRunner["listAlarms"] = (id) =>
    Effect.suspend((): Effect.Effect<ReadonlyArray<AlarmInfo>, InvalidObjectId | StorageError> => {
      const idError = checkId(id)
      if (idError !== undefined) return Effect.fail(idError)
      return Effect.map(own.listAlarms(objectType, id), (records) => records.map((r) => toAlarmInfo(codecs, r)))
    })

  return { fire, scheduleAlarm, cancelAlarm, listAlarms }
}
