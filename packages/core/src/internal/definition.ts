/**
 * The shapes a definition is made of, shared by the public `DurableObject` module and the runtime that runs
 * definitions: the handler context, handler and alarm declarations, options and their defaults, and the
 * runtime service interface (typed by the definition's handlers). A leaf module, so the runtime never
 * imports the public module that composes it; `DurableObject.ts` re-exports the public shapes.
 *
 * @internal
 */
import type { Context, DateTime, Effect, Fiber, Schema, Stream } from "effect"
import { Duration } from "effect"
import type {
  AlarmNotFound,
  DurableObjectError,
  HandlerDefect,
  InvalidListOptions,
  InvalidObjectId,
  ObjectNotFound,
  StateDecodeError,
  StorageError,
  UnknownHandler,
  ValueTooLarge,
  VersionConflict
} from "../Errors.ts"
import type {
  AlarmDetails,
  AlarmInfo,
  AlarmsAccess,
  FailedAlarmPage,
  FiredAlarm,
  ListFailedOptions,
  RetryPolicy,
  When
} from "./alarmTypes.ts"

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
export interface ObjectContext<S, AP = {}, EV = {}> {
  /** The definition's name. */
  readonly objectType: string
  /** The object's id. */
  readonly id: string
  /** The object's state. */
  readonly state: StateAccess<S>
  /** The object's alarms: changes commit with the state changes. */
  readonly alarms: AlarmsAccess<AP>
  /**
   * Emits one of the definition's `events` to the object's event subscribers (`client(id).events`). The
   * event is delivered only once this run's changes are committed, and never if the run fails.
   */
  readonly emit: <K extends keyof EV & string>(name: K, value: TypeOf<EV[K], never>) => Effect.Effect<void>
}

/**
 * What an alarm handler receives besides its payload: the object's context and the alarm that fired.
 *
 * @since 0.1.0
 * @category models
 */
export interface AlarmContext<S, AP = {}, EV = {}> extends ObjectContext<S, AP, EV> {
  readonly alarm: FiredAlarm
}

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
  /**
   * Longest a call waits for the commit its reply depends on; then it gets `CommitTimeout` (the commit's
   * outcome is unknown to it: the runtime learns it when the database answers, and reloads the object if the
   * commit failed). Default: `callTimeout`.
   */
  readonly commitTimeout?: Duration.Input | undefined
  /** How failing alarm handlers are retried. Default: 6 retries from 2 seconds, doubling. */
  readonly alarmRetry?: RetryPolicy | undefined
  /** How long the reply of a call made with an idempotency key is kept for retries. Default 24 hours. */
  readonly idempotencyRetention?: Duration.Input | undefined
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
  readonly commitTimeoutMillis: number
  readonly alarmRetry: RetryPolicy | undefined
  readonly idempotencyRetentionMillis: number
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

/** @internal */
export const RuntimeTypeId = "~@durable-object/core/Runtime" as const

/**
 * The identifier of one object type's runtime in the Effect context. Calls need it; `Definition.layer`
 * provides it. Forgetting the layer is therefore a type error where the program is run.
 *
 * @since 0.1.0
 * @category models
 */
export interface Runtime<Name extends string> {
  readonly [RuntimeTypeId]: Name
}

/**
 * What the runtime needs of a definition: its schemas, handlers, hooks and resolved options.
 *
 * @since 0.1.0
 * @category models
 */
export interface DefinitionSpec {
  readonly name: string
  readonly state: Schema.Top
  readonly initialState: () => unknown
  readonly handlers: { readonly [name: string]: AnyHandler }
  readonly alarms: { readonly [name: string]: AnyAlarmHandler }
  readonly services: ReadonlyArray<Context.Key<any, any>>
  readonly onLoad: ((ctx: ObjectContext<any, any>) => Effect.Effect<void, never, any>) | undefined
  readonly onShutdown: ((ctx: ObjectContext<any, any>) => Effect.Effect<void, never, any>) | undefined
  readonly options: ResolvedOptions
  /** The declared events' schemas, by name. */
  readonly events: { readonly [name: string]: Schema.Top }
}

/**
 * Errors any typed call can fail with, besides the handler's own: every runtime error but `UnknownHandler`
 * (a typed call names a handler that exists).
 *
 * @since 0.1.0
 * @category models
 */
