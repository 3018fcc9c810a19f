/**
 * The demo server as one `Layer`: a database (`SqlClient`), durable-object storage over it (migrated at
 * start), the three object runtimes, and the HTTP server (the API, and the web inspector at `/_inspector`). Closing the layer's scope stops the HTTP server
 * first (see {@link gracefulStop}), then every loaded object gracefully, then the database.
 */
import { DurableObjectHttpApi, DurableObjectInspector, SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { NodeFileSystem, NodeHttpServer } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, FileSystem, Layer, Path, type PlatformError, type Redacted } from "effect"
import { FetchHttpClient, HttpRouter } from "effect/http"
import { Otlp, type OtlpExporter } from "effect/observability"
import type { SqlClient, SqlError } from "effect/sql"
import { createServer, type Server, type ServerResponse } from "node:http"
import { maxParamLength, routes } from "./http.ts"
import { Counter, DemoSettings, RateLimiter, ShoppingCart } from "./objects.ts"

/** Where the objects live: a SQLite file (the embedded default) or PostgreSQL. */
export type Database =
  | { readonly _tag: "SQLite"; readonly filename: string }
  | { readonly _tag: "PostgreSQL"; readonly url: Redacted.Redacted; readonly tablePrefix?: string | undefined }

export interface ServerOptions {
  readonly host: string
  /** 0 picks a free port. */
  readonly port: number
  readonly database: Database
  readonly settings: DemoSettings["Service"]
  /** Request bodies larger than this many bytes get 413 (default 1 MiB). */
  readonly maxBodyBytes?: number | undefined
  /** How long a stop waits for the requests in flight to reply before it cuts their connections (default 1 s). */
  readonly drainTimeout?: Duration.Input | undefined
  /**
   * Where to export traces, metrics and logs over OTLP/HTTP (JSON), e.g. `http://127.0.0.1:4318`; none: no
   * export (the metrics are still served at `/metrics`).
   */
  readonly otlp?: { readonly url: string; readonly serviceName?: string | undefined } | undefined
  /** The bearer token of the `/_admin` endpoints, or `{ disabled: true }` to leave them open (local use only). */
  readonly admin: { readonly token: Redacted.Redacted } | { readonly disabled: true }
}

/** The `SqlClient` of the database; for SQLite, the file's directory is created first. */
const sqlClient = (
  database: Database
): Layer.Layer<SqlClient.SqlClient, SqlError.SqlError | PlatformError.PlatformError> =>
  database._tag === "PostgreSQL"
    ? PgClient.layer({ url: database.url, maxConnections: 10 })
    : Layer.unwrap(Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const path = yield* Path.Path
      yield* fs.makeDirectory(path.dirname(database.filename), { recursive: true })
      return SqliteClient.layer({ filename: database.filename })
    })).pipe(Layer.provide([NodeFileSystem.layer, Path.layer]))

/**
 * OTLP export through `effect/observability` (no OpenTelemetry SDK): every span, metric and log of the layers
 * built on top of it, the runtimes and the HTTP server included. Nothing without a URL.
 */
export const telemetry = (otlp: ServerOptions["otlp"]): Layer.Layer<OtlpExporter.Flusher> =>
  otlp === undefined ? (Layer.empty as Layer.Layer<any>) : Otlp.layerJson({
    baseUrl: otlp.url,
    resource: { serviceName: otlp.serviceName ?? "durable-object-demo" }
  }).pipe(Layer.provide(FetchHttpClient.layer))

/** The object runtimes (the cart calls the counter, so the counter's runtime is shared with it). */
const Objects = ShoppingCart.layer.pipe(Layer.provideMerge(Layer.mergeAll(Counter.layer, RateLimiter.layer)))

/**
 * A graceful stop of the Node server, as a layer whose finalizer runs before the HTTP server's own:
 *
 * 1. stop accepting connections, and close the idle keep-alive ones;
 * 2. every response not yet started, and every request that still arrives on an open connection, is answered
 *    with `Connection: close`, so keep-alive clients let go after their reply;
 * 3. wait for the requests in flight to reply (each is a call that runs to its end and answers), at most
 *    `drainTimeout`; then cut whatever connections are left.
 *
 * Without it the server waits for keep-alive clients to go away (they never do under load) until its 20 s
 * timeout, then interrupts the requests still running, which answer bare 503s for writes that may have
 * committed.
 */
export const gracefulStop = (server: Server, drainTimeout: Duration.Input) =>
  Layer.effectDiscard(Effect.gen(function*() {
    let closing = false
    const inFlight = new Set<ServerResponse>()
    server.prependListener("request", (_request, response: ServerResponse) => {
      if (closing) response.shouldKeepAlive = false
      inFlight.add(response)
      response.once("close", () => inFlight.delete(response))
    })
    const bound = Duration.toMillis(Duration.fromInputUnsafe(drainTimeout))
    const waitForInFlight = (waited: number): Effect.Effect<void> =>
      inFlight.size === 0 || waited >= bound
        ? Effect.void
        : Effect.andThen(Effect.sleep("10 millis"), Effect.suspend(() => waitForInFlight(waited + 10)))
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        closing = true
        for (const response of inFlight) {
          if (!response.headersSent) response.shouldKeepAlive = false
        }
        server.close()
        server.closeIdleConnections()
        yield* waitForInFlight(0)
        const cut = inFlight.size
        server.closeAllConnections()
        if (cut > 0) {
          yield* Effect.logWarning(`Stopped with ${cut} request(s) still running: their connections were cut`)
        }
      })
    )
  }))

/** The web inspector at `/_inspector`, behind the admin endpoints' token (docs/inspector.md). */
const inspector = (admin: ServerOptions["admin"]) =>
  DurableObjectInspector.layer({ path: "/_inspector", objects: [Counter, RateLimiter, ShoppingCart], auth: admin })

/**
 * The whole server. It also outputs the `HttpServer` (to read the address it bound) and the object runtimes.
 */
export const serverLayer = (options: ServerOptions) =>
  Layer.unwrap(Effect.sync(() => {
    const server = createServer()
    return gracefulStop(server, options.drainTimeout ?? Duration.seconds(1)).pipe(
      Layer.provideMerge(
        HttpRouter.serve(Layer.mergeAll(routes({ maxBodyBytes: options.maxBodyBytes }), inspector(options.admin)), {
          disableListenLog: true,
          routerConfig: { maxParamLength }
        })
      ),
      Layer.provideMerge(NodeHttpServer.layer(() => server, { host: options.host, port: options.port })),
      Layer.provideMerge(Objects),
      Layer.provide(DurableObjectHttpApi.layerAdminAuthorization(options.admin)),
      Layer.provide(Layer.succeed(DemoSettings, options.settings)),
      Layer.provide(SqlStorage.layer(
        options.database._tag === "PostgreSQL" ? { tablePrefix: options.database.tablePrefix } : {}
      )),
      Layer.provide(sqlClient(options.database)),
      Layer.provide(telemetry(options.otlp))
    )
  }))
