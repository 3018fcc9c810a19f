/**
 * `npm run demo -- --smoke`: starts the demo server on a free port and a temporary SQLite file (or, with
 * `DATABASE_URL`, on PostgreSQL under throwaway table names), calls it over HTTP, stops it, starts it again
 * on the same database, and checks that the state survived and that alarms fired. Prints every check; fails
 * (exit code 1) at the first one that does not hold.
 */
import { SqlStorage } from "@durable-object/core"
import { NodeFileSystem } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import {
  Clock,
  Config,
  Console,
  Context,
  Duration,
  Effect,
  FileSystem,
  Layer,
  Option,
  Path,
  Redacted,
  References,
  Schema
} from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest, HttpServer } from "effect/http"
import { SqlClient } from "effect/sql"
import { type Database, serverLayer, type ServerOptions } from "./server.ts"

export class SmokeFailed extends Schema.TaggedError<SmokeFailed>()("SmokeFailed", {
  check: Schema.String,
  detail: Schema.String
}) {
  override get message(): string {
    return `smoke check failed: ${this.check}: ${this.detail}`
  }
}

interface Reply {
  readonly status: number
  readonly body: any
}

/** The admin endpoints' bearer token for the run. */
const adminToken = Redacted.make(`smoke-${globalThis.crypto.randomUUID()}`)
const admin = { authorization: `Bearer ${Redacted.value(adminToken)}` }

/** Short timings, so alarms fire within the run. */
const settings = { rateLimitWindow: Duration.seconds(2), cartTtl: Duration.seconds(1) }

/** Calls the server at `base`; the body is sent as is (so a test can send broken JSON). */
const http = (base: string) =>
(
  method: "GET" | "POST" | "DELETE",
  path: string,
  body?: string,
  headers?: Readonly<Record<string, string>>
) =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const request = HttpClientRequest.make(method)(`${base}${path}`, headers === undefined ? undefined : { headers })
    const response = yield* client.execute(
      body === undefined ? request : HttpClientRequest.bodyText(request, body, "application/json")
    )
    const text = yield* response.text
    return { status: response.status, body: text === "" ? undefined : JSON.parse(text) } satisfies Reply
  }).pipe(
    Effect.mapError((error) => new SmokeFailed({ check: `${method} ${path}`, detail: error.message }))
  )

const show = (reply: Reply) => `${reply.status} ${JSON.stringify(reply.body)}`

/** Passes when `ok` holds for the reply, printing the check. */
const expect = (label: string, reply: Reply, ok: (reply: Reply) => boolean) =>
  ok(reply)
    ? Console.log(`  ok  ${label}: ${show(reply)}`)
    : Effect.fail(new SmokeFailed({ check: label, detail: `got ${show(reply)}` }))

/** Repeats `request` until its reply satisfies `ok` (at most 10 seconds), then prints the check. */
const eventually = <E, R>(label: string, request: Effect.Effect<Reply, E, R>, ok: (reply: Reply) => boolean) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    while (true) {
      const reply = yield* request
      const elapsed = (yield* Clock.currentTimeMillis) - start
      if (ok(reply)) return yield* Console.log(`  ok  ${label} (after ${elapsed} ms): ${show(reply)}`)
      if (elapsed > 10_000) return yield* new SmokeFailed({ check: label, detail: `still ${show(reply)} after 10 s` })
      yield* Effect.sleep("100 millis")
    }
  })

/** Runs `body` against a server started on `options`, then stops the server gracefully. */
const withServer = <A, E, R>(options: ServerOptions, body: (base: string) => Effect.Effect<A, E, R>) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(serverLayer(options))
    const base = HttpServer.formatAddress(Context.get(context, HttpServer.HttpServer).address)
    yield* Console.log(`server started on ${base}`)
    return yield* body(base)
  })).pipe(Effect.tap(() => Console.log("server stopped")))