export type CallError = Exclude<DurableObjectError, UnknownHandler>

/** @internal */
export type PayloadArgs<P, K> = K extends keyof P ? P[K] extends Schema.Top ? [payload: P[K]["Type"]] : [] : []
/** @internal */
export type SuccessOf<A, K> = TypeOf<K extends keyof A ? A[K] : never, void>
/** @internal */
export type ErrorOf<E, K> = TypeOf<K extends keyof E ? E[K] : never, never>
/** @internal */
export type AnyErrorOf<E> = { readonly [K in keyof E]: TypeOf<E[K], never> }[keyof E]

/**
 * Options of one call.
 *
 * @since 0.1.0
 * @category models
 */
export interface CallOptions {
  /**
   * Makes the call's effect happen at most once per `(type, id, key)`: its reply is stored with the state it
   * produced, and a later call with the same key gets that reply back without running the handler again.
   */
  readonly idempotencyKey?: string | undefined
}

/**
 * The service one object type's runtime provides, typed by its definition's handlers (`P` payloads, `A`
 * replies, `E` errors) and alarms (`AP` payloads).
 *
 * @since 0.1.0
 * @category models
 */
export interface ObjectRuntime<P = any, A = any, E = any, AP = any> {
  readonly call: <K extends keyof P & string>(
    id: string,
    handler: K,
    ...payload: PayloadArgs<P, K>
  ) => Effect.Effect<SuccessOf<A, K>, ErrorOf<E, K> | CallError>
  readonly callEncoded: (
    id: string,
    handler: string,
    payload: unknown,
    options?: CallOptions | undefined
  ) => Effect.Effect<unknown, DurableObjectError | AnyErrorOf<E>>
  /**
   * `call` from inside `fiber` (the client's path: one step fewer), made at most once per `idempotencyKey`
   * when one is given.
   */
  readonly callFrom: (
    fiber: Fiber.Fiber<unknown, unknown>,
    id: string,
    handler: string,
    payload: unknown,
    idempotencyKey?: string | undefined
  ) => Effect.Effect<unknown, unknown>
  readonly stop: (
    id: string
  ) => Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict | HandlerDefect | ValueTooLarge>
  readonly delete: (id: string) => Effect.Effect<void, InvalidObjectId | StorageError | VersionConflict>
  readonly status: (id: string) => Effect.Effect<Status>
  readonly loadedIds: Effect.Effect<ReadonlyArray<string>>
  readonly scheduleAlarm: <K extends keyof AP & string>(
    id: string,
    name: K,
    when: When,
    ...payload: PayloadArgs<AP, K>
  ) => Effect.Effect<void, CallError | UnknownHandler>
  readonly cancelAlarm: (id: string, name: keyof AP & string) => Effect.Effect<void, CallError | UnknownHandler>
  readonly listAlarms: (
    id: string
  ) => Effect.Effect<ReadonlyArray<AlarmInfo<keyof AP & string>>, InvalidObjectId | StorageError>
  /** The committed states of an object (see `LiveState`), decoded (typed by the definition's client). */
  readonly changes: (id: string) => Stream.Stream<Snapshot<unknown>, InvalidObjectId | StorageError>
  /** The events of an object's committed runs (see `LiveState`). */
  readonly events: (id: string) => Stream.Stream<{ readonly name: string; readonly value: unknown }, InvalidObjectId>
  /** A page of the type's stored objects, with their status in this runtime (see `DurableObject.list`). */
  readonly list: (options?: ListOptions | undefined) => Effect.Effect<ObjectPage, InvalidListOptions | StorageError>
  /** An object's stored state, times and alarms (see `DurableObject.inspect`). */
  readonly inspect: (
    id: string
  ) => Effect.Effect<Inspection<unknown>, InvalidObjectId | ObjectNotFound | StorageError>
  /** Makes a stored alarm fire now, afresh (see `Alarms.retry`): serialized and fenced like a call. */
  readonly retryAlarm: (id: string, name: string) => Effect.Effect<void, CallError | AlarmNotFound>
  /** A page of the type's failed alarms (see `Alarms.listFailed`). */
  readonly listFailedAlarms: (
    options?: ListFailedOptions | undefined
  ) => Effect.Effect<FailedAlarmPage<keyof AP & string>, InvalidListOptions | StorageError>
}

