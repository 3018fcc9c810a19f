/**
 * The inspector's HTTP side: the page, and a small JSON API over a {@link Source} behind a bearer token.
 *
 * Routes, under the mount path `base`: `GET base` (the page; public, it holds no data), and, with
 * `Authorization: Bearer <token>`, `GET base/api/types`, `GET base/api/objects?type&after&prefix&limit`,
 * `GET base/api/object?type&id`, `GET base/api/failed?type&limit`, `GET base/api/metrics`,
 * `POST base/api/retry` and `POST base/api/cancel` (body `{ "type", "id", "name" }`). Failures are
 * `{ "error": <tag>, "message" }` with a status saying what kind of failure it is.
 *
 * @internal
 */
import { Effect, Metric, Redacted, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import * as Telemetry from "../../Telemetry.ts"
import { page } from "./page.ts"

/** One object type in the inspector's side bar. */
export interface TypeSummary {
  readonly type: string
  /** Stored objects, counted up to a cap (`moreObjects` when there are more). */
  readonly objects: number
  readonly moreObjects: boolean
  readonly failedAlarms: number
  readonly moreFailed: boolean
}

/** A stored object in a list (times in epoch ms). */
export interface ObjectRow {
  readonly id: string
  readonly version: number
  readonly createdAt: number
  readonly updatedAt: number
  /** Its status in the runtime serving the inspector; absent when the inspector runs without one. */
  readonly status?: string | undefined
}

/** One alarm of an object, as the page shows it. */
export interface AlarmRow {
  readonly name: string
  readonly fireAt: number
  readonly attempts: number
  readonly cron: string | null
  readonly failedAt: number | null
  readonly lastError: string | null
  readonly claimedUntil: number | null
  /** The stored payload, as JSON text. */
  readonly payload: string
}

/** Everything the page shows about one object. */
export interface ObjectView extends ObjectRow {
  readonly type: string
  /** The stored state as JSON text (empty when the row is unusable). */
  readonly stateJson: string
  /** Whether the state was decoded with its definition's schema (only a mounted inspector knows the schemas). */
  readonly decoded: boolean
  /** Why the stored state does not decode, when it does not. */
  readonly decodeError?: string | undefined
  readonly alarms: ReadonlyArray<AlarmRow>
}

/** A failed alarm across a type. */
export interface FailedRow {
  readonly id: string
  readonly name: string
  readonly failedAt: number | null
  readonly attempts: number
  readonly lastError: string | null
  readonly payload: string
}

/** Why an inspector request failed: an HTTP status, the error's tag and a message for the operator. */
export class InspectorFailure extends Schema.TaggedError<InspectorFailure>()("InspectorFailure", {
  status: Schema.Number,
  error: Schema.String,
  message: Schema.String
}) {}

/** What the inspector reads and does: object types, their objects and failed alarms, one object, alarm fixes. */
export interface Source {
  readonly types: Effect.Effect<ReadonlyArray<TypeSummary>, InspectorFailure>
  readonly list: (
    type: string,
    options: { readonly after?: string | undefined; readonly prefix?: string | undefined; readonly limit: number }
  ) => Effect.Effect<
    { readonly objects: ReadonlyArray<ObjectRow>; readonly next: string | undefined },
    InspectorFailure
  >
  readonly inspect: (type: string, id: string) => Effect.Effect<ObjectView, InspectorFailure>
  readonly failed: (
    type: string,
    options: { readonly limit: number }
  ) => Effect.Effect<{ readonly alarms: ReadonlyArray<FailedRow>; readonly more: boolean }, InspectorFailure>
  readonly retry: (type: string, id: string, name: string) => Effect.Effect<void, InspectorFailure>
  readonly cancel: (type: string, id: string, name: string) => Effect.Effect<void, InspectorFailure>
  /** Whether object runtimes run in this process, so their metrics mean something. */
  readonly live: boolean
}

/** The HTTP status of a library error, by tag: bad input 400, missing 404, conflicts 409, storage 503. */
export const statusOf = (tag: string): number => {
  switch (tag) {
    case "InvalidListOptions":
    case "InvalidObjectId":
    case "InvalidPayload":
    case "UnknownHandler":
      return 400
    case "ObjectNotFound":
    case "AlarmNotFound":
    case "UnknownType":
      return 404
    case "VersionConflict":
    case "AlarmClaimLost":
    case "ObjectOverloaded":
      return 409
    case "StorageError":
    case "CallTimeout":
      return 503
    default:
      return 500
  }
}

/** Any failure of the library as an {@link InspectorFailure}. */
export const toFailure = (error: unknown): InspectorFailure => {
  if (error instanceof InspectorFailure) return error
  const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : "Error"
  const message = typeof error === "object" && error !== null && "message" in error
    ? String(error.message)
    : String(error)
  return new InspectorFailure({ status: statusOf(tag), error: tag, message })
}

/** How requests prove they may read and change objects. */
export type Access = { readonly _tag: "Token"; readonly token: Redacted.Redacted<string> } | { readonly _tag: "Open" }

/** Compares in time independent of where the strings differ, so the token cannot be guessed a byte at a time. */
const sameText = (a: string, b: string): boolean => {
  let diff = a.length ^ b.length
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a.charCodeAt(i) | 0) ^ (b.charCodeAt(i) | 0)
  return diff === 0
}

const authorized = (access: Access, request: HttpServerRequest.HttpServerRequest): boolean => {
  if (access._tag === "Open") return true
  const header = request.headers["authorization"] ?? ""
  const match = /^Bearer\s+(.+)$/i.exec(header)
  return match !== null && sameText(match[1]!.trim(), Redacted.value(access.token))
}

