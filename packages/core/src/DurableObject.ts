/**
 * Define durable objects, call them, stop and delete them.
 *
 * A definition is schema-first: state, handler payloads, replies and errors are `effect/Schema`. It yields a
 * typed client and a `Layer` holding the object type's runtime (the supervisor of its instances), which needs
 * a `Storage` and the services the handlers declared.
 *
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { DurableObject, Storage } from "@durable-object/core"
 *
 * export const Counter = DurableObject.defineObject({
 *   name: "Counter",
 *   state: Schema.Struct({ count: Schema.Number }),
 *   initialState: () => ({ count: 0 }),
 *   handlers: {
 *     increment: {
 *       payload: Schema.Struct({ amount: Schema.Number }),
 *       success: Schema.Number,
 *       handle: ({ amount }, ctx) => ctx.state.modify((s) => [s.count + amount, { count: s.count + amount }])
 *     }
 *   }
 * })
 *
 * const program = Counter.client("user-123").increment({ amount: 5 }) // Effect<number, DurableObjectError, Counter>
 * Effect.runPromise(program.pipe(Effect.provide(Counter.layer), Effect.provide(Storage.layerMemory)))
 * ```
 *
 * Guarantees, per `(type, id)` and runtime: one live instance; handlers run one at a time in arrival order;
 * a handler's state changes are committed in one storage write after it succeeds and before its reply is
 * released, and a handler that fails, dies, is interrupted or times out writes nothing.
 *
 * @since 0.1.0
 */
import { Context, Duration, Effect, Layer, Schema } from "effect"
import type { AlarmInfo, AlarmsAccess, FiredAlarm, RetryPolicy, When } from "./Alarms.ts"
import type {
  DurableObjectError,
  HandlerDefect,
  InvalidObjectId,
  StorageError,
  UnknownHandler,
  VersionConflict
} from "./Errors.ts"
import * as runtime from "./internal/runtime.ts"
import type { Scheduler } from "./internal/scheduler.ts"
import type { Storage } from "./Storage.ts"

// ---------------------------------------------------------------------------------------------------------
// Handler context
// ---------------------------------------------------------------------------------------------------------

/**
 * A handler's view of its object's state. Changes are local to the running handler until it succeeds; then
 * they are committed in one write before the reply is released. If the handler fails they are dropped.
 *
 * @since 0.1.0
 * @category models
 */
export interface StateAccess<S> {
  /** The state as this handler currently sees it. */
  readonly get: Effect.Effect<S>
  /** Replaces the state. */
  readonly set: (state: S) => Effect.Effect<void>
  /** Replaces the state with a function of it. */
  readonly update: (f: (state: S) => S) => Effect.Effect<void>
  /** Replaces the state and returns a value computed alongside: `f` returns `[value, newState]`. */
  readonly modify: <A>(f: (state: S) => readonly [A, S]) => Effect.Effect<A>
}

/**
 * What a handler or hook receives besides its payload.
 *
 * @since 0.1.0
 * @category models
 */
export interface ObjectContext<S, AP = {}> {
  /** The definition's name. */
  readonly objectType: string
  /** The object's id. */
  readonly id: string
  /** The object's state. */
  readonly state: StateAccess<S>
  /** The object's alarms: changes commit with the state changes. */
  readonly alarms: AlarmsAccess<AP>
}

