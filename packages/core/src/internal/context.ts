/**
 * The context a handler, hook or alarm runs with: its object's identity, a private cell of working state,
 * and the alarm changes it stages. Nothing here touches storage; the runtime commits the cell.
 *
 * @internal
 */
import { type Clock, Cron, DateTime, Duration, Effect, Exit, Result, Schema } from "effect"
import type { AlarmInfo, When } from "../Alarms.ts"
import type { AnyDefinition, ObjectContext } from "../DurableObject.ts"
import type { StorageError } from "../Errors.ts"
import type { AlarmPut, AlarmRecord } from "../Storage.ts"

/** Alarm changes staged by one handler run. */
export interface AlarmOps {
  removeAll: boolean
  readonly remove: Set<string>
  readonly put: Map<string, AlarmPut>
}

/** The working state of one handler run; committed only if the handler succeeds. */
export interface Cell {
  state: unknown
  alarms: AlarmOps | undefined
  /** Set when the run is an alarm firing: the alarm to remove (under its claim) when the run commits. */
  fired: { readonly name: string; readonly claim: string; readonly cron: string | null } | undefined
}

export const makeCell = (state: unknown): Cell => ({ state, alarms: undefined, fired: undefined })

/** Per alarm name: how its payload goes to and from JSON. */
export interface AlarmCodec {
  readonly encode: (payload: unknown) => Exit.Exit<string, Schema.SchemaError>
  readonly decode: (json: string) => Exit.Exit<unknown, Schema.SchemaError>
}

/** What contexts of one object type share. */
export interface ContextEnv {
  readonly objectType: string
  readonly clock: Clock.Clock
  readonly alarmCodecs: ReadonlyMap<string, AlarmCodec>
  readonly listStored: (id: string) => Effect.Effect<ReadonlyArray<AlarmRecord>, StorageError>
}

const nullJson: AlarmCodec = {
  encode: () => Exit.succeed("null"),
  decode: () => Exit.succeed(undefined)
}

/** Builds the payload codecs of a definition's alarms. */
export const alarmCodecs = (def: AnyDefinition): ReadonlyMap<string, AlarmCodec> => {
  const codecs = new Map<string, AlarmCodec>()
  for (const [name, spec] of Object.entries(def.alarms as Record<string, { readonly payload?: Schema.Top }>)) {
    if (spec.payload === undefined) {
      codecs.set(name, nullJson)
      continue
    }
    const json = Schema.fromJsonString(Schema.toCodecJson(spec.payload)) as unknown as Schema.Codec<unknown, string>
    codecs.set(name, { encode: Schema.encodeUnknownExit(json), decode: Schema.decodeUnknownExit(json) })
  }
  return codecs
}

/** The cron schedule stored with a recurring alarm. */
export interface StoredCron {
  readonly expression: string
  readonly timeZone?: string | undefined
}

/** The next occurrence of a stored cron schedule strictly after `now`, in epoch milliseconds. */
export const nextCron = (cronJson: string, now: number): number => {
  const stored = JSON.parse(cronJson) as StoredCron
  const cron = Cron.parseUnsafe(stored.expression, stored.timeZone)
  return Cron.next(cron, now).getTime()
}

/** Resolves `when` to a fire time, and the cron JSON for recurring alarms. Invalid input is a defect. */
export const resolveWhen = (
  when: When,
  now: number
): Effect.Effect<{ readonly fireAt: number; readonly cron: string | null }> =>
  Effect.suspend((): Effect.Effect<{ readonly fireAt: number; readonly cron: string | null }> => {
    if ("in" in when) {
      const millis = Duration.toMillis(when.in)
      if (!Number.isFinite(millis) || millis < 0) {
        return Effect.die(new TypeError(`durable-object: alarm delay must be finite and not negative`))
      }
      return Effect.succeed({ fireAt: now + millis, cron: null })
    }
    if ("at" in when) {
      const at = typeof when.at === "number" ? when.at : DateTime.toEpochMillis(when.at)
      if (!Number.isFinite(at)) return Effect.die(new TypeError(`durable-object: alarm time must be finite`))
      return Effect.succeed({ fireAt: at, cron: null })
    }
    const parsed = Cron.parse(when.cron, when.timeZone)
    if (Result.isFailure(parsed)) {
      return Effect.die(new TypeError(`durable-object: invalid cron expression ${JSON.stringify(when.cron)}`))
    }
    const stored: StoredCron = when.timeZone === undefined
      ? { expression: when.cron }
      : { expression: when.cron, timeZone: when.timeZone }
    return Effect.succeed({ fireAt: Cron.next(parsed.success, now).getTime(), cron: JSON.stringify(stored) })
  })

/** Turns a stored alarm into what `list` returns. */
export const toAlarmInfo = (env: ContextEnv, record: AlarmRecord): AlarmInfo => {
  const decoded = env.alarmCodecs.get(record.name)?.decode(record.payload)
  return {
    name: record.name,
    fireAt: DateTime.makeUnsafe(record.fireAt),
    payload: decoded !== undefined && Exit.isSuccess(decoded) ? decoded.value : JSON.parse(record.payload),
    attempts: record.attempts,
    cron: record.cron === null ? undefined : (JSON.parse(record.cron) as StoredCron).expression,
    failed: record.failedAt === null
      ? undefined
      : { at: DateTime.makeUnsafe(record.failedAt), error: record.lastError ?? "" }
  }
}

