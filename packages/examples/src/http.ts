/**
 * The demo's HTTP API: every handler of every exposed object is reachable as
 * `POST /<type>/<id>/<handler>` with a JSON body, through `DurableObject.callEncoded`. Replies are
 * `{ "result": … }`; failures are `{ "error": <tag>, "message": … }` with an HTTP status that says what kind
 * of failure it is. No stack trace ever leaves the server; 5xx details go to the log.
 */
import { type Alarms, DurableObject, Errors } from "@durable-object/core"
import { ByteSize, Cause, DateTime, Effect, Exit, Schema } from "effect"
import { HttpIncomingMessage, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { liveRoutes } from "./live.ts"
import { Counter, RateLimiter, ShoppingCart } from "./objects.ts"

// -----------------------------------------------------------------------------------------------------------
// Which objects are exposed, and how their replies and errors map to HTTP
// -----------------------------------------------------------------------------------------------------------

/** The runtimes the routes call into. */
export type ObjectRuntimes =
  | DurableObject.Runtime<typeof Counter.name>
  | DurableObject.Runtime<typeof RateLimiter.name>
  | DurableObject.Runtime<typeof ShoppingCart.name>

/** One object type as the HTTP API sees it. */
interface Exposed {
  /** Its path segment. */
  readonly path: string
  readonly definition: DurableObject.AnyDefinition
  /** Statuses of the handler-declared errors, by tag (default 422). */
  readonly errorStatus: Readonly<Record<string, number>>
  /** Status of a successful reply. */
  readonly replyStatus: (handler: string, reply: unknown) => number
  /** Calls a handler; with an idempotency key, at most once per key (the `Idempotency-Key` header). */
  readonly call: (
    id: string,
    handler: string,
    payload: unknown,
    idempotencyKey: string | undefined
  ) => Effect.Effect<unknown, unknown, ObjectRuntimes>
  readonly status: (id: string) => Effect.Effect<DurableObject.Status, never, ObjectRuntimes>
  readonly alarms: (
    id: string
  ) => Effect.Effect<ReadonlyArray<Alarms.AlarmInfo>, Errors.InvalidObjectId | Errors.StorageError, ObjectRuntimes>
  readonly remove: (
    id: string
  ) => Effect.Effect<void, Errors.InvalidObjectId | Errors.StorageError | Errors.VersionConflict, ObjectRuntimes>
}

const expose = <D extends DurableObject.AnyDefinition>(
  path: string,
  definition: D,
  options: {
    readonly errorStatus?: Readonly<Record<string, number>>
    readonly replyStatus?: (handler: string, reply: unknown) => number
  } = {}
): Exposed => ({
  path,
  definition,
  errorStatus: options.errorStatus ?? {},
  replyStatus: options.replyStatus ?? (() => 200),
  call: (id, handler, payload, idempotencyKey) =>
    DurableObject.callEncoded(definition, id, handler, payload, { idempotencyKey }),
  status: (id: string) => DurableObject.status(definition, id),
  alarms: (id: string) => DurableObject.listAlarms(definition, id),
  remove: (id: string) => DurableObject.delete(definition, id)
})

export const exposed: ReadonlyArray<Exposed> = [
  expose("counter", Counter),
  expose("rate-limiter", RateLimiter, {
    replyStatus: (_, reply) => (reply === "rate_limited" ? 429 : 200)
  }),
  expose("cart", ShoppingCart, {
    errorStatus: { EmptyCart: 409, NotInCart: 404, CartFull: 409, OrderNumberUnavailable: 503 }
  })
]

// -----------------------------------------------------------------------------------------------------------
// Responses
// -----------------------------------------------------------------------------------------------------------

const reply = (status: number, body: unknown, headers?: Record<string, string>) =>
  HttpServerResponse.jsonUnsafe(body, headers === undefined ? { status } : { status, headers })

const problem = (status: number, error: string, message: string, extra: object = {}) =>
  reply(status, { error, message, ...extra })

/** The status of every error the runtime itself can produce (checked to be complete by the compiler). */
const runtimeErrorStatus = {
  InvalidPayload: 400,
  InvalidObjectId: 400,
  UnknownHandler: 404,
  VersionConflict: 409,
  ObjectOverloaded: 429,
  ReentrantCall: 500,
  HandlerDefect: 500,
  StateDecodeError: 500,
  StorageError: 503,
  RuntimeShutdown: 503,
  CallTimeout: 503,
  CommitTimeout: 503,
  IdempotencyKeyMismatch: 422,
  // The server cannot store what the request would leave (a state or alarm payload over the storage's limit).
  ValueTooLarge: 507
} as const satisfies Record<Errors.DurableObjectError["_tag"], number>

const isRuntimeError = (error: unknown): error is Errors.DurableObjectError =>
  typeof error === "object" && error !== null && "_tag" in error &&
  Object.hasOwn(runtimeErrorStatus, (error as { readonly _tag: unknown })._tag as string)

/** What clients see for server-side failures; the details are logged instead. */
const internalMessages: Partial<Record<Errors.DurableObjectError["_tag"], string>> = {
  HandlerDefect: "The handler failed unexpectedly; the object kept its last committed state",
  StateDecodeError: "The object's stored state cannot be read by this version of the code",
  ReentrantCall: "The handler called an object already busy in the same call chain",
  StorageError: "Storage is unavailable right now; nothing was changed, try again",
  RuntimeShutdown: "The server is shutting down; try again shortly",
  CommitTimeout: "Storage did not answer in time; the change may or may not have been made"
}

const runtimeErrorResponse = (error: Errors.DurableObjectError) => {
  const status = runtimeErrorStatus[error._tag]
  const message = internalMessages[error._tag] ?? error.message
  const extra = error._tag === "UnknownHandler" ? { known: error.known } : {}
  const response = error._tag === "ObjectOverloaded"
    ? reply(status, { error: error._tag, message }, { "retry-after": "1" })
    : problem(status, error._tag, message, extra)
  const log = status >= 500
    ? Effect.logError(`${error._tag}: ${error.message}`)
    : Effect.logDebug(`${error._tag}: ${error.message}`)
  return Effect.as(log, response)
}

/** A handler-declared error, encoded with the handler's own `error` schema (so only its fields go out). */
const handlerErrorResponse = (object: Exposed, handler: string, error: unknown) => {
  const schema = (object.definition.handlers as Record<string, DurableObject.AnyHandler | undefined>)[handler]?.error
  const encoded = schema === undefined
    ? undefined
    : Schema.encodeUnknownExit(Schema.toCodecJson(schema) as unknown as Schema.Codec<unknown, unknown>)(error)
  if (encoded === undefined || Exit.isFailure(encoded) || typeof encoded.value !== "object" || encoded.value === null) {
    return Effect.as(
      Effect.logError(`${object.definition.name}.${handler} failed with an undeclared error`, error),
      problem(500, "InternalError", "The handler failed with an error it does not declare")
    )
  }
  const { _tag, ...fields } = encoded.value as { readonly _tag?: unknown }
  const tag = typeof _tag === "string" ? _tag : "HandlerError"
  const message = error instanceof Error ? error.message : tag
  return Effect.succeed(problem(object.errorStatus[tag] ?? 422, tag, message, fields))
}

// -----------------------------------------------------------------------------------------------------------
// Requests
// -----------------------------------------------------------------------------------------------------------

class BadRequestBody extends Schema.TaggedError<BadRequestBody>()("BadRequestBody", { message: Schema.String }) {}

class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", { limit: Schema.Number }) {}

/** The default request body limit: 1 MiB. */
export const defaultMaxBodyBytes = 1024 * 1024

/**
 * The request body as JSON; an empty body is `{}`. A body over `maxBodyBytes` is refused without being read
 * whole: at once when its `content-length` says so, else as soon as more than the limit has arrived.
 */
const jsonBody = (maxBodyBytes: number) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const declared = request.headers["content-length"]
    if (declared !== undefined && Number(declared) > maxBodyBytes) {
      return yield* new PayloadTooLarge({ limit: maxBodyBytes })
    }
    const text = yield* request.text.pipe(
      Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(maxBodyBytes)),
      Effect.mapError((error) =>
        error.reason._tag === "RequestParseError" && error.reason.reason === "BodyTooLarge"
          ? new PayloadTooLarge({ limit: maxBodyBytes })
          : new BadRequestBody({ message: "The request body could not be read" })
      )
    )
    if (text.trim() === "") return {} as unknown
    return yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (e) =>
        new BadRequestBody({
          message: `The request body is not valid JSON (${e instanceof Error ? e.message : String(e)})`
        })
    })
  })