/**
 * What an alarm handler receives besides its payload: the object's context and the alarm that fired.
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmContext<S, AP = {}> extends ObjectContext<S, AP> {
  readonly alarm: FiredAlarm
}

// ---------------------------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------------------------

/**
 * Lifecycle and backpressure options of an object type. Durations accept anything `Duration` does
 * (`"5 minutes"`, `Duration.seconds(30)`, `Duration.infinity`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Idle time after which an object drops its in-memory working set, keeping only committed state. Default 5 minutes. */
  readonly hibernateAfter?: Duration.Input | undefined
  /** Idle time after which `onShutdown` runs and the object leaves memory entirely. Default 1 hour. */
  readonly shutdownAfter?: Duration.Input | undefined
  /** Calls allowed to wait for one object; more get `ObjectOverloaded`. Default 1024. */
  readonly mailboxCapacity?: number | undefined
  /** Longest a call may wait and run (the commit excluded); then it gets `CallTimeout`. Default 5 seconds. */
  readonly callTimeout?: Duration.Input | undefined
  /** How failing alarm handlers are retried. Default: 6 retries from 2 seconds, doubling. */
  readonly alarmRetry?: RetryPolicy | undefined
}

/**
 * {@link Options} with every default filled in, in milliseconds (`Infinity` for never).
 *
 * @since 0.1.0
 * @category models
 */
export interface ResolvedOptions {
  readonly hibernateAfterMillis: number
  readonly shutdownAfterMillis: number
  readonly mailboxCapacity: number
  readonly callTimeoutMillis: number
  readonly alarmRetry: RetryPolicy | undefined
}

/** @internal */
export type TypeOf<S, Default> = S extends Schema.Top ? S["Type"] : Default

/** @internal */
export type EncodedOf<S, Default> = S extends Schema.Top ? S["Encoded"] : Default

/**
 * The runtime shape of a handler declaration: schemas plus the `handle` function.
 *
 * @since 0.1.0
 * @category models
 */
export interface AnyHandler {
  readonly payload?: Schema.Top | undefined
  readonly success?: Schema.Top | undefined
  readonly error?: Schema.Top | undefined
  readonly handle: (payload: any, ctx: ObjectContext<any, any>) => Effect.Effect<any, any, any>
}

/**
 * The runtime shape of an alarm declaration.
 *
 * @since 0.1.0
 * @category models
 */
export interface AnyAlarmHandler {
  readonly payload?: Schema.Top | undefined
  readonly handle: (payload: any, ctx: AlarmContext<any, any>) => Effect.Effect<void, any, any>
}

/**
 * Alarm declarations as `defineObject` types them: each alarm's `handle` receives its decoded payload and
 * the alarm context. Any failure (typed or not) makes the alarm retry.
 *
 * @since 0.1.0
 * @category models
 */
export type AlarmHandlers<S, AP, R> = {
  readonly [K in keyof AP]: {
    readonly payload?: AP[K]
    readonly handle: (
      payload: TypeOf<AP[K], void>,
      ctx: AlarmContext<S, NoInfer<AP>>
    ) => Effect.Effect<void, unknown, R>
  }
}

/**
 * Handler declarations as `defineObject` types them: each handler's `handle` receives its decoded payload
 * and must return its `success` type, fail only with its `error` type, and use only declared `services`.
 *
 * @since 0.1.0
 * @category models
 */
export type Handlers<S, P, A, E, R, AP = {}> =
  & {
    readonly [K in keyof P]: {
      readonly payload?: P[K]
      readonly handle: (
        payload: TypeOf<P[K], void>,
        ctx: ObjectContext<S, AP>
      ) => Effect.Effect<
        TypeOf<K extends keyof A ? A[K] : never, void>,
        TypeOf<K extends keyof E ? E[K] : never, never>,
        R
      >
    }
  }
  & { readonly [K in keyof A]: { readonly success?: A[K] } }
  & { readonly [K in keyof E]: { readonly error?: E[K] } }

/**
 * The identifier of one object type's runtime in the Effect context. Calls need it; `Definition.layer`
 * provides it. Forgetting the layer is therefore a type error where the program is run.
 *
 * @since 0.1.0
 * @category models
 */
export interface Runtime<Name extends string> {
  readonly [runtime.RuntimeTypeId]: Name
}

