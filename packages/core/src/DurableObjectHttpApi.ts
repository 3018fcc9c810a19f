/**
 * Durable objects over HTTP, derived from their definitions with `effect/http-api`: OpenAPI, a typed
 * `HttpApiClient` and request validation come from the same schemas the objects already declare.
 *
 * - {@link group}: one endpoint per handler, `POST /<type>/:id/<handler>`, whose payload, success and error
 *   schemas are the handler's; the runtime's own errors are declared with HTTP statuses ({@link errorStatus}).
 *   An `Idempotency-Key` request header makes the call at most once per key (see `CallOptions`).
 * - {@link adminGroup}: the operator's endpoints under `/_admin/<type>`: list stored objects, inspect one, list
 *   failed alarms, retry or cancel an alarm, delete an object. They sit behind {@link AdminAuthorization}, a
 *   bearer-token scheme ({@link layerAdminAuthorization}, or {@link layerAdminAuthorizationConfig} from `Config`).
 * - {@link layer} and {@link layerAdmin} implement the groups with the object type's runtime.
 *
 * ```ts
 * const Api = HttpApi.make("app")
 *   .add(DurableObjectHttpApi.group(Counter))
 *   .add(DurableObjectHttpApi.adminGroup(Counter))
 * const ApiLive = HttpApiBuilder.layer(Api, { openapiPath: "/openapi.json" }).pipe(
 *   Layer.provide([DurableObjectHttpApi.layer(Api, Counter), DurableObjectHttpApi.layerAdmin(Api, Counter)]),
 *   Layer.provide(DurableObjectHttpApi.layerAdminAuthorizationConfig())
 * )
 * ```
 *
 * Server failures never leave the server in detail: the errors answered with a 5xx status (a handler defect,
 * a state that does not decode, storage failures) reach the client with a generic description, and the full
 * error is logged.
 *
 * @since 0.1.0
 */
import { Config, Context, Effect, Layer, Redacted, Schema } from "effect"
import type { HttpServerRequest } from "effect/http"
import {
  type HttpApi,
  HttpApiBuilder,
  HttpApiEndpoint,
  HttpApiError,
  HttpApiGroup,
  HttpApiMiddleware,
  HttpApiSchema,
  HttpApiSecurity
} from "effect/http-api"
import type { AlarmDetails } from "./Alarms.ts"
import * as Alarms from "./Alarms.ts"
import * as DurableObject from "./DurableObject.ts"
import * as Errors from "./Errors.ts"

// ---------------------------------------------------------------------------------------------------------
// Errors and their statuses
// ---------------------------------------------------------------------------------------------------------

/**
 * The HTTP status of every error the runtime and its operator API produce: bad requests 400, missing things
 * 404, conflicts 409, overload 429, server failures 500, unavailability 503, and a value too large to store 507.
 * A handler's own errors are answered with the status their schema is annotated with
 * (`{ httpApiStatus: 409 }`, or `HttpApiSchema.status(409)`), else 422.
 *
 * @since 0.1.0
 * @category errors
 */
export const errorStatus = {
  InvalidPayload: 400,
  InvalidObjectId: 400,
  InvalidListOptions: 400,
  UnknownHandler: 404,
  ObjectNotFound: 404,
  AlarmNotFound: 404,
  VersionConflict: 409,
  IdempotencyKeyMismatch: 422,
  ObjectOverloaded: 429,
  ReentrantCall: 500,
  HandlerDefect: 500,
  StateDecodeError: 500,
  StorageError: 503,
  RuntimeShutdown: 503,
  CallTimeout: 503,
  CommitTimeout: 503,
  ValueTooLarge: 507
} as const satisfies Record<
  Errors.DurableObjectError["_tag"] | "InvalidListOptions" | "ObjectNotFound" | "AlarmNotFound",
  number
>

/** The status a handler's own error gets when its schema declares none. */
const defaultHandlerErrorStatus = 422

/** The tagged error class `schema`, annotated with its {@link errorStatus}. */
const withStatus = <S extends Schema.Top>(schema: S): S =>
  HttpApiSchema.status(
    errorStatus[(schema as unknown as { readonly identifier: keyof typeof errorStatus }).identifier]
  )(
    schema
  ) as unknown as S

