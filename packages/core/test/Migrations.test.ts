/**
 * Migrations on every SQL backend: they create the tables from nothing, are idempotent, can be reverted and
 * re-applied, keep their bookkeeping in their own table, and can be left to the operator (`migrate: false`).
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { type Backend, sqlBackends } from "./backends.ts"

const tableExists = (name: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql.onDialectOrElse({
      pg: () => sql<{ found: number }>`SELECT 1 AS found WHERE to_regclass(${name}) IS NOT NULL`,
      orElse: () => sql<{ found: number }>`SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = ${name}`
    })
    return rows.length > 0
  })

/** A stored object with its state parsed (PostgreSQL's jsonb does not keep the JSON text byte for byte). */
const read = (stored: Storage.StoredObject | undefined) =>
  stored === undefined ? undefined : { state: JSON.parse(stored.state) as unknown, version: stored.version }

const suite = (backend: Backend) =>
  describe(`Migrations on ${backend.name}`, () => {
    it.live("up from empty creates the tables, up again applies nothing, down then up restores them empty", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const t = yield* SqlStorage.tables(db.options)
          assert.isFalse(yield* tableExists(t.objects))
          const applied = yield* SqlStorage.migrate(db.options)
          assert.isAbove(applied.length, 0)
          assert.strictEqual(applied[applied.length - 1], SqlStorage.latestMigration)
          assert.deepStrictEqual(applied, applied.toSorted((a, b) => a - b))
          assert.isTrue(yield* tableExists(t.objects))
          assert.isTrue(yield* tableExists(t.migrations))
          assert.deepStrictEqual(yield* SqlStorage.migrate(db.options), [])

          const storage = yield* SqlStorage.make({ ...db.options, migrate: false })
          yield* storage.commit({ objectType: "T", objectId: "a", expectedVersion: 0, state: "{\"n\":1}" })
          assert.strictEqual((yield* storage.load("T", "a"))?.version, 1)

          // Reverting to the latest migration reverts nothing; reverting everything drops the tables.
          assert.deepStrictEqual(yield* SqlStorage.migrateDown({ ...db.options, to: SqlStorage.latestMigration }), [])
          assert.deepStrictEqual(yield* SqlStorage.migrateDown(db.options), applied.toReversed())
          assert.isFalse(yield* tableExists(t.objects))
          assert.deepStrictEqual(yield* SqlStorage.migrateDown(db.options), [])

          assert.deepStrictEqual(yield* SqlStorage.migrate(db.options), applied)
          assert.isUndefined(yield* storage.load("T", "a"))
        }).pipe(Effect.provide(db.client()))
      }))

    it.live("the layer migrates at start by default, into its own migrations table", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const t = yield* SqlStorage.tables(db.options)
          const storage = yield* Storage.Storage
          assert.isUndefined(yield* storage.load("T", "a"))
          assert.isTrue(yield* tableExists(t.migrations))
          assert.isFalse(yield* tableExists("effect_sql_migrations"))
          const sql = yield* SqlClient.SqlClient
          const rows = yield* sql<{ migration_id: number | string }>`SELECT migration_id FROM ${sql(t.migrations)}`
          assert.strictEqual(Math.max(...rows.map((row) => Number(row.migration_id))), SqlStorage.latestMigration)
        }).pipe(Effect.provide(SqlStorage.layer(db.options).pipe(Layer.provideMerge(db.client()))))
      }))

    it.live("with migrate: false the layer leaves the database alone until the operator runs the migrations", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const t = yield* SqlStorage.tables(db.options)
          const storage = yield* Storage.Storage
          assert.isFalse(yield* tableExists(t.objects))
          const error = yield* Effect.flip(storage.load("T", "a"))
          assert.strictEqual(error._tag, "StorageError")
          yield* SqlStorage.migrate(db.options)
          assert.strictEqual(
            yield* storage.commit({ objectType: "T", objectId: "a", expectedVersion: 0, state: "{}" }),
            1
          )
        }).pipe(
          Effect.provide(SqlStorage.layer({ ...db.options, migrate: false }).pipe(Layer.provideMerge(db.client())))
        )
      }))

    it.live("two table prefixes in one database are two independent stores", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const prefixed = { ...db.options, tablePrefix: `${db.options.tablePrefix ?? ""}other_` }
        yield* Effect.gen(function*() {
          const first = yield* SqlStorage.make(db.options)
          const second = yield* SqlStorage.make(prefixed)
          yield* first.commit({ objectType: "T", objectId: "a", expectedVersion: 0, state: "{\"n\":1}" })
          assert.isUndefined(yield* second.load("T", "a"))
          yield* second.commit({ objectType: "T", objectId: "a", expectedVersion: 0, state: "{\"n\":2}" })
          assert.deepStrictEqual(read(yield* first.load("T", "a")), { state: { n: 1 }, version: 1 })
          assert.deepStrictEqual(read(yield* second.load("T", "a")), { state: { n: 2 }, version: 1 })
          yield* SqlStorage.migrateDown(prefixed)
          assert.deepStrictEqual(read(yield* first.load("T", "a")), { state: { n: 1 }, version: 1 })
        }).pipe(Effect.provide(db.client()))
      }))

    it.live("a table prefix or schema that is not a plain identifier is refused before any SQL runs", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          for (
            const options of [{ tablePrefix: "x; DROP TABLE y" }, { tablePrefix: "a\"b" }, { schema: "public\"" }, {
              tablePrefix: "a".repeat(33)
            }, { tablePrefix: "1abc" }]
          ) {
            const error = yield* Effect.flip(Layer.build(SqlStorage.layer(options)))
            assert.strictEqual(error._tag, "StorageError")
            assert.strictEqual(error.operation, "configure")
          }
        }).pipe(Effect.provide(db.client()))
      }))
  })

for (const backend of sqlBackends) suite(backend)