/**
 * Where an object is in its lifecycle, as seen by this runtime.
 *
 * - `active`: loaded, with its working state in memory.
 * - `hibernated`: idle past `hibernateAfter`; holds only its committed state (as JSON) and wakes on the next call.
 * - `stopped`: not in memory (never called, shut down, stopped, deleted, or failed to load).
 *
 * @since 0.1.0
 * @category models
 */
export type Status = "active" | "hibernated" | "stopped"

/**
 * Errors any typed call can fail with, besides the handler's own: every runtime error but `UnknownHandler`
 * (a typed call names a handler that exists).
 *
 * @since 0.1.0
 * @category models
 */
export type CallError = Exclude<DurableObjectError, UnknownHandler>

/**
 * The typed client of one object: one method per handler.
 *
 * @since 0.1.0
 * @category models
 */
export type Client<Name extends string, P, A, E> = {
  readonly [K in keyof P]: (
    ...payload: P[K] extends Schema.Top ? [payload: P[K]["Type"]] : []
  ) => Effect.Effect<
    TypeOf<K extends keyof A ? A[K] : never, void>,
    TypeOf<K extends keyof E ? E[K] : never, never> | CallError,
    Runtime<Name>
  >
}

/**
 * A durable object type: its schemas and handlers, a typed `client`, and the `layer` running it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Definition<
  Name extends string = string,
  State extends Schema.Top = Schema.Top,
  P = any,
  A = any,
  E = any,
  R = any,
  AP = any
> {
  readonly name: Name
  readonly state: State
  readonly initialState: () => State["Type"]
  readonly handlers: { readonly [K in keyof P]: AnyHandler }
  readonly alarms: { readonly [K in keyof AP]: AnyAlarmHandler }
  readonly services: ReadonlyArray<Context.Key<any, any>>
  readonly onLoad: ((ctx: ObjectContext<State["Type"], AP>) => Effect.Effect<void, never, R>) | undefined
  readonly onShutdown: ((ctx: ObjectContext<State["Type"], AP>) => Effect.Effect<void, never, R>) | undefined
  readonly options: ResolvedOptions
  /** The context key of this type's runtime. */
  readonly runtime: Context.Service<Runtime<Name>, runtime.ObjectRuntime>
  /**
   * The runtime of this object type: a supervisor of its instances, running in the layer's scope. Closing
   * the scope stops every loaded object gracefully (`onShutdown` runs) after in-flight calls finish.
   */
  readonly layer: Layer.Layer<Runtime<Name>, never, Storage | Scheduler | R>
  /** The typed client of the object with this id. Building it is free; nothing runs until a method's Effect does. */
  readonly client: (id: string) => Client<Name, P, A, E>
  /** Type-level only. */
  readonly "~types"?: { readonly P: P; readonly A: A; readonly E: E; readonly R: R; readonly AP: AP }
}

/**
 * Any definition, whatever its types.
 *
 * @since 0.1.0
 * @category models
 */
export type AnyDefinition = Definition<any, any, any, any, any, any, any>

const defaultOptions = {
  hibernateAfter: "5 minutes",
  shutdownAfter: "1 hour",
  mailboxCapacity: 1024,
  callTimeout: "5 seconds"
} as const

const toMillis = (input: Duration.Input, option: string): number => {
  const millis = Duration.toMillis(input)
  if (!(millis > 0)) throw new TypeError(`durable-object: option ${option} must be a positive duration`)
  return millis
}

const resolveOptions = (options: Options | undefined): ResolvedOptions => {
  const capacity = options?.mailboxCapacity ?? defaultOptions.mailboxCapacity
  if (!Number.isInteger(capacity) || capacity < 0) {
    throw new TypeError("durable-object: option mailboxCapacity must be a non-negative integer")
  }
  return {
    hibernateAfterMillis: toMillis(options?.hibernateAfter ?? defaultOptions.hibernateAfter, "hibernateAfter"),
    shutdownAfterMillis: toMillis(options?.shutdownAfter ?? defaultOptions.shutdownAfter, "shutdownAfter"),
    mailboxCapacity: capacity,
    callTimeoutMillis: toMillis(options?.callTimeout ?? defaultOptions.callTimeout, "callTimeout"),
    alarmRetry: options?.alarmRetry
  }
}