/** 413, and the connection closes after it (so the rest of a large body is never read). */
const tooLarge = (e: PayloadTooLarge) =>
  reply(413, {
    error: "PayloadTooLarge",
    message: `The request body is larger than ${e.limit} bytes`,
    limit: e.limit
  }, { connection: "close" })

const findObject = (type: string | undefined) => exposed.find((o) => o.path === type)

const unknownType = (type: string | undefined) =>
  problem(404, "UnknownObjectType", `There is no object type ${JSON.stringify(type)}`, {
    known: exposed.map((o) => o.path)
  })

/** `POST /:type/:id/:handler`: calls the handler with the JSON body as its payload. */
const callHandler = (maxBodyBytes: number) =>
  Effect.gen(function*() {
    const { handler = "", id = "", type } = yield* HttpRouter.params
    const object = findObject(type)
    if (object === undefined) return unknownType(type)
    const payload = yield* jsonBody(maxBodyBytes)
    // The usual convention for safe retries of unsafe requests: the same key, the same effect, once.
    const idempotencyKey = (yield* HttpServerRequest.HttpServerRequest).headers["idempotency-key"]
    const exit = yield* Effect.exit(object.call(id, handler, payload, idempotencyKey))
    if (Exit.isSuccess(exit)) {
      return reply(object.replyStatus(handler, exit.value), { result: exit.value ?? null })
    }
    const error = Cause.findError(exit.cause)
    if (error._tag === "Failure") return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
    return yield* (isRuntimeError(error.success)
      ? runtimeErrorResponse(error.success)
      : handlerErrorResponse(object, handler, error.success))
  }).pipe(
    Effect.catchTag("BadRequestBody", (e) => Effect.succeed(problem(400, "BadRequestBody", e.message))),
    Effect.catchTag("PayloadTooLarge", (e) => Effect.succeed(tooLarge(e)))
  )

