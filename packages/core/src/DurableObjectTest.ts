/**
 * A test kit for durable objects: run definitions on in-memory storage (which works under `TestClock`),
 * read what an object persisted, and run one handler against a given state without any runtime.
 *
 * ```ts
 * import { it } from "@effect/vitest"
 * import { Effect } from "effect"
 * import { DurableObjectTest } from "@durable-object/core"
 *
 * it.effect("increments", () =>
 *   Effect.gen(function*() {
 *     yield* Counter.client("a").increment({ amount: 2 })
 *     const stored = yield* DurableObjectTest.persistedState(Counter, "a")
 *   }).pipe(Effect.provide(DurableObjectTest.layer(Counter))))
 * ```
 *
 * @since 0.1.0
 */
import { Clock, DateTime, Effect, Exit, Layer, Tracer } from "effect"
import type { AlarmInfo, FiredAlarm } from "./Alarms.ts"
import type {
  AlarmContext,
  AnyAlarmHandler,
  AnyDefinition,
  AnyHandler,
  Definition,
  ObjectContext,
  Runtime,
  TypeOf
} from "./DurableObject.ts"
import { StateDecodeError, type StorageError } from "./Errors.ts"
import * as AlarmCodec from "./internal/alarmCodec.ts"
import { type ContextEnv, makeCell, makeContext } from "./internal/context.ts"
import * as StateCodec from "./internal/stateCodec.ts"
import { layerMemory, type Scheduler, Storage } from "./Storage.ts"

type RuntimeOf<D> = D extends Definition<infer Name, any, any, any, any, any, any> ? Runtime<Name> : never
type ServicesOf<D> = D extends Definition<any, any, any, any, any, infer R, any> ? R : never

/**
 * The runtimes of the given definitions on a fresh in-memory `Storage` with its alarm scheduler (both also
 * provided, so tests can inspect them). Each use of the layer gets its own empty storage. Everything runs on
 * Effect's `Clock`, so `TestClock.adjust` drives idle timers and alarms.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <const Defs extends ReadonlyArray<AnyDefinition>>(
  ...definitions: Defs
): Layer.Layer<RuntimeOf<Defs[number]> | Storage | Scheduler, never, ServicesOf<Defs[number]>> =>
  Layer.provideMerge(
    // The runtimes' layers as one: what each provides and needs, which a variadic merge cannot spell out.
    Layer.mergeAll(
      ...(definitions.map((d) => d.layer) as unknown as [
        Layer.Layer<RuntimeOf<Defs[number]>, never, ServicesOf<Defs[number]> | Storage | Scheduler>
      ])
    ),
    layerMemory
  )

/**
 * What an object has persisted, decoded with its state schema; `undefined` when nothing is stored.
 *
 * @since 0.1.0
 * @category inspection
 */
export const persistedState = <D extends AnyDefinition>(
  definition: D,
  id: string
): Effect.Effect<D["state"]["Type"] | undefined, StorageError | StateDecodeError, Storage> =>
  Effect.gen(function*() {
    const storage = yield* Storage
    const stored = yield* storage.load(definition.name, id)
    if (stored === undefined) return undefined
    const decoded = StateCodec.make(definition.state).decode(stored.state)
    if (Exit.isFailure(decoded)) {
      return yield* new StateDecodeError({ objectType: definition.name, objectId: id, issue: String(decoded.cause) })
    }
    return decoded.value
  })

/**
 * The stored version of an object (0 when nothing is stored).
 *
 * @since 0.1.0
 * @category inspection
 */
export const persistedVersion = (
  definition: AnyDefinition,
  id: string
): Effect.Effect<number, StorageError, Storage> =>
  Effect.flatMap(Storage, (storage) => Effect.map(storage.load(definition.name, id), (s) => s?.version ?? 0))

/**
 * The outcome of {@link runHandler} and {@link runAlarm}: the handler's reply, the state it left (its input
 * state when it changed nothing), and the alarm changes it staged.
 *
 * @since 0.1.0
 * @category models
 */
export interface HandlerRun<S, A> {
  readonly reply: A
  readonly state: S
  readonly alarms: {
    /** Alarms the handler scheduled (or replaced), by name. */
    readonly scheduled: ReadonlyArray<AlarmInfo>
    /** Names the handler cancelled. */
    readonly cancelled: ReadonlyArray<string>
    /** Whether the handler cancelled every alarm. */
    readonly cancelledAll: boolean
  }
  /** The events the handler emitted (`ctx.emit`), in order: what its subscribers would get once it commits. */
  readonly events: ReadonlyArray<{ readonly name: string; readonly value: unknown }>
}