const namePattern = /^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$/

/**
 * Defines a durable object type.
 *
 * - `name` identifies the type in storage: keep it stable. Letters, digits, `_ . : -`, up to 128 characters.
 * - `state` is the state schema; stored as its encoded form in JSON, so it must have a JSON encoding.
 * - `initialState` is the state of an object that was never written. Nothing is stored until a handler
 *   changes it.
 * - `handlers`: per handler, optional `payload`, `success` and `error` schemas and a `handle` function.
 *   (TypeScript needs at least one schema among all handlers to infer their names: an object whose every
 *   handler is a bare `handle` using its arguments should give one of them `success: Schema.Void`.)
 * - `services`: the services handlers and hooks may use (their keys). They become requirements of `layer`.
 *   (TypeScript cannot infer handler requirements from inline handlers, so they are declared.)
 * - `alarms`: per alarm, an optional `payload` schema and a `handle` function (see `Alarms`).
 * - `onLoad(ctx)` runs after each activation and may change state; its changes commit before the first call
 *   runs. `onShutdown(ctx)` runs before a graceful stop (idle shutdown, `stop`, layer close).
 *
 * Throws a `TypeError` (a bug in the definition, found at start-up) for an invalid name or options.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defineObject = <
  const Name extends string,
  State extends Schema.Top,
  P,
  A,
  E,
  const Services extends ReadonlyArray<Context.Key<any, any>> = readonly [],
  AP = Record<string, unknown>
>(definition: {
  readonly name: Name
  readonly state: State
  readonly initialState: () => State["Type"]
  readonly services?: Services | undefined
  readonly handlers: Handlers<State["Type"], P, A, E, Services[number]["Identifier"], AP>
  readonly alarms?: AlarmHandlers<State["Type"], AP, Services[number]["Identifier"]> | undefined
  readonly onLoad?:
    | ((ctx: ObjectContext<State["Type"], AP>) => Effect.Effect<void, never, Services[number]["Identifier"]>)
    | undefined
  readonly onShutdown?:
    | ((ctx: ObjectContext<State["Type"], AP>) => Effect.Effect<void, never, Services[number]["Identifier"]>)
    | undefined
  readonly options?: Options | undefined
}): Definition<Name, State, P, A, E, Services[number]["Identifier"], AP> => {
  if (!namePattern.test(definition.name)) {
    throw new TypeError(
      `durable-object: invalid object type name ${
        JSON.stringify(definition.name)
      } (letters, digits, _ . : -; up to 128)`
    )
  }
  const handlers = definition.handlers as unknown as Record<string, AnyHandler>
  for (const [name, handler] of Object.entries(handlers)) {
    if (typeof handler?.handle !== "function") {
      throw new TypeError(`durable-object: handler ${definition.name}.${name} has no handle function`)
    }
  }
  const alarms = (definition.alarms ?? {}) as unknown as Record<string, AnyAlarmHandler>
  for (const [name, alarm] of Object.entries(alarms)) {
    if (typeof alarm?.handle !== "function") {
      throw new TypeError(`durable-object: alarm ${definition.name}.${name} has no handle function`)
    }
  }
  const key = Context.Service<Runtime<Name>, runtime.ObjectRuntime>(`@durable-object/core/Runtime/${definition.name}`)
  const self: Definition<Name, State, P, A, E, Services[number]["Identifier"], AP> = {
    name: definition.name,
    state: definition.state,
    initialState: definition.initialState,
    handlers: handlers as any,
    alarms: alarms as any,
    services: definition.services ?? [],
    onLoad: definition.onLoad,
    onShutdown: definition.onShutdown,
    options: resolveOptions(definition.options),
    runtime: key,
    layer: undefined as any,
    client: undefined as any
  }
  const layer = Layer.effect(key, runtime.make(self as unknown as AnyDefinition)) as Layer.Layer<
    Runtime<Name>,
    never,
    Storage | Scheduler | Services[number]["Identifier"]
  >
  // A client is one object holding its id; each method is built when it is read off the client (so reading
  // `const { increment } = client` works too). Calls go from the caller's fiber straight into the runtime.
  class ClientImpl {
    readonly [clientId]: string
    constructor(id: string) {
      this[clientId] = id
    }
  }
  // Callers mostly share a context: the runtime found in the last one is kept.
  let lastContext: Context.Context<never> | undefined
  let lastRuntime: runtime.ObjectRuntime | undefined
  const runtimeIn = (context: Context.Context<never>): runtime.ObjectRuntime => {
    if (context !== lastContext) {
      lastRuntime = Context.getUnsafe(context, key)
      lastContext = context
    }
    return lastRuntime!
  }
  for (const name of Object.keys(handlers)) {
    Object.defineProperty(ClientImpl.prototype, name, {
      get(this: ClientImpl) {
        const id = this[clientId]
        return (payload?: unknown) =>
          Effect.withFiber((fiber) => runtimeIn(fiber.context).callFrom(fiber, id, name, payload))
      }
    })
  }
  const client = (id: string) => new ClientImpl(id) as unknown as Client<Name, P, A, E>
  return Object.assign(self, { layer, client })
}

const clientId: unique symbol = Symbol("@durable-object/core/clientId")

// ---------------------------------------------------------------------------------------------------------
// Generic API
// ---------------------------------------------------------------------------------------------------------

/** @internal */
export type P<D> = D extends Definition<any, any, infer P, any, any, any> ? P : never
/** @internal */
export type A<D> = D extends Definition<any, any, any, infer A, any, any> ? A : never
/** @internal */
export type E<D> = D extends Definition<any, any, any, any, infer E, any> ? E : never
/** @internal */
export type NameOf<D> = D extends Definition<infer Name, any, any, any, any, any> ? Name : never
/** @internal */
export type HandlerName<D> = keyof P<D> & string
/** @internal */
export type AnyHandlerError<D> = { readonly [K in keyof E<D>]: TypeOf<E<D>[K], never> }[keyof E<D>]

