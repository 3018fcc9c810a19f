/**
 * The runtime of one object type: the registry of its instances, the call path (mailbox, activation,
 * handler, commit), and the sweeper that hibernates and shuts down idle objects.
 *
 * @internal
 */
import { Cause, Clock, Context, DateTime, Effect, Exit, Fiber, Latch, Metric, Schema, Scope } from "effect"
import { TracerEnabled } from "effect/References"
import { nativeTracer, Tracer as CurrentTracer } from "effect/Tracer"
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
import { span } from "./span.ts"

/** @internal */
export const RuntimeTypeId = "~@durable-object/core/Runtime" as const

/** The service each definition's layer provides. */
export interface ObjectRuntime {
  readonly call: (id: string, handler: string, payload: unknown) => Effect.Effect<unknown, unknown>
  readonly callEncoded: (id: string, handler: string, payload: unknown) => Effect.Effect<unknown, unknown>
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
  /** The context of the call that created the group: its commit runs with it (spans, SQL transformers). */
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
    const storage = yield* Storage
    const scheduler = yield* Scheduler
    // Commits run in a scope that closes after the graceful stop below (finalizers run in reverse order),
    // so stopping the runtime lets in-flight commits finish instead of interrupting them.
    const runtimeScope = yield* Scope.fork(yield* Effect.scope)
    const clock = yield* Clock.Clock
    const fullContext = yield* Effect.context<never>()
    const services: Context.Context<never> | undefined = def.services.length === 0
      ? undefined
      : Context.pick(...def.services)(fullContext) as Context.Context<never>
    const objectType = def.name
    const options = def.options

    const stateJson = Schema.fromJsonString(Schema.toCodecJson(def.state)) as unknown as Schema.Codec<unknown, string>
    const encodeState = Schema.encodeUnknownExit(stateJson)
    const decodeState = Schema.decodeUnknownExit(stateJson)

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
        outcomes[outcome] = Metric.withAttributes(Telemetry.calls, { ...attributes, outcome })
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
        duration: Metric.withAttributes(Telemetry.callDuration, attributes)
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
          waiters: [],
          idlePrev: undefined,
          idleNext: undefined,
          idleList: undefined
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

    const touch = (inst: Instance) => {
      inst.lastActive = clock.currentTimeMillisUnsafe()
      idleActive.append(inst)
      if (idleActive.size === 1) wakeSweeper.openUnsafe()
    }

