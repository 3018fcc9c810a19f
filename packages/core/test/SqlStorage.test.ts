import { SqlStorage } from "@durable-object/core"
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { inject } from "vitest"
import { alarmConformance } from "./alarmConformance.ts"
import { storageConformance } from "./storageConformance.ts"

const pg = () => PgClient.layer({ url: Redacted.make(inject("postgresUrl")), maxConnections: 8 })

storageConformance("PostgreSQL", () => SqlStorage.layer().pipe(Layer.provide(pg())))
alarmConformance("PostgreSQL", () => SqlStorage.layer().pipe(Layer.provide(pg())))

describe("SqlStorage on PostgreSQL", () => {
  it.effect("migrations: up from empty, up again applies nothing, down then up restores the tables", () =>
    Effect.gen(function*() {
      const options = { tablePrefix: "mig_test_" }
      yield* SqlStorage.migrateDown(options)
      const all = Array.from({ length: SqlStorage.latestMigration }, (_, i) => i + 1)
      assert.deepStrictEqual(yield* SqlStorage.migrate(options), all)
      assert.deepStrictEqual(yield* SqlStorage.migrate(options), [])
      const sql = yield* SqlClient.SqlClient
      yield* sql`INSERT INTO mig_test_durable_objects (object_type, object_id, state, version, created_at, updated_at)
        VALUES ('T', 'a', '{}'::jsonb, 1, 0, 0)`
      assert.deepStrictEqual(yield* SqlStorage.migrateDown(options), all.toReversed())
      const gone = yield* sql`SELECT to_regclass('mig_test_durable_objects') AS t`
      assert.isNull(gone[0]!.t)
      assert.deepStrictEqual(yield* SqlStorage.migrate(options), all)
      const rows = yield* sql`SELECT * FROM mig_test_durable_objects`
      assert.strictEqual(rows.length, 0)
    }).pipe(Effect.provide(pg())))

  it.effect("an invalid table prefix, schema or commit concurrency is refused when the layer is built", () =>
    Effect.gen(function*() {
      for (
        const options of [
          { tablePrefix: "x; DROP TABLE y" },
          { schema: "public\"" },
          { tablePrefix: "a".repeat(40) },
          { commitConcurrency: 0 },
          { commitConcurrency: 2.5 },
          { commitConcurrency: Number.NaN }
        ]
      ) {
        const error = yield* Effect.flip(Layer.build(SqlStorage.layer(options)))
        assert.strictEqual(error._tag, "StorageError")
        assert.strictEqual(error.operation, "configure")
      }
    }).pipe(Effect.provide(pg())))
})
