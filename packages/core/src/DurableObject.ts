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
import { Context, Effect, Layer, type Schema, Stream } from "effect"
import type { AlarmInfo, When } from "./Alarms.ts"
import type {
  DurableObjectError,
  HandlerDefect,
  InvalidListOptions,
  InvalidObjectId,
  ObjectNotFound,
  StorageError,
  UnknownHandler,
  ValueTooLarge,
  VersionConflict
} from "./Errors.ts"
import {
  type AlarmContext,
  type AnyAlarmHandler,
  type AnyErrorOf,
  type AnyHandler,
  type CallError,
  type CallOptions,
  type DefinitionSpec,
  type ErrorOf,
  type Inspection,
  type ListOptions,
  type ObjectContext,
  type ObjectPage,
  type ObjectRuntime,
  type Options,
  type PayloadArgs,
  type ResolvedOptions,
  resolveOptions,
  type Runtime,
  type Snapshot,
  type Status,
  type SuccessOf,
  type TypeOf
} from "./internal/definition.ts"
import * as runtime from "./internal/runtime.ts"
import * as UserCode from "./internal/userCode.ts"
import type { Scheduler, Storage } from "./Storage.ts"

export type {
  AlarmContext,
  AnyAlarmHandler,
  AnyHandler,
  CallError,
  CallOptions,
  EncodedOf,
  Inspection,
  ListOptions,
  ObjectContext,
  ObjectPage,
  ObjectRuntime,
  ObjectSummary,
  Options,
  ResolvedOptions,
  Runtime,
  Snapshot,
  StateAccess,
  Status,
  TypeOf
} from "./internal/definition.ts"

// ---------------------------------------------------------------------------------------------------------
// Definitions
// ---------------------------------------------------------------------------------------------------------

/**
 * Alarm declarations as `defineObject` types them: each alarm's `handle` receives its decoded payload and
 * the alarm context. Any failure (typed or not) makes the alarm retry.
 *
 * @since 0.1.0
 * @category models
 */