/** `GET /:type/:id`: where the object is in its lifecycle, and its alarms. */
const inspect = Effect.gen(function*() {
  const { id = "", type } = yield* HttpRouter.params
  const object = findObject(type)
  if (object === undefined) return unknownType(type)
  const exit = yield* Effect.exit(object.alarms(id))
  if (Exit.isFailure(exit)) {
    const error = Cause.findError(exit.cause)
    if (error._tag === "Failure") return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
    return yield* runtimeErrorResponse(error.success)
  }
  return reply(200, {
    type: object.definition.name,
    id,
    status: yield* object.status(id),
    alarms: exit.value.map((a) => ({
      name: a.name,
      fireAt: DateTime.formatIso(a.fireAt),
      attempts: a.attempts,
      cron: a.cron ?? null,
      failed: a.failed === undefined ? null : { at: DateTime.formatIso(a.failed.at), error: a.failed.error }
    }))
  })
})

/** `DELETE /:type/:id`: removes the object's state and alarms. */
const remove = Effect.gen(function*() {
  const { id = "", type } = yield* HttpRouter.params
  const object = findObject(type)
  if (object === undefined) return unknownType(type)
  const exit = yield* Effect.exit(object.remove(id))
  if (Exit.isSuccess(exit)) return reply(200, { result: "deleted" })
  const error = Cause.findError(exit.cause)
  if (error._tag === "Failure") return yield* Effect.failCause(exit.cause as Cause.Cause<never>)
  return yield* runtimeErrorResponse(error.success)
})

/** `GET /`: what there is to call. */
const index = Effect.sync(() =>
  reply(200, {
    objects: exposed.map((o) => ({
      type: o.path,
      handlers: Object.keys(o.definition.handlers),
      call: `POST /${o.path}/<id>/<handler> with a JSON body`,
      inspect: `GET /${o.path}/<id>`,
      delete: `DELETE /${o.path}/<id>`
    }))
  })
)

const notFound = Effect.map(
  HttpServerRequest.HttpServerRequest,
  (request) =>
    problem(404, "NotFound", `No route for ${request.method} ${request.url}`, {
      routes: ["GET /", "POST /:type/:id/:handler", "GET /:type/:id", "DELETE /:type/:id"]
    })
)

export interface RouteOptions {
  /** Request bodies larger than this many bytes get 413 (default 1 MiB). */
  readonly maxBodyBytes?: number | undefined
}

/**
 * The longest path parameter the router matches. An id may be 1 KiB of UTF-8 (the library's limit), which is
 * up to 3 KiB once percent-encoded; longer ids still route, so the library answers them with a typed 400.
 */
export const maxParamLength = 4 * Errors.maxObjectIdLength

/** The routes, as a layer for `HttpRouter.serve`. */
export const routes = (options: RouteOptions = {}) =>
  HttpRouter.addAll([
    HttpRouter.route("GET", "/", index),
    HttpRouter.route("POST", "/:type/:id/:handler", callHandler(options.maxBodyBytes ?? defaultMaxBodyBytes)),
    HttpRouter.route("GET", "/:type/:id", inspect),
    HttpRouter.route("DELETE", "/:type/:id", remove),
    ...liveRoutes,
    HttpRouter.route("*", "*", notFound)
  ])

/** The routes with the default options. */
export const Routes = routes()