/** Each of `schemas` with its status (same classes, same order, same types). */
const withStatuses = <const T extends ReadonlyArray<Schema.Top>>(schemas: T): T =>
  schemas.map(withStatus) as unknown as T

/** The runtime errors any call can fail with (`DurableObject.CallError`), as declared on every call endpoint. */
const callErrors = withStatuses([
  Errors.InvalidPayload,
  Errors.InvalidObjectId,
  Errors.StateDecodeError,
  Errors.HandlerDefect,
  Errors.ObjectOverloaded,
  Errors.CallTimeout,
  Errors.ReentrantCall,
  Errors.StorageError,
  Errors.VersionConflict,
  Errors.RuntimeShutdown,
  Errors.CommitTimeout,
  Errors.IdempotencyKeyMismatch,
  Errors.ValueTooLarge
])

const [InvalidPayload, InvalidObjectId, StateDecodeError, , , , , StorageError, VersionConflict] = callErrors
const [UnknownHandler, ObjectNotFound, AlarmNotFound, InvalidListOptions] = withStatuses([
  Errors.UnknownHandler,
  Errors.ObjectNotFound,
  Errors.AlarmNotFound,
  Errors.InvalidListOptions
])

type CallErrorSchema = (typeof callErrors)[number]

/** What a client learns of a server failure; the full error goes to the log. */
const publicDetail = "see the server log"

/**
 * The error as a client may see it: for server failures (5xx) the details (stack traces, SQL, stored data) are
 * replaced with a generic description, after the full error is logged.
 */
const forClient = <E>(objectType: string, error: E): Effect.Effect<never, E> => {
  if (typeof error !== "object" || error === null || !("_tag" in error)) return Effect.fail(error)
  const tagged = error as unknown as Errors.DurableObjectError
  const status = (errorStatus as Record<string, number>)[tagged._tag]
  if (status === undefined || status < 500) return Effect.fail(error)
  const log = Effect.logError(`durable-object HTTP: ${tagged._tag}: ${tagged.message}`).pipe(
    Effect.annotateLogs({ objectType })
  )
  let sanitized: unknown = error
  switch (tagged._tag) {
    case "HandlerDefect":
      sanitized = new Errors.HandlerDefect({
        objectType: tagged.objectType,
        objectId: tagged.objectId,
        handler: tagged.handler,
        defect: publicDetail,
        pretty: `the handler failed unexpectedly (${publicDetail}); the object kept its last committed state`
      })
      break
    case "StateDecodeError":
      sanitized = new Errors.StateDecodeError({
        objectType: tagged.objectType,
        objectId: tagged.objectId,
        issue: `the stored state does not decode with this version's schema (${publicDetail})`
      })
      break
    case "StorageError":
      sanitized = new Errors.StorageError({
        operation: tagged.operation,
        outcome: tagged.outcome,
        detail: `storage failed (${publicDetail})`
      })
      break
  }
  return Effect.andThen(log, Effect.fail(sanitized as E))
}

// ---------------------------------------------------------------------------------------------------------
// Requests that do not decode
// ---------------------------------------------------------------------------------------------------------

/** The object type a group serves, annotated on the groups this module derives. */
class ObjectTypeOf
  extends Context.Service<ObjectTypeOf, string>()("@durable-object/core/DurableObjectHttpApi/ObjectType")
{}

/**
 * Answers requests whose path, query, headers or body do not decode with the endpoint's schemas with a typed
 * `InvalidPayload` (400) saying what is wrong, instead of an empty 400. {@link layer} and {@link layerAdmin}
 * provide it.
 *
 * @since 0.1.0
 * @category middleware
 */
export class RequestErrors extends HttpApiMiddleware.Service<RequestErrors>()(
  "@durable-object/core/DurableObjectHttpApi/RequestErrors",
  { error: InvalidPayload }
) {}

const requestErrorsLayer = HttpApiMiddleware.layerSchemaErrorTransform(
  RequestErrors,
  (error, { endpoint, group }) =>
    Effect.fail(
      new Errors.InvalidPayload({
        objectType: Context.getOption(group.annotations, ObjectTypeOf).pipe((o) =>
          o._tag === "Some" ? o.value : group.identifier
        ),
        handler: endpoint.identifier,
        issue: `${error.kind}: ${error.cause.message}`
      })
    )
)

