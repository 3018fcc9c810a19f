/**
 * Scenario 7, latency at low load: one caller making durable calls (`increment`, committed before the
 * reply) back to back on one object, on each backend; then 10 callers on 10 objects. Baselines: the same
 * callers doing one raw upsert per call (`node:sqlite` in autocommit; `@effect/sql-pg`). The one-caller rows
 * are judged on latency: the library's p50 and p99 against the raw upsert's (raw ÷ library, ≥ 0.8).
 *
 * `node:sqlite` is synchronous: 10 callers of the raw driver take turns on the one thread, each call as long
 * as one caller's, so the one-caller raw row is also the 10-caller baseline on SQLite.
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { join } from "node:path"
import { pgLayer, postgresDatabase, tempDirectory } from "./backends.ts"
import type { Config } from "./config.ts"
import { createKv, upsertKv } from "./durablePostgres.ts"
import { openRaw, rawLoop, sqliteLayer } from "./sqlite.ts"
import { closedLoop, type LoadResult, loadRow, type Ratio, ratioTo, type Row } from "./stats.ts"
import { durableCalls, objectIds } from "./workloads.ts"

const scenario = "7 latency, low load"

const oneCaller = { concurrency: 1, objects: 1 }
const tenCallers = { concurrency: 10, objects: 10 }

/** Speed ratios of a latency percentile: the baseline's time over the library's (≥ 1: as fast or faster). */
const latencyRatios = (result: LoadResult, raw: Row): ReadonlyArray<Ratio> => [
  ratioTo(result.throughput, raw, "raw"),
  { baseline: raw.id, label: "raw p50", ratio: result.p50Ms > 0 ? (raw.p50Ms ?? 0) / result.p50Ms : 0 },
  { baseline: raw.id, label: "raw p99", ratio: result.p99Ms > 0 ? (raw.p99Ms ?? 0) / result.p99Ms : 0 }
]

const latencyTargets = (ratios: ReadonlyArray<Ratio>) => [
  { label: "p50 ≥ 0.8× raw", pass: ratios[1]!.ratio >= 0.8 },
  { label: "p99 ≥ 0.8× raw", pass: ratios[2]!.ratio >= 0.8 }
]

const memory = (config: Config) =>
  Effect.map(
    durableCalls(config, Storage.layerMemory, { ...oneCaller, prefix: "low-memory" }),
    (result) =>
      loadRow(
        { id: "latency.memory", scenario, label: "1 caller, durable increment (memory)", kind: "measure" },
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
      { id: "latency.sqlite.raw", scenario, label: "1 caller, node:sqlite upsert, autocommit", kind: "baseline" },
      rawResult,
      "calls/s"
    )
    const storage = SqlStorage.layer().pipe(Layer.provide(sqliteLayer(join(dir, "objects.db"))))
    const result = yield* durableCalls(config, storage, { ...oneCaller, prefix: "low-sqlite" })
    const ratios = latencyRatios(result, raw)
    const ten = yield* durableCalls(config, storage, { ...tenCallers, prefix: "ten-sqlite" })
    return [
      raw,
      loadRow(
        { id: "latency.sqlite", scenario, label: "1 caller, durable increment (SQLite)", kind: "measure" },
        result,
        "calls/s",
        { ratios, targets: latencyTargets(ratios) }
      ),
      loadRow(
        {
          id: "latency.sqlite.ten",
          scenario,
          label: "10 callers on 10 objects, durable increment (SQLite)",
          kind: "measure"
        },
        ten,
        "calls/s",
        {
          ratios: latencyRatios(ten, raw),
          note: "baseline: the one-caller raw upsert (the synchronous driver runs 10 callers' upserts one at a time)"
        }
      )
    ]
  }))

const postgres = (config: Config) =>
  Effect.scoped(Effect.gen(function*() {
    const url = yield* postgresDatabase
    const rawRun = (callers: number, prefix: string) =>
      Effect.scoped(
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          yield* createKv
          const ids = objectIds(prefix, callers)
          return yield* closedLoop({
            concurrency: callers,
            warmupMs: config.warmupMs,
            durationMs: config.lowLoadMs,
            call: (worker, n) => upsertKv(sql, ids[worker]!, n)
          })
        }).pipe(Effect.provide(pgLayer(url)))
      )
    const raw = loadRow(
      { id: "latency.pg.raw", scenario, label: "1 caller, sql-pg upsert", kind: "baseline" },
      yield* rawRun(1, "low-pg"),
      "calls/s"
    )
    const storage = SqlStorage.layer().pipe(Layer.provide(pgLayer(url)))
    const result = yield* durableCalls(config, storage, { ...oneCaller, prefix: "low-pg" })
    const ratios = latencyRatios(result, raw)
    const rawTen = loadRow(
      { id: "latency.pg.raw.ten", scenario, label: "10 callers on 10 rows, sql-pg upsert", kind: "baseline" },
      yield* rawRun(10, "ten-pg"),
      "calls/s"
    )
    const ten = yield* durableCalls(config, storage, { ...tenCallers, prefix: "ten-pg" })
    return [
      raw,
      loadRow(
        { id: "latency.pg", scenario, label: "1 caller, durable increment (PostgreSQL)", kind: "measure" },
        result,
        "calls/s",
        { ratios, targets: latencyTargets(ratios) }
      ),
      rawTen,
      loadRow(
        {
          id: "latency.pg.ten",
          scenario,
          label: "10 callers on 10 objects, durable increment (PostgreSQL)",
          kind: "measure"
        },
        ten,
        "calls/s",
        { ratios: latencyRatios(ten, rawTen) }
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