const failureResponse = (failure: InspectorFailure) =>
  HttpServerResponse.jsonUnsafe({ error: failure.error, message: failure.message }, { status: failure.status })

const queryOf = (request: HttpServerRequest.HttpServerRequest) => new URL(request.url, "http://inspector").searchParams

const required = (query: URLSearchParams, name: string): Effect.Effect<string, InspectorFailure> => {
  const value = query.get(name)
  return value === null || value === ""
    ? Effect.fail(
      new InspectorFailure({ status: 400, error: "BadRequest", message: `missing query parameter ${name}` })
    )
    : Effect.succeed(value)
}

const limitOf = (query: URLSearchParams, fallback: number, max: number): Effect.Effect<number, InspectorFailure> => {
  const raw = query.get("limit")
  if (raw === null) return Effect.succeed(fallback)
  const limit = Number(raw)
  return Number.isInteger(limit) && limit >= 1 && limit <= max
    ? Effect.succeed(limit)
    : Effect.fail(
      new InspectorFailure({ status: 400, error: "BadRequest", message: `limit must be 1…${max}, not ${raw}` })
    )
}

const AlarmTarget = Schema.Struct({ type: Schema.String, id: Schema.String, name: Schema.String })

const alarmTarget = (request: HttpServerRequest.HttpServerRequest) =>
  request.json.pipe(
    Effect.flatMap(Schema.decodeUnknownEffect(AlarmTarget)),
    Effect.mapError(() =>
      new InspectorFailure({
        status: 400,
        error: "BadRequest",
        message: "the body must be JSON: { \"type\": …, \"id\": …, \"name\": … }"
      })
    )
  )

/** The counters behind the page's rates: calls, commits (storage saves) and alarm firings, summed. */
const counters = Effect.map(Metric.snapshot, (snapshots) => {
  let calls = 0
  let commits = 0
  let alarms = 0
  for (const s of snapshots) {
    if (s.id === Telemetry.calls.id && s.type === "Counter") calls += Number(s.state.count)
    else if (s.id === Telemetry.alarms.id && s.type === "Counter") alarms += Number(s.state.count)
    else if (
      s.id === Telemetry.storageDuration.id && s.type === "Histogram" && s.attributes?.["operation"] === "save"
    ) commits += s.state.count
  }
  return { calls, commits, alarms }
})

/** The inspector's routes at `base` (no trailing slash). */
export const routes = (options: {
  readonly base: string
  readonly title: string
  readonly access: Access
  readonly source: Source
}) => {
  const { access, base, source } = options
  const html = page(base, options.title)
  const guarded = (
    handle: (request: HttpServerRequest.HttpServerRequest) => Effect.Effect<unknown, InspectorFailure>
  ) =>
  (request: HttpServerRequest.HttpServerRequest) =>
    authorized(access, request)
      ? handle(request).pipe(
        Effect.map((body) => HttpServerResponse.jsonUnsafe(body, { headers: { "cache-control": "no-store" } })),
        Effect.catch((failure) => Effect.succeed(failureResponse(failure)))
      )
      : Effect.succeed(HttpServerResponse.jsonUnsafe({
        error: "Unauthorized",
        message: "send the inspector's token as Authorization: Bearer <token>"
      }, { status: 401, headers: { "www-authenticate": "Bearer" } }))
  const pageResponse = HttpServerResponse.text(html, {
    contentType: "text/html; charset=utf-8",
    headers: { "cache-control": "no-store", "x-frame-options": "DENY" }
  })
  /** A path under the mount path. */
  const at = (suffix: string): HttpRouter.PathInput => `/${`${base}${suffix}`.replace(/^\/+/, "")}`
  const all: Array<HttpRouter.Route> = [
    // The router ignores a trailing slash: this serves `base/` too.
    HttpRouter.route("GET", at(""), pageResponse),
    HttpRouter.route("GET", at("/api/types"), guarded(() => Effect.map(source.types, (types) => ({ types })))),
    HttpRouter.route(
      "GET",
      at("/api/objects"),
      guarded((request) =>
        Effect.gen(function*() {
          const query = queryOf(request)
          const type = yield* required(query, "type")
          const limit = yield* limitOf(query, 25, 1000)
          return yield* source.list(type, {
            after: query.get("after") ?? undefined,
            prefix: query.get("prefix") ?? undefined,
            limit
          })
        })
      )
    ),
    HttpRouter.route(
      "GET",
      at("/api/object"),
      guarded((request) =>
        Effect.gen(function*() {
          const query = queryOf(request)
          return yield* source.inspect(yield* required(query, "type"), yield* required(query, "id"))
        })
      )
    ),
    HttpRouter.route(
      "GET",
      at("/api/failed"),
      guarded((request) =>
        Effect.gen(function*() {
          const query = queryOf(request)
          const type = yield* required(query, "type")
          const page = yield* source.failed(type, { limit: yield* limitOf(query, 50, 1000) })
          return { alarms: page.alarms, next: page.more ? "more" : undefined }
        })
      )
    ),
    HttpRouter.route(
      "GET",
      at("/api/metrics"),
      guarded(() => source.live ? Effect.map(counters, (c) => ({ live: true, ...c })) : Effect.succeed({ live: false }))
    ),
    HttpRouter.route(
      "POST",
      at("/api/retry"),
      guarded((request) =>
        Effect.flatMap(alarmTarget(request), (t) => Effect.as(source.retry(t.type, t.id, t.name), { retried: t }))
      )
    ),
    HttpRouter.route(
      "POST",
      at("/api/cancel"),
      guarded((request) =>
        Effect.flatMap(alarmTarget(request), (t) => Effect.as(source.cancel(t.type, t.id, t.name), { cancelled: t }))
      )
    )
  ]
  return HttpRouter.addAll(all)
}
