/**
 * A process serving the demo's objects (packages/examples) with the inspector mounted at /_inspector, on the
 * SQLite file `DEMO_SQLITE_FILE`, behind `DURABLE_OBJECT_ADMIN_TOKEN`; it prints
 * `durable-object demo listening on <url>` once it listens, as the demo does. The browser test runs it.
 */
import { DurableObjectInspector, SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Console, Duration, Layer } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { createServer } from "node:http"
import { Counter, DemoSettings, RateLimiter, ShoppingCart } from "../../examples/src/objects.ts"

const Objects = ShoppingCart.layer.pipe(Layer.provideMerge(Layer.mergeAll(Counter.layer, RateLimiter.layer)))

const announce = Layer.effectDiscard(
  HttpServer.addressFormattedWith((url) => Console.log(`durable-object demo listening on ${url}`))
)

const server = announce.pipe(
  Layer.provideMerge(HttpRouter.serve(
    DurableObjectInspector.layer({ path: "/_inspector", objects: [Counter, RateLimiter, ShoppingCart] }),
    { disableListenLog: true, disableLogger: true }
  )),
  Layer.provideMerge(NodeHttpServer.layer(createServer, { host: "127.0.0.1", port: 0 })),
  Layer.provideMerge(Objects),
  Layer.provide(Layer.succeed(DemoSettings, { rateLimitWindow: Duration.minutes(1), cartTtl: Duration.hours(1) })),
  Layer.provide(SqlStorage.layer()),
  Layer.provide(SqliteClient.layer({ filename: process.env.DEMO_SQLITE_FILE ?? "demo.sqlite" }))
)

Layer.launch(server).pipe(NodeRuntime.runMain)
