/**
 * The demo server for tests: on a fresh SQLite file in a temporary directory and a free port, for the current
 * scope (the directory is removed after).
 */
import { Context, Duration, Effect, Layer } from "effect"
import { HttpServer } from "effect/http"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { serverLayer, type ServerOptions } from "../src/server.ts"

/** Starts the demo (admin endpoints open unless `overrides` says otherwise); returns its base URL. */
export const startDemo = (overrides: Partial<Omit<ServerOptions, "database">> = {}) =>
  Effect.gen(function*() {
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "durable-object-demo-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    )
    const context = yield* Layer.build(serverLayer({
      host: "127.0.0.1",
      port: 0,
      settings: { rateLimitWindow: Duration.minutes(1), cartTtl: Duration.minutes(30) },
      admin: { disabled: true },
      ...overrides,
      database: { _tag: "SQLite", filename: join(dir, "demo.sqlite") }
    }))
    return HttpServer.formatAddress(Context.get(context, HttpServer.HttpServer).address)
  })