/**
 * Calls a handler by name: the generic form of `definition.client(id)[handler](payload)`, with the same
 * types and guarantees.
 *
 * @since 0.1.0
 * @category calls
 */
export const call = <D extends AnyDefinition, K extends HandlerName<D>>(
  definition: D,
  id: string,
  handler: K,
  ...payload: P<D>[K] extends Schema.Top ? [payload: P<D>[K]["Type"]] : []
): Effect.Effect<
  TypeOf<K extends keyof A<D> ? A<D>[K] : never, void>,
  TypeOf<K extends keyof E<D> ? E<D>[K] : never, never> | CallError,
  Runtime<NameOf<D>>
> => definition.runtime.use((rt) => rt.call(id, handler, payload[0])) as any

/**
 * Calls a handler named at run time with a payload in its *encoded* form (for example a parsed JSON body),
 * and replies with the success value in its encoded form (ready for `JSON.stringify`). Unknown handler names
 * fail with `UnknownHandler`; payloads that do not decode fail with `InvalidPayload`. Handler errors are
 * returned as values (encode them with the handler's `error` schema if they must cross a wire).
 *
 * @since 0.1.0
 * @category calls
 */
export const callEncoded = <D extends AnyDefinition>(
  definition: D,
  id: string,
  handler: string,
  payload: unknown
): Effect.Effect<unknown, DurableObjectError | UnknownHandler | AnyHandlerError<D>, Runtime<NameOf<D>>> =>
  definition.runtime.use((rt) => rt.callEncoded(id, handler, payload)) as any

