/**
 * Database specs shared by the test process and the crash worker (a plain Node process, so nothing here may
 * import vitest): where a database lives, and how to connect to it.
 */
import type { SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { PgClient } from "@effect/sql-pg"
import { type Layer, Redacted } from "effect"
import type { SqlClient, SqlError } from "effect/sql"

/** Where a database lives, in a form a child process can receive as JSON. */
export type DatabaseSpec =
  | { readonly backend: "PostgreSQL"; readonly url: string; readonly tablePrefix: string }
  | { readonly backend: "SQLite"; readonly filename: string }

/**
 * A new `SqlClient` layer on the database: every build opens its own connections and closes them after. On
 * SQLite the lock wait is 30 s rather than the client's default 5 s: the chaos and crash tests run two
 * processes on one file, one restarting while the other commits back to back, and SQLite's lock waits are not
 * fair (a waiter polls with growing sleeps and can miss every gap): a restarting process once waited out 5 s
 * while opening the database ("database is locked", in CI). What those tests check is what a crash leaves
 * behind, not how long a start waits.
 */
export const clientFor = (
  spec: DatabaseSpec,
  options?: { readonly maxConnections?: number }
): Layer.Layer<SqlClient.SqlClient, SqlError.SqlError> =>
  spec.backend === "PostgreSQL"
    ? PgClient.layer({ url: Redacted.make(spec.url), maxConnections: options?.maxConnections ?? 4 })
    : SqliteClient.layer({ filename: spec.filename, synchronous: "FULL", busyTimeout: "30 seconds" })

/** The `SqlStorage` options of the database (its table prefix on PostgreSQL). */
export const optionsFor = (spec: DatabaseSpec): SqlStorage.Options =>
  spec.backend === "PostgreSQL" ? { tablePrefix: spec.tablePrefix } : {}