// ---------------------------------------------------------------------------------------------------------
// Handler endpoints
// ---------------------------------------------------------------------------------------------------------

const IdParams = Schema.Struct({ id: Schema.String })

type JsonCodec<S> = [S] extends [Schema.Top] ? Schema.toCodecJson<S> : never

/**
 * The endpoint of handler `K` of a definition with payload schemas `P`, success schemas `A` and error schemas
 * `E` (by handler), under `Path`.
 *
 * @since 0.1.0
 * @category models
 */
export type HandlerEndpoint<Path extends string, K extends string, P, A, E> = HttpApiEndpoint.HttpApiEndpoint<
  K,
  "POST",
  `${Path}/:id/${K}`,
  Schema.toCodecStringTree<typeof IdParams>,
  never,
  K extends keyof P ? JsonCodec<P[K]> : never,
  never,
  K extends keyof A ? [A[K]] extends [Schema.Top] ? Schema.toCodecJson<A[K]> : typeof HttpApiSchema.NoContent
    : typeof HttpApiSchema.NoContent,
  (K extends keyof E ? JsonCodec<E[K]> : never) | Schema.toCodecJson<CallErrorSchema>,
  RequestErrors
>

/**
 * The group {@link group} derives from a definition: one endpoint per handler.
 *
 * @since 0.1.0
 * @category models
 */
export type Group<Name extends string, Path extends string, P, A, E> = HttpApiGroup.HttpApiGroup<
  Name,
  { readonly [K in keyof P & string]: HandlerEndpoint<Path, K, P, A, E> }[keyof P & string]
>

/** A handler's declared errors, each with an HTTP status (422 unless its schema says otherwise). */
const handlerErrors = (schema: Schema.Top | undefined): Array<Schema.Top> => {
  if (schema === undefined) return []
  const members = (schema as { readonly members?: unknown }).members
  if (Array.isArray(members)) return members.flatMap((member) => handlerErrors(member as Schema.Top))
  return Schema.resolveAnnotations(schema)?.["httpApiStatus"] === undefined
    ? [HttpApiSchema.status(defaultHandlerErrorStatus)(schema)]
    : [schema]
}

const defaultPath = (definition: DurableObject.AnyDefinition) => `/${definition.name}`

/**
 * An `HttpApiGroup` with one endpoint per handler of `definition`: `POST <path>/:id/<handler>` (path
 * `/<type name>` unless given), identified by the handler's name, in a group identified by the type's name. The
 * request body is the handler's payload, the reply its success value, both in their schemas' JSON encodings
 * (204 without a `success` schema); the handler's declared errors and the runtime's ({@link errorStatus}) are
 * typed responses. An `Idempotency-Key` header makes the call at most once per key.
 *
 * @since 0.1.0
 * @category groups
 */
export const group = <
  Name extends string,
  P,
  A,
  E,
  const Path extends `/${string}` = `/${Name}`
>(
  definition: DurableObject.Definition<Name, any, P, A, E, any, any, any>,
  options?: { readonly path?: Path | undefined }
): Group<Name, Path, P, A, E> => {
  let built = HttpApiGroup.make(definition.name) as unknown as HttpApiGroup.HttpApiGroup<string, any>
  for (const [name, handler] of Object.entries(definition.handlers as Record<string, DurableObject.AnyHandler>)) {
    const endpoint = HttpApiEndpoint.post(name, `/:id/${name}`, {
      params: IdParams,
      ...(handler.payload === undefined ? {} : { payload: handler.payload }),
      success: handler.success ?? HttpApiSchema.NoContent,
      error: [...handlerErrors(handler.error), ...callErrors] as ReadonlyArray<Schema.Top>
    } as any)
    built = built.add(endpoint as any)
  }
  return built.prefix((options?.path ?? defaultPath(definition)) as `/${string}`)
    .middleware(RequestErrors)
    .annotate(ObjectTypeOf, definition.name) as any
}