export type AlarmHandlers<S, AP, R, EV = {}> = {
  readonly [K in keyof AP]: {
    readonly payload?: AP[K]
    readonly handle: (
      payload: TypeOf<AP[K], void>,
      ctx: AlarmContext<S, NoInfer<AP>, NoInfer<EV>>
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
export type Handlers<S, P, A, E, R, AP = {}, EV = {}> =
  & {
    readonly [K in keyof P]: {
      readonly payload?: P[K]
      readonly handle: (
        payload: TypeOf<P[K], void>,
        ctx: ObjectContext<S, AP, EV>
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
 * The events a definition declares, as subscribers receive them: `{ name, value }`, typed per name.
 *
 * @since 0.1.0
 * @category models
 */
export type EventOf<EV> = { readonly [K in keyof EV]: { readonly name: K; readonly value: TypeOf<EV[K], never> } }[
  keyof EV
]

/**
 * What a client offers besides its handlers: the object's live state (see `docs/live-state.md`).
 *
 * Neither stream keeps the object active: it hibernates and shuts down as usual while watched. Subscribers
 * read the object's 16 newest states at their own pace (a sliding buffer), so a slow one never slows the
 * object or other subscribers; it skips to the newest states instead.
 *
 * @since 0.1.0
 * @category models
 */
export interface LiveClient<Name extends string, S, EV> {
  /**
   * The object's committed states: the current one first (read from storage, without activating the object),
   * then one per commit, in commit order, each with its version. A state that is not yet durable, or never
   * will be, is never emitted. A subscriber that falls behind skips to the newest state. Commits made by
   * other runtimes appear when the storage announces them (PostgreSQL with `notifyCommits`).
   */
  readonly changes: Stream.Stream<Snapshot<S>, InvalidObjectId | StorageError, Runtime<Name>>
  /**
   * The events the object's handlers emit (`ctx.emit`) from now on, each delivered once the run that emitted
   * it has committed, in commit order; a failed run emits nothing. In-process only: events are not carried
   * across runtimes. A subscriber more than 1024 events behind loses the oldest.
   */
  readonly events: Stream.Stream<EventOf<EV>, InvalidObjectId, Runtime<Name>>
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
  AP = any,
  EV = any
> {
  readonly name: Name
  readonly state: State
  readonly initialState: () => State["Type"]
  readonly handlers: { readonly [K in keyof P]: AnyHandler }
  readonly alarms: { readonly [K in keyof AP]: AnyAlarmHandler }
  /** The events handlers may emit, by name. */
  readonly events: { readonly [K in keyof EV]: EV[K] }
  readonly services: ReadonlyArray<Context.Key<any, any>>
  readonly onLoad: ((ctx: ObjectContext<State["Type"], AP>) => Effect.Effect<void, never, R>) | undefined
  readonly onShutdown: ((ctx: ObjectContext<State["Type"], AP>) => Effect.Effect<void, never, R>) | undefined
  readonly options: ResolvedOptions
  /** The context key of this type's runtime. */
  readonly runtime: Context.Service<Runtime<Name>, ObjectRuntime<P, A, E, AP>>
  /**
   * The runtime of this object type: a supervisor of its instances, running in the layer's scope. Closing
   * the scope stops every loaded object gracefully (`onShutdown` runs) after in-flight calls finish.
   */
  readonly layer: Layer.Layer<Runtime<Name>, never, Storage | Scheduler | R>
  /**
   * The typed client of the object with this id. Building it is free; nothing runs until a method's Effect
   * does. With an `idempotencyKey`, its calls' effects happen at most once per key (see `CallOptions`).
   */
  readonly client: (id: string, options?: CallOptions) => Client<Name, P, A, E> & LiveClient<Name, State["Type"], EV>
  /** Type-level only. */
  readonly "~types"?: { readonly P: P; readonly A: A; readonly E: E; readonly R: R; readonly AP: AP; readonly EV: EV }
}

/**
 * Any definition, whatever its types.
 *
 * @since 0.1.0
 * @category models
 */
export type AnyDefinition = Definition<any, any, any, any, any, any, any, any>

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
 * - `events`: per event name, the schema of its value; handlers emit them with `ctx.emit(name, value)` and
 *   `client(id).events` delivers them once the emitting run commits. `changes` and `events` cannot name
 *   handlers (the client uses them).
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
  AP = Record<string, unknown>,
  EV extends Record<string, Schema.Top> = {}
>(definition: {
  readonly name: Name
  readonly state: State
  readonly initialState: () => State["Type"]
  readonly services?: Services | undefined
  readonly handlers: Handlers<State["Type"], P, A, E, Services[number]["Identifier"], AP, EV>
  readonly alarms?: AlarmHandlers<State["Type"], AP, Services[number]["Identifier"], EV> | undefined
  readonly events?: EV | undefined
  readonly onLoad?:
    | ((ctx: ObjectContext<State["Type"], AP, EV>) => Effect.Effect<void, never, Services[number]["Identifier"]>)
    | undefined
  readonly onShutdown?:
    | ((ctx: ObjectContext<State["Type"], AP, EV>) => Effect.Effect<void, never, Services[number]["Identifier"]>)
    | undefined
  readonly options?: Options | undefined
}): Definition<Name, State, P, A, E, Services[number]["Identifier"], AP, EV> => {
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
    if (name === "changes" || name === "events") {
      throw new TypeError(
        `durable-object: ${definition.name} cannot name a handler "${name}" (the client's live state)`
      )
    }
  }
  const alarms = (definition.alarms ?? {}) as unknown as Record<string, AnyAlarmHandler>
  for (const [name, alarm] of Object.entries(alarms)) {
    if (typeof alarm?.handle !== "function") {
      throw new TypeError(`durable-object: alarm ${definition.name}.${name} has no handle function`)
    }
  }
  const key = Context.Service<Runtime<Name>, ObjectRuntime<P, A, E, AP>>(
    `@durable-object/core/Runtime/${definition.name}`
  )
  const spec: DefinitionSpec = {
    name: definition.name,
    state: definition.state,
    initialState: definition.initialState,
    handlers,
    alarms,
    services: definition.services ?? [],
    onLoad: definition.onLoad,
    onShutdown: definition.onShutdown,
    options: resolveOptions(definition.options),
    events: definition.events ?? {}
  }
  // The runtime takes the declared services from the context it is built in; they are this layer's
  // requirements.
  const layer: Layer.Layer<Runtime<Name>, never, Storage | Scheduler | Services[number]["Identifier"]> = Layer
    .effect(key, runtime.make(spec))
  // A client is one object holding its id; each method is built when it is read off the client (so reading
  // `const { increment } = client` works too). Calls go from the caller's fiber straight into the runtime.
  class ClientImpl {
    readonly [clientId]: string
    readonly [clientKey]: string | undefined
    constructor(id: string, key: string | undefined) {
      this[clientId] = id
      this[clientKey] = key
    }
  }
  // Callers mostly share a context: the runtime found in one is kept for as long as that context lives (a
  // finished request's context is not retained).
  const runtimes = new WeakMap<Context.Context<never>, ObjectRuntime<P, A, E, AP>>()
  const runtimeIn = (context: Context.Context<never>): ObjectRuntime<P, A, E, AP> => {
    let found = runtimes.get(context)
    if (found === undefined) {
      found = Context.getUnsafe(context, key)
      runtimes.set(context, found)
    }
    return found
  }
  // The live streams look the runtime up when they start, like calls do.
  Object.defineProperty(ClientImpl.prototype, "changes", {
    get(this: ClientImpl) {
      const id = this[clientId]
      return Stream.unwrap(key.useSync((rt) => rt.changes(id)))
    }
  })
  Object.defineProperty(ClientImpl.prototype, "events", {
    get(this: ClientImpl) {
      const id = this[clientId]
      return Stream.unwrap(key.useSync((rt) => rt.events(id)))
    }
  })
  for (const name of Object.keys(handlers)) {
    Object.defineProperty(ClientImpl.prototype, name, {
      get(this: ClientImpl) {
        const id = this[clientId]
        const key = this[clientKey]
        return (payload?: unknown) =>
          Effect.withFiber((fiber) => runtimeIn(fiber.context).callFrom(fiber, id, name, payload, key))
      }
    })
  }
  return {
    name: definition.name,
    state: definition.state,
    initialState: definition.initialState,
    services: spec.services,
    onLoad: definition.onLoad,
    onShutdown: definition.onShutdown,
    options: spec.options,
    handlers: definition.handlers as unknown as { readonly [K in keyof P]: AnyHandler },
    alarms: alarms as { readonly [K in keyof AP]: AnyAlarmHandler },
    events: spec.events as { readonly [K in keyof EV]: EV[K] },
    runtime: key,
    layer,
    client: (id: string, options?: CallOptions) =>
      new ClientImpl(id, options?.idempotencyKey) as unknown as
        & Client<Name, P, A, E>
        & LiveClient<Name, State["Type"], EV>
  }
}

const clientId: unique symbol = Symbol("@durable-object/core/clientId")
const clientKey: unique symbol = Symbol("@durable-object/core/clientKey")

// ---------------------------------------------------------------------------------------------------------
// Generic API
// ---------------------------------------------------------------------------------------------------------

/**
 * Calls a handler by name: the generic form of `definition.client(id)[handler](payload)`, with the same
 * types and guarantees.
 *
 * @since 0.1.0
 * @category calls
 */
export const call = <Name extends string, P, A, E, K extends keyof P & string>(
  definition: Definition<Name, any, P, A, E, any, any>,
  id: string,
  handler: K,
  ...payload: PayloadArgs<P, K>
): Effect.Effect<SuccessOf<A, K>, ErrorOf<E, K> | CallError, Runtime<Name>> =>
  definition.runtime.use((rt) => rt.call(id, handler, ...payload))

/**
 * Calls a handler named at run time with a payload in its *encoded* form (for example a parsed JSON body),
 * and replies with the success value in its encoded form (ready for `JSON.stringify`). Unknown handler names
 * fail with `UnknownHandler`; payloads that do not decode fail with `InvalidPayload`. Handler errors are
 * returned as values (encode them with the handler's `error` schema if they must cross a wire).
 *
 * @since 0.1.0
 * @category calls
 */
export const callEncoded = <Name extends string, E>(
  definition: Definition<Name, any, any, any, E, any, any>,
  id: string,
  handler: string,
  payload: unknown,
  options?: CallOptions | undefined
): Effect.Effect<unknown, DurableObjectError | AnyErrorOf<E>, Runtime<Name>> =>
  definition.runtime.use((rt) => rt.callEncoded(id, handler, payload, options))

/**
 * Stops an object gracefully: waits for the call in progress and those already queued, runs `onShutdown`
 * (committing its changes), and drops the object from memory. Its stored state stays; the next call
 * activates it again. Stopping an object that is not loaded does nothing. Fails with `ValueTooLarge` when the
 * state `onShutdown` leaves is over the storage's limit (nothing is stored; the object stops anyway).
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const stop = <Name extends string>(
  definition: Definition<Name, any, any, any, any, any, any>,
  id: string
): Effect.Effect<
  void,
  InvalidObjectId | StorageError | VersionConflict | HandlerDefect | ValueTooLarge,
  Runtime<Name>
> => definition.runtime.use((rt) => rt.stop(id))

const delete_ = <Name extends string>(
  definition: Definition<Name, any, any, any, any, any, any>,
  id: string
): Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict, Runtime<Name>> =>
  definition.runtime.use((rt) => rt.delete(id))

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
export const status = <Name extends string>(
  definition: Definition<Name, any, any, any, any, any, any>,
  id: string
): Effect.Effect<Status, never, Runtime<Name>> => definition.runtime.use((rt) => rt.status(id))

/**
 * The ids of the objects of this type loaded in this runtime (active or hibernated).
 *
 * @since 0.1.0
 * @category lifecycle
 */
export const loadedIds = <Name extends string>(
  definition: Definition<Name, any, any, any, any, any, any>
): Effect.Effect<ReadonlyArray<string>, never, Runtime<Name>> => definition.runtime.use((rt) => rt.loadedIds)

/**
 * Schedules (or replaces) the alarm `name` of an object from outside it, as if a handler had: serialized
 * with the object's calls and committed before this returns.
 *
 * @since 0.1.0
 * @category alarms
 */
export const scheduleAlarm = <Name extends string, AP, K extends keyof AP & string>(
  definition: Definition<Name, any, any, any, any, any, AP>,
  id: string,
  name: K,
  when: When,
  ...payload: PayloadArgs<AP, K>
): Effect.Effect<void, CallError | UnknownHandler, Runtime<Name>> =>
  definition.runtime.use((rt) => rt.scheduleAlarm(id, name, when, ...payload))

/**
 * Cancels the alarm `name` of an object from outside it (nothing happens when it is not scheduled).
 *
 * @since 0.1.0
 * @category alarms
 */
export const cancelAlarm = <Name extends string, AP>(
  definition: Definition<Name, any, any, any, any, any, AP>,
  id: string,
  name: keyof AP & string
): Effect.Effect<void, CallError | UnknownHandler, Runtime<Name>> =>
  definition.runtime.use((rt) => rt.cancelAlarm(id, name))

/**
 * The alarms of an object, earliest first, failed ones included (with when and why they failed).
 *
 * @since 0.1.0
 * @category alarms
 */
export const listAlarms = <Name extends string, AP>(
  definition: Definition<Name, any, any, any, any, any, AP>,
  id: string
): Effect.Effect<ReadonlyArray<AlarmInfo<keyof AP & string>>, InvalidObjectId | StorageError, Runtime<Name>> =>
  definition.runtime.use((rt) => rt.listAlarms(id))

// ---------------------------------------------------------------------------------------------------------
// Listing and inspection
// ---------------------------------------------------------------------------------------------------------

/**
 * A page of the *stored* objects of a type, in id order (Unicode code point order on every backend): id,
 * version, when each was created and last committed, and its status in this runtime. Keyset-paged: pass the
 * page's `next` as `after` for the next page; `prefix` keeps the ids that start with it. Each page is one
 * indexed read of about `limit` rows, however many objects are stored. Objects never committed (or deleted)
 * are not stored, so they are not listed. Fails with `InvalidListOptions` for a bad `limit`, `after` or
 * `prefix`, having read nothing.
 *
 * @since 0.1.0
 * @category inspection
 */
export const list = <Name extends string>(
  definition: Definition<Name, any, any, any, any, any, any>,
  options?: ListOptions | undefined
): Effect.Effect<ObjectPage, InvalidListOptions | StorageError, Runtime<Name>> =>
  definition.runtime.use((rt) => rt.list(options))

/**
 * Everything stored about one object: its decoded state (or, when the stored state no longer decodes, the
 * stored JSON and the `StateDecodeError` saying why), version, times, status in this runtime, and all its
 * alarms with what the scheduler knows about them (due, claimed, failed with the last error and attempts).
 * Reads storage only: it neither activates the object nor waits for its calls, so it works on objects that
 * fail to load, and shows the last *committed* state. Fails with `ObjectNotFound` when the object is not
 * stored.
 *
 * @since 0.1.0
 * @category inspection
 */
export const inspect = <Name extends string, State extends Schema.Top, AP>(
  definition: Definition<Name, State, any, any, any, any, AP>,
  id: string
): Effect.Effect<
  Inspection<State["Type"], keyof AP & string>,
  InvalidObjectId | ObjectNotFound | StorageError,
  Runtime<Name>
> =>
  definition.runtime.use((rt) =>
    rt.inspect(id) as Effect.Effect<
      Inspection<State["Type"], keyof AP & string>,
      InvalidObjectId | ObjectNotFound | StorageError
    >
  )

/**
 * The call chain a handler runs in (outermost first, as `type/id`), used to turn calls that would deadlock
 * into `ReentrantCall` errors.
 *
 * @since 0.1.0
 * @category references
 */
export const CallChain = UserCode.CallChain