    const releaseLock = (inst: Instance) => {
      if (!Mailbox.release(inst)) return
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

    /**
     * Runs user code with the declared services and the call chain, turning defects into `HandlerDefect`.
     * Interruptions pass through untouched.
     */
    /** Gives user code the declared services and the call chain (for `ReentrantCall`). */
    const provideUser = <A, E>(
      inst: Instance,
      chain: ReadonlyArray<string>,
      effect: Effect.Effect<A, E, unknown>
    ): Effect.Effect<A, E> => {
      const nextChain = chain.length === 0 ? inst.selfChain : [...chain, inst.chainKey]
      return Effect.updateContext(effect as Effect.Effect<A, E>, (context: Context.Context<never>) => {
        const withChain = Context.add(context, CallChain, nextChain)
        return services === undefined ? withChain : Context.merge(withChain, services)
      })
    }

    /** A failure of user code as the caller sees it: defects become `HandlerDefect`; the rest passes. */
    const userFailure = <E>(
      inst: Instance,
      handler: string,
      cause: Cause.Cause<E>
    ): Effect.Effect<never, E | HandlerDefect> =>
      Cause.hasDies(cause) && !Cause.hasInterruptsOnly(cause)
        ? Effect.fail(
          new HandlerDefect({
            objectType,
            objectId: inst.id,
            handler,
            defect: Cause.squash(cause),
            pretty: Cause.pretty(cause)
          })
        )
        : Effect.failCause(cause)

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
      Effect.catchCause(provideUser(inst, chain, effect), (cause) => userFailure(inst, handler, cause))

    /**
     * Commits the head group of `inst` and then the next ones, in order. A failed commit fails its group
     * and every later one (they were built on its speculative state), and drops the in-memory copy: the
     * outcome of a commit that did not answer is unknown, so the next call reloads the truth.
     */
    const drain = (inst: Instance, token: object): Effect.Effect<void> =>
      Effect.gen(function*() {
        const epoch = inst.epoch
        while (inst.commits.length > 0) {
          const group = inst.commits[0]!
          if (inst.epoch !== epoch) {
            // The copy these commits were built on was dropped: none of them may reach storage.
            const stale = inst.commits.splice(0)
            const error = new StorageError({
              operation: "commit",
              detail: "the object was reloaded before this commit"
            })
            inst.draining = undefined
            for (const g of stale) settle(g, Exit.fail(error))
            return
          }
          group.started = true
          const exit = yield* Effect.exit(Effect.provideContext(
            storage.commit({
              objectType,
              objectId: inst.id,
              expectedVersion: inst.version,
              state: group.json,
              alarms: group.alarms
            }),
            group.context
          ))
          if (Exit.isSuccess(exit)) {
            inst.version = exit.value
            inst.commits.shift()
            if (group.wakeAt !== undefined) scheduler.wake(group.wakeAt)
            settle(group, Exit.void)
            continue
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
          return yield* reportLoaded
        }
      }).pipe(
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            // Stopped mid-commit (the runtime is going away): nobody can know the outcome any more.
            if (inst.draining !== token) return
            const abandoned = inst.commits.splice(0)
            unload(inst)
            inst.draining = undefined
            const error = new StorageError({ operation: "commit", detail: "interrupted; the outcome is unknown" })
            for (const g of abandoned) settle(g, Exit.fail(error))
          })
        ),
        Effect.ensuring(Effect.sync(() => {
          // Settling waiters may have started the next drain already; leave that one alone.
          if (inst.draining === token) inst.draining = undefined
        }))
      )

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
      Effect.contextWith((context: Context.Context<never>) => stageWith(inst, handler, cell, context))

    const stageWith = (
      inst: Instance,
      handler: string,
      cell: Cell,
      context: Context.Context<never>
    ): Effect.Effect<CommitGroup | undefined, HandlerDefect> => {
      const ops = cell.alarms
      const alarmChanges = cell.fired !== undefined ||
        (ops !== undefined && (ops.removeAll || ops.remove.size > 0 || ops.put.size > 0))
      let json = inst.json
      let stateChanged = false
      if (cell.state !== inst.state) {
        const encoded = encodeState(cell.state)
        if (Exit.isFailure(encoded)) {
          return Effect.fail(
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
      const last = inst.commits.at(-1)
      if (!stateChanged && !alarmChanges) return Effect.succeed(last)
      inst.state = cell.state
      inst.json = json
      if (!alarmChanges && last !== undefined && !last.started && last.alarms === undefined) {
        last.json = json
        return Effect.succeed(last)
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
        context
      }
      inst.commits.push(group)
      if (inst.draining !== undefined) return Effect.succeed(group)
      const token = {}
      inst.draining = token
      return Effect.as(Effect.forkIn(drain(inst, token), runtimeScope), group)
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

    const withTimeout = <A, E>(inst: Instance, handler: string, effect: Effect.Effect<A, E>) =>
      Number.isFinite(options.callTimeoutMillis)
        ? Effect.timeoutOrElse(effect, {
          duration: options.callTimeoutMillis,
          orElse: () =>
            Effect.fail(
              new CallTimeout({ objectType, objectId: inst.id, handler, timeoutMillis: options.callTimeoutMillis })
            )
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
     */
    const exclusive = <A, E>(
      id: string,
      label: string,
      capacity: number,
      chain: ReadonlyArray<string>,
      run: (inst: Instance) => Effect.Effect<readonly [A, Cell], E>
    ) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          while (true) {
            if (closing) return yield* new RuntimeShutdown({ objectType })
            const inst = instanceFor(id)
            const ticket = Mailbox.makeTicket()
            let epoch = -1
            const ran = yield* Effect.exit(restore(withTimeout(
              inst,
              label,
              Effect.gen(function*() {
                yield* Mailbox.acquire(inst, ticket, capacity, overloaded(inst))
                if (inst.status === "stopped") return RETRY
                if (inst.status === "unloaded") yield* activate(inst, chain)
                else if (inst.status === "hibernated") yield* wake(inst)
                // Bound the speculation: past this many pending commits, wait for them first.
                if (inst.commits.length >= maxPendingCommits) yield* quiesce(inst)
                epoch = inst.epoch
                return yield* run(inst)
              })
            )))
            if (!ticket.granted) return yield* (ran as Exit.Exit<never, E | ObjectOverloaded | CallTimeout>)
            if (Exit.isSuccess(ran) && ran.value === RETRY) {
              releaseLock(inst)
              continue
            }
            if (Exit.isFailure(ran)) {
              releaseLock(inst)
              if (inst.status !== "active") yield* reportLoaded
              return yield* ran
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
    ): Effect.Effect<A, CommitError | HandlerDefect> => {
      if (
        cell.state === inst.state && cell.alarms === undefined && cell.fired === undefined &&
        inst.epoch === epoch && inst.status === "active"
      ) {
        // Nothing changed: the reply only waits for the commits whose state it saw.
        releaseLock(inst)
        const last = inst.commits.at(-1)
        return last === undefined ? Effect.succeed(reply) : restore(Effect.as(awaitGroup(last), reply))
      }
      const staged:
        | Exit.Exit<CommitGroup | undefined, CommitError | HandlerDefect>
        | Effect.Effect<
          CommitGroup | undefined,
          HandlerDefect
        > = inst.epoch !== epoch || inst.status !== "active"
          // An earlier commit failed while this ran: the state it saw was speculative and is gone.
          ? Exit.fail(
            inst.rollback?.epoch === epoch
              ? inst.rollback.error
              : new StorageError({ operation: "commit", detail: "the object was reloaded while the call ran" })
          )
          : stage(inst, label, cell)
      return Effect.flatMap(Effect.exit(staged), (exit): Effect.Effect<A, CommitError | HandlerDefect> => {
        releaseLock(inst)
        const report = inst.status === "active" ? Effect.void : reportLoaded
        if (Exit.isFailure(exit)) return Effect.andThen(report, Effect.failCause(exit.cause))
        const group = exit.value
        return Effect.andThen(
          report,
          group === undefined ? Effect.succeed(reply) : restore(Effect.as(awaitGroup(group), reply))
        )
      })
    }

    /**
     * The fast path of a call to an active object whose lock is free: no waiting, no activation. The
     * handler runs in a child fiber started on the spot, so a handler that finishes without suspending
     * (the usual case) costs no timer; one that suspends is raced against the call timeout.
     */
    const fastCall = (
      inst: Instance,
      handler: Prepared,
      payload: unknown,
      chain: ReadonlyArray<string>
    ): Effect.Effect<unknown, unknown> =>
      Effect.uninterruptibleMask((restore) => {
        const epoch = inst.epoch
        const cell = makeCell(inst.state)
        const user = provideUser(
          inst,
          chain,
          Effect.suspend(() => handler.spec.handle(payload, makeContext(inst.id, cell)))
        )
        const finish = (exit: Exit.Exit<unknown, unknown>): Effect.Effect<unknown, unknown> => {
          if (Exit.isFailure(exit)) {
            releaseLock(inst)
            return userFailure(inst, handler.name, exit.cause)
          }
          return finishRun(inst, handler.name, epoch, cell, exit.value, restore)
        }
        return Effect.flatMap(Effect.forkChild(user, { startImmediately: true }), (child) => {
          const done = child.pollUnsafe()
          if (done !== undefined) return finish(done)
          const awaitChild = Number.isFinite(options.callTimeoutMillis)
            ? Effect.timeoutOrElse(Fiber.await(child), {
              duration: options.callTimeoutMillis,
              orElse: () =>
                Effect.as(
                  Fiber.interrupt(child),
                  Exit.fail(
                    new CallTimeout({
                      objectType,
                      objectId: inst.id,
                      handler: handler.name,
                      timeoutMillis: options.callTimeoutMillis
                    })
                  )
                )
            })
            : Fiber.await(child)
          return Effect.flatMap(Effect.exit(restore(awaitChild)), (awaited) => {
            if (Exit.isSuccess(awaited)) {
              const exit = awaited.value as Exit.Exit<unknown, unknown>
              // A timeout is the call's failure, not the handler's: it changes nothing and is no defect.
              if (Exit.isFailure(exit) && (Cause.findError(exit.cause) as any).success instanceof CallTimeout) {
                releaseLock(inst)
                return exit
              }
              return finish(exit)
            }
            // The caller was interrupted while the handler ran: stop the handler, write nothing.
            return Effect.andThen(
              Fiber.interrupt(child),
              Effect.suspend(() => {
                releaseLock(inst)
                return awaited
              })
            )
          })
        })
      })

    const execute = (id: string, handler: Prepared, payload: unknown): Effect.Effect<unknown, unknown> =>
      Effect.flatMap(CallChain, (chain: ReadonlyArray<string>) => {
        if (chain.length > 0 && chain.includes(`${objectType}/${id}`)) {
          return Effect.fail(new ReentrantCall({ objectType, objectId: id, handler: handler.name, chain: [...chain] }))
        }
        const inst = objects.get(id)
        if (
          !closing && inst !== undefined && inst.status === "active" && inst.commits.length < maxPendingCommits &&
          Mailbox.tryAcquire(inst)
        ) {
          return fastCall(inst, handler, payload, chain)
        }
        return exclusive(id, handler.name, options.mailboxCapacity, chain, (inst) => {
          const cell = makeCell(inst.state)
          return runUser(
            inst,
            handler.name,
            chain,
            Effect.suspend(() => handler.spec.handle(payload, makeContext(inst.id, cell)))
          ).pipe(Effect.map((reply) => [reply, cell] as const))
        })
      })

    /** Records a call's outcome and duration, inside its span. */
    const instrumented = (handler: Prepared, id: string, effect: Effect.Effect<unknown, unknown>) =>
      Effect.suspend(() => {
        const start = clock.currentTimeMillisUnsafe()
        return Effect.onExit(effect, (exit) =>
          Effect.contextWith((context: Context.Context<never>) => {
            // One synchronous step instead of two metric effects: this runs on every call.
            handler.outcomes[outcomeOf(exit)].updateUnsafe(1, context)
            handler.duration.updateUnsafe(clock.currentTimeMillisUnsafe() - start, context)
            return Effect.void
          }))
      }).pipe(span(Telemetry.spanCall, { ...handler.attributes, [Telemetry.attributes.objectId]: id }))

    const prepareCall = (id: string, name: string, input: unknown, encoded: boolean) => {
      const handler = prepared.get(name)
      if (handler === undefined) {
        return Effect.fail(new UnknownHandler({ objectType, handler: String(name), known: handlerNames }))
      }
      const idError = checkId(objectType, id)
      if (idError !== undefined) return Effect.fail(idError)
      let payload: unknown = undefined
      const decode = encoded ? handler.decodeEncoded : handler.validate
      if (decode !== undefined) {
        const decoded = decode(input)
        if (Exit.isFailure(decoded)) {
          const error = Cause.findError(decoded.cause)
          return Effect.fail(
            new InvalidPayload({
              objectType,
              handler: name,
              issue: error._tag === "Success" ? error.success.message : Cause.pretty(decoded.cause)
            })
          )
        }
        payload = decoded.value
      }
      return instrumented(handler, id, execute(id, handler, payload)).pipe(
        encoded && handler.encodeSuccess !== undefined
          ? Effect.flatMap((reply) => {
            const out = handler.encodeSuccess!(reply)
            return Exit.isSuccess(out) ? Effect.succeed(out.value) : Effect.die(out.cause)
          })
          : (self) => self
      )
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
      storage.releaseAlarm({
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
        if (!fiber.getRef(TracerEnabled) || fiber.getRef(CurrentTracer) === nativeTracer) return run
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
        next = hibernates
          ? { inst, at: inst.lastActive + options.hibernateAfterMillis, action: "hibernate" }
          : { inst, at: inst.lastActive + options.shutdownAfterMillis, action: "shutdown" }
      }
      const hibernated = idleHibernated.head
      if (hibernated !== undefined) {
        const inst = hibernated
        const at = inst.lastActive + options.shutdownAfterMillis
        if (next === undefined || at < next.at) next = { inst, at, action: "shutdown" }
      }
      return next !== undefined && Number.isFinite(next.at) ? next : undefined
    }

    const expire = (inst: Instance, action: "hibernate" | "shutdown") => {
      const eligible = action === "hibernate"
        ? inst.status === "active"
        : inst.status === "active" || inst.status === "hibernated"
      if (inst.busy || inst.commits.length > 0 || !eligible) {
        // A busy object is re-listed when its call finishes.
        idleActive.remove(inst)
        idleHibernated.remove(inst)
        return Effect.void
      }
      if (action === "hibernate") {
        inst.state = undefined
        inst.status = "hibernated"
        idleActive.remove(inst)
        idleHibernated.append(inst)
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
      call: (id, handler, payload) => prepareCall(id, handler, payload, false),
      callEncoded: (id, handler, payload) => prepareCall(id, handler, payload, true),
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