/**
 * Implements the {@link group} of `definition` in `api`: each endpoint calls its handler through the object
 * type's runtime (from the caller's context, like `client(id)`), with the request's `Idempotency-Key`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <ApiId extends string, Groups extends HttpApiGroup.Constraint, Name extends string>(
  api: HttpApi.HttpApi<ApiId, Groups>,
  definition: DurableObject.Definition<Name, any, any, any, any, any, any, any>
): Layer.Layer<HttpApiGroup.Service<ApiId, Name> | RequestErrors, never, DurableObject.Runtime<Name>> =>
  HttpApiBuilder.group(
    api as any,
    definition.name as any,
    (handlers: any) =>
      Effect.map(definition.runtime, (rt: DurableObject.ObjectRuntime) => {
        let all = handlers
        for (const name of Object.keys(definition.handlers)) {
          all = all.handle(name, (request: {
            readonly params: { readonly id: string }
            readonly payload?: unknown
            readonly request: HttpServerRequest.HttpServerRequest
          }) =>
            Effect.withFiber((fiber) =>
              rt.callFrom(fiber, request.params.id, name, request.payload, request.request.headers["idempotency-key"])
            ).pipe(Effect.catch((error) => forClient(definition.name, error))))
        }
        return all
      })
  ).pipe(Layer.provideMerge(requestErrorsLayer)) as any

// ---------------------------------------------------------------------------------------------------------
// Admin endpoints
// ---------------------------------------------------------------------------------------------------------

/**
 * The security of the admin endpoints: a bearer token (`Authorization: Bearer <token>`). Provide it with
 * {@link layerAdminAuthorization} or {@link layerAdminAuthorizationConfig}.
 *
 * @since 0.1.0
 * @category security
 */
export class AdminAuthorization extends HttpApiMiddleware.Service<AdminAuthorization>()(
  "@durable-object/core/DurableObjectHttpApi/AdminAuthorization",
  { error: HttpApiError.Unauthorized, security: { bearer: HttpApiSecurity.bearer } }
) {}

/** Compares two strings in time that depends only on their lengths. */
const sameSecret = (a: string, b: string): boolean => {
  let difference = a.length ^ b.length
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    difference |= (a.charCodeAt(i % Math.max(1, a.length)) || 0) ^ (b.charCodeAt(i % Math.max(1, b.length)) || 0)
  }
  return difference === 0
}

/**
 * The admin endpoints' security: requests must carry `Authorization: Bearer <token>` (401 otherwise), or, with
 * `{ disabled: true }`, nothing is checked (for local development only: anyone who can reach the server can
 * then read every object and retry, cancel or delete).
 *
 * @since 0.1.0
 * @category security
 */
export const layerAdminAuthorization = (
  options: { readonly token: Redacted.Redacted<string> } | { readonly disabled: true }
): Layer.Layer<AdminAuthorization> =>
  Layer.succeed(AdminAuthorization, {
    bearer: (httpEffect, { credential }) => {
      if ("disabled" in options) return httpEffect
      const expected = Redacted.value(options.token)
      return expected !== "" && sameSecret(Redacted.value(credential), expected)
        ? httpEffect
        : Effect.fail(new HttpApiError.Unauthorized())
    }
  })

/**
 * {@link layerAdminAuthorization} from configuration: the token from `DURABLE_OBJECT_ADMIN_TOKEN`; without
 * one, the layer fails to build (a `ConfigError`) unless `DURABLE_OBJECT_ADMIN_AUTH` is explicitly `off`, which
 * turns the check off. The names can be changed.
 *
 * @since 0.1.0
 * @category security
 */
export const layerAdminAuthorizationConfig = (names?: {
  readonly token?: string | undefined
  readonly switch?: string | undefined
}): Layer.Layer<AdminAuthorization, Config.ConfigError> =>
  Layer.unwrap(Effect.gen(function*() {
    const tokenName = names?.token ?? "DURABLE_OBJECT_ADMIN_TOKEN"
    const switchName = names?.switch ?? "DURABLE_OBJECT_ADMIN_AUTH"
    const mode = yield* Config.Literals(["on", "off"], switchName).pipe(Config.withDefault("on" as const))
    if (mode === "off") return layerAdminAuthorization({ disabled: true })
    // A short token is guessable: refused at start-up like a missing one.
    const token = yield* Config.schema(
      Schema.Redacted(Schema.String.check(Schema.isMinLength(16, { message: "at least 16 characters" }))),
      tokenName
    )
    return layerAdminAuthorization({ token })
  }))

const Status = Schema.Literals(["active", "hibernated", "stopped"])

