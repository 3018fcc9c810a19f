/**
 * Scenario 2, durable calls on SQLite: `increment` (committed before the reply) on 1,000 objects by 1,000
 * concurrent callers, on `SqlStorage` over `@durable-object/sql-sqlite-node` with `synchronous: "FULL"` on a
 * temp file.
 *
 * Baselines, raw `node:sqlite` (`DatabaseSync`, WAL, `synchronous = FULL`) on a table of the same shape:
 * - one upsert per call in autocommit (one fsync each);
 * - upserts batched 100 per transaction (rows/s): the limit.
 */
import { SqlStorage } from "@durable-object/core"
import { Effect, Layer } from "effect"
import { join } from "node:path"
import { tempDirectory } from "./backends.ts"
import type { Config } from "./config.ts"
import { openRaw, rawLoop, sqliteLayer } from "./sqlite.ts"
import { count, loadRow, ratioTo, type Row } from "./stats.ts"
import { durableCalls, objectIds, pick } from "./workloads.ts"

const scenario = "2 durable calls (SQLite)"

export const run = (config: Config): Effect.Effect<ReadonlyArray<Row>, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const dir = yield* tempDirectory
    const ids = objectIds("sqlite", config.durableObjects)
    const rows = config.batchRows

    const [autocommitResult, batchedResult] = yield* Effect.scoped(Effect.gen(function*() {
      const raw = yield* openRaw(join(dir, "baseline.db"))
      const autocommit = yield* rawLoop({
        warmupMs: config.warmupMs,
        durationMs: config.durationMs,
        call: (n) => raw.upsert(pick(ids), n)
      })
      const batched = yield* rawLoop({
        warmupMs: config.warmupMs,
        durationMs: config.durationMs,
        itemsPerCall: rows,
        call: (n) => {
          raw.db.exec("BEGIN IMMEDIATE")
          for (let j = 0; j < rows; j++) raw.upsert(ids[(n * rows + j) % ids.length]!, n)
          raw.db.exec("COMMIT")
        }
      })
      return [autocommit, batched] as const
    }))
    const autocommit = loadRow(
      { id: "sqlite.autocommit", scenario, label: "node:sqlite upsert per call, autocommit", kind: "baseline" },
      autocommitResult,
      "calls/s"
    )
    const batched = loadRow(
      { id: "sqlite.batched", scenario, label: `node:sqlite upserts, ${rows} per transaction`, kind: "baseline" },
      batchedResult,
      "rows/s"
    )

    const storage = SqlStorage.layer().pipe(Layer.provide(sqliteLayer(join(dir, "objects.db"))))
    const result = yield* durableCalls(config, storage, {
      concurrency: config.concurrency,
      objects: config.durableObjects,
      prefix: "sqlite"
    })
    const durable = loadRow(
      {
        id: "sqlite.durable",
        scenario,
        label: `${count(config.durableObjects)} objects, durable increment`,
        kind: "measure"
      },
      result,
      "calls/s",
      {
        ratios: [ratioTo(result.throughput, autocommit, "autocommit"), ratioTo(result.throughput, batched, "limit")],
        targets: [
          { label: "≥ 100k/s", pass: result.throughput >= 100_000 },
          { label: "≥ 10× autocommit", pass: result.throughput >= 10 * autocommit.value },
          { label: "≥ 0.4× limit", pass: result.throughput >= 0.4 * batched.value }
        ]
      }
    )
    return [autocommit, batched, durable]
  }))
