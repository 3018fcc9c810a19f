/**
 * Alarms as stored: payload codecs per alarm name, the cron schedule of recurring alarms, fire times from
 * `When`, and stored alarms as `list` returns them. Everything read from storage may have been hand-edited or
 * written by an older schema, so reading it never throws: a bad row gives a typed outcome for that alarm alone.
 *
 * @internal
 */
import { Cron, DateTime, Duration, Exit, Result } from "effect"
import type { AlarmInfo, When } from "../Alarms.ts"
import type { DefinitionSpec } from "./definition.ts"
import type { AlarmRecord } from "./records.ts"
import * as StateCodec from "./stateCodec.ts"

/** Per alarm name: how its payload goes to and from JSON. */
export type AlarmCodecs = ReadonlyMap<string, StateCodec.JsonCodec>

/** Builds the payload codecs of a definition's alarms (once per runtime). */
export const make = (def: Pick<DefinitionSpec, "alarms">): AlarmCodecs => {
  const codecs = new Map<string, StateCodec.JsonCodec>()
  for (const [name, spec] of Object.entries(def.alarms)) {
    codecs.set(name, spec.payload === undefined ? StateCodec.none : StateCodec.make(spec.payload))
  }
  return codecs
}

/** The cron schedule stored with a recurring alarm. */
export interface StoredCron {
  readonly expression: string
  readonly timeZone?: string | undefined
}

const parseStoredCron = (cronJson: string): Result.Result<Cron.Cron, string> => {
  const stored = Result.try(() => JSON.parse(cronJson) as Partial<StoredCron> | null)
  if (Result.isFailure(stored) || typeof stored.success?.expression !== "string") {
    return Result.fail(`the stored cron schedule is not valid JSON of the form {"expression": …}: ${cronJson}`)
  }
  const timeZone = typeof stored.success.timeZone === "string" ? stored.success.timeZone : undefined
  const cron = Cron.parse(stored.success.expression, timeZone)
  return Result.isFailure(cron)
    ? Result.fail(`the stored cron expression ${JSON.stringify(stored.success.expression)} does not parse`)
    : Result.succeed(cron.success)
}

/** The expression of a stored cron schedule, or `undefined` when the stored text is not one. */
const cronExpression = (cronJson: string): string | undefined => {
  const stored = Result.try(() => JSON.parse(cronJson) as Partial<StoredCron> | null)
  return Result.isSuccess(stored) && typeof stored.success?.expression === "string"
    ? stored.success.expression
    : undefined
}

/** The next occurrence of a stored cron schedule strictly after `now` (epoch ms), or why there is none. */
export const nextCron = (cronJson: string, now: number): Result.Result<number, string> =>
  Result.map(parseStoredCron(cronJson), (cron) => Cron.next(cron, now).getTime())

/**
 * The earliest alarm time accepted (1970-01-01T00:00:00Z) and the latest (9999-12-31T23:59:59.999Z), in epoch
 * milliseconds. Every backend stores and reads these exactly (well inside ±2^53, which `node:sqlite` refuses to
 * read back past), and every `DateTime` can represent them.
 */
export const minFireAt = 0
export const maxFireAt = 253402300799999

/** Why `fireAt` is not an alarm time (not an integer from 1970 to 9999), or `undefined` when it is one. */
export const fireAtProblem = (fireAt: number): string | undefined =>
  Number.isInteger(fireAt) && fireAt >= minFireAt && fireAt <= maxFireAt
    ? undefined
    : `alarm time ${fireAt} ms is outside 1970-01-01 … 9999-12-31 (epoch ms ${minFireAt} … ${maxFireAt})`

/** A resolved fire time, in whole milliseconds (a fraction would be REAL on SQLite), if it is in range. */
const checked = (
  fireAt: number,
  cron: string | null
): Result.Result<{ readonly fireAt: number; readonly cron: string | null }, string> => {
  const problem = fireAtProblem(Math.ceil(fireAt))
  return problem === undefined ? Result.succeed({ fireAt: Math.ceil(fireAt), cron }) : Result.fail(problem)
}

/** Resolves `when` to a fire time, and the cron JSON of a recurring alarm; or says why `when` is invalid. */
export const resolveWhen = (
  when: When,
  now: number
): Result.Result<{ readonly fireAt: number; readonly cron: string | null }, string> => {
  if ("in" in when) {
    const millis = Duration.toMillis(when.in)
    return !Number.isFinite(millis) || millis < 0
      ? Result.fail("alarm delay must be finite and not negative")
      : checked(now + millis, null)
  }
  if ("at" in when) {
    const at = typeof when.at === "number" ? when.at : DateTime.toEpochMillis(when.at)
    return Number.isFinite(at) ? checked(at, null) : Result.fail("alarm time must be finite")
  }
  const parsed = Cron.parse(when.cron, when.timeZone)
  if (Result.isFailure(parsed)) return Result.fail(`invalid cron expression ${JSON.stringify(when.cron)}`)
  const stored: StoredCron = when.timeZone === undefined
    ? { expression: when.cron }
    : { expression: when.cron, timeZone: when.timeZone }
  return checked(Cron.next(parsed.success, now).getTime(), JSON.stringify(stored))
}

/**
 * Why a stored (or claimed) alarm cannot fire as stored: what its storage reported (a column that did not read
 * back, see `AlarmRecord.invalid`), or a fire time outside 1970…9999; `undefined` for a usable one.
 */
export const storedProblem = (record: AlarmRecord): string | undefined => record.invalid ?? fireAtProblem(record.fireAt)

/** A stored time as a `DateTime`, clamped into 1970…9999 (a hand-edited one may be anything, even NaN). */
export const storedTime = (millis: number): DateTime.Utc =>
  DateTime.makeUnsafe(Number.isNaN(millis) ? minFireAt : Math.min(maxFireAt, Math.max(minFireAt, millis)))

/**
 * A stored alarm as `list` returns it. A payload that no longer decodes with its alarm's schema (or an alarm the
 * definition no longer declares) is listed with its stored JSON as the payload, or its raw text when that is not
 * JSON, and `invalid` saying why; a cron schedule that does not parse, a fire time outside 1970…9999 (listed
 * clamped into that range) and a column the storage could not read are listed with `invalid` too.
 */
export const toAlarmInfo = (codecs: AlarmCodecs, record: AlarmRecord): AlarmInfo => {
  const codec = codecs.get(record.name)
  const decoded = codec === undefined ? undefined : codec.decode(record.payload)
  let payload: unknown
  let invalid: string | undefined
  if (decoded !== undefined && Exit.isSuccess(decoded)) {
    payload = decoded.value
  } else {
    const raw = Result.try(() => JSON.parse(record.payload) as unknown)
    payload = Result.isSuccess(raw) ? raw.success : record.payload
    invalid = codec === undefined
      ? `the definition declares no alarm "${record.name}"`
      : "the stored payload does not decode with the alarm's payload schema"
  }
  const stored = storedProblem(record)
  if (stored !== undefined) invalid = invalid === undefined ? stored : `${invalid}; ${stored}`
  let cron: string | undefined
  if (record.cron !== null) {
    cron = cronExpression(record.cron)
    const parsed = parseStoredCron(record.cron)
    if (Result.isFailure(parsed)) invalid = invalid === undefined ? parsed.failure : `${invalid}; ${parsed.failure}`
  }
  return {
    name: record.name,
    fireAt: storedTime(record.fireAt),
    payload,
    attempts: record.attempts,
    cron,
    failed: record.failedAt === null
      ? undefined
      : { at: storedTime(record.failedAt), error: record.lastError ?? "" },
    invalid
  }
}