/**
 * Stops an object gracefully: waits for the call in progress and those already queued, runs `onShutdown`
 * (committing its changes), and drops the object from memory. Its stored state stays; the next call
 * activates it again. Stopping an object that is not loaded does nothing.
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const stop = <D extends AnyDefinition>(
  definition: D,
  id: string
): Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict | HandlerDefect, Runtime<NameOf<D>>> =>
  definition.runtime.use((rt) => rt.stop(id)) as any

/**
 * Deletes an object: after the call in progress and those queued before it, removes its stored state and
 * all its alarms in one transaction and drops it from memory. `onShutdown` does not run. The next call
 * starts it afresh from `initialState`. Works on objects whose stored state no longer decodes.
 *
 * @since 0.1.0
 * @category lifecycle
 */
const delete_ = <D extends AnyDefinition>(
  definition: D,
  id: string
): Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict, Runtime<NameOf<D>>> =>
  definition.runtime.use((rt) => rt.delete(id)) as any

export {
  /**
   * Deletes an object: after the call in progress and those queued before it, removes its stored state and
   * all its alarms in one transaction and drops it from memory. `onShutdown` does not run. The next call
   * starts it afresh from `initialState`. Works on objects whose stored state no longer decodes.
   *
   * @since 0.1.0
   * @category lifecycle
   */
  delete_ as delete
}

/**
 * Where an object is in its lifecycle in this runtime: `active`, `hibernated` or `stopped`.
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const status = <D extends AnyDefinition>(
  definition: D,
  id: string
): Effect.Effect<Status, never, Runtime<NameOf<D>>> => definition.runtime.use((rt) => rt.status(id)) as any

/**
 * The ids of the objects of this type loaded in this runtime (active or hibernated).
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const loadedIds = <D extends AnyDefinition>(
  definition: D
): Effect.Effect<ReadonlyArray<string>, never, Runtime<NameOf<D>>> =>
  definition.runtime.use((rt) => rt.loadedIds) as any

/** @internal */
export type AP<D> = D extends Definition<any, any, any, any, any, any, infer AP> ? AP : never

/**
 * Schedules (or replaces) the alarm `name` of an object from outside it, as if a handler had: serialized
 * with the object's calls and committed before this returns.
 *
 * @since 0.1.0
 * @category alarms
 */
export const scheduleAlarm = <D extends AnyDefinition, K extends keyof AP<D> & string>(
  definition: D,
  id: string,
  name: K,
  when: When,
  ...payload: AP<D>[K] extends Schema.Top ? [payload: AP<D>[K]["Type"]] : []
): Effect.Effect<void, CallError | UnknownHandler, Runtime<NameOf<D>>> =>
  definition.runtime.use((rt) => rt.scheduleAlarm(id, name, when, payload[0])) as any

/**
 * Cancels the alarm `name` of an object from outside it (nothing happens when it is not scheduled).
 *
 * @since 0.1.0
 * @category alarms
 */
export const cancelAlarm = <D extends AnyDefinition>(
  definition: D,
  id: string,
  name: keyof AP<D> & string
): Effect.Effect<void, CallError | UnknownHandler, Runtime<NameOf<D>>> =>
  definition.runtime.use((rt) => rt.cancelAlarm(id, name)) as any

/**
 * The alarms of an object, earliest first, failed ones included (with when and why they failed).
 *
 * @since 0.1.0
 * @category alarms
 */
export const listAlarms = <D extends AnyDefinition>(
  definition: D,
  id: string
): Effect.Effect<ReadonlyArray<AlarmInfo<keyof AP<D> & string>>, InvalidObjectId | StorageError, Runtime<NameOf<D>>> =>
  definition.runtime.use((rt) => rt.listAlarms(id)) as any

/**
 * The call chain a handler runs in (outermost first, as `type/id`), used to turn calls that would deadlock
 * into `ReentrantCall` errors.
 *
 * @since 0.1.0
 * @category references
 */
export const CallChain = runtime.CallChain
