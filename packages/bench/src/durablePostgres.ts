/**
 * Scenario 3, durable calls on PostgreSQL: `increment` (committed before the reply) on 1,000 objects by
 * 1,000 concurrent callers, on `SqlStorage` over `@effect/sql-pg` (pools of 32 connections).
 *
 * Baselines on the same server and database, with a table of the same shape:
 * - an `@effect/sql-pg` upsert per call by the same 1,000 callers over a pool of 32 connections;
 * - multi-row upserts of 100 rows, one statement at a time on one connection (rows/s): the limit.
 */
import { SqlStorage } from "@durable-object/core"
import { type Array as Arr, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { pgLayer, postgresDatabase } from "./backends.ts"
import type { Config } from "./config.ts"
import { closedLoop, count, loadRow, ratioTo, type Row } from "./stats.ts"
import { durableCalls, objectIds, pick } from "./workloads.ts"

const scenario = "3 durable calls (PostgreSQL)"

/** The baselines' table: the shape of the library's (composite key, jsonb state, version). */
export const createKv = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`CREATE TABLE IF NOT EXISTS bench_kv (
    object_type TEXT NOT NULL, object_id TEXT NOT NULL, state JSONB NOT NULL, version BIGINT NOT NULL,
    PRIMARY KEY (object_type, object_id))`
})

/** One upsert of a counter row, the way a hand-written repository saves state after each message. */
export const upsertKv = (sql: SqlClient.SqlClient, id: string, count: number) =>
  sql`INSERT INTO bench_kv (object_type, object_id, state, version)
    VALUES ('Counter', ${id}, ${JSON.stringify({ count })}::jsonb, 1)
    ON CONFLICT (object_type, object_id) DO UPDATE SET state = excluded.state, version = bench_kv.version + 1`

/** `rows` records (at least one, as `sql.insert` wants). */
const batchOf = <A>(rows: number, f: (j: number) => A): Arr.NonEmptyReadonlyArray<A> => {
  const records: Arr.NonEmptyArray<A> = [f(0)]
  for (let j = 1; j < rows; j++) records.push(f(j))
  return records
}

export const run = (config: Config): Effect.Effect<ReadonlyArray<Row>, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const url = yield* postgresDatabase
    const ids = objectIds("pg", config.durableObjects)
    const load = { concurrency: config.concurrency, warmupMs: config.warmupMs, durationMs: config.durationMs }

    const perCallResult = yield* Effect.scoped(
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* createKv
        return yield* closedLoop({ ...load, call: (_, n) => upsertKv(sql, pick(ids), n) })
      }).pipe(Effect.provide(pgLayer(url)))
    )
    const perCall = loadRow(
      { id: "pg.perCall", scenario, label: "sql-pg upsert per call (pool 32)", kind: "baseline" },
      perCallResult,
      "calls/s"
    )

    const rows = config.batchRows
    const batchedResult = yield* Effect.scoped(
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        return yield* closedLoop({
          concurrency: 1,
          warmupMs: config.warmupMs,
          durationMs: config.durationMs,
          itemsPerCall: rows,
          call: (_, n) =>
            sql`INSERT INTO bench_kv ${
              sql.insert(batchOf(rows, (j) => ({
                object_type: "Counter",
                object_id: ids[(n * rows + j) % ids.length]!,
                state: JSON.stringify({ count: n }),
                version: 1
              })))
            } ON CONFLICT (object_type, object_id) DO UPDATE SET state = excluded.state,
            version = bench_kv.version + 1`
        })
      }).pipe(Effect.provide(pgLayer(url, 1)))
    )
    const batched = loadRow(
      { id: "pg.batched", scenario, label: `multi-row upserts of ${rows} (1 connection)`, kind: "baseline" },
      batchedResult,
      "rows/s"
    )

    const storage = SqlStorage.layer().pipe(Layer.provide(pgLayer(url)))
    const result = yield* durableCalls(config, storage, {
      concurrency: config.concurrency,
      objects: config.durableObjects,
      prefix: "pg"
    })
    const durable = loadRow(
      {
        id: "pg.durable",
        scenario,
        label: `${count(config.durableObjects)} objects, durable increment`,
        kind: "measure"
      },
      result,
      "calls/s",
      {
        ratios: [ratioTo(result.throughput, perCall, "per-call"), ratioTo(result.throughput, batched, "limit")],
        targets: [
          { label: "≥ 45k/s", pass: result.throughput >= 45_000 },
          { label: "≥ 3× per-call", pass: result.throughput >= 3 * perCall.value },
          { label: "≥ 0.6× limit", pass: result.throughput >= 0.6 * batched.value }
        ]
      }
    )
    return [perCall, batched, durable]
  }))
