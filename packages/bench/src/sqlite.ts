/**
 * SQLite for the scenarios: the library's client (`@durable-object/sql-sqlite-node`) with
 * `synchronous: "FULL"` on a temp file, and raw `node:sqlite` baselines with the same settings (WAL journal,
 * `synchronous = FULL`, so every commit waits for the disk).
 */
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { Effect, type Layer } from "effect"
import type { SqlClient, SqlError } from "effect/sql"
import { DatabaseSync } from "node:sqlite"
import { type LoadResult, makeHistogram, monitorEventLoop } from "./stats.ts"

/** The library's SQLite client on `filename`, `synchronous: "FULL"` (every commit reaches the disk). */
export const sqliteLayer = (filename: string): Layer.Layer<SqlClient.SqlClient, SqlError.SqlError> =>
  SqliteClient.layer({ filename, synchronous: "FULL" })

/** The version of the SQLite library `node:sqlite` links. */
export const sqliteVersion = (): string => {
  // An in-memory database: if the query throws, nothing is left behind but this object's memory.
  const db = new DatabaseSync(":memory:")
  const version = String((db.prepare("SELECT sqlite_version() AS v").get() as { v: string }).v)
  db.close()
  return version
}

/** A raw database with the baselines' table, configured like the library's client. */
export const openRaw = (filename: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const db = new DatabaseSync(filename)
      db.exec("PRAGMA journal_mode = WAL")
      db.exec("PRAGMA synchronous = FULL")
      db.exec(`CREATE TABLE IF NOT EXISTS bench_kv (
        object_type TEXT NOT NULL, object_id TEXT NOT NULL, state TEXT NOT NULL, version INTEGER NOT NULL,
        PRIMARY KEY (object_type, object_id))`)
      const upsert = db.prepare(`INSERT INTO bench_kv (object_type, object_id, state, version)
        VALUES ('Counter', ?, ?, 1)
        ON CONFLICT (object_type, object_id) DO UPDATE SET state = excluded.state, version = version + 1`)
      return { db, upsert: (id: string, count: number) => upsert.run(id, JSON.stringify({ count })) }
    }),
    ({ db }) => Effect.sync(() => db.close())
  )

/**
 * A synchronous operation run back to back for `warmupMs + durationMs`, in slices of ~5 ms between which
 * the event loop runs (a raw driver blocks it for as long as each operation takes).
 */
export const rawLoop = (options: {
  readonly warmupMs: number
  readonly durationMs: number
  readonly itemsPerCall?: number | undefined
  readonly call: (n: number) => void
}): Effect.Effect<LoadResult> =>
  Effect.gen(function*() {
    const histogram = makeHistogram()
    // Calls that ended in the window whatever their start: the latency when none started and ended in it (a
    // window shorter than a call, as under `--smoke` on a busy machine).
    const ended = makeHistogram()
    const start = performance.now()
    const measureFrom = start + options.warmupMs
    const end = measureFrom + options.durationMs
    let completed = 0
    let n = 0
    const monitor = monitorEventLoop()
    let measuring = false
    while (performance.now() < end) {
      if (!measuring && performance.now() >= measureFrom) {
        measuring = true
        monitor.reset()
      }
      const sliceEnd = performance.now() + 5
      let t0 = performance.now()
      while (t0 < sliceEnd && t0 < end) {
        options.call(n++)
        const t1 = performance.now()
        if (t1 >= measureFrom && t1 <= end) {
          completed++
          ended.record(t1 - t0)
          if (t0 >= measureFrom) histogram.record(t1 - t0)
        }
        t0 = t1
      }
      yield* Effect.yieldNow
    }
    const seconds = options.durationMs / 1000
    const latency = histogram.count() > 0 ? histogram : ended
    return {
      calls: completed,
      seconds,
      throughput: (completed * (options.itemsPerCall ?? 1)) / seconds,
      p50Ms: latency.percentile(50),
      p99Ms: latency.percentile(99),
      maxMs: latency.max(),
      eventLoop: monitor.stop()
    }
  })
