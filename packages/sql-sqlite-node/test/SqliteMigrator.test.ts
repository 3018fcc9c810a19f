import { SqliteClient, SqliteMigrator } from "@durable-object/sql-sqlite-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Migrator, SqlClient } from "effect/sql"
import { tempDatabase } from "./utils.ts"

const first = {
  "0001_create_items": Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql`CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)`
  ),
  "0002_add_price": Effect.flatMap(SqlClient.SqlClient, (sql) => sql`ALTER TABLE items ADD COLUMN price INTEGER`)
}
const table = "my_migrations"

const tables = Effect.flatMap(
  SqlClient.SqlClient,
  (sql) => sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`
).pipe(Effect.map((rows) => rows.map((r) => r.name)))

describe("SqliteMigrator", () => {
  it.effect("runs effect/sql migrations once: a second run applies nothing", () =>
    Effect.gen(function*() {
      const loader = Migrator.fromRecord(first)
      assert.deepStrictEqual(yield* SqliteMigrator.run({ loader, table }), [[1, "create_items"], [2, "add_price"]])
      assert.deepStrictEqual(yield* SqliteMigrator.run({ loader, table }), [])
      const sql = yield* SqlClient.SqlClient
      yield* sql`INSERT INTO items ${sql.insert({ name: "pen", price: 3 })}`
      assert.deepStrictEqual(yield* tables, ["items", table])
      const recorded = yield* sql`SELECT migration_id, name FROM ${sql(table)} ORDER BY migration_id`
      assert.deepStrictEqual(recorded, [{ migration_id: 1, name: "create_items" }, {
        migration_id: 2,
        name: "add_price"
      }])
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:" }))))

  it.effect("a database migrated by an earlier client only gets the new migrations", () =>
    Effect.gen(function*() {
      const filename = yield* tempDatabase
      const client = () => SqliteClient.layer({ filename })
      yield* Layer.build(
        SqliteMigrator.layer({ loader: Migrator.fromRecord(first), table }).pipe(
          Layer.provide(client())
        )
      ).pipe(Effect.scoped)
      const later = Migrator.fromRecord({
        ...first,
        "0003_add_stock": Effect.flatMap(SqlClient.SqlClient, (sql) => sql`ALTER TABLE items ADD COLUMN stock INTEGER`)
      })
      const applied = yield* SqliteMigrator.run({ loader: later, table }).pipe(Effect.provide(client()))
      assert.deepStrictEqual(applied, [[3, "add_stock"]])
      const again = yield* SqliteMigrator.run({ loader: later, table }).pipe(Effect.provide(client()))
      assert.deepStrictEqual(again, [])
    }))

  it.effect("a failing migration fails the run and leaves neither its changes nor its record behind", () =>
    Effect.gen(function*() {
      const broken = Migrator.fromRecord({
        ...first,
        "0003_broken": Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          yield* sql`CREATE TABLE half_done (x)`
          yield* sql`THIS IS NOT SQL`
        })
      })
      const error = yield* Effect.flip(SqliteMigrator.run({ loader: broken, table }))
      assert.strictEqual(error._tag, "MigrationError")
      // only the (empty) bookkeeping table, created before the migrations' transaction, is left
      assert.deepStrictEqual(yield* tables, [table])
      const sql = yield* SqlClient.SqlClient
      assert.deepStrictEqual(yield* sql`SELECT * FROM ${sql(table)}`, [])
      // the good ones apply once the broken one is gone
      assert.deepStrictEqual(
        yield* SqliteMigrator.run({ loader: Migrator.fromRecord(first), table }),
        [[1, "create_items"], [2, "add_price"]]
      )
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:" }))))

  it.effect("without a table option, migrations are recorded in effect_sql_migrations", () =>
    Effect.gen(function*() {
      yield* SqliteMigrator.run({ loader: Migrator.fromRecord(first) })
      assert.deepStrictEqual(yield* tables, ["effect_sql_migrations", "items"])
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:" }))))
})
