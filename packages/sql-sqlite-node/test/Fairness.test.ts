import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient } from "effect/sql"
import { monitorEventLoopDelay, performance } from "node:perf_hooks"
import { tempDatabase } from "./utils.ts"

const FIBERS = 1000
const INSERTS_PER_FIBER = 5

/**
 * Runs `load` while `monitorEventLoopDelay` watches the event loop, and returns the worst delay it saw (reported)
 * and how many turns the event loop took while the load ran (asserted): a self-rearming `setImmediate` counts
 * them. A client that never lets the loop in runs the whole burst in one turn.
 */
const withEventLoopDelay = <A, E, R>(load: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const histogram = monitorEventLoopDelay({ resolution: 5 })
    histogram.enable()
    // The monitor drops its first sample after enable(): let it take one before the load starts.
    yield* Effect.sleep("30 millis")
    let turns = 0
    let counting = true
    const tick = () => {
      if (!counting) return
      turns++
      setImmediate(tick)
    }
    setImmediate(tick)
    const start = performance.now()
    const result = yield* load
    const elapsedMs = performance.now() - start
    const turnsDuringLoad = turns
    counting = false
    // It samples only when the loop turns, so a stall is recorded once the loop is free again.
    yield* Effect.sleep("30 millis")
    histogram.disable()
    return {
      result,
      elapsedMs,
      turns: turnsDuringLoad,
      maxDelayMs: histogram.max / 1e6,
      p99DelayMs: histogram.percentile(99) / 1e6
    }
  })

const burst = (shape: "transaction" | "autocommit", round: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const write = (fiber: number) => {
      const inserts = Effect.forEach(
        Array.from({ length: INSERTS_PER_FIBER }, (_, n) => n),
        (n) => sql`INSERT INTO t ${sql.insert({ round, fiber, n, payload: "x".repeat(100) })}`,
        { discard: true }
      )
      return shape === "transaction" ? sql.withTransaction(inserts) : inserts
    }
    // all fibers start in the same tick and queue on the one connection
    yield* Effect.forEach(Array.from({ length: FIBERS }, (_, i) => i), write, {
      concurrency: "unbounded",
      discard: true
    })
  })

const scenario = (shape: "transaction" | "autocommit") =>
  Effect.gen(function*() {
    const filename = yield* tempDatabase
    yield* Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY, round INTEGER, fiber INTEGER, n INTEGER, payload TEXT)`
      const [sync] = yield* sql<{ synchronous: number }>`PRAGMA synchronous`
      assert.strictEqual(sync!.synchronous, 2) // FULL: every commit is fsynced

      // The first burst also pays for JIT-compiling Effect's fiber machinery (forking 1,000 fibers that queue
      // on the connection); it is reported, the steady state is asserted.
      const cold = yield* withEventLoopDelay(burst(shape, 0))
      const warm = yield* withEventLoopDelay(burst(shape, 1))

      const [count] = yield* sql<{ c: number; f: number }>`SELECT count(*) AS c, count(DISTINCT fiber) AS f FROM t
        WHERE round = 1`
      assert.deepStrictEqual(count, { c: FIBERS * INSERTS_PER_FIBER, f: FIBERS })
      const rows = FIBERS * INSERTS_PER_FIBER
      console.log(
        `fairness (${shape}, ${FIBERS} fibers x ${INSERTS_PER_FIBER} inserts, file, synchronous FULL): ` +
          `max event-loop delay ${warm.maxDelayMs.toFixed(1)} ms (p99 ${warm.p99DelayMs.toFixed(1)} ms), ` +
          `${Math.round(rows / (warm.elapsedMs / 1000))} rows/s` +
          (shape === "transaction" ? `, ${Math.round(FIBERS / (warm.elapsedMs / 1000))} transactions/s` : "") +
          `, ${warm.elapsedMs.toFixed(0)} ms, ${warm.turns} event-loop turns; first (cold) burst: max delay ` +
          `${cold.maxDelayMs.toFixed(1)} ms, ${cold.elapsedMs.toFixed(0)} ms`
      )
      // The driver hands the loop a turn after each `yieldBudget` (4 ms) of synchronous work. The burst is at
      // least 1,000 fsyncs, which is far more than 10 budgets even on a fast disk; a busy machine only makes it
      // slower, and so gives more turns. (How long each turn waited is the benchmark's business.)
      assert.isAtLeast(warm.turns, 10)
      assert.isAtLeast(cold.turns, 10)
    }).pipe(Effect.provide(SqliteClient.layer({ filename })))
  })

describe("event-loop fairness", () => {
  // Real time and a real disk: what is checked is that the loop gets turns while the writes run.
  it.live(
    "1,000 fibers each committing a 5-insert transaction let the event loop turn while they run",
    () => scenario("transaction")
  )

  it.live(
    "1,000 fibers each making 5 autocommit inserts let the event loop turn while they run",
    () => scenario("autocommit")
  )
})
