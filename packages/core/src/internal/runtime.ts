/**
 * The runtime of one object type: the registry of its instances, the call path (mailbox, activation,
 * handler, commit), and the sweeper that hibernates and shuts down idle objects.
 *
 * @internal
 */
import {
  Cause,
  Clock,
  Context,
  DateTime,
  Effect,
  Exit,
  Fiber,
  Latch,
  Metric,
  Result,
  Schema,
  Scope,
  Tracer
} from "effect"
import { type AlarmInfo, retryDelayMillis, type When } from "../Alarms.ts"
import type { AnyAlarmHandler, AnyDefinition, AnyHandler, Status } from "../DurableObject.ts"
import {
  type AlarmClaimLost,
  CallTimeout,
  HandlerDefect,
  InvalidObjectId,
  InvalidPayload,
  maxObjectIdLength,
  ObjectOverloaded,
  ReentrantCall,
  RuntimeShutdown,
  StateDecodeError,
  StorageError,
  UnknownHandler,
  type VersionConflict
} from "../Errors.ts"
import { type AlarmChanges, type ClaimedAlarm, Storage } from "../Storage.ts"
import * as Telemetry from "../Telemetry.ts"
import {
  alarmCodecs,
  type Cell,
  type ContextEnv,
  makeCell,
  makeContext as makeObjectContext,
  nextCron,
  resolveWhen,
  stageAlarm,
  toAlarmInfo,
  touchedAlarm
} from "./context.ts"
import { IdleList, type IdleNode } from "./idleList.ts"
import * as Mailbox from "./mailbox.ts"
import { Scheduler } from "./scheduler.ts"
import { span, tracing } from "./span.ts"

/** @internal */
export const RuntimeTypeId = "~@durable-object/core/Runtime" as const

/** The service each definition's layer provides. */
export interface ObjectRuntime {
  readonly call: (id: string, handler: string, payload: unknown) => Effect.Effect<unknown, unknown>
  readonly callEncoded: (id: string, handler: string, payload: unknown) => Effect.Effect<unknown, unknown>
  /** `call` from inside `fiber` (the client's path: one step fewer). */
  readonly callFrom: (
    fiber: Fiber.Fiber<unknown, unknown>,
    id: string,
    handler: string,
    payload: unknown
  ) => Effect.Effect<unknown, unknown>
  readonly stop: (id: string) => Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict | HandlerDefect>
  readonly delete: (id: string) => Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict>
  readonly status: (id: string) => Effect.Effect<Status>
  readonly loadedIds: Effect.Effect<ReadonlyArray<string>>
  readonly scheduleAlarm: (id: string, name: string, when: When, payload: unknown) => Effect.Effect<void, unknown>
  readonly cancelAlarm: (id: string, name: string) => Effect.Effect<void, unknown>
  readonly listAlarms: (id: string) => Effect.Effect<ReadonlyArray<AlarmInfo>, InvalidObjectId | StorageError>
}

/** The chain of objects whose handlers are running further up the current call, as `type/id`. */
export const CallChain = Context.Reference<ReadonlyArray<string>>("@durable-object/core/CallChain", {
  defaultValue: () => []
})

type InstanceStatus = "unloaded" | "active" | "hibernated" | "stopped"

interface Instance extends Mailbox.Mailbox, IdleNode {
  readonly id: string
  readonly chainKey: string
  /** The call chain of a handler of this object called from outside any handler. */
  readonly selfChain: ReadonlyArray<string>
  status: InstanceStatus
  /** The committed state, decoded (only while active). */
  state: unknown
  /** The committed state as JSON (the initial state's encoding while nothing is stored). */
  json: string
  /** The last durable version (0: no row). */
  version: number
  /** When the last call finished, for idle expiry. */
  lastActive: number
  /** Bumped whenever the in-memory copy is dropped, so speculative work built on it can tell. */
  epoch: number
  /** Commits not yet durable, oldest first; the first one is in flight. */
  commits: Array<CommitGroup>
  /** The drain currently committing `commits`, if any. */
  draining: object | undefined
  /** Why the last speculative chain was rolled back (its successors fail with it). */
  rollback: { readonly epoch: number; readonly error: CommitError } | undefined
}

/** How a commit can fail. */
type CommitError = StorageError | VersionConflict | AlarmClaimLost

/**
 * One storage write carrying the changes of one or more handler runs of the same object. Consecutive
 * state-only changes merge while the group waits behind an in-flight commit, so a hot object commits once
 * per storage round trip whatever its call rate; every waiter is released when the group is durable.
 */
interface CommitGroup {
  json: string
  readonly alarms: AlarmChanges | undefined
  readonly waiters: Array<(exit: Exit.Exit<void, CommitError>) => void>
  exit: Exit.Exit<void, CommitError> | undefined
  started: boolean
  /** Alarm fire times to tell the scheduler about once durable. */
  readonly wakeAt: number | undefined
  /** The runtime's own context, with the span of the call that created the group: its commit runs with it. */
  readonly context: Context.Context<never>
}

interface Prepared {
  readonly name: string
  readonly spec: AnyHandler
  readonly validate: ((u: unknown) => Exit.Exit<unknown, Schema.SchemaError>) | undefined
  readonly decodeEncoded: ((u: unknown) => Exit.Exit<unknown, Schema.SchemaError>) | undefined
  readonly encodeSuccess: ((u: unknown) => Exit.Exit<unknown, Schema.SchemaError>) | undefined
  readonly attributes: Record<string, string>
  readonly outcomes: Record<Telemetry.CallOutcome, Metric.Metric<number, unknown>>
  readonly duration: Metric.Metric<number, unknown>
}

const RETRY: unique symbol = Symbol.for("@durable-object/core/internal/retry")

/**
 * Lock hand-offs resumed per scheduler turn: enough that a long queue on one object is not paced by the
 * event loop, few enough that the loop gets a turn every millisecond or so.
 */
const handoffBudget = 256

const encoder = new TextEncoder()

const checkId = (objectType: string, id: unknown): InvalidObjectId | undefined => {
  if (typeof id !== "string") return new InvalidObjectId({ objectType, reason: "an id must be a string" })
  if (id.length === 0) return new InvalidObjectId({ objectType, reason: "an id must not be empty" })
  // A UTF-16 code unit is at most 3 UTF-8 bytes, so short ids skip the byte count.
  if (id.length * 3 > maxObjectIdLength && encoder.encode(id).length > maxObjectIdLength) {
    return new InvalidObjectId({ objectType, reason: `an id must be at most ${maxObjectIdLength} UTF-8 bytes` })
  }
  if (!id.isWellFormed()) {
    return new InvalidObjectId({ objectType, reason: "an id must be well-formed Unicode (no lone surrogates)" })
  }
  if (id.includes("\u0000")) return new InvalidObjectId({ objectType, reason: "an id must not contain NUL" })
  return undefined
}

const outcomeNames: ReadonlyArray<Telemetry.CallOutcome> = [
  "success",
  "failure",
  "defect",
  "timeout",
  "interrupted",
  "overloaded",
  "rejected"
]

const outcomeOf = (exit: Exit.Exit<unknown, unknown>): Telemetry.CallOutcome => {
  if (Exit.isSuccess(exit)) return "success"
  const cause = exit.cause
  if (Cause.hasInterruptsOnly(cause)) return "interrupted"
  const error = Cause.findError(cause)
  if (error._tag === "Success") {
    const e = error.success as { readonly _tag?: unknown }
    switch (e?._tag) {
      case "HandlerDefect":
        return "defect"
      case "CallTimeout":
        return "timeout"
      case "ObjectOverloaded":
        return "overloaded"
      case "InvalidPayload":
      case "UnknownHandler":
      case "InvalidObjectId":
      case "ReentrantCall":
      case "RuntimeShutdown":
        return "rejected"
    }
    return "failure"
  }
  return "defect"
}

