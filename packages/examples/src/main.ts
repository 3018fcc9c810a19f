/**
 * `npm run demo`: the demo server on a SQLite file in `packages/examples/data/` (or on PostgreSQL when
 * `DATABASE_URL` is set). `npm run demo -- --smoke` runs the non-interactive smoke check instead, and
 * `npm run demo -- --cluster` the cluster demo (`cluster/demo.ts`: three runners on PostgreSQL, one killed).
 *
 * Environment: `PORT` (default 3000; 0 picks a free one), `DATABASE_URL` (PostgreSQL; default: the SQLite file
 * `DEMO_SQLITE_FILE`, or `packages/examples/data/demo.sqlite`),
 * `RATE_LIMIT_WINDOW` (default "1 minute"), `CART_TTL` (default "30 minutes"), `MAX_BODY_BYTES` (request body
 * limit, default 1 MiB), `DURABLE_OBJECT_ADMIN_TOKEN` (the bearer token of the `/_admin` endpoints; default: a
 * random one, printed in the banner), `DURABLE_OBJECT_ADMIN_AUTH=off` (no token at all: local use only),
 * `OTEL_EXPORTER_OTLP_ENDPOINT` (export traces, metrics and logs over OTLP/HTTP, e.g. `http://127.0.0.1:4318`).
 */
import { FairScheduler } from "@durable-object/core"
import { NodeRuntime } from "@effect/platform-node"
import { Config, Console, Duration, Effect, Layer, Logger, Option, Redacted } from "effect"
import { HttpServer } from "effect/http"
import { randomBytes } from "node:crypto"
import { relative } from "node:path"
import { fileURLToPath } from "node:url"
import { defaultMaxBodyBytes } from "./http.ts"
import { type Database, serverLayer, type ServerOptions } from "./server.ts"
import { smoke } from "./smoke.ts"

const defaultDatabaseFile = fileURLToPath(new URL("../data/demo.sqlite", import.meta.url))

/** The server options, from the environment. */
const options: Effect.Effect<ServerOptions, Config.ConfigError> = Effect.gen(function*() {
  // 0 picks a free port (the banner says which).
  const port = yield* Config.Int("PORT").pipe(Config.withDefault(3000))
  if (port < 0 || port > 65535) return yield* Effect.die(new RangeError(`PORT must be 0…65535, got ${port}`))
  const file = yield* Config.String("DEMO_SQLITE_FILE").pipe(Config.withDefault(""))
  const url = yield* Config.option(Config.Redacted("DATABASE_URL"))
  const rateLimitWindow = yield* Config.Duration("RATE_LIMIT_WINDOW").pipe(Config.withDefault(Duration.minutes(1)))
  const cartTtl = yield* Config.Duration("CART_TTL").pipe(Config.withDefault(Duration.minutes(30)))
  const maxBodyBytes = yield* Config.Int("MAX_BODY_BYTES").pipe(Config.withDefault(defaultMaxBodyBytes))
  const database: Database = Option.isSome(url) && Redacted.value(url.value) !== ""
    ? { _tag: "PostgreSQL", url: url.value }
    : { _tag: "SQLite", filename: file === "" ? defaultDatabaseFile : file }
  // The admin endpoints are never open by accident: without a configured token the demo makes one up.
  const adminAuth = yield* Config.Literals(["on", "off"], "DURABLE_OBJECT_ADMIN_AUTH").pipe(Config.withDefault("on"))
  const token = yield* Config.option(Config.Redacted("DURABLE_OBJECT_ADMIN_TOKEN"))
  const admin: ServerOptions["admin"] = adminAuth === "off"
    ? { disabled: true }
    : { token: Option.isSome(token) ? token.value : Redacted.make(randomBytes(18).toString("base64url")) }
  // The OpenTelemetry SDK's variable, so a collector set up for other services is found the same way.
  const otlpUrl = yield* Config.String("OTEL_EXPORTER_OTLP_ENDPOINT").pipe(Config.withDefault(""))
  const otlp = otlpUrl === "" ? undefined : { url: otlpUrl }
  return { host: "127.0.0.1", port, database, settings: { rateLimitWindow, cartTtl }, maxBodyBytes, admin, otlp }
})

const describe = (database: Database) =>
  database._tag === "SQLite"
    ? `SQLite file ${relative(process.cwd(), database.filename) || database.filename}`
    : "PostgreSQL (DATABASE_URL)"

const adminHint = (url: string, admin: ServerOptions["admin"]) =>
  "disabled" in admin
    ? [`  curl ${url}/_admin/Counter      (admin endpoints OPEN: DURABLE_OBJECT_ADMIN_AUTH=off)`]
    : [
      `  curl -H "Authorization: Bearer ${Redacted.value(admin.token)}" ${url}/_admin/Counter`,
      "  (admin endpoints: the token is DURABLE_OBJECT_ADMIN_TOKEN, made up at start when unset;",
      "   DURABLE_OBJECT_ADMIN_AUTH=off turns the check off, for local use only)"
    ]

const banner = (url: string, database: Database, admin: ServerOptions["admin"]) =>
  [
    "",
    `durable-object demo listening on ${url}`,
    `objects are stored in the ${describe(database)}`,
    "",
    "Try:",
    `  curl -X POST ${url}/counter/alice/increment -d '{"amount": 5}'`,
    `  curl -X POST ${url}/rate-limiter/alice/check -d '{"limit": 3}'`,
    `  curl -X POST ${url}/cart/alice/add -d '{"sku": "apple", "quantity": 2}'`,
    `  curl -N ${url}/counter/alice/changes      (live state, as Server-Sent Events)`,
    ...adminHint(url, admin),
    "",
    `${url}/docs is the API (OpenAPI at ${url}/openapi.json); ${url}/_admin/ShoppingCart/alice shows a cart's alarm.`,
    `${url}/metrics serves the metrics to Prometheus; OTEL_EXPORTER_OTLP_ENDPOINT exports traces over OTLP.`,
    `${url}/_inspector${
      "disabled" in admin ? "" : `#token=${encodeURIComponent(Redacted.value(admin.token))}`
    } is the web inspector: objects, states, alarms, retries, rates.`,
    "Ctrl-C stops the objects gracefully; start again and the state is still there.",
    ""
  ].join("\n")

/** Prints the banner once the server listens, and says goodbye when the layer closes. */
const announce = (database: Database, admin: ServerOptions["admin"]) =>
  Layer.effectDiscard(Effect.gen(function*() {
    yield* HttpServer.addressFormattedWith((url) => Console.log(banner(url, database, admin)))
    yield* Effect.addFinalizer(() => Effect.logInfo("Shutting down: stopping the HTTP server, then every object"))
  }))

const serve = Effect.gen(function*() {
  const opts = yield* options
  return yield* Layer.launch(announce(opts.database, opts.admin).pipe(Layer.provide(serverLayer(opts))))
}).pipe(Effect.onInterrupt(() => Effect.logInfo("Stopped. Every object was shut down gracefully.")))

const args = process.argv.slice(2)
const main = args.includes("--smoke")
  ? smoke
  : args.includes("--cluster")
  ? Effect.flatMap(Effect.promise(() => import("./cluster/demo.ts")), (demo) => demo.clusterDemo)
  : serve

// The fair scheduler keeps the server's event loop answering while many requests are in flight.
main.pipe(
  Effect.provide(Logger.layer([Logger.consolePretty()])),
  Effect.provide(FairScheduler.layer()),
  NodeRuntime.runMain
)
