/**
 * The operator's view of one object type: pages of its stored objects and of its failed alarms, one object's
 * stored state, times and alarms, and retrying an alarm. Reads go straight to storage (in the runtime's own
 * context) and add what only this runtime knows (an object's status); the retry is a write, so it runs in the
 * object's serial context and commits fenced like a call.
 *
 * @internal
 */
import { Cause, Effect, Exit } from "effect"
import {
  AlarmNotFound,
  InvalidListOptions,
  InvalidPayload,
  maxListLimit,
  ObjectNotFound,
  StateDecodeError
} from "../Errors.ts"
import { type AlarmCodecs, storedProblem, storedTime, toAlarmInfo } from "./alarmCodec.ts"
import type { AlarmDetails, FailedAlarmPage, ListFailedOptions } from "./alarmTypes.ts"
import type { Calls } from "./call.ts"
import { stageAlarm } from "./context.ts"
import type { Inspection, ObjectPage, ObjectRuntime, ObjectSummary, Status } from "./definition.ts"
import { isLoaded } from "./instance.ts"
import type { RuntimeParts } from "./parts.ts"
import type { AlarmRecord, StoredObjectInfo } from "./records.ts"

export interface Inspector {
  readonly list: ObjectRuntime["list"]
  readonly inspect: ObjectRuntime["inspect"]
  readonly retryAlarm: ObjectRuntime["retryAlarm"]
  readonly listFailedAlarms: ObjectRuntime["listFailedAlarms"]
}

/** The page size of a listing without a `limit`. */
const defaultLimit = 100