const settle = (group: CommitGroup, exit: Exit.Exit<void, CommitError>) => {
  group.exit = exit
  for (const waiter of group.waiters) waiter(exit)
  group.waiters.length = 0
}

/** Waits until `group` is durable (or failed). */
const awaitGroup = (group: CommitGroup): Effect.Effect<void, CommitError> =>
  group.exit !== undefined ? group.exit : Effect.callback<void, CommitError>((resume) => {
    if (group.exit !== undefined) return resume(group.exit)
    const waiter = (exit: Exit.Exit<void, CommitError>) => resume(exit)
    group.waiters.push(waiter)
    return Effect.sync(() => {
      const index = group.waiters.indexOf(waiter)
      if (index >= 0) group.waiters.splice(index, 1)
    })
  })

/** Builds the runtime of one object type in the current scope. */
export const make = (def: AnyDefinition): Effect.Effect<ObjectRuntime, never, any> =>
  Effect.gen(function*() {
    const ownStorage = yield* Storage
    const scheduler = yield* Scheduler
    // Commits run in a scope that closes after the graceful stop below (finalizers run in reverse order),
    // so stopping the runtime lets in-flight commits finish instead of interrupting them.
    const runtimeScope = yield* Scope.fork(yield* Effect.scope)
    // Drains in flight; closing that scope interrupts them.
    const drains = new Set<Fiber.Fiber<void>>()
    yield* Scope.addFinalizer(runtimeScope, Effect.suspend(() => Fiber.interruptAll(Array.from(drains))))
    const clock = yield* Clock.Clock
    const fullContext = yield* Effect.context<never>()
    // Storage work runs in the runtime's own context, never its caller's: a caller's context can hold an SQL
    // transaction (whose rollback would take acknowledged writes with it) or a connection the commit then waits
    // for. Only the caller's span crosses over, so storage spans stay children of the call's span.
    const ownContext = fullContext
    const storageContext = (caller: Context.Context<never>): Context.Context<never> => {
      const parent = Context.getOption(caller, Tracer.ParentSpan)
      return parent._tag === "Some" ? Context.add(ownContext, Tracer.ParentSpan, parent.value) : ownContext
    }
    const refuseCaller = ownStorage.refuseCaller
    const own = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | StorageError> =>
      Effect.withFiber((fiber) => {
        const refused = refuseCaller?.(fiber.context)
        return refused !== undefined
          ? Effect.fail(refused)
          : Effect.updateContext(effect as Effect.Effect<A, E | StorageError>, () => storageContext(fiber.context))
      })
    const storage: Pick<Storage["Service"], "load" | "commit" | "listAlarms"> = {
      load: (objectType, objectId) => own(ownStorage.load(objectType, objectId)),
      commit: (write) => own(ownStorage.commit(write)),
      listAlarms: (objectType, objectId) => own(ownStorage.listAlarms(objectType, objectId))
    }
    const services: Context.Context<never> | undefined = def.services.length === 0
      ? undefined
      : Context.pick(...def.services)(fullContext) as Context.Context<never>
    const objectType = def.name
    const options = def.options

    // The state's JSON: its schema's JSON codec, and JSON.stringify / JSON.parse as separate steps (composed
    // with Schema.fromJsonString, the same work costs about five times as much, on every state change).
    const stateCodec = Schema.toCodecJson(def.state) as unknown as Schema.Codec<unknown, unknown>
    const encodeStateValue = Schema.encodeUnknownExit(stateCodec)
    const decodeStateValue = Schema.decodeUnknownExit(stateCodec)
    const encodeState = (state: unknown): Exit.Exit<string, Schema.SchemaError> => {
      const encoded = encodeStateValue(state)
      if (Exit.isFailure(encoded)) return Exit.failCause(encoded.cause)
      const json = Result.try(() => JSON.stringify(encoded.value))
      if (Result.isFailure(json)) return Exit.die(json.failure)
      return json.success === undefined
        ? Exit.die(new TypeError("the state cannot be represented as JSON"))
        : Exit.succeed(json.success)
    }
    const decodeState = (json: string): Exit.Exit<unknown, Schema.SchemaError> => {
      const parsed = Result.try(() => JSON.parse(json) as unknown)
      return Result.isFailure(parsed) ? Exit.die(parsed.failure) : decodeStateValue(parsed.success)
    }

    const typeAttributes = { object_type: objectType }
    const loadedGauge = Metric.withAttributes(Telemetry.activeObjects, typeAttributes)
    const activationCounter = Metric.withAttributes(Telemetry.activations, typeAttributes)

    const prepared = new Map<string, Prepared>()
    for (const [name, spec] of Object.entries(def.handlers as Record<string, AnyHandler>)) {
      const payload = spec.payload
      const success = spec.success
      const attributes = { object_type: objectType, handler: name }
      const outcomes = {} as Record<Telemetry.CallOutcome, Metric.Metric<number, unknown>>
      for (const outcome of outcomeNames) {
        outcomes[outcome] = Telemetry.callSeries({ ...attributes, outcome }).calls
      }
      prepared.set(name, {
        name,
        spec,
        validate: payload === undefined
          ? undefined
          : Schema.decodeUnknownExit(Schema.toType(payload) as unknown as Schema.Decoder<unknown>),
        decodeEncoded: payload === undefined
          ? undefined
          : Schema.decodeUnknownExit(Schema.toCodecJson(payload) as unknown as Schema.Decoder<unknown>),
        encodeSuccess: success === undefined
          ? undefined
          : Schema.encodeUnknownExit(Schema.toCodecJson(success) as unknown as Schema.Codec<unknown, unknown>),
        attributes: {
          [Telemetry.attributes.objectType]: objectType,
          [Telemetry.attributes.handler]: name
        },
        outcomes,
        duration: Telemetry.callSeries(attributes).duration
      })
    }
    const handlerNames = Array.from(prepared.keys())

    // ---------------------------------------------------------------------------------------------------
    // Registry and idle lists
    // ---------------------------------------------------------------------------------------------------

    const objects = new Map<string, Instance>()
    // Both maps iterate in insertion order, and an instance is re-inserted whenever it goes idle, so the
    // first entry is always the one idle longest: the sweeper needs no heap.
    const idleActive = new IdleList<Instance>()
    const idleHibernated = new IdleList<Instance>()
    const wakeSweeper = Latch.makeUnsafe(false)
    let loaded = 0
    let closing = false

    const hibernates = options.hibernateAfterMillis < options.shutdownAfterMillis
    const maxPendingCommits = Math.max(1, options.mailboxCapacity)

    // Lock hand-offs to waiting callers, resumed in batches per scheduler turn (see `Mailbox.Handoff`).
    const handoff = Mailbox.makeHandoff(handoffBudget)
    // The deadlines of waiting and suspended calls, served by one timer fiber (below) instead of a timer per
    // call. `timerTarget` is when that fiber wakes next: an earlier new deadline must wake it sooner.
    const timed = Number.isFinite(options.callTimeoutMillis)
    const wakeTimer = Latch.makeUnsafe(false)
    let timerTarget = Infinity
    const deadlines = timed
      ? new Mailbox.Deadlines((entry) => {
        if (entry.deadline < timerTarget) wakeTimer.openUnsafe()
      })
      : undefined

    const instanceFor = (id: string): Instance => {
      let inst = objects.get(id)
      if (inst === undefined) {
        const chainKey = `${objectType}/${id}`
        inst = {
          id,
          chainKey,
          selfChain: [chainKey],
          status: "unloaded",
          state: undefined,
          json: "",
          version: 0,
          lastActive: 0,
          epoch: 0,
          commits: [],
          draining: undefined,
          rollback: undefined,
          busy: false,
          waiters: undefined,
          idlePrev: undefined,
          idleNext: undefined,
          idleList: undefined,
          idleAt: 0
        }
        objects.set(id, inst)
      }
      return inst
    }

    const reportLoaded = Effect.suspend(() => Metric.update(loadedGauge, loaded))

    /** Forgets the in-memory copy; the next call reloads from storage. */
    const unload = (inst: Instance) => {
      if (inst.status === "active" || inst.status === "hibernated") loaded--
      inst.status = "unloaded"
      inst.state = undefined
      inst.epoch++
      idleActive.remove(inst)
      idleHibernated.remove(inst)
    }

    const markStopped = (inst: Instance) => {
      unload(inst)
      inst.status = "stopped"
      if (objects.get(inst.id) === inst) objects.delete(inst.id)
    }

    // The time a synchronous call step started, while it runs (see `measured`).
    let stepTime: number | undefined

    /**
     * Notes that `inst` was just active. An object already on the idle list stays where it is (moving it on
     * every call costs cache misses on its neighbours): the sweeper puts it back in order when it reaches it.
     */
    const touch = (inst: Instance) => {
      const now = stepTime ?? clock.currentTimeMillisUnsafe()
      inst.lastActive = now
      if (inst.idleList === (idleActive as IdleList<IdleNode>)) return
      // Only a list that was empty can have left the sweeper asleep with nothing to wait for; waking it on
      // every call would cost it a new timer per call. (Open the latch last: it may run the sweeper inline.)
      const wasEmpty = idleActive.size === 0
      idleActive.insert(inst, now)
      if (wasEmpty) wakeSweeper.openUnsafe()
    }

    const releaseLock = (inst: Instance) => {
      if (!Mailbox.release(handoff, inst, deadlines)) return
      if (inst.status === "active") touch(inst)
      else if (inst.status === "unloaded") markStopped(inst)
    }

    const wake = (inst: Instance): Effect.Effect<void> => {
      const decoded = decodeState(inst.json)
      // We encoded this JSON ourselves from a valid state, so failing to decode it is a bug.
      if (Exit.isFailure(decoded)) return Effect.die(decoded.cause)
      inst.state = decoded.value
      inst.status = "active"
      idleHibernated.remove(inst)
      return Effect.void
    }

    // ---------------------------------------------------------------------------------------------------
    // Running user code
    // ---------------------------------------------------------------------------------------------------

    const env: ContextEnv = {
      objectType,
      clock,
      alarmCodecs: alarmCodecs(def),
      listStored: (id) => storage.listAlarms(objectType, id)
    }
    const alarmSpecs = def.alarms as Record<string, AnyAlarmHandler>
    const alarmNames = Object.keys(alarmSpecs)
    const makeContext = (id: string, cell: Cell) => makeObjectContext(env, id, cell)

    /** Gives user code the declared services and the call chain (for `ReentrantCall`). */
    const provideUser = <A, E>(
      inst: Instance,
      chain: ReadonlyArray<string>,
      effect: Effect.Effect<A, E, unknown>
    ): Effect.Effect<A, E> =>
      Effect.updateContext(effect as Effect.Effect<A, E>, (context: Context.Context<never>) =>
        userContext(context, inst, chain))

    // Merging the declared services copies the whole context; callers mostly share one, so the last merge is
    // kept.
    let lastCallerContext: Context.Context<never> | undefined
    let lastWithServices: Context.Context<never> | undefined

    /** The context user code of `inst` runs with: its caller's, the declared services, and the call chain. */
    const userContext = (
      caller: Context.Context<never>,
      inst: Instance,
      chain: ReadonlyArray<string>
    ): Context.Context<never> => {
      let base = caller
      if (services !== undefined) {
        if (caller !== lastCallerContext) {
          lastWithServices = Context.merge(caller, services)
          lastCallerContext = caller
        }
        base = lastWithServices!
      }
      return Context.add(base, CallChain, chain.length === 0 ? inst.selfChain : [...chain, inst.chainKey])
    }

    /** A failure of user code as the caller sees it: defects become `HandlerDefect`; the rest passes. */
    const userFailure = <E>(
      inst: Instance,
      handler: string,
      cause: Cause.Cause<E>
    ): Exit.Exit<never, E | HandlerDefect> =>
      Cause.hasDies(cause) && !Cause.hasInterruptsOnly(cause)
        ? Exit.fail(
          new HandlerDefect({
            objectType,
            objectId: inst.id,
            handler,
            defect: Cause.squash(cause),
            pretty: Cause.pretty(cause)
          })
        )
        : Exit.failCause(cause)

    /**
     * Runs user code with the declared services and the call chain, turning defects into `HandlerDefect`.
     * Interruptions pass through untouched.
     */
    const runUser = <A, E>(
      inst: Instance,
      handler: string,
      chain: ReadonlyArray<string>,
      effect: Effect.Effect<A, E, unknown>
    ): Effect.Effect<A, E | HandlerDefect> =>
      Effect.catchCause(provideUser(inst, chain, effect), (cause) =>
        userFailure(inst, handler, cause))

    /**
     * Commits the head group of `inst` and then the next ones, in order. A failed commit fails its group
     * and every later one (they were built on its speculative state), and drops the in-memory copy: the
     * outcome of a commit that did not answer is unknown, so the next call reloads the truth.
     */
    const drain = (inst: Instance, token: object, context: Context.Context<never>): Effect.Effect<void> => {
      const epoch = inst.epoch
      const next = (): Effect.Effect<void> => {
        const group = inst.commits[0]
        if (group === undefined) return Effect.void
        if (inst.epoch !== epoch) {
          // The copy these commits were built on was dropped: none of them may reach storage.
          const stale = inst.commits.splice(0)
          const error = new StorageError({
            operation: "commit",
            detail: "the object was reloaded before this commit"
          })
          inst.draining = undefined
          for (const g of stale) settle(g, Exit.fail(error))
          return Effect.void
        }
        group.started = true
        const commit = ownStorage.commit({
          objectType,
          objectId: inst.id,
          expectedVersion: inst.version,
          state: group.json,
          alarms: group.alarms
        })
        // The drain runs with the context of the call that started it; a later group's call may differ.
        const committed = group.context === context ? commit : Effect.provideContext(commit, group.context)
        return Effect.flatMap(Effect.exit(committed), (exit) => {
          if (Exit.isSuccess(exit)) {
            inst.version = exit.value
            inst.commits.shift()
            if (group.wakeAt !== undefined) scheduler.wake(group.wakeAt)
            settle(group, Exit.void)
            return next()
          }
          const failed = inst.commits.splice(0)
          const error = Cause.findError(exit.cause)
          inst.rollback = {
            epoch: inst.epoch,
            error: error._tag === "Success"
              ? error.success
              : new StorageError({ operation: "commit", detail: Cause.pretty(exit.cause) })
          }
          unload(inst)
          inst.draining = undefined
          for (const g of failed) settle(g, exit)
          return reportLoaded
        })
      }
      return Effect.onExit(next(), (exit) =>
        Effect.sync(() => {
          // Settling waiters may have started the next drain already; leave that one alone.
          if (inst.draining !== token) return
          inst.draining = undefined
          if (Exit.isSuccess(exit) || !Cause.hasInterrupts(exit.cause)) return
          // Stopped mid-commit (the runtime is going away): nobody can know the outcome any more.
          const abandoned = inst.commits.splice(0)
          unload(inst)
          const error = new StorageError({ operation: "commit", detail: "interrupted; the outcome is unknown" })
          for (const g of abandoned) settle(g, Exit.fail(error))
        }))
    }

    /**
     * Stages what user code left in `cell` (state and alarm changes, and the removal of a fired alarm) as a
     * commit of `inst`, applying it to the in-memory copy speculatively, and returns the group to wait for
     * (undefined when nothing changed and nothing is pending). Runs with the lock held.
     */
    const stage = (
      inst: Instance,
      handler: string,
      cell: Cell
    ): Effect.Effect<CommitGroup | undefined, HandlerDefect> =>
      Effect.contextWith((context: Context.Context<never>) => {
        const staged = stageNow(inst, handler, cell, context)
        return staged !== undefined && Exit.isExit(staged) ? staged : Effect.succeed(staged)
      })

    /**
     * `stage` as one synchronous step, for the call path: returns the group, or the failure. A new drain is
     * started on the spot (not by an effect the caller might never run once interrupted), with `context`
     * (the caller's) as its parent's.
     */
    const stageNow = (
      inst: Instance,
      handler: string,
      cell: Cell,
      context: Context.Context<never>
    ): CommitGroup | undefined | Exit.Exit<never, HandlerDefect> => {
      const ops = cell.alarms
      const alarmChanges = cell.fired !== undefined ||
        (ops !== undefined && (ops.removeAll || ops.remove.size > 0 || ops.put.size > 0))
      let json = inst.json
      let stateChanged = false
      if (cell.state !== inst.state) {
        const encoded = encodeState(cell.state)
        if (Exit.isFailure(encoded)) {
          return Exit.fail(
            new HandlerDefect({
              objectType,
              objectId: inst.id,
              handler,
              defect: encoded.cause,
              pretty: `the new state does not encode with the state schema: ${Cause.pretty(encoded.cause)}`
            })
          )
        }
        if (encoded.value === inst.json) inst.state = cell.state
        else {
          json = encoded.value
          stateChanged = true
        }
      }
      const commits = inst.commits
      const last = commits.length === 0 ? undefined : commits[commits.length - 1]
      if (!stateChanged && !alarmChanges) return last
      inst.state = cell.state
      inst.json = json
      if (!alarmChanges && last !== undefined && !last.started && last.alarms === undefined) {
        last.json = json
        return last
      }
      const puts = ops === undefined ? [] : Array.from(ops.put.values())
      const group: CommitGroup = {
        json,
        alarms: alarmChanges
          ? {
            fired: cell.fired === undefined ? undefined : { name: cell.fired.name, claim: cell.fired.claim },
            removeAll: ops?.removeAll ?? false,
            remove: ops === undefined ? [] : Array.from(ops.remove),
            put: puts
          }
          : undefined,
        waiters: [],
        exit: undefined,
        started: false,
        wakeAt: puts.length > 0 ? Math.min(...puts.map((p) => p.fireAt)) : undefined,
        context: storageContext(context)
      }
      commits.push(group)
      if (inst.draining === undefined) {
        const token = {}
        inst.draining = token
        // The drain starts in the next scheduler turn, so the writes staged in this one reach storage
        // together (starting it on the spot sent them one by one: fewer coalesced on SQLite). A fiber of its
        // own rather than one forked into the runtime scope: no launcher fiber, no scope bookkeeping.
        const fiber = Effect.runForkWith(group.context)(
          Effect.andThen(Effect.yieldNow, Effect.suspend(() => drain(inst, token, group.context)))
        )
        if (fiber.pollUnsafe() === undefined) {
          drains.add(fiber)
          fiber.addObserver(() => drains.delete(fiber))
        }
      }
      return group
    }

    /** Stages `cell` and waits until it is durable: for hooks and administrative writes. */
    const commitCell = (
      inst: Instance,
      handler: string,
      cell: Cell
    ): Effect.Effect<void, CommitError | HandlerDefect> =>
      Effect.flatMap(stage(inst, handler, cell), (group) => (group === undefined ? Effect.void : awaitGroup(group)))

    const activate = (inst: Instance, chain: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        const stored = yield* storage.load(objectType, inst.id)
        let state: unknown
        let version = 0
        if (stored !== undefined) {
          const decoded = decodeState(stored.state)
          if (Exit.isFailure(decoded)) {
            return yield* new StateDecodeError({
              objectType,
              objectId: inst.id,
              issue: Cause.pretty(decoded.cause)
            })
          }
          state = decoded.value
          version = stored.version
        } else {
          state = def.initialState()
        }
        // Keep our own canonical JSON, so "did the state change?" is a string comparison against it.
        const json = encodeState(state)
        if (Exit.isFailure(json)) {
          return yield* new HandlerDefect({
            objectType,
            objectId: inst.id,
            handler: stored === undefined ? "initialState" : "load",
            defect: json.cause,
            pretty: `the state does not encode with the state schema: ${Cause.pretty(json.cause)}`
          })
        }
        inst.state = state
        inst.json = json.value
        inst.version = version
        inst.status = "active"
        loaded++
        yield* reportLoaded
        yield* Metric.update(activationCounter, 1)
        if (def.onLoad !== undefined) {
          const cell = makeCell(state)
          const onLoad = def.onLoad
          yield* runUser(inst, "onLoad", chain, Effect.suspend(() => onLoad(makeContext(inst.id, cell) as any))).pipe(
            Effect.andThen(Effect.uninterruptible(Effect.suspend(() => commitCell(inst, "onLoad", cell)))),
            Effect.onError(() =>
              Effect.suspend(() => {
                unload(inst)
                return reportLoaded
              })
            )
          )
        }
      }).pipe(
        span(Telemetry.spanActivate, {
          [Telemetry.attributes.objectType]: objectType,
          [Telemetry.attributes.objectId]: inst.id
        })
      )

    // ---------------------------------------------------------------------------------------------------
    // Calls
    // ---------------------------------------------------------------------------------------------------

    const overloaded = (inst: Instance) => () =>
      new ObjectOverloaded({ objectType, objectId: inst.id, mailboxCapacity: options.mailboxCapacity })

    const callTimeout = (inst: Instance, handler: string) =>
      new CallTimeout({ objectType, objectId: inst.id, handler, timeoutMillis: options.callTimeoutMillis })

    /** Bounds `effect` by the call timeout, or by what is left of it until `deadline`. */
    const withTimeout = <A, E>(inst: Instance, handler: string, effect: Effect.Effect<A, E>, deadline?: number) =>
      timed
        ? Effect.timeoutOrElse(effect, {
          duration: deadline === undefined
            ? options.callTimeoutMillis
            : Math.max(0, deadline - clock.currentTimeMillisUnsafe()),
          orElse: () => Effect.fail(callTimeout(inst, handler))
        })
        : effect

    /** Waits for the commits of `inst` that are in flight or queued (ignoring how they end). */
    const quiesce = (inst: Instance): Effect.Effect<void> => {
      const last = inst.commits.at(-1)
      return last === undefined ? Effect.void : Effect.ignore(awaitGroup(last))
    }

    /**
     * Runs `run` in the object's serial context: waits in its mailbox (at most `capacity` waiting),
     * activates or wakes it, and runs `run` under the call timeout. Then it stages the cell `run` returns as
     * a commit, releases the object to the next caller at once (which may run on this not-yet-durable
     * state), and releases this caller's reply only when the commit it depends on is durable: the output
     * gate. Nothing is staged when `run` fails; a failed commit fails every reply that depended on it.
     *
     * With `held`, the caller already holds the lock of `held.inst` (granted by the mailbox) and has until
     * `held.deadline`.
     */
    const exclusive = <A, E>(
      id: string,
      label: string,
      capacity: number,
      chain: ReadonlyArray<string>,
      run: (inst: Instance) => Effect.Effect<readonly [A, Cell], E>,
      held?: { readonly inst: Instance; readonly deadline: number }
    ) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          let holding = held
          while (true) {
            let epoch = -1
            const body = (inst: Instance) =>
              Effect.gen(function*() {
                if (inst.status === "stopped") return RETRY
                if (inst.status === "unloaded") yield* activate(inst, chain)
                else if (inst.status === "hibernated") yield* wake(inst)
                // Bound the speculation: past this many pending commits, wait for them first.
                if (inst.commits.length >= maxPendingCommits) yield* quiesce(inst)
                epoch = inst.epoch
                return yield* run(inst)
              })
            let inst: Instance
            let ran: Exit.Exit<typeof RETRY | readonly [A, Cell], unknown>
            if (holding !== undefined) {
              inst = holding.inst
              ran = yield* Effect.exit(restore(withTimeout(inst, label, body(inst), holding.deadline)))
              holding = undefined
            } else {
              if (closing) return yield* new RuntimeShutdown({ objectType })
              const refused = refuseCaller?.(yield* Effect.context<never>())
              if (refused !== undefined) return yield* refused
              inst = instanceFor(id)
              const ticket = Mailbox.makeTicket()
              ran = yield* Effect.exit(restore(withTimeout(
                inst,
                label,
                Effect.andThen(Mailbox.acquire(inst, ticket, capacity, overloaded(inst)), body(inst))
              )))
              if (!ticket.granted) return yield* (ran as Exit.Exit<never, E | ObjectOverloaded | CallTimeout>)
            }
            if (Exit.isSuccess(ran) && ran.value === RETRY) {
              releaseLock(inst)
              continue
            }
            if (Exit.isFailure(ran)) {
              releaseLock(inst)
              if (inst.status !== "active") yield* reportLoaded
              return yield* (ran as Exit.Exit<never, unknown>)
            }
            const [reply, cell] = ran.value as readonly [A, Cell]
            return yield* finishRun(inst, label, epoch, cell, reply, restore)
          }
        })
      )

    /**
     * With the lock held (and the object active): stages what a successful run left in `cell`, releases
     * the lock, and releases the reply once what it depends on is durable (the output gate).
     */
    const finishRun = <A>(
      inst: Instance,
      label: string,
      epoch: number,
      cell: Cell,
      reply: A,
      restore: <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>
    ): Effect.Effect<A, CommitError | HandlerDefect> =>
      Effect.contextWith((context: Context.Context<never>) => {
        const result = finishNow(context, inst, label, epoch, cell, reply)
        return Exit.isExit(result) ? result : restore(result)
      })

    /**
     * `finishRun` as one synchronous step: stages the run's changes, releases the lock, and returns the
     * reply, or the wait for the commit it depends on (which the caller may abandon: nothing else hangs on
     * it).
     */
    const finishNow = <A>(
      context: Context.Context<never>,
      inst: Instance,
      label: string,
      epoch: number,
      cell: Cell,
      reply: A
    ): Effect.Effect<A, CommitError | HandlerDefect> => {
      if (
        cell.state === inst.state && cell.alarms === undefined && cell.fired === undefined &&
        inst.epoch === epoch && inst.status === "active"
      ) {
        // Nothing changed: the reply only waits for the commits whose state it saw.
        releaseLock(inst)
        const commits = inst.commits
        return commits.length === 0 ? Exit.succeed(reply) : Effect.as(awaitGroup(commits[commits.length - 1]!), reply)
      }
      const staged = inst.epoch !== epoch || inst.status !== "active"
        // An earlier commit failed while this ran: the state it saw was speculative and is gone.
        ? Exit.fail(
          inst.rollback?.epoch === epoch
            ? inst.rollback.error
            : new StorageError({ operation: "commit", detail: "the object was reloaded while the call ran" })
        )
        : stageNow(inst, label, cell, context)
      releaseLock(inst)
      if (inst.status !== "active") loadedGauge.updateUnsafe(loaded, context)
      if (staged === undefined) return Exit.succeed(reply)
      if (Exit.isExit(staged)) return staged
      return Effect.as(awaitGroup(staged), reply)
    }

    /**
     * Runs a call's handler while holding the lock of `inst` (active), in a fiber of its own started on the
     * spot with the caller's context: a handler that finishes without suspending (the usual case) replies
     * in this same synchronous step, with no timer; one that suspends can be timed out and interrupted
     * alone.
     */
    const runHot = (
      caller: Context.Context<never>,
      inst: Instance,
      handler: Prepared,
      payload: unknown,
      chain: ReadonlyArray<string>,
      deadline: number
    ): Effect.Effect<unknown, unknown> => {
      const epoch = inst.epoch
      const cell = makeCell(inst.state)
      const ctx = makeContext(inst.id, cell)
      const child = Effect.runForkWith(userContext(caller, inst, chain))(
        Effect.suspend(() => handler.spec.handle(payload, ctx) as Effect.Effect<unknown, unknown>)
      )
      const exit = child.pollUnsafe()
      return exit === undefined
        ? awaitHandler(caller, inst, handler.name, epoch, cell, child, deadline)
        : afterHandler(caller, inst, handler.name, epoch, cell, exit)
    }

    const afterHandler = (
      caller: Context.Context<never>,
      inst: Instance,
      label: string,
      epoch: number,
      cell: Cell,
      exit: Exit.Exit<unknown, unknown>
    ): Effect.Effect<unknown, unknown> => {
      if (Exit.isSuccess(exit)) return finishNow(caller, inst, label, epoch, cell, exit.value)
      releaseLock(inst)
      return userFailure(inst, label, exit.cause)
    }

    /**
     * Waits for a handler that suspended. The end of its fiber, not the caller, settles the run (stages its
     * changes and releases the lock), so the lock is released exactly once whatever happens to the caller.
     * Interrupting the caller interrupts the handler and waits for it to stop; at the call's deadline the
     * handler is interrupted and the call fails with `CallTimeout`. Neither writes anything.
     */
    const awaitHandler = (
      caller: Context.Context<never>,
      inst: Instance,
      label: string,
      epoch: number,
      cell: Cell,
      child: Fiber.Fiber<unknown, unknown>,
      deadline: number
    ): Effect.Effect<unknown, unknown> => {
      let outcome: Effect.Effect<unknown, unknown> | undefined
      let waiting: ((effect: Effect.Effect<unknown, unknown>) => void) | undefined
      let timedOut = false
      let abandoned = false
      const entry: Mailbox.Deadline | undefined = deadlines === undefined ? undefined : {
        deadline,
        onExpire: () => {
          timedOut = true
          child.interruptUnsafe()
        },
        deadlinePrev: undefined,
        deadlineNext: undefined,
        deadlineListed: false
      }
      if (entry !== undefined) deadlines!.insert(entry)
      child.addObserver((exit) => {
        if (entry !== undefined) deadlines!.remove(entry)
        let result: Effect.Effect<unknown, unknown>
        if (timedOut || abandoned) {
          // The call failed (or went away), not the handler: nothing is staged, and it is no defect.
          releaseLock(inst)
          result = timedOut ? Exit.fail(callTimeout(inst, label)) : exit
        } else {
          result = afterHandler(caller, inst, label, epoch, cell, exit)
        }
        if (waiting === undefined) outcome = result
        else waiting(result)
      })
      return Effect.callback<unknown, unknown>((resume) => {
        if (outcome !== undefined) return resume(outcome)
        waiting = resume
        return Effect.suspend(() => {
          abandoned = true
          return Fiber.interrupt(child)
        })
      })
    }

    /**
     * Waits in the mailbox of `inst` (active when the call arrived) behind the call holding it. The wait is
     * bounded by `deadline` through the runtime's one deadline timer. Once the lock is handed over, the call
     * runs like one that found it free, unless the object changed meanwhile (then it takes the general path,
     * keeping the lock).
     */
    const queue = (
      fiber: Fiber.Fiber<unknown, unknown>,
      inst: Instance,
      handler: Prepared,
      payload: unknown,
      chain: ReadonlyArray<string>,
      deadline: number
    ): Effect.Effect<unknown, unknown> => {
      const ticket = Mailbox.makeTicket()
      ticket.deadline = deadline
      return Mailbox.wait(
        inst,
        ticket,
        fiber,
        Effect.withFiber((fiber) =>
          inst.status === "active" && inst.commits.length < maxPendingCommits
            ? runHot(fiber.context, inst, handler, payload, chain, deadline)
            : exclusive(inst.id, handler.name, options.mailboxCapacity, chain, runCall(handler, payload, chain), {
              inst,
              deadline
            })
        ),
        deadlines === undefined ? undefined : () => Exit.fail(callTimeout(inst, handler.name)),
        () => releaseLock(inst),
        deadlines
      )
    }

    /** The run of a call on the general path: the handler on the caller's fiber. */
    const runCall = (handler: Prepared, payload: unknown, chain: ReadonlyArray<string>) => (inst: Instance) => {
      const cell = makeCell(inst.state)
      return runUser(
        inst,
        handler.name,
        chain,
        Effect.suspend(() => handler.spec.handle(payload, makeContext(inst.id, cell)))
      ).pipe(Effect.map((reply) => [reply, cell] as const))
    }

    /** A call made from `fiber`, once its handler, id and payload are known to be valid. */
    const execute = (
      fiber: Fiber.Fiber<unknown, unknown>,
      id: string,
      inst: Instance | undefined,
      handler: Prepared,
      payload: unknown,
      start: number
    ): Effect.Effect<unknown, unknown> => {
      resolveCaller(fiber.context)
      if (lastRefusal !== undefined) return Exit.fail(lastRefusal)
      const chain = lastChain
      if (chain.length > 0 && chain.includes(inst?.chainKey ?? `${objectType}/${id}`)) {
        return Exit.fail(new ReentrantCall({ objectType, objectId: id, handler: handler.name, chain: [...chain] }))
      }
      if (closing || inst === undefined || inst.status !== "active" || inst.commits.length >= maxPendingCommits) {
        return exclusive(id, handler.name, options.mailboxCapacity, chain, runCall(handler, payload, chain))
      }
      const deadline = start + options.callTimeoutMillis
      if (Mailbox.tryAcquire(inst)) return runHot(fiber.context, inst, handler, payload, chain, deadline)
      if (Mailbox.waiting(inst) >= options.mailboxCapacity) return Exit.fail(overloaded(inst)())
      return queue(fiber, inst, handler, payload, chain, deadline)
    }

    // Callers mostly share a context (per request, or per process), so what a call reads from its caller's is
    // resolved once per context: the call chain, and the registry and attributes metric updates read (put in
    // a small context of their own, cheaper for them to read than the caller's).
    let lastCaller: Context.Context<never> | undefined
    let lastChain: ReadonlyArray<string> = []
    let lastMetricContext: Context.Context<never> = Context.empty()
    let lastRefusal: StorageError | undefined
    const resolveCaller = (context: Context.Context<never>): void => {
      if (context === lastCaller) return
      lastCaller = context
      lastChain = Context.get(context, CallChain)
      lastRefusal = refuseCaller?.(context)
      lastMetricContext = Context.add(
        Context.make(Metric.MetricRegistry, Context.get(context, Metric.MetricRegistry)),
        Metric.CurrentMetricAttributes,
        Context.get(context, Metric.CurrentMetricAttributes)
      )
    }

    /** Records a call's outcome and duration. */
    const record = (
      handler: Prepared,
      callerContext: Context.Context<never>,
      start: number,
      exit: Exit.Exit<unknown, unknown>
    ) => {
      resolveCaller(callerContext)
      const context = lastMetricContext
      handler.outcomes[outcomeOf(exit)].updateUnsafe(1, context)
      handler.duration.updateUnsafe(clock.currentTimeMillisUnsafe() - start, context)
    }

    /** `execute` with its outcome and duration recorded (synchronously when it settles at once). */
    const measured = (
      fiber: Fiber.Fiber<unknown, unknown>,
      id: string,
      inst: Instance | undefined,
      handler: Prepared,
      payload: unknown
    ): Effect.Effect<unknown, unknown> => {
      const context = fiber.context
      const start = clock.currentTimeMillisUnsafe()
      // Whatever this step releases was last active now (one clock read fewer per call).
      const outerStep = stepTime
      stepTime = start
      const result = execute(fiber, id, inst, handler, payload, start)
      stepTime = outerStep
      if (Exit.isExit(result)) {
        record(handler, context, start, result)
        return result
      }
      return Effect.onExit(result, (exit) => {
        record(handler, context, start, exit)
        return Effect.void
      })
    }

    /**
     * A call from `fiber`. Spans are only made when a tracer that can export them is installed: with
     * Effect's default in-memory tracer nobody can see them, and they would cost more than the call.
     */
    const callFrom = (
      fiber: Fiber.Fiber<unknown, unknown>,
      id: string,
      name: string,
      input: unknown,
      encoded: boolean
    ): Effect.Effect<unknown, unknown> => {
      const handler = prepared.get(name)
      if (handler === undefined) {
        return Exit.fail(new UnknownHandler({ objectType, handler: String(name), known: handlerNames }))
      }
      // A loaded object's id was checked when it was loaded.
      const inst = objects.get(id)
      if (inst === undefined) {
        const idError = checkId(objectType, id)
        if (idError !== undefined) return Exit.fail(idError)
      }
      let payload: unknown = undefined
      const decode = encoded ? handler.decodeEncoded : handler.validate
      if (decode !== undefined) {
        const decoded = decode(input)
        if (Exit.isFailure(decoded)) {
          const error = Cause.findError(decoded.cause)
          return Exit.fail(
            new InvalidPayload({
              objectType,
              handler: name,
              issue: error._tag === "Success" ? error.success.message : Cause.pretty(decoded.cause)
            })
          )
        }
        payload = decoded.value
      }
      const call = tracing(fiber)
        ? Effect.withSpan(
          Effect.withFiber((fiber) => measured(fiber, id, objects.get(id), handler, payload)),
          Telemetry.spanCall,
          { attributes: { ...handler.attributes, [Telemetry.attributes.objectId]: id }, captureStackTrace: false }
        )
        : measured(fiber, id, inst, handler, payload)
      if (!encoded || handler.encodeSuccess === undefined) return call
      const encodeSuccess = handler.encodeSuccess
      return Effect.flatMap(call, (reply) => {
        const out = encodeSuccess(reply)
        return Exit.isSuccess(out) ? Exit.succeed(out.value) : Effect.die(out.cause)
      })
    }

    // ---------------------------------------------------------------------------------------------------
    // Alarms
    // ---------------------------------------------------------------------------------------------------

    const maxRetries = options.alarmRetry?.maxRetries ?? 6
    const latenessMetric = Metric.withAttributes(Telemetry.alarmLateness, { object_type: objectType })
    // Made once per alarm name: a metric with attributes made per update computes its series key every time.
    const alarmCounters = new Map<string, Record<Telemetry.AlarmOutcome, Metric.Metric<number, unknown>>>()
    const alarmCounter = (name: string, outcome: Telemetry.AlarmOutcome) => {
      let counters = alarmCounters.get(name)
      if (counters === undefined) {
        const counter = (outcome: Telemetry.AlarmOutcome) =>
          Metric.withAttributes(Telemetry.alarms, { object_type: objectType, alarm: name, outcome })
        counters = {
          fired: counter("fired"),
          retried: counter("retried"),
          failed: counter("failed"),
          lost: counter("lost")
        }
        alarmCounters.set(name, counters)
      }
      return counters[outcome]
    }
    const countAlarm = (name: string, outcome: Telemetry.AlarmOutcome) =>
      Effect.withFiber((fiber) => {
        alarmCounter(name, outcome).updateUnsafe(1, fiber.context)
        return Effect.void
      })

    /** Releases the claim on `alarm` for a retry at `retryAt`, or as failed (`null`). */
    const releaseAlarm = (alarm: ClaimedAlarm, retryAt: number | null, error: string) =>
      ownStorage.releaseAlarm({
        objectType,
        objectId: alarm.objectId,
        name: alarm.name,
        claim: alarm.claim,
        retryAt,
        error,
        now: clock.currentTimeMillisUnsafe()
      }).pipe(
        Effect.flatMap((held) => {
          if (!held) return countAlarm(alarm.name, "lost")
          if (retryAt !== null) scheduler.wake(retryAt)
          return countAlarm(alarm.name, retryAt === null ? "failed" : "retried")
        }),
        Effect.catchCause((cause) =>
          Effect.logWarning("durable-object: could not release an alarm claim; it is retried when it expires")
            .pipe(Effect.annotateLogs({ objectType, objectId: alarm.objectId, cause: Cause.pretty(cause) }))
        )
      )

    /** Runs the handler of `alarm` in the object's serial context and commits, or releases it for a retry. */
    const runAlarm = (alarm: ClaimedAlarm): Effect.Effect<void> => {
      const spec = alarmSpecs[alarm.name]
      const codec = env.alarmCodecs.get(alarm.name)
      if (spec === undefined || codec === undefined) {
        return releaseAlarm(alarm, null, `${objectType} declares no alarm "${alarm.name}"`)
      }
      if (alarm.attempts > maxRetries + 1) {
        return releaseAlarm(alarm, null, `gave up after ${alarm.attempts - 1} attempts that did not finish`)
      }
      const payload = codec.decode(alarm.payload)
      if (Exit.isFailure(payload)) {
        return releaseAlarm(alarm, null, `the stored payload does not decode: ${Cause.pretty(payload.cause)}`)
      }
      const fired = {
        name: alarm.name,
        scheduledAt: DateTime.makeUnsafe(alarm.fireAt),
        attempt: alarm.attempts,
        isRetry: alarm.attempts > 1
      }
      const handler = `alarm:${alarm.name}`
      const run = exclusive(alarm.objectId, handler, Infinity, [], (inst) => {
        const cell = makeCell(inst.state)
        cell.fired = { name: alarm.name, claim: alarm.claim, cron: alarm.cron }
        const ctx = { ...makeContext(inst.id, cell), alarm: fired }
        return runUser(inst, handler, [], Effect.suspend(() => spec.handle(payload.value, ctx))).pipe(
          Effect.map(() => {
            // A recurring alarm re-arms itself for its next occurrence, unless its handler changed it.
            if (alarm.cron !== null && !touchedAlarm(cell, alarm.name)) {
              stageAlarm(cell, {
                name: alarm.name,
                fireAt: nextCron(alarm.cron, Math.max(clock.currentTimeMillisUnsafe(), alarm.fireAt)),
                payload: alarm.payload,
                cron: alarm.cron
              })
            }
            return [undefined, cell] as const
          })
        )
      })
      return Effect.flatMap(Effect.exit(run), (exit) => {
        if (Exit.isSuccess(exit)) return countAlarm(alarm.name, "fired")
        const error = Cause.findError(exit.cause)
        if (error._tag === "Success" && (error.success as { _tag?: string })?._tag === "AlarmClaimLost") {
          return countAlarm(alarm.name, "lost")
        }
        const reason = Cause.pretty(exit.cause)
        if (alarm.attempts > maxRetries) return releaseAlarm(alarm, null, reason)
        return releaseAlarm(
          alarm,
          clock.currentTimeMillisUnsafe() + retryDelayMillis(options.alarmRetry, alarm.attempts),
          reason
        )
      })
    }

    /**
     * Fires one claimed alarm. Its span is made only when a tracing backend is installed: with Effect's
     * built-in tracer nobody can see it, and it costs as much as a good part of a drained alarm.
     */
    const fire = (alarm: ClaimedAlarm): Effect.Effect<void> =>
      Effect.withFiber((fiber) => {
        latenessMetric.updateUnsafe(Math.max(0, clock.currentTimeMillisUnsafe() - alarm.fireAt), fiber.context)
        const run = runAlarm(alarm)
        if (!tracing(fiber)) return run
        return span(Telemetry.spanAlarm, {
          [Telemetry.attributes.objectType]: objectType,
          [Telemetry.attributes.objectId]: alarm.objectId,
          "durable_object.alarm": alarm.name,
          "durable_object.alarm.attempt": alarm.attempts
        })(run)
      })

    if (alarmNames.length > 0) yield* scheduler.register(objectType, fire)

    const unknownAlarm = (name: string) =>
      new UnknownHandler({ objectType, handler: `alarm:${String(name)}`, known: alarmNames.map((n) => `alarm:${n}`) })

    const scheduleAlarm = (id: string, name: string, when: When, input: unknown) =>
      Effect.gen(function*() {
        const idError = checkId(objectType, id)
        if (idError !== undefined) return yield* idError
        const spec = alarmSpecs[name]
        const codec = env.alarmCodecs.get(name)
        if (spec === undefined || codec === undefined) return yield* unknownAlarm(name)
        let payload: unknown = undefined
        if (spec.payload !== undefined) {
          const valid = Schema.decodeUnknownExit(Schema.toType(spec.payload) as unknown as Schema.Decoder<unknown>)(
            input
          )
          if (Exit.isFailure(valid)) {
            return yield* new InvalidPayload({ objectType, handler: `alarm:${name}`, issue: Cause.pretty(valid.cause) })
          }
          payload = valid.value
        }
        const encoded = codec.encode(payload)
        if (Exit.isFailure(encoded)) {
          return yield* new InvalidPayload({ objectType, handler: `alarm:${name}`, issue: Cause.pretty(encoded.cause) })
        }
        const resolved = yield* Effect.exit(resolveWhen(when, clock.currentTimeMillisUnsafe()))
        if (Exit.isFailure(resolved)) {
          return yield* new InvalidPayload({
            objectType,
            handler: `alarm:${name}`,
            issue: Cause.pretty(resolved.cause)
          })
        }
        yield* exclusive(id, `scheduleAlarm:${name}`, Infinity, [], (inst) => {
          const cell = makeCell(inst.state)
          stageAlarm(cell, { name, payload: encoded.value, ...resolved.value })
          return Effect.succeed([undefined, cell] as const)
        })
      })

    const cancelAlarm = (id: string, name: string) =>
      Effect.gen(function*() {
        const idError = checkId(objectType, id)
        if (idError !== undefined) return yield* idError
        if (alarmSpecs[name] === undefined) return yield* unknownAlarm(name)
        yield* exclusive(id, `cancelAlarm:${name}`, Infinity, [], (inst) => {
          const cell = makeCell(inst.state)
          cell.alarms = { removeAll: false, remove: new Set([name]), put: new Map() }
          return Effect.succeed([undefined, cell] as const)
        })
      })

    const listAlarms = (id: string): Effect.Effect<ReadonlyArray<AlarmInfo>, InvalidObjectId | StorageError> =>
      Effect.suspend((): Effect.Effect<ReadonlyArray<AlarmInfo>, InvalidObjectId | StorageError> => {
        const idError = checkId(objectType, id)
        if (idError !== undefined) return Effect.fail(idError)
        return Effect.map(storage.listAlarms(objectType, id), (records) => records.map((r) => toAlarmInfo(env, r)))
      })

    // ---------------------------------------------------------------------------------------------------
    // Stop, delete, shutdown
    // ---------------------------------------------------------------------------------------------------

    /** Runs `body` holding the object's lock (waiting in line without a capacity limit). */
    const withLock = <A, E>(inst: Instance, body: Effect.Effect<A, E>): Effect.Effect<A, E> =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const ticket = Mailbox.makeTicket()
          const acquired = yield* Effect.exit(restore(Mailbox.acquire(inst, ticket, Infinity, overloaded(inst))))
          if (!ticket.granted) return yield* (acquired as Exit.Exit<never>)
          const result = yield* Effect.exit(restore(Effect.andThen(quiesce(inst), body)))
          releaseLock(inst)
          yield* reportLoaded
          return yield* result
        })
      )

    /** With the lock held: runs `onShutdown` on a loaded object, commits its changes, and forgets it. */
    const shutdownLocked = (inst: Instance) =>
      Effect.gen(function*() {
        if (inst.status === "hibernated") yield* wake(inst)
        if (inst.status === "active" && def.onShutdown !== undefined) {
          const cell = makeCell(inst.state)
          const onShutdown = def.onShutdown
          yield* runUser(inst, "onShutdown", [], Effect.suspend(() => onShutdown(makeContext(inst.id, cell) as any)))
          yield* commitCell(inst, "onShutdown", cell)
        }
      }).pipe(
        Effect.ensuring(Effect.sync(() => markStopped(inst))),
        span(Telemetry.spanShutdown, {
          [Telemetry.attributes.objectType]: objectType,
          [Telemetry.attributes.objectId]: inst.id
        })
      )

    const stop = (id: string) =>
      Effect.suspend((): Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict | HandlerDefect> => {
        const idError = checkId(objectType, id)
        if (idError !== undefined) return Effect.fail(idError)
        const inst = objects.get(id)
        if (inst === undefined) return Effect.void
        return withLock(inst, shutdownLocked(inst)).pipe(Effect.catchTag("AlarmClaimLost", Effect.die))
      })

    const delete_ = (id: string) =>
      Effect.suspend((): Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict> => {
        const idError = checkId(objectType, id)
        if (idError !== undefined) return Effect.fail(idError)
        const inst = instanceFor(id)
        return withLock(
          inst,
          Effect.gen(function*() {
            const version = inst.status === "active" || inst.status === "hibernated"
              ? inst.version
              : ((yield* storage.load(objectType, id))?.version ?? 0)
            yield* storage.commit({ objectType, objectId: id, expectedVersion: version, state: null }).pipe(
              Effect.onError(() => Effect.sync(() => unload(inst)))
            )
            markStopped(inst)
          })
        ).pipe(Effect.catchTag("AlarmClaimLost", Effect.die))
      })

    const status = (id: string) =>
      Effect.sync((): Status => {
        const inst = objects.get(id)
        if (inst === undefined) return "stopped"
        if (inst.status === "active" || inst.status === "hibernated") return inst.status
        return "stopped"
      })

    // ---------------------------------------------------------------------------------------------------
    // The sweeper: one fiber per object type that hibernates and shuts down idle objects
    // ---------------------------------------------------------------------------------------------------

    const nextExpiry = ():
      | { readonly inst: Instance; readonly at: number; readonly action: "hibernate" | "shutdown" }
      | undefined =>
    {
      let next: { inst: Instance; at: number; action: "hibernate" | "shutdown" } | undefined
      const active = idleActive.head
      if (active !== undefined) {
        const inst = active
        // No object on the list was active before its `idleAt`, so none expires before the head's.
        next = hibernates
          ? { inst, at: inst.idleAt + options.hibernateAfterMillis, action: "hibernate" }
          : { inst, at: inst.idleAt + options.shutdownAfterMillis, action: "shutdown" }
      }
      const hibernated = idleHibernated.head
      if (hibernated !== undefined) {
        const inst = hibernated
        const at = inst.idleAt + options.shutdownAfterMillis
        if (next === undefined || at < next.at) next = { inst, at, action: "shutdown" }
      }
      return next !== undefined && Number.isFinite(next.at) ? next : undefined
    }

    const expire = (inst: Instance, action: "hibernate" | "shutdown") => {
      const eligible = action === "hibernate"
        ? inst.status === "active"
        : inst.status === "active" || inst.status === "hibernated"
      if (inst.busy || !eligible) {
        // A busy object is re-listed when its call finishes.
        idleActive.remove(inst)
        idleHibernated.remove(inst)
        return Effect.void
      }
      if (inst.lastActive > inst.idleAt) {
        // Active since it was listed: back to its place in line.
        inst.idleList!.insert(inst, inst.lastActive)
        return Effect.void
      }
      if (inst.commits.length > 0) {
        // Its last commit has not landed yet: look again after another idle period.
        inst.idleList!.insert(inst, clock.currentTimeMillisUnsafe())
        return Effect.void
      }
      if (action === "hibernate") {
        inst.state = undefined
        inst.status = "hibernated"
        idleHibernated.insert(inst, inst.lastActive)
        return Effect.void
      }
      if (!Mailbox.tryAcquire(inst)) return Effect.void
      return shutdownLocked(inst).pipe(
        Effect.catchCause((cause) =>
          Effect.logWarning("durable-object: onShutdown failed; the object stopped without its changes").pipe(
            Effect.annotateLogs({ objectType, objectId: inst.id, cause: Cause.pretty(cause) })
          )
        ),
        Effect.ensuring(
          Effect.suspend(() => {
            releaseLock(inst)
            return reportLoaded
          })
        )
      )
    }

    const sweeper = Effect.gen(function*() {
      while (true) {
        wakeSweeper.closeUnsafe()
        const next = nextExpiry()
        if (next === undefined) {
          yield* wakeSweeper.await
          continue
        }
        const now = clock.currentTimeMillisUnsafe()
        if (next.at > now) {
          yield* Effect.raceFirst(Effect.sleep(next.at - now), wakeSweeper.await)
          continue
        }
        yield* expire(next.inst, next.action)
      }
    })

    yield* Effect.forkScoped(sweeper)

    /** Expires the deadlines of waiting and suspended calls (one timer for all of them). */
    const deadlineTimer = (list: Mailbox.Deadlines) =>
      Effect.gen(function*() {
        while (true) {
          wakeTimer.closeUnsafe()
          const head = list.head
          const now = clock.currentTimeMillisUnsafe()
          if (head !== undefined && head.deadline <= now) {
            list.expire(now)
            continue
          }
          timerTarget = head === undefined ? Infinity : head.deadline
          yield* head === undefined
            ? wakeTimer.await
            : Effect.raceFirst(Effect.sleep(head.deadline - now), wakeTimer.await)
        }
      })

    if (deadlines !== undefined) yield* Effect.forkScoped(deadlineTimer(deadlines))

    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closing = true
        return Effect.forEach(
          Array.from(objects.values()),
          (inst) =>
            withLock(inst, inst.status === "stopped" ? Effect.void : shutdownLocked(inst)).pipe(
              Effect.catchCause((cause) =>
                Effect.logWarning("durable-object: graceful stop failed").pipe(
                  Effect.annotateLogs({ objectType, objectId: inst.id, cause: Cause.pretty(cause) })
                )
              )
            ),
          { concurrency: 16, discard: true }
        )
      })
    )

    return {
      call: (id, handler, payload) => Effect.withFiber((fiber) => callFrom(fiber, id, handler, payload, false)),
      callEncoded: (id, handler, payload) => Effect.withFiber((fiber) => callFrom(fiber, id, handler, payload, true)),
      callFrom: (fiber, id, handler, payload) => callFrom(fiber, id, handler, payload, false),
      stop,
      delete: delete_,
      status,
      scheduleAlarm,
      cancelAlarm,
      listAlarms,
      loadedIds: Effect.sync(() =>
        Array.from(objects.values()).filter((i) => i.status === "active" || i.status === "hibernated").map((i) => i.id)
      )
    } satisfies ObjectRuntime
  })