const opsOf = (cell: Cell): AlarmOps => {
  if (cell.alarms === undefined) cell.alarms = { removeAll: false, remove: new Set(), put: new Map() }
  return cell.alarms
}

/** Stages `put` in the cell: schedules or replaces the alarm. */
export const stageAlarm = (cell: Cell, put: AlarmPut) => {
  const ops = opsOf(cell)
  ops.remove.delete(put.name)
  ops.put.set(put.name, put)
}

/** Whether this run staged any change to alarm `name` (so a fired cron alarm is not re-armed over it). */
export const touchedAlarm = (cell: Cell, name: string): boolean =>
  cell.alarms !== undefined && (cell.alarms.removeAll || cell.alarms.remove.has(name) || cell.alarms.put.has(name))

/**
 * A handler's state accessor. Its members are getters that build what they return on use, so a context
 * (built for every call) costs one object here instead of a closure per member; a member read off the
 * accessor (`const { set } = ctx.state`) still works on its own.
 */
class StateAccessImpl {
  readonly cell: Cell
  constructor(cell: Cell) {
    this.cell = cell
  }
  get get(): Effect.Effect<unknown> {
    const cell = this.cell
    return Effect.sync(() => cell.state)
  }
  get set(): (state: unknown) => Effect.Effect<void> {
    const cell = this.cell
    return (state) =>
      Effect.sync(() => {
        cell.state = state
      })
  }
  get update(): (f: (state: unknown) => unknown) => Effect.Effect<void> {
    const cell = this.cell
    return (f) =>
      Effect.sync(() => {
        cell.state = f(cell.state)
      })
  }
  get modify(): <A>(f: (state: unknown) => readonly [A, unknown]) => Effect.Effect<A> {
    const cell = this.cell
    return (f) =>
      Effect.sync(() => {
        const [a, state] = f(cell.state)
        cell.state = state
        return a
      })
  }
}

/** A handler's alarm accessor: like `StateAccessImpl`, members built on use. */
class AlarmsAccessImpl {
  readonly env: ContextEnv
  readonly id: string
  readonly cell: Cell
  constructor(env: ContextEnv, id: string, cell: Cell) {
    this.env = env
    this.id = id
    this.cell = cell
  }
  get schedule(): (name: string, when: When, ...payload: Array<unknown>) => Effect.Effect<void> {
    const { cell, env } = this
    return (name, when, ...payload) =>
      Effect.suspend(() => {
        const codec = env.alarmCodecs.get(name)
        if (codec === undefined) {
          return Effect.die(new TypeError(`durable-object: ${env.objectType} declares no alarm "${name}"`))
        }
        const encoded = codec.encode(payload[0])
        if (Exit.isFailure(encoded)) return Effect.die(encoded.cause)
        return Effect.map(resolveWhen(when, env.clock.currentTimeMillisUnsafe()), ({ cron, fireAt }) =>
          stageAlarm(cell, { name, fireAt, payload: encoded.value, cron }))
      })
  }
  get cancel(): (name: string) => Effect.Effect<void> {
    const cell = this.cell
    return (name) =>
      Effect.sync(() => {
        const ops = opsOf(cell)
        ops.put.delete(name)
        ops.remove.add(name)
      })
  }
  get cancelAll(): Effect.Effect<void> {
    const cell = this.cell
    return Effect.sync(() => {
      const ops = opsOf(cell)
      ops.removeAll = true
      ops.remove.clear()
      ops.put.clear()
    })
  }
  get list(): Effect.Effect<ReadonlyArray<AlarmInfo>, StorageError> {
    const { cell, env } = this
    return Effect.map(env.listStored(this.id), (stored) => {
      const ops = cell.alarms
      const byName = new Map<string, AlarmRecord>()
      if (ops === undefined || !ops.removeAll) {
        for (const record of stored) {
          if (ops === undefined || !ops.remove.has(record.name)) byName.set(record.name, record)
        }
      }
      if (cell.fired !== undefined && ops?.put.has(cell.fired.name) !== true) byName.delete(cell.fired.name)
      for (const put of ops?.put.values() ?? []) {
        byName.set(put.name, { ...put, attempts: 0, failedAt: null, lastError: null })
      }
      return Array.from(byName.values())
        .toSorted((a, b) => a.fireAt - b.fireAt || (a.name < b.name ? -1 : 1))
        .map((record) => toAlarmInfo(env, record))
    })
  }
}

export const makeContext = (env: ContextEnv, id: string, cell: Cell): ObjectContext<unknown, any> => ({
  objectType: env.objectType,
  id,
  state: new StateAccessImpl(cell) as ObjectContext<unknown, any>["state"],
  alarms: new AlarmsAccessImpl(env, id, cell) as unknown as ObjectContext<unknown, any>["alarms"]
})