export const make = (
  deps: RuntimeParts & {
    readonly calls: Calls
    readonly codecs: AlarmCodecs
  }
): Inspector => {
  const { calls, checkId, clock, codecs, def, own, registry } = deps
  const objectType = def.name

  const invalid = (issue: string) => new InvalidListOptions({ objectType, issue })

  /** The page size asked for, or why it cannot be. */
  const limitOf = (limit: number | undefined): number | InvalidListOptions => {
    if (limit === undefined) return defaultLimit
    return Number.isInteger(limit) && limit >= 1 && limit <= maxListLimit
      ? limit
      : invalid(`limit must be a whole number from 1 to ${maxListLimit}, not ${String(limit)}`)
  }

  /** Why `text` cannot be part of an id (an `after` or a `prefix`), or `undefined`. */
  const idTextProblem = (what: string, text: unknown, emptyOk: boolean): InvalidListOptions | undefined => {
    if (text === undefined || (emptyOk && text === "")) return undefined
    const problem = checkId(text as string)
    return problem === undefined ? undefined : invalid(`${what}: ${problem.reason}`)
  }

  const statusOf = (id: string): Status => {
    const inst = registry.objects.get(id)
    return inst !== undefined && isLoaded(inst) ? inst.status as Status : "stopped"
  }

  const summary = (info: StoredObjectInfo): ObjectSummary => ({
    id: info.objectId,
    version: info.version,
    createdAt: storedTime(info.createdAt),
    updatedAt: storedTime(info.updatedAt),
    status: statusOf(info.objectId),
    ...(info.invalid === undefined ? {} : { invalid: info.invalid })
  })

  const details = (record: AlarmRecord): AlarmDetails => {
    const claimEnd = record.claimExpiresAt
    return {
      ...toAlarmInfo(codecs, record),
      payloadJson: record.payload,
      claimedUntil: claimEnd === null || claimEnd === undefined || claimEnd <= clock.currentTimeMillisUnsafe()
        ? undefined
        : storedTime(claimEnd),
      lastError: record.lastError ?? undefined,
      scheduledAt: record.createdAt === undefined ? undefined : storedTime(record.createdAt)
    }
  }

  const list: Inspector["list"] = (options) =>
    Effect.suspend((): ReturnType<Inspector["list"]> => {
      const limit = limitOf(options?.limit)
      if (typeof limit !== "number") return Effect.fail(limit)
      const problem = idTextProblem("after", options?.after, false) ?? idTextProblem("prefix", options?.prefix, true)
      if (problem !== undefined) return Effect.fail(problem)
      // One more than the page: whether there is a next page is known without another round trip.
      return Effect.map(
        own.listObjects(objectType, { after: options?.after, prefix: options?.prefix, limit: limit + 1 }),
        (rows): ObjectPage => {
          const page = rows.length > limit ? rows.slice(0, limit) : rows
          return {
            objects: page.map(summary),
            next: rows.length > limit ? page[page.length - 1]!.objectId : undefined
          }
        }
      )
    })

  const inspect: Inspector["inspect"] = (id) =>
    Effect.suspend((): ReturnType<Inspector["inspect"]> => {
      const idError = checkId(id)
      if (idError !== undefined) return Effect.fail(idError)
      return Effect.gen(function*() {
        const stored = yield* own.inspectObject(objectType, id)
        if (stored === undefined) return yield* new ObjectNotFound({ objectType, objectId: id })
        const alarms = yield* own.listAlarms(objectType, id)
        let state: unknown = undefined
        let decodeError: StateDecodeError | undefined
        if (stored.invalid !== undefined) {
          decodeError = new StateDecodeError({ objectType, objectId: id, issue: stored.invalid })
        } else {
          const decoded = registry.codec.decode(stored.state)
          if (Exit.isSuccess(decoded)) state = decoded.value
          else decodeError = new StateDecodeError({ objectType, objectId: id, issue: Cause.pretty(decoded.cause) })
        }
        const inspection: Inspection<unknown> = {
          ...summary({ objectId: id, ...stored }),
          state,
          stateJson: stored.state,
          decodeError,
          alarms: alarms.map(details)
        }
        return inspection
      })
    })

  const retryAlarm: Inspector["retryAlarm"] = (id, name) =>
    Effect.suspend(() => {
      const idError = checkId(id)
      if (idError !== undefined) return Effect.fail(idError)
      const body = Effect.fnUntraced(function*(cell: Parameters<typeof stageAlarm>[0]) {
        const found = (yield* own.listAlarms(objectType, id)).find((alarm) => alarm.name === name)
        if (found === undefined) return yield* new AlarmNotFound({ objectType, objectId: id, name })
        // Rescheduling an alarm whose row does not read back would store the substitute values read for it.
        const problem = storedProblem(found)
        if (problem !== undefined) {
          return yield* new InvalidPayload({ objectType, handler: `alarm:${name}`, issue: problem })
        }
        // Scheduled again under its name: due now, attempts and failure cleared, its claim (if any) revoked.
        stageAlarm(cell, { name, fireAt: clock.currentTimeMillisUnsafe(), payload: found.payload, cron: found.cron })
      })
      return Effect.asVoid(calls.exclusive(id, `retryAlarm:${name}`, Infinity, [], (_, cell) => body(cell)))
    }) as ReturnType<Inspector["retryAlarm"]>

  const listFailedAlarms: Inspector["listFailedAlarms"] = (options?: ListFailedOptions) =>
    Effect.suspend((): ReturnType<Inspector["listFailedAlarms"]> => {
      const limit = limitOf(options?.limit)
      if (typeof limit !== "number") return Effect.fail(limit)
      const after = options?.after
      if (after !== undefined) {
        const problem = idTextProblem("after.id", after.id, false)
        if (problem !== undefined) return Effect.fail(problem)
        if (typeof after.name !== "string") return Effect.fail(invalid("after.name must be a string"))
      }
      return Effect.map(
        own.listFailedAlarms(objectType, {
          after: after === undefined ? undefined : { objectId: after.id, name: after.name },
          limit: limit + 1
        }),
        (rows): FailedAlarmPage => {
          const page = rows.length > limit ? rows.slice(0, limit) : rows
          const last = page[page.length - 1]
          return {
            alarms: page.map((record) => ({ ...details(record), id: record.objectId })),
            next: rows.length > limit && last !== undefined ? { id: last.objectId, name: last.name } : undefined
          }
        }
      )
    })

  return { list, inspect, retryAlarm, listFailedAlarms }
}