/**
 * A stored object as the admin endpoints list it.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ObjectSummary = Schema.Struct({
  id: Schema.String,
  version: Schema.Number,
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc,
  status: Status,
  invalid: Schema.optional(Schema.String)
})

/**
 * A page of stored objects (`next`: the `after` of the next page).
 *
 * @since 0.1.0
 * @category schemas
 */
export const ObjectPage = Schema.Struct({
  objects: Schema.Array(ObjectSummary),
  next: Schema.optional(Schema.String)
})

/**
 * An alarm as the admin endpoints show it; `payload` is its stored (encoded) JSON.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Alarm = Schema.Struct({
  name: Schema.String,
  fireAt: Schema.DateTimeUtc,
  payload: Schema.Unknown,
  attempts: Schema.Number,
  cron: Schema.optional(Schema.String),
  failed: Schema.optional(Schema.Struct({ at: Schema.DateTimeUtc, error: Schema.String })),
  invalid: Schema.optional(Schema.String),
  claimedUntil: Schema.optional(Schema.DateTimeUtc),
  lastError: Schema.optional(Schema.String),
  scheduledAt: Schema.optional(Schema.DateTimeUtc)
})

/**
 * A failed alarm, with the id of its object.
 *
 * @since 0.1.0
 * @category schemas
 */
export const FailedAlarm = Schema.Struct({ id: Schema.String, ...Alarm.fields })

/**
 * A page of failed alarms (`next`: where the next page starts).
 *
 * @since 0.1.0
 * @category schemas
 */
export const FailedAlarmPage = Schema.Struct({
  alarms: Schema.Array(FailedAlarm),
  next: Schema.optional(Schema.Struct({ id: Schema.String, name: Schema.String }))
})

/**
 * An inspected object: its summary, its state (decoded with the definition's `state` schema; absent when it
 * does not decode, then `decodeError` says why), the stored state JSON, and its alarms.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Inspection = <S extends Schema.Top>(state: S) =>
  Schema.Struct({
    ...ObjectSummary.fields,
    state: Schema.optional(state),
    stateJson: Schema.String,
    decodeError: Schema.optional(StateDecodeError),
    alarms: Schema.Array(Alarm)
  })

const NumberFromString = Schema.NumberFromString

const adminEndpoints = <S extends Schema.Top>(state: S) =>
  [
    HttpApiEndpoint.get("list", "/", {
      query: {
        after: Schema.optionalKey(Schema.String),
        prefix: Schema.optionalKey(Schema.String),
        limit: Schema.optionalKey(NumberFromString)
      },
      success: ObjectPage,
      error: [InvalidListOptions, StorageError]
    }),
    HttpApiEndpoint.get("failedAlarms", "/alarms/failed", {
      query: {
        afterId: Schema.optionalKey(Schema.String),
        afterName: Schema.optionalKey(Schema.String),
        limit: Schema.optionalKey(NumberFromString)
      },
      success: FailedAlarmPage,
      error: [InvalidListOptions, StorageError]
    }),
    HttpApiEndpoint.get("inspect", "/:id", {
      params: IdParams,
      success: Inspection(state),
      error: [InvalidObjectId, ObjectNotFound, StorageError]
    }),
    HttpApiEndpoint.post("retryAlarm", "/:id/alarms/:name/retry", {
      params: { id: Schema.String, name: Schema.String },
      error: [AlarmNotFound, ...callErrors]
    }),
    HttpApiEndpoint.delete("cancelAlarm", "/:id/alarms/:name", {
      params: { id: Schema.String, name: Schema.String },
      error: [UnknownHandler, ...callErrors]
    }),
    HttpApiEndpoint.delete("delete", "/:id", {
      params: IdParams,
      error: [InvalidObjectId, StorageError, VersionConflict]
    })
  ] as const

/**
 * The admin group {@link adminGroup} derives from a definition.
 *
 * @since 0.1.0
 * @category models
 */
export type AdminGroup<Name extends string, S extends Schema.Top> = HttpApiGroup.HttpApiGroup<
  `${Name}Admin`,
  HttpApiEndpoint.AddMiddleware<
    HttpApiEndpoint.AddMiddleware<
      HttpApiEndpoint.AddPrefix<ReturnType<typeof adminEndpoints<S>>[number], `/_admin/${Name}`>,
      AdminAuthorization
    >,
    RequestErrors
  >
>