/**
 * Options of `DurableObject.list`: the page holds the objects whose id comes after `after` (none: from the
 * first) and starts with `prefix` (none: any), at most `limit` of them (default 100, at most 1,000). Ids are
 * in Unicode code point order on every backend.
 *
 * @since 0.1.0
 * @category models
 */
export interface ListOptions {
  readonly after?: string | undefined
  readonly prefix?: string | undefined
  readonly limit?: number | undefined
}

/**
 * A stored object as `DurableObject.list` shows it: id, version, when it was first and last committed, and
 * where it is in this runtime's lifecycle. `invalid` is set (and `version` is 0) when its stored row cannot be
 * used (see `StateDecodeError`).
 *
 * @since 0.1.0
 * @category models
 */
export interface ObjectSummary {
  readonly id: string
  readonly version: number
  readonly createdAt: DateTime.Utc
  readonly updatedAt: DateTime.Utc
  readonly status: Status
  readonly invalid?: string | undefined
}

/**
 * A page of stored objects in id order; `next` is the `after` of the next page, `undefined` on the last one.
 *
 * @since 0.1.0
 * @category models
 */
export interface ObjectPage {
  readonly objects: ReadonlyArray<ObjectSummary>
  readonly next: string | undefined
}

/**
 * Everything stored about one object, for operators (`DurableObject.inspect`). `state` is the decoded state,
 * or `undefined` when the stored state no longer decodes: then `decodeError` says why and `stateJson` still
 * shows what is stored (the state schema's encoded form, as JSON text; empty when the row itself is unusable).
 *
 * @since 0.1.0
 * @category models
 */
export interface Inspection<S, AlarmName extends string = string> extends ObjectSummary {
  readonly state: S | undefined
  readonly stateJson: string
  readonly decodeError: StateDecodeError | undefined
  /** Its alarms, earliest first, failed and claimed ones included. */
  readonly alarms: ReadonlyArray<AlarmDetails<AlarmName>>
}

/**
 * One committed state of an object: its state, decoded, and its version (1 after the first commit, plus one
 * per commit; 0 for an object never written or deleted).
 *
 * @since 0.1.0
 * @category models
 */
export interface Snapshot<S> {
  readonly version: number
  readonly state: S
}

const defaultOptions = {
  hibernateAfter: "5 minutes",
  shutdownAfter: "1 hour",
  mailboxCapacity: 1024,
  callTimeout: "5 seconds",
  idempotencyRetention: "24 hours"
} as const

const toMillis = (input: Duration.Input, option: string): number => {
  const millis = Duration.toMillis(input)
  if (!(millis > 0)) throw new TypeError(`durable-object: option ${option} must be a positive duration`)
  return millis
}

/** Fills in the defaults of `options`; throws a `TypeError` (a bug in the definition) for invalid ones. */
export const resolveOptions = (options: Options | undefined): ResolvedOptions => {
  const capacity = options?.mailboxCapacity ?? defaultOptions.mailboxCapacity
  if (!Number.isInteger(capacity) || capacity < 0) {
    throw new TypeError("durable-object: option mailboxCapacity must be a non-negative integer")
  }
  const callTimeoutMillis = toMillis(options?.callTimeout ?? defaultOptions.callTimeout, "callTimeout")
  return {
    hibernateAfterMillis: toMillis(options?.hibernateAfter ?? defaultOptions.hibernateAfter, "hibernateAfter"),
    shutdownAfterMillis: toMillis(options?.shutdownAfter ?? defaultOptions.shutdownAfter, "shutdownAfter"),
    mailboxCapacity: capacity,
    callTimeoutMillis,
    commitTimeoutMillis: options?.commitTimeout === undefined
      ? callTimeoutMillis
      : toMillis(options.commitTimeout, "commitTimeout"),
    alarmRetry: options?.alarmRetry,
    idempotencyRetentionMillis: toMillis(
      options?.idempotencyRetention ?? defaultOptions.idempotencyRetention,
      "idempotencyRetention"
    )
  }
}
