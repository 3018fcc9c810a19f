/**
 * The context a handler, hook or alarm runs with: its object's identity, a private cell of working state,
 * and the alarm changes it stages. Nothing here touches storage; the runtime commits the cell.
 *
 * @internal
 */
import { type Clock, Effect, Exit, Result } from "effect"
import type { AlarmInfo, FiredAlarm, When } from "../Alarms.ts"
import type { StorageError } from "../Errors.ts"
import { type AlarmCodecs, resolveWhen, toAlarmInfo } from "./alarmCodec.ts"
import type { ObjectContext } from "./definition.ts"
import type { Emitted } from "./live.ts"
import type { AlarmPut, AlarmRecord } from "./records.ts"

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
  /** Events emitted by the run, published only once its commit is durable (see `live.ts`). */
  events: Array<Emitted> | undefined
}

export const makeCell = (state: unknown): Cell => ({ state, alarms: undefined, fired: undefined, events: undefined })

/** What contexts of one object type share. */
export interface ContextEnv {
  readonly objectType: string
  readonly clock: Clock.Clock
  readonly alarmCodecs: AlarmCodecs
  readonly listStored: (id: string) => Effect.Effect<ReadonlyArray<AlarmRecord>, StorageError>
  /** The event names the definition declares. */
  readonly events: ReadonlySet<string>
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
        // Invalid input from a handler is a bug in the handler: its call fails with HandlerDefect.
        const resolved = resolveWhen(when, env.clock.currentTimeMillisUnsafe())
        if (Result.isFailure(resolved)) return Effect.die(new TypeError(`durable-object: ${resolved.failure}`))
        stageAlarm(cell, { name, payload: encoded.value, ...resolved.success })
        return Effect.void
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
        .map((record) => toAlarmInfo(env.alarmCodecs, record))
    })
  }
}

/** A context's `emit`: stages the event in the cell, so a run that fails emits nothing. */
const emitter = (env: ContextEnv, cell: Cell) => (name: string, value: unknown): Effect.Effect<void> =>
  Effect.suspend(() => {
    if (!env.events.has(name)) {
      return Effect.die(new TypeError(`durable-object: ${env.objectType} declares no event "${name}"`))
    }
    ;(cell.events ??= []).push({ name, value })
    return Effect.void
  })

/**
 * A handler's context. A class, so that making one per call is a plain constructor call: an object literal with
 * a getter (for `emit`, built on use) is created on V8's slow path, which cost a hot call over half its time.
 */
class ContextImpl {
  readonly objectType: string
  readonly id: string
  readonly state: StateAccessImpl
  readonly alarms: AlarmsAccessImpl
  /** The alarm that fired, in an alarm handler's context. */
  readonly alarm: FiredAlarm | undefined
  readonly #env: ContextEnv
  readonly #cell: Cell
  constructor(env: ContextEnv, id: string, cell: Cell, alarm: FiredAlarm | undefined) {
    this.objectType = env.objectType
    this.id = id
    this.state = new StateAccessImpl(cell)
    this.alarms = new AlarmsAccessImpl(env, id, cell)
    this.alarm = alarm
    this.#env = env
    this.#cell = cell
  }
  get emit(): (name: string, value: unknown) => Effect.Effect<void> {
    return emitter(this.#env, this.#cell)
  }
}

/** The context of a handler or hook of object `id` over its working `cell`; with `alarm`, an alarm handler's. */
export const makeContext = (
  env: ContextEnv,
  id: string,
  cell: Cell,
  alarm?: FiredAlarm | undefined
): ObjectContext<unknown, any, any> =>
  new ContextImpl(env, id, cell, alarm) as unknown as ObjectContext<unknown, any, any>