/**
 * The operator's endpoints for `definition`, in a group identified `<type name>Admin`, under
 * `/_admin/<type name>`, all behind {@link AdminAuthorization}:
 *
 * - `GET /` lists stored objects (`?after=&prefix=&limit=`, see `DurableObject.list`);
 * - `GET /alarms/failed` lists failed alarms (`?afterId=&afterName=&limit=`, see `Alarms.listFailed`);
 * - `GET /:id` inspects an object (see `DurableObject.inspect`);
 * - `POST /:id/alarms/:name/retry` retries an alarm now, `DELETE /:id/alarms/:name` cancels it (see `Alarms`);
 * - `DELETE /:id` deletes the object and its alarms (see `DurableObject.delete`).
 *
 * @since 0.1.0
 * @category groups
 */
export const adminGroup = <Name extends string, S extends Schema.Top>(
  definition: DurableObject.Definition<Name, S, any, any, any, any, any, any>
): AdminGroup<Name, S> =>
  HttpApiGroup.make(`${definition.name}Admin`)
    .add(...adminEndpoints(definition.state))
    .prefix(`/_admin/${definition.name}`)
    .middleware(AdminAuthorization)
    .middleware(RequestErrors)
    .annotate(ObjectTypeOf, definition.name) as unknown as AdminGroup<Name, S>

const alarmWire = (alarm: AlarmDetails) => ({
  name: alarm.name,
  fireAt: alarm.fireAt,
  payload: parseJson(alarm.payloadJson),
  attempts: alarm.attempts,
  cron: alarm.cron,
  failed: alarm.failed,
  invalid: alarm.invalid,
  claimedUntil: alarm.claimedUntil,
  lastError: alarm.lastError,
  scheduledAt: alarm.scheduledAt
})

const parseJson = (text: string): unknown => {
  if (text === "") return null
  // Stored JSON always parses (the storage wrote it); a hand-edited row shows as its text.
  const parsed = Effect.runSync(Effect.result(Effect.try(() => JSON.parse(text) as unknown)))
  return parsed._tag === "Success" ? parsed.success : text
}

/**
 * Implements the {@link adminGroup} of `definition` in `api` with the object type's runtime (reads from
 * storage, writes serialized with the objects' calls). Needs {@link AdminAuthorization} too.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerAdmin = <ApiId extends string, Groups extends HttpApiGroup.Constraint, Name extends string>(
  api: HttpApi.HttpApi<ApiId, Groups>,
  definition: DurableObject.Definition<Name, any, any, any, any, any, any, any>
): Layer.Layer<
  HttpApiGroup.Service<ApiId, `${Name}Admin`> | RequestErrors,
  never,
  DurableObject.Runtime<Name> | AdminAuthorization
> =>
  HttpApiBuilder.group(api as any, `${definition.name}Admin` as any, (handlers: any) => {
    const name = definition.name
    const sanitized = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      effect.pipe(Effect.catch((error) => forClient(name, error)))
    return handlers
      .handle("list", ({ query }: { query: { after?: string; prefix?: string; limit?: number } }) =>
        sanitized(DurableObject.list(definition, query)))
      .handle("failedAlarms", ({ query }: { query: { afterId?: string; afterName?: string; limit?: number } }) =>
        sanitized(Effect.map(
          Alarms.listFailed(definition, {
            after: query.afterId === undefined ? undefined : { id: query.afterId, name: query.afterName ?? "" },
            limit: query.limit
          }),
          (page) => ({ alarms: page.alarms.map((a) => ({ id: a.id, ...alarmWire(a) })), next: page.next })
        )))
      .handle("inspect", ({ params }: { params: { id: string } }) =>
        sanitized(Effect.map(DurableObject.inspect(definition, params.id), (seen) => ({
          ...seen,
          alarms: seen.alarms.map(alarmWire)
        }))))
      .handle("retryAlarm", ({ params }: { params: { id: string; name: string } }) =>
        sanitized(Alarms.retry(definition, params.id, params.name)))
      .handle("cancelAlarm", ({ params }: { params: { id: string; name: string } }) =>
        sanitized(Alarms.cancel(definition, params.id, params.name)))
      .handle("delete", ({ params }: { params: { id: string } }) =>
        sanitized(DurableObject.delete(definition, params.id)))
  }).pipe(Layer.provideMerge(requestErrorsLayer)) as any
