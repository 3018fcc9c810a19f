/**
 * The SQL backends the storage tests run on: PostgreSQL (the throwaway server of the vitest global setup) and
 * SQLite (`@durable-object/sql-sqlite-node` on a temp file). Every suite that loops over {@link sqlBackends} runs
 * the same tests on both.
 *
 * Each test gets its own database: on PostgreSQL a unique table prefix in the shared server (its tables are
 * dropped when the test's scope closes), on SQLite a new file in a temp directory (removed afterwards).
 */
import { SqlStorage } from "@durable-object/core"
import { Effect, Layer, type Scope } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { inject } from "vitest"
import { clientFor, type DatabaseSpec, optionsFor } from "./databases.ts"
import { Counter, makeJournal } from "./fixtures.ts"

export type { DatabaseSpec } from "./databases.ts"

/** A fresh database of one backend, owned by one test. */
export interface TestDatabase {
  readonly spec: DatabaseSpec
  /** The `SqlStorage` options for this database (its table prefix on PostgreSQL). */
  readonly options: SqlStorage.Options
  /** A new `SqlClient` layer on this database: every build opens its own connections and closes them after. */
  readonly client: () => Layer.Layer<SqlClient.SqlClient, SqlError.SqlError>
}

/** One backend: makes a fresh database that lives as long as the current scope. */
export interface Backend {
  readonly name: DatabaseSpec["backend"]
  readonly database: Effect.Effect<TestDatabase, never, Scope.Scope>
}

/** The PostgreSQL URL from the global setup; PostgreSQL tests fail (never skip) when it is missing. */
export const postgresUrl = (): string => {
  const url = inject("postgresUrl") ?? process.env.DURABLE_OBJECT_TEST_POSTGRES_URL
  if (url === undefined || url === "") {
    throw new Error("No PostgreSQL for the tests: the vitest global setup (scripts/vitest-global-setup.ts) must run")
  }
  return url
}

const fromSpec = (spec: DatabaseSpec): TestDatabase => ({
  spec,
  options: optionsFor(spec),
  client: () => clientFor(spec)
})

let databases = 0

const postgres: Backend = {
  name: "PostgreSQL",
  database: Effect.acquireRelease(
    Effect.sync(() =>
      fromSpec({
        backend: "PostgreSQL",
        url: postgresUrl(),
        tablePrefix: `t${process.pid}_${++databases}_${Math.random().toString(36).slice(2, 8)}_`
      })
    ),
    (db) => SqlStorage.migrateDown(db.options).pipe(Effect.provide(db.client()), Effect.orDie)
  )
}

const sqlite: Backend = {
  name: "SQLite",
  database: Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "durable-object-sqlite-"))),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    ),
    (dir) => fromSpec({ backend: "SQLite", filename: join(dir, "objects.sqlite") })
  )
}

/** Every SQL backend, in the order the suites run them. */
export const sqlBackends: ReadonlyArray<Backend> = [postgres, sqlite]

/**
 * The `Counter` runtime over `SqlStorage` on a database, through the given `SqlClient` layer (which stays
 * exposed, with `Storage`, so tests can read what was committed). Releasing the layer closes the connections.
 */
export const counterRuntimeOn = <ROut, E>(db: TestDatabase, client: Layer.Layer<ROut | SqlClient.SqlClient, E>) =>
  Counter.layer.pipe(
    Layer.provide(makeJournal()),
    Layer.provideMerge(SqlStorage.layer(db.options)),
    Layer.provideMerge(client)
  )

/** The `Counter` runtime over `SqlStorage` on a database, on new connections of its own. */
export const counterRuntime = (db: TestDatabase) => counterRuntimeOn(db, db.client())
