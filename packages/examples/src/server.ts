/**
 * The demo server as one `Layer`: a database (`SqlClient`), durable-object storage over it (migrated at
 * start), the three object runtimes, and the HTTP server. Closing the layer's scope stops the HTTP server
 * first, then every loaded object gracefully, then the database.
 */
import { SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { NodeFileSystem, NodeHttpServer } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Effect, FileSystem, Layer, Path, type PlatformError, type Redacted } from "effect"
import { HttpRouter } from "effect/http"
import type { SqlClient, SqlError } from "effect/sql"
import { createServer } from "node:http"
import { Routes } from "./http.ts"
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

/** The object runtimes (the cart calls the counter, so the counter's runtime is shared with it). */
const Objects = ShoppingCart.layer.pipe(Layer.provideMerge(Layer.mergeAll(Counter.layer, RateLimiter.layer)))

/**
 * The whole server. It also outputs the `HttpServer` (to read the address it bound) and the object runtimes.
 */
export const serverLayer = (options: ServerOptions) =>
  HttpRouter.serve(Routes, { disableListenLog: true }).pipe(
    Layer.provideMerge(NodeHttpServer.layer(createServer, { host: options.host, port: options.port })),
    Layer.provideMerge(Objects),
    Layer.provide(Layer.succeed(DemoSettings, options.settings)),
    Layer.provide(SqlStorage.layer(
      options.database._tag === "PostgreSQL" ? { tablePrefix: options.database.tablePrefix } : {}
    )),
    Layer.provide(sqlClient(options.database))
  )
