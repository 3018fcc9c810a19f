import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { SqlClient } from "effect/sql"
import { inject } from "vitest"

describe("PostgreSQL harness", () => {
  it.effect("round-trips a row through @effect/sql-pg on the throwaway server", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE IF NOT EXISTS harness_round_trip (id TEXT PRIMARY KEY, n INTEGER NOT NULL)`
      yield* sql`DELETE FROM harness_round_trip`
      yield* sql`INSERT INTO harness_round_trip ${sql.insert({ id: "a'b", n: 42 })}`
      const rows = yield* sql<{ id: string; n: number }>`SELECT id, n FROM harness_round_trip`
      assert.deepStrictEqual(rows, [{ id: "a'b", n: 42 }])
    }).pipe(Effect.provide(PgClient.layer({ url: Redacted.make(inject("postgresUrl")) }))))
})
