/**
 * Scenario 7, latency at low load: one caller making durable calls (`increment`, committed before the
 * reply) back to back on one object, on each backend. Baselines: the same caller doing one raw upsert per
 * call (`node:sqlite` in autocommit; `@effect/sql-pg`).
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { join } from "node:path"
import { pgLayer, postgresDatabase, tempDirectory } from "./backends.ts"
import type { Config } from "./config.ts"
import { createKv, upsertKv } from "./durablePostgres.ts"
import { openRaw, rawLoop, sqliteLayer } from "./sqlite.ts"
import { closedLoop, loadRow, ratioTo, type Row } from "./stats.ts"
import { durableCalls } from "./workloads.ts"

const scenario = "7 latency, 1 caller"

const oneCaller = { concurrency: 1, objects: 1 }

const memory = (config: Config) =>
  Effect.map(
    durableCalls(config, Storage.layerMemory, { ...oneCaller, prefix: "low-memory" }),
    (result) =>
      loadRow(
        { id: "latency.memory", scenario, label: "durable increment (memory)", kind: "measure" },
        result,
        "calls/s"
      )
  )

const sqlite = (config: Config) =>
  Effect.scoped(Effect.gen(function*() {
    const dir = yield* tempDirectory
    const rawResult = yield* Effect.scoped(Effect.flatMap(
      openRaw(join(dir, "baseline.db")),
      (raw) =>
        rawLoop({ warmupMs: config.warmupMs, durationMs: config.lowLoadMs, call: (n) => raw.upsert("low-sqlite-0", n) })
    ))
    const raw = loadRow(
      { id: "latency.sqlite.raw", scenario, label: "node:sqlite upsert, autocommit", kind: "baseline" },
      rawResult,
      "calls/s"
    )
    const storage = SqlStorage.layer().pipe(Layer.provide(sqliteLayer(join(dir, "objects.db"))))
    const result = yield* durableCalls(config, storage, { ...oneCaller, prefix: "low-sqlite" })
    return [
      raw,
      loadRow(
        { id: "latency.sqlite", scenario, label: "durable increment (SQLite)", kind: "measure" },
        result,
        "calls/s",
        {
          ratios: [ratioTo(result.throughput, raw, "raw")]
        }
      )
    ]
  }))

const postgres = (config: Config) =>
  Effect.scoped(Effect.gen(function*() {
    const url = yield* postgresDatabase
    const rawResult = yield* Effect.scoped(
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* createKv
        return yield* closedLoop({
          concurrency: 1,
          warmupMs: config.warmupMs,
          durationMs: config.lowLoadMs,
          call: (_, n) => upsertKv(sql, "low-pg-0", n)
        })
      }).pipe(Effect.provide(pgLayer(url)))
    )
    const raw = loadRow(
      { id: "latency.pg.raw", scenario, label: "sql-pg upsert", kind: "baseline" },
      rawResult,
      "calls/s"
    )
    const storage = SqlStorage.layer().pipe(Layer.provide(pgLayer(url)))
    const result = yield* durableCalls(config, storage, { ...oneCaller, prefix: "low-pg" })
    return [
      raw,
      loadRow(
        { id: "latency.pg", scenario, label: "durable increment (PostgreSQL)", kind: "measure" },
        result,
        "calls/s",
        { ratios: [ratioTo(result.throughput, raw, "raw")] }
      )
    ]
  }))

export const run = (config: Config): Effect.Effect<ReadonlyArray<Row>, unknown> =>
  Effect.gen(function*() {
    const memoryRow = yield* memory(config)
    const sqliteRows = yield* sqlite(config)
    const postgresRows = yield* postgres(config)
    return [memoryRow, ...sqliteRows, ...postgresRows]
  })
