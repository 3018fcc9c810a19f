/**
 * `SqlStorage.migrationStatements`: the DDL a team applies with its own migration tool builds exactly the tables
 * `migrate` builds, the storage works on them with `migrate: false`, and the `down` statements remove them.
 */
import { SqlStorage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { type Backend, sqlBackends, type TestDatabase } from "./backends.ts"

/** The storage's tables as the database describes them: columns and indexes, with the table prefix taken out. */
const catalog = (db: TestDatabase) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const prefix = db.options.tablePrefix ?? ""
    const unprefixed = (text: string) => text.split(prefix).join("")
    const rows = yield* sql.onDialectOrElse({
      pg: () =>
        Effect.gen(function*() {
          const columns = yield* sql<{ line: string }>`
            SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' '
              || coalesce(column_default, '-') AS line
            FROM information_schema.columns WHERE starts_with(table_name, ${prefix})`
          const indexes = yield* sql<{ line: string }>`
            SELECT indexdef AS line FROM pg_indexes WHERE starts_with(tablename, ${prefix})`
          return [...columns, ...indexes]
        }),
      orElse: () =>
        sql<{ line: string }>`SELECT type || ' ' || name || ' ' || coalesce(sql, '') AS line FROM sqlite_master
          WHERE name NOT LIKE 'sqlite_%'`
    })
    // The migrations table is the Migrator's bookkeeping, not part of the printed DDL.
    return rows.map((r) => unprefixed(r.line).replace(/\s+/g, " ")).filter((l) =>
      !l.includes("durable_object_migrations")
    )
      .toSorted()
  })

const apply = (statements: ReadonlyArray<SqlStorage.MigrationStatements>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (const migration of statements) {
      for (const statement of migration.statements) yield* sql.unsafe(statement)
    }
  })

const suite = (backend: Backend) =>
  describe(`migrationStatements on ${backend.name}`, () => {
    const dialect = backend.name === "PostgreSQL" ? "pg" : "sqlite"

    it.live("the printed DDL builds the tables migrate builds, and the storage runs on them", () =>
      Effect.gen(function*() {
        const migrated = yield* backend.database
        const printed = yield* backend.database
        const expected = yield* Effect.gen(function*() {
          yield* SqlStorage.migrate(migrated.options)
          return yield* catalog(migrated)
        }).pipe(Effect.provide(migrated.client()))
        assert.isAbove(expected.length, 5)

        yield* Effect.gen(function*() {
          const up = yield* SqlStorage.migrationStatements({ ...printed.options, dialect })
          assert.deepStrictEqual(up.map((m) => m.id), up.map((m) => m.id).toSorted((a, b) => a - b))
          assert.strictEqual(up[up.length - 1]?.id, SqlStorage.latestMigration)
          yield* apply(up)
          assert.deepStrictEqual(yield* catalog(printed), expected)
          // Idempotent: applying it again changes nothing.
          yield* apply(up)
          assert.deepStrictEqual(yield* catalog(printed), expected)

          const storage = yield* SqlStorage.make({ ...printed.options, migrate: false })
          yield* storage.commit({ objectType: "T", objectId: "a", expectedVersion: 0, state: "{\"n\":1}" })
          assert.strictEqual((yield* storage.load("T", "a"))?.version, 1)

          yield* apply(yield* SqlStorage.migrationStatements({ ...printed.options, dialect, direction: "down" }))
          assert.deepStrictEqual(yield* catalog(printed), [])
        }).pipe(Effect.provide(printed.client()))
      }))
  })

for (const backend of sqlBackends) suite(backend)

describe("migrationStatements", () => {
  it.effect("refuses a table prefix that is not a plain identifier, before printing anything", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(SqlStorage.migrationStatements({ dialect: "pg", tablePrefix: "x; DROP" }))
      assert.strictEqual(error._tag, "StorageError")
      assert.include(error.message, "invalid tablePrefix")
    }))

  it.effect("qualifies PostgreSQL tables with the schema, and uses jsonb there and text on SQLite", () =>
    Effect.gen(function*() {
      const [pg] = yield* SqlStorage.migrationStatements({ dialect: "pg", schema: "ops" })
      assert.include(pg!.statements[0]!, `CREATE TABLE IF NOT EXISTS "ops"."durable_objects"`)
      assert.include(pg!.statements[0]!, "state jsonb NOT NULL")
      const [sqlite] = yield* SqlStorage.migrationStatements({ dialect: "sqlite" })
      assert.include(sqlite!.statements[0]!, "state text NOT NULL")
    }))
})