const firstRun = (base: string) =>
  Effect.gen(function*() {
    const call = http(base)
    yield* expect("counter increments", yield* call("POST", "/counter/smoke/increment", `{"amount": 5}`), (r) =>
      r.status === 200 && r.body === 5)
    yield* expect("counter increments again", yield* call("POST", "/counter/smoke/increment", `{"amount": 2}`), (r) =>
      r.status === 200 && r.body === 7)
    for (let i = 0; i < 2; i++) {
      yield* expect("rate limiter allows", yield* call("POST", "/rate-limiter/smoke/check", `{"limit": 2}`), (r) =>
        r.status === 200 && r.body === "allowed")
    }
    yield* expect("rate limiter limits with 429", yield* call("POST", "/rate-limiter/smoke/check", `{"limit": 2}`), (
      r
    ) =>
      r.status === 429 && r.body._tag === "RateLimited")
    yield* expect(
      "cart takes an item and schedules its expiry",
      yield* call("POST", "/cart/smoke/add", `{"sku": "apple", "quantity": 2}`),
      (r) =>
        r.status === 200 && r.body.lines.length === 1 && typeof r.body.expiresAt === "string"
    )
    yield* expect(
      "the admin endpoints refuse a request without the token",
      yield* call("GET", "/_admin/ShoppingCart/smoke"),
      (r) =>
        r.status === 401
    )
    yield* expect(
      "the expiry alarm is listed (admin, with the token)",
      yield* call("GET", "/_admin/ShoppingCart/smoke", undefined, admin),
      (r) =>
        r.status === 200 && r.body.alarms.some((a: { name: string }) =>
          a.name === "expire"
        )
    )
    yield* expect(
      "a handler-declared error is a 409",
      yield* call("POST", "/cart/smoke-empty/checkout"),
      (r) =>
        r.status === 409 && r.body._tag === "EmptyCart"
    )
    yield* expect(
      "bad JSON is a 400",
      yield* call("POST", "/counter/smoke/increment", `{"amount": `),
      (r) =>
        r.status === 400 && r.body._tag === "InvalidPayload"
    )
    yield* expect(
      "a payload that does not match the schema is a 400",
      yield* call("POST", "/counter/smoke/increment", `{"amount": "five"}`),
      (r) => r.status === 400 && r.body._tag === "InvalidPayload"
    )
    yield* expect(
      "an unknown handler is a 404",
      yield* call("POST", "/counter/smoke/explode"),
      (r) => r.status === 404 && r.body._tag === "NotFound"
    )
    yield* expect(
      "no reply leaks a stack trace",
      yield* call("POST", "/cart/smoke/add", `{"sku": "", "quantity": 0}`),
      (r) => r.status === 400 && !JSON.stringify(r.body).includes("    at ")
    )
    yield* expect(
      "the OpenAPI document describes the handlers",
      yield* call("GET", "/openapi.json"),
      (r) => r.status === 200 && r.body.paths["/cart/{id}/checkout"]?.post !== undefined
    )
  })

const secondRun = (base: string) =>
  Effect.gen(function*() {
    const call = http(base)
    yield* expect("the counter's state survived the restart", yield* call("POST", "/counter/smoke/get"), (r) =>
      r.status === 200 && r.body === 7)
    yield* eventually(
      "the cart's expiry alarm fired and emptied it",
      call("POST", "/cart/smoke/view"),
      (r) =>
        r.status === 200 && r.body.lines.length === 0 && r.body.expirations === 1
    )
    yield* eventually(
      "the rate limiter's window-reset alarm fired",
      call("POST", "/rate-limiter/smoke/check", `{"limit": 2}`),
      (r) =>
        r.status === 200 && r.body === "allowed"
    )
    yield* call("POST", "/cart/smoke/add", `{"sku": "pear", "quantity": 1}`)
    const order = { "Idempotency-Key": "smoke-order-1" }
    yield* expect(
      "checkout takes an order number from the counter",
      yield* call("POST", "/cart/smoke/checkout", undefined, order),
      (r) => r.status === 200 && r.body.orderNumber === 1 && r.body.lines[0].sku === "pear"
    )
    yield* expect(
      "a checkout retried with its Idempotency-Key gets the same order, not a second one",
      yield* call("POST", "/cart/smoke/checkout", undefined, order),
      (r) => r.status === 200 && r.body.orderNumber === 1 && r.body.lines[0].sku === "pear"
    )
    yield* expect(
      "the stored objects are listed (admin)",
      yield* call("GET", "/_admin/ShoppingCart", undefined, admin),
      (r) => r.status === 200 && r.body.objects.some((o: { id: string }) => o.id === "smoke")
    )
  })

/** The database to run on: PostgreSQL under throwaway table names with `DATABASE_URL`, else a temp SQLite file. */
const database = Effect.gen(function*() {
  const url = yield* Config.option(Config.Redacted("DATABASE_URL"))
  if (Option.isSome(url) && Redacted.value(url.value) !== "") {
    const tablePrefix = `smoke_${process.pid}_${(yield* Clock.currentTimeMillis).toString(36)}_`
    const pg: Database = { _tag: "PostgreSQL", url: url.value, tablePrefix }
    // Afterwards: drop the tables, then the migrations table `migrateDown` keeps.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        yield* SqlStorage.migrateDown({ tablePrefix })
        const { migrations } = yield* SqlStorage.tables({ tablePrefix })
        const sql = yield* SqlClient.SqlClient
        yield* sql`DROP TABLE IF EXISTS ${sql(migrations)}`
      }).pipe(Effect.provide(PgClient.layer({ url: url.value, maxConnections: 1 })), Effect.ignore)
    )
    return pg
  }
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const dir = yield* fs.makeTempDirectoryScoped({ prefix: "durable-object-smoke-" })
  const sqlite: Database = { _tag: "SQLite", filename: path.join(dir, "smoke.sqlite") }
  return sqlite
})

export const smoke = Effect.scoped(Effect.gen(function*() {
  const db = yield* database
  const options: ServerOptions = { host: "127.0.0.1", port: 0, database: db, settings, admin: { token: adminToken } }
  yield* Console.log(`smoke: ${db._tag === "SQLite" ? `SQLite ${db.filename}` : "PostgreSQL (DATABASE_URL)"}`)
  yield* withServer(options, firstRun)
  yield* withServer(options, secondRun)
  yield* Console.log("smoke: every check passed")
})).pipe(
  Effect.provide([FetchHttpClient.layer, NodeFileSystem.layer, Path.layer]),
  // Keep the output to the checks: the server's request logs are debug noise here.
  Effect.provideService(References.MinimumLogLevel, "Warn")
)
