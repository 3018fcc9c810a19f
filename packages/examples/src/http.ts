/**
 * The demo's HTTP API, derived from the objects' definitions by `DurableObjectHttpApi`: every handler is
 * `POST /<path>/:id/<handler>` with its payload as the JSON body and its reply as the JSON response, typed
 * errors answer with their HTTP status, and the operator's endpoints (`/_admin/<Type>/…`) need a bearer token.
 * The OpenAPI document is served at `/openapi.json` and browsable at `/docs` (Scalar); `HttpApiClient.make(DemoApi)`
 * is a typed client of it. No stack trace ever leaves the server; 5xx details go to the log.
 */
import { DurableObjectHttpApi, Errors } from "@durable-object/core"
import { ByteSize, Effect, Layer } from "effect"
import { Headers, HttpIncomingMessage, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { HttpApi, HttpApiBuilder, HttpApiScalar } from "effect/http-api"
import { PrometheusMetrics } from "effect/observability"
import { liveRoutes } from "./live.ts"
import { Counter, RateLimiter, ShoppingCart } from "./objects.ts"

/**
 * The demo's API: the three objects' handlers under `/counter`, `/rate-limiter` and `/cart`, and their
 * operator endpoints under `/_admin/Counter`, `/_admin/RateLimiter` and `/_admin/ShoppingCart`.
 */
export const DemoApi = HttpApi.make("demo")
  .add(DurableObjectHttpApi.group(Counter, { path: "/counter" }))
  .add(DurableObjectHttpApi.group(RateLimiter, { path: "/rate-limiter" }))
  .add(DurableObjectHttpApi.group(ShoppingCart, { path: "/cart" }))
  .add(DurableObjectHttpApi.adminGroup(Counter))
  .add(DurableObjectHttpApi.adminGroup(RateLimiter))
  .add(DurableObjectHttpApi.adminGroup(ShoppingCart))

/** The implementation of every group, on the objects' runtimes. */
const ApiGroups = Layer.mergeAll(
  DurableObjectHttpApi.layer(DemoApi, Counter),
  DurableObjectHttpApi.layer(DemoApi, RateLimiter),
  DurableObjectHttpApi.layer(DemoApi, ShoppingCart),
  DurableObjectHttpApi.layerAdmin(DemoApi, Counter),
  DurableObjectHttpApi.layerAdmin(DemoApi, RateLimiter),
  DurableObjectHttpApi.layerAdmin(DemoApi, ShoppingCart)
)

// -----------------------------------------------------------------------------------------------------------
// Request bodies
// -----------------------------------------------------------------------------------------------------------

/** The default request body limit: 1 MiB. */
export const defaultMaxBodyBytes = 1024 * 1024

const reply = (status: number, body: unknown, headers?: Record<string, string>) =>
  HttpServerResponse.jsonUnsafe(body, headers === undefined ? { status } : { status, headers })

/** 413, and the connection closes after it (so the rest of a large body is never read). */
const tooLarge = (limit: number) =>
  reply(413, {
    _tag: "PayloadTooLarge",
    message: `The request body is larger than ${limit} bytes`,
    limit
  }, { connection: "close" })

/** Content types `curl -d` and `fetch` send by default: the demo reads such bodies as the JSON they are. */
const defaultContentTypes = ["application/x-www-form-urlencoded", "text/plain"]

/**
 * Refuses request bodies over `maxBodyBytes` without reading them whole: at once when the `content-length`
 * says so, else as soon as more than the limit has arrived (the body reader's `MaxBodySize`). Bodies sent
 * without a JSON content type (`curl -d '{"amount": 5}'`) are read as JSON.
 */
const bodyLimit = (maxBodyBytes: number) =>
  HttpRouter.middleware((httpEffect) =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const declared = request.headers["content-length"]
      if (declared !== undefined && Number(declared) > maxBodyBytes) return tooLarge(maxBodyBytes)
      const contentType = request.headers["content-type"]
      const asJson = request.method === "POST" &&
        (contentType === undefined || defaultContentTypes.some((t) => contentType.startsWith(t)))
      const response = yield* httpEffect.pipe(
        Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(maxBodyBytes)),
        asJson
          ? Effect.provideService(
            HttpServerRequest.HttpServerRequest,
            request.modify({ headers: Headers.set(request.headers, "content-type", "application/json") })
          )
          : (effect) => effect
      )
      // The API answers a body that outgrew the limit while it arrived with 413 too; it closes the connection.
      return response.status === 413 ? HttpServerResponse.setHeader(response, "connection", "close") : response
    }), { global: true })

// -----------------------------------------------------------------------------------------------------------
// The routes around the API
// -----------------------------------------------------------------------------------------------------------

/** `GET /`: where to look. */
const index = Effect.sync(() =>
  reply(200, {
    docs: "/docs",
    openapi: "/openapi.json",
    metrics: "/metrics",
    objects: [
      { path: "/counter", type: Counter.name, handlers: Object.keys(Counter.handlers) },
      { path: "/rate-limiter", type: RateLimiter.name, handlers: Object.keys(RateLimiter.handlers) },
      { path: "/cart", type: ShoppingCart.name, handlers: Object.keys(ShoppingCart.handlers) }
    ],
    call: "POST /<path>/<id>/<handler> with the payload as a JSON body",
    admin: "GET /_admin/<type>, /_admin/<type>/<id>, /_admin/<type>/alarms/failed (Authorization: Bearer <token>)"
  })
)

const notFound = Effect.map(
  HttpServerRequest.HttpServerRequest,
  (request) =>
    reply(404, {
      _tag: "NotFound",
      message: `No route for ${request.method} ${request.url}; see /docs`
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

/**
 * The routes, as a layer for `HttpRouter.serve`: the API (with its OpenAPI document), its Scalar page,
 * Prometheus metrics at `/metrics`, the live-state stream, an index and a JSON 404. Needs the objects' runtimes and `AdminAuthorization`.
 */
export const routes = (options: RouteOptions = {}) =>
  Layer.mergeAll(
    HttpApiBuilder.layer(DemoApi, { openapiPath: "/openapi.json" }).pipe(Layer.provide(ApiGroups)),
    HttpApiScalar.layer(DemoApi, { path: "/docs" }),
    // Every metric of the process (the runtime's included) in Prometheus' text format.
    PrometheusMetrics.layerHttp({ path: "/metrics" }),
    HttpRouter.addAll([
      HttpRouter.route("GET", "/", index),
      ...liveRoutes,
      HttpRouter.route("*", "*", notFound)
    ]),
    bodyLimit(options.maxBodyBytes ?? defaultMaxBodyBytes)
  )
