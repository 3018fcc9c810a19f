/**
 * The runtime of one object type: wires its pieces together and owns their scope and the order in which they
 * stop. What each piece owns:
 * - `instance.ts`: the per-object state machine, the registry and idle lists;
 * - `call.ts`: the call path, from a client's call to the reply;
 * - `commit.ts`: staging, coalescing and draining commits, and the context storage work runs in;
 * - `userCode.ts`: the context user code runs with and how its failures surface;
 * - `lifecycle.ts`: activation, stop, delete, the idle sweeper and the graceful stop;
 * - `alarmRunner.ts`: firing, retrying and scheduling alarms;
 * - `live.ts`: the subscribers of committed states and events (published where a commit lands).
 *
 * @internal
 */
import { Clock, Effect, Exit, Fiber, Scope, Stream } from "effect"
import type { FiredAlarm } from "../Alarms.ts"
import { Scheduler, Storage } from "../Storage.ts"
import * as AlarmCodec from "./alarmCodec.ts"
import * as AlarmRunner from "./alarmRunner.ts"
import * as Call from "./call.ts"
import * as Commit from "./commit.ts"
import { type Cell, type ContextEnv, makeContext as makeObjectContext } from "./context.ts"
import type { DefinitionSpec, ObjectRuntime } from "./definition.ts"
import * as Inspect from "./inspect.ts"
import { Registry } from "./instance.ts"
import * as Lifecycle from "./lifecycle.ts"
import * as Live from "./live.ts"
import * as Mailbox from "./mailbox.ts"
import type { RuntimeParts } from "./parts.ts"
import * as StateCodec from "./stateCodec.ts"
import * as UserCode from "./userCode.ts"

/**
 * Lock hand-offs resumed per scheduler turn: enough that a long queue on one object is not paced by the event
 * loop, few enough that the loop gets a turn every millisecond or so.
 */
const handoffBudget = 256

/**
 * How long the graceful stop waits for running handlers when the call timeout is infinite, before it
 * interrupts them (with a finite call timeout, that timeout bounds them).
 */
const shutdownGraceMillis = 30_000

/** The JSON of a definition's initial state (what subscribers of an object never written see). */
const initialJson = (def: DefinitionSpec, codec: StateCodec.JsonCodec): string => {
  const encoded = codec.encode(def.initialState())
  // An initial state that does not encode is a bug in the definition, as its first commit would show.
  if (Exit.isFailure(encoded)) throw new TypeError(`durable-object: ${def.name}'s initial state does not encode`)
  return encoded.value
}

/** Builds the runtime of one object type in the current scope. */
export const make = (def: DefinitionSpec): Effect.Effect<ObjectRuntime, never, Scope.Scope | Storage | Scheduler> =>
  Effect.gen(function*() {
    const storage = yield* Storage
    const scheduler = yield* Scheduler
    const clock = yield* Clock.Clock
    // The runtime's own context: storage work runs in it, never in a caller's (see `commit.ts`).
    const context = yield* Effect.context<never>()
    const objectType = def.name
    const options = def.options

    const timer = Number.isFinite(options.callTimeoutMillis) || Number.isFinite(options.commitTimeoutMillis)
      ? Mailbox.makeDeadlineTimer(clock)
      : undefined
    const registry = new Registry({
      objectType,
      clock,
      codec: StateCodec.make(def.state),
      handoff: Mailbox.makeHandoff(handoffBudget),
      deadlines: timer?.list
    })
    const own = Commit.ownStorage(storage, context)
    const codecs = AlarmCodec.make(def)
    const env: ContextEnv = {
      objectType,
      clock,
      alarmCodecs: codecs,
      listStored: (id) => own.listAlarms(objectType, id),
      events: new Set(Object.keys(def.events))
    }
    const makeContext = (id: string, cell: Cell, alarm?: FiredAlarm | undefined) =>
      makeObjectContext(env, id, cell, alarm)
    const checkId = (id: string) => Call.checkId(objectType, id)
    const user = UserCode.make(objectType, def.services, context)
    const live = Live.make({
      objectType,
      codec: registry.codec,
      initialJson: () => initialJson(def, registry.codec),
      load: own.load,
      storage
    })
    const commits = Commit.make({ objectType, registry, storage, own, scheduler, live })
    const parts: RuntimeParts = { def, registry, commits, own, user, clock, makeContext, checkId, live }
    const lifecycle = Lifecycle.make(parts)
    const calls = Call.make({ ...parts, activate: lifecycle.activate })
    const alarms = AlarmRunner.make({ ...parts, calls, scheduler, codecs })
    const inspector = Inspect.make({ ...parts, calls, codecs })

    // Finalizers run in reverse order. Commits run in a scope that closes after the graceful stop, so stopping
    // the runtime lets in-flight commits finish instead of interrupting them.
    const runtimeScope = yield* Scope.fork(yield* Effect.scope)
    yield* Scope.addFinalizer(runtimeScope, commits.interruptDrains)
    if (Object.keys(def.alarms).length > 0) yield* scheduler.register(objectType, alarms.fire)
    yield* Effect.forkScoped(lifecycle.sweeper)
    yield* live.follow
    yield* Effect.addFinalizer(() => live.close)
    if (timer !== undefined) yield* Effect.forkScoped(timer.run)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const stopping = yield* Effect.forkDetach(lifecycle.stopAll)
        const grace = Number.isFinite(options.callTimeoutMillis) ? options.callTimeoutMillis : shutdownGraceMillis
        const stopped = yield* Fiber.await(stopping).pipe(Effect.timeoutOption(grace))
        if (stopped._tag === "Some") return
        // Handlers still hold their objects' locks past any deadline: interrupt them, then finish stopping.
        yield* Effect.logWarning("durable-object: handlers still running at shutdown were interrupted").pipe(
          Effect.annotateLogs({ objectType, graceMillis: grace })
        )
        yield* calls.interruptRunning
        yield* Fiber.await(stopping)
      })
    )

    // The one place the dynamically typed machinery meets the definition's types: calls reply and fail with
    // what the handlers' schemas say, which only the definition knows.
    return {
      call: (id, handler, ...payload) =>
        Effect.withFiber((fiber) => calls.callFrom(fiber, id, handler, payload[0], false)),
      callEncoded: (id, handler, payload, callOptions) =>
        Effect.withFiber((fiber) => calls.callFrom(fiber, id, handler, payload, true, callOptions?.idempotencyKey)),
      callFrom: (fiber, id, handler, payload, idempotencyKey) =>
        calls.callFrom(fiber, id, handler, payload, false, idempotencyKey),
      stop: lifecycle.stop,
      delete: lifecycle.delete,
      status: lifecycle.status,
      loadedIds: Effect.sync(() => registry.loadedIds()),
      scheduleAlarm: (id, name, when, ...payload) => alarms.scheduleAlarm(id, name, when, payload[0]),
      cancelAlarm: alarms.cancelAlarm,
      listAlarms: alarms.listAlarms,
      changes: (id) => {
        const idError = checkId(id)
        return idError !== undefined ? Stream.fail(idError) : live.changes(id)
      },
      events: (id) => {
        const idError = checkId(id)
        return idError !== undefined ? Stream.fail(idError) : live.events(id)
      },
      list: inspector.list,
      inspect: inspector.inspect,
      retryAlarm: inspector.retryAlarm,
      listFailedAlarms: inspector.listFailedAlarms
    } as ObjectRuntime
  })