const runWith = (
  definition: AnyDefinition,
  id: string,
  state: unknown,
  body: (ctx: ObjectContext<unknown, any>) => Effect.Effect<unknown, unknown, unknown>,
  alarm?: FiredAlarm | undefined
) =>
  Effect.gen(function*() {
    const env: ContextEnv = {
      objectType: definition.name,
      clock: yield* Clock.Clock,
      alarmCodecs: AlarmCodec.make(definition),
      listStored: () => Effect.succeed([]),
      events: new Set(Object.keys(definition.events ?? {}))
    }
    const cell = makeCell(state)
    const reply = yield* body(makeContext(env, id, cell, alarm))
    const ops = cell.alarms
    return {
      reply,
      state: cell.state,
      alarms: {
        scheduled: Array.from(ops?.put.values() ?? [], (put) =>
          AlarmCodec.toAlarmInfo(env.alarmCodecs, { ...put, attempts: 0, failedAt: null, lastError: null })),
        cancelled: Array.from(ops?.remove ?? []),
        cancelledAll: ops?.removeAll ?? false
      },
      events: cell.events ?? []
    }
  })

/**
 * Runs one handler against a given state, with no runtime, storage or mailbox: a pure unit test of the
 * handler's logic. Fails with the handler's own error; dies with its defects.
 *
 * @since 0.1.0
 * @category running
 */
export const runHandler = <D extends AnyDefinition, K extends keyof NonNullable<D["~types"]>["P"] & string>(
  definition: D,
  handler: K,
  options: {
    readonly state: D["state"]["Type"]
    readonly id?: string | undefined
    readonly payload?: TypeOf<NonNullable<D["~types"]>["P"][K], void> | undefined
  }
): Effect.Effect<
  HandlerRun<D["state"]["Type"], TypeOf<NonNullable<D["~types"]>["A"][K], void>>,
  TypeOf<NonNullable<D["~types"]>["E"][K], never>,
  ServicesOf<D>
> =>
  runWith(
    definition,
    options.id ?? "test",
    options.state,
    (ctx) => (definition.handlers[handler] as AnyHandler).handle(options.payload, ctx)
    // The handler's reply, error and services are what its schemas and declarations say.
  ) as Effect.Effect<
    HandlerRun<D["state"]["Type"], TypeOf<NonNullable<D["~types"]>["A"][K], void>>,
    TypeOf<NonNullable<D["~types"]>["E"][K], never>,
    ServicesOf<D>
  >

/**
 * Runs one alarm handler against a given state, as {@link runHandler} does for handlers (the original's
 * `perform_alarm_handler`). `attempt` (default 1) is what the handler sees as its attempt number.
 *
 * @since 0.1.0
 * @category running
 */
export const runAlarm = <D extends AnyDefinition, K extends keyof NonNullable<D["~types"]>["AP"] & string>(
  definition: D,
  alarm: K,
  options: {
    readonly state: D["state"]["Type"]
    readonly id?: string | undefined
    readonly payload?: TypeOf<NonNullable<D["~types"]>["AP"][K], void> | undefined
    readonly attempt?: number | undefined
  }
): Effect.Effect<HandlerRun<D["state"]["Type"], void>, unknown, ServicesOf<D>> =>
  Effect.flatMap(Clock.currentTimeMillis, (now) =>
    runWith(
      definition,
      options.id ?? "test",
      options.state,
      (ctx) => (definition.alarms[alarm] as AnyAlarmHandler).handle(options.payload, ctx as AlarmContext<unknown, any>),
      {
        name: alarm,
        scheduledAt: DateTime.makeUnsafe(now),
        attempt: options.attempt ?? 1,
        isRetry: (options.attempt ?? 1) > 1
      }
    )) as Effect.Effect<HandlerRun<D["state"]["Type"], void>, unknown, ServicesOf<D>>

/**
 * A tracer that keeps every span it makes, for tests that check tracing: provide `layer`, run the code, then
 * read `spans`. The runtime makes spans only when a tracer other than Effect's built-in one is installed, so
 * a test sees none without one like this.
 *
 * @since 0.1.0
 * @category tracing
 */
export const spanRecorder = (): {
  readonly spans: ReadonlyArray<Tracer.Span>
  readonly layer: Layer.Layer<never>
} => {
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (options) => {
      const span = new Tracer.NativeSpan(options)
      spans.push(span)
      return span
    }
  })
  return { spans, layer: Layer.succeed(Tracer.Tracer, tracer) as Layer.Layer<never> }
}
