import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Fiber } from "effect"
import { SqlClient } from "effect/sql"
import { tempDatabase } from "./utils.ts"

describe("durability", () => {
  it.effect("reopening the file sees committed data, and nothing of rolled-back or interrupted transactions", () =>
    Effect.gen(function*() {
      const filename = yield* tempDatabase
      // first life of the database: the layer is torn down (and the file closed) when this effect ends
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE t (x TEXT)`
        yield* sql`INSERT INTO t VALUES ('autocommit')`
        yield* sql.withTransaction(sql`INSERT INTO t VALUES ('committed')`)
        yield* Effect.exit(
          sql.withTransaction(Effect.andThen(sql`INSERT INTO t VALUES ('rolled back')`, Effect.fail("no")))
        )
        yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO t VALUES ('outer')`
          yield* Effect.exit(
            sql.withTransaction(Effect.andThen(sql`INSERT INTO t VALUES ('savepoint rolled back')`, Effect.fail("no")))
          )
        }))
        const started = yield* Deferred.make<void>()
        const interrupted = yield* Effect.forkChild(sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO t VALUES ('interrupted')`
          yield* Deferred.succeed(started, undefined)
          return yield* Effect.never
        })))
        yield* Deferred.await(started)
        yield* Fiber.interrupt(interrupted)
      }).pipe(Effect.provide(SqliteClient.layer({ filename })))

      // second life: a new client on the same file
      const rows = yield* Effect.flatMap(
        SqlClient.SqlClient,
        (sql) => sql<{ x: string }>`SELECT x FROM t ORDER BY rowid`
      )
        .pipe(Effect.provide(SqliteClient.layer({ filename })))
      assert.deepStrictEqual(rows.map((r) => r.x), ["autocommit", "committed", "outer"])
    }))

  it.effect("a transaction left open when the layer closes is rolled back, not half-applied", () =>
    Effect.gen(function*() {
      const filename = yield* tempDatabase
      yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql`CREATE TABLE t (x TEXT)`).pipe(
        Effect.provide(SqliteClient.layer({ filename }))
      )
      // the database handle is closed under an open transaction (as if the process stopped mid-way)
      yield* Effect.gen(function*() {
        const client = yield* SqliteClient.SqliteClient
        yield* client.withDatabase((db) => db.exec("BEGIN; INSERT INTO t VALUES ('half');"))
      }).pipe(Effect.provide(SqliteClient.layer({ filename })))
      const rows = yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT x FROM t`).pipe(
        Effect.provide(SqliteClient.layer({ filename }))
      )
      assert.deepStrictEqual(rows, [])
    }))
})
