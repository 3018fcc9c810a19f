/**
 * The databases the scenarios run on: a fresh PostgreSQL database per scenario (created on the server the
 * runner was given and dropped after), and a fresh temp directory for SQLite files (removed after). The
 * SQLite client lives in `sqlite.ts`, so the other scenarios do not load it.
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Redacted, type Scope } from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** The PostgreSQL server URL the runner passes to every scenario. */
export const postgresUrl = (): string => {
  const url = process.env.DURABLE_OBJECT_BENCH_POSTGRES_URL
  if (url === undefined || url === "") {
    throw new Error("no PostgreSQL: pass --postgres-url URL or let the runner start one (scripts/postgres.sh)")
  }
  return url
}

/** The connections per pool used by the PostgreSQL scenarios (library and baselines alike). */
export const postgresPoolSize = 32

export const pgLayer = (url: string, maxConnections = postgresPoolSize) =>
  PgClient.layer({ url: Redacted.make(url), maxConnections })

/**
 * A new, empty database on the server for the life of the scope; returns its URL. Connections to it must be
 * closed before the scope closes (the drop forces them off anyway).
 */
export const postgresDatabase: Effect.Effect<string, SqlError.SqlError, Scope.Scope> = Effect.gen(function*() {
  const server = postgresUrl()
  const name = `bench_${process.pid}_${Math.random().toString(36).slice(2, 8)}`
  const admin = (statement: string) =>
    Effect.scoped(
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(statement)
      }).pipe(Effect.provide(pgLayer(server, 1)))
    )
  yield* Effect.acquireRelease(
    admin(`CREATE DATABASE ${name}`),
    () => Effect.ignore(admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
  )
  const url = new URL(server)
  url.pathname = `/${name}`
  return url.toString()
})

/** A fresh temp directory for the life of the scope. */
export const tempDirectory: Effect.Effect<string, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "durable-object-bench-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)
