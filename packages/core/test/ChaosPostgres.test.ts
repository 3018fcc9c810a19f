/**
 * PostgreSQL failing under load, on a server of the suite's own (`chaos/postgres.ts`): stopped and started
 * again, crashed (postmaster and backends SIGKILLed while commits are in flight, or the postmaster alone) and
 * started again, and frozen
 * (every process SIGSTOPped) for longer than the call timeout. In each, 16 fibers keep incrementing 20
 * counters; the history goes through the counter-history checker against what is stored at the end.
 *
 * What must hold: every failure a caller sees is a typed error (no defect, no interruption); no acknowledged
 * increment is lost and none appears from nowhere; the runtime recovers by itself once the server is back.
 */
import { SqlStorage } from "@durable-object/core"
import { PgClient } from "@effect/sql-pg"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import type { TestDatabase } from "./backends.ts"
import { checkAgainstStorage } from "./chaos/check.ts"
import { summarize } from "./chaos/history.ts"
import { ChaosCounter, describeLoad, firstAckAfter, type LoadStats, startLoad } from "./chaos/load.ts"
import { ChaosPostgres } from "./chaos/postgres.ts"
import { soak, soakTimeout } from "./chaos/soak.ts"

let server: ChaosPostgres | undefined
const chaosServer = () => (server ??= ChaosPostgres.create())
afterAll(() => server?.destroy())

let databases = 0
/** A fresh set of tables on the chaos server. */
const database = (): Pick<TestDatabase, "spec" | "options" | "client"> => {
  const pg = chaosServer()
  const tablePrefix = `chaos${++databases}_`
  const spec = { backend: "PostgreSQL" as const, url: pg.url, tablePrefix }
  return {
    spec,
    options: { tablePrefix },
    client: () => PgClient.layer({ url: Redacted.make(pg.url), maxConnections: 4, connectTimeout: "1 second" })
  }
}

const objects = 20
const ids = Array.from({ length: objects }, (_, i) => `obj-${i}`)

/**
 * Runs the load on a fresh database: `before` ms of load, then `fault()`, `hold` ms, `restore()`, then load
 * until an increment is acknowledged again (at most 20 s) and 500 ms more. Returns the load's stats and how
 * long the recovery took after `restore`.
 */
const underFault = (
  fault: () => () => void,
  options: { readonly before: number; readonly hold: number }
) =>
  Effect.gen(function*() {
    const db = database()
    const runtime = ChaosCounter.layer.pipe(Layer.provide(SqlStorage.layer(db.options)), Layer.provide(db.client()))
    const { recoveryMs, stats } = yield* Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(runtime)
      const load = yield* startLoad(
        (id) => ChaosCounter.client(id).increment({ amount: 1 }).pipe(Effect.provideContext(context)),
        { objects, fibers: 16 }
      )
      yield* Effect.sleep(options.before)
      const restore = fault()
      yield* Effect.sleep(options.hold)
      restore()
      const restoredAt = performance.now()
      let recovered: number | undefined
      for (let waited = 0; waited < 20_000 && recovered === undefined; waited += 20) {
        yield* Effect.sleep(20)
        recovered = firstAckAfter(load.stats, restoredAt)
      }
      yield* Effect.sleep(500)
      yield* load.stop
      return { stats: load.stats, recoveryMs: recovered === undefined ? undefined : recovered - restoredAt }
    }))
    return { db, stats, recoveryMs }
  })

/** What holds after every fault: typed errors only, the history checks out, the runtime recovered. */
const assertSound = (
  label: string,
  run: { readonly db: ReturnType<typeof database>; readonly stats: LoadStats; readonly recoveryMs: number | undefined }
) =>
  Effect.gen(function*() {
    const { db, recoveryMs, stats } = run
    assert.deepStrictEqual(stats.untyped, [], `${label}: a caller saw a failure that is not a typed error`)
    assert.isDefined(recoveryMs, `${label}: no increment succeeded within 20 s of the restore`)
    const result = yield* checkAgainstStorage(db, stats.history, ids, label)
    console.log(
      `${summarize(label, result)}; ${describeLoad(stats)}; recovered ${Math.round(recoveryMs ?? -1)} ms after`
    )
    return result
  })

describe("Chaos: PostgreSQL under load", () => {
  it.live("stopped (pg_ctl stop -m fast) for a second and started again", () =>
    Effect.gen(function*() {
      const pg = chaosServer()
      for (let round = 0; round < soak; round++) {
        const run = yield* underFault(() => {
          pg.stop()
          return () => pg.start()
        }, { before: 400, hold: 1_000 })
        assert.isAbove(run.stats.errors.get("StorageError") ?? 0, 0, "the stop was seen")
        yield* assertSound("PostgreSQL stopped and restarted", run)
      }
    }), soakTimeout(60_000))

  it.live(
    "crashed mid-commit (postmaster and every backend SIGKILLed) and started again",
    () =>
      Effect.gen(function*() {
        const pg = chaosServer()
        for (let round = 0; round < soak; round++) {
          const run = yield* underFault(() => {
            pg.crash()
            return () => pg.start()
          }, { before: 400, hold: 300 })
          assert.isAbove(run.stats.errors.get("StorageError") ?? 0, 0, "the crash was seen")
          yield* assertSound("PostgreSQL SIGKILLed and restarted", run)
        }
      }),
    soakTimeout(60_000)
  )

  it.live(
    "its postmaster alone SIGKILLed mid-commit, then started again",
    () =>
      Effect.gen(function*() {
        const pg = chaosServer()
        for (let round = 0; round < soak; round++) {
          const run = yield* underFault(() => {
            pg.crash(true)
            return () => pg.start()
          }, { before: 400, hold: 300 })
          assert.isAbove(run.stats.errors.get("StorageError") ?? 0, 0, "the crash was seen")
          yield* assertSound("PostgreSQL postmaster SIGKILLed and restarted", run)
        }
      }),
    soakTimeout(60_000)
  )

  it.live(
    "frozen (SIGSTOP) for 4 s, past the 1 s call and commit timeouts: every call ends within its bounds",
    () =>
      Effect.gen(function*() {
        const pg = chaosServer()
        for (let round = 0; round < soak; round++) {
          const run = yield* underFault(() => {
            const frozen = pg.freeze()
            return () => pg.thaw(frozen)
          }, { before: 400, hold: 4_000 })
          yield* assertSound("PostgreSQL frozen 4 s", run)
          // The freeze was felt: calls in flight waited for it.
          assert.isAbove(run.stats.longest.ms, 500)
          // But no call waited for the thaw: at most the call timeout, then the commit timeout (1 s each), with
          // slack for a busy machine; the calls cut short by them failed with a typed error.
          assert.isBelow(run.stats.longest.ms, 3_000, "a call outlived its call and commit timeouts")
          assert.isAbove(
            (run.stats.errors.get("CommitTimeout") ?? 0) + (run.stats.errors.get("CallTimeout") ?? 0),
            0,
            "calls caught in the freeze timed out"
          )
        }
      }),
    soakTimeout(60_000)
  )
})
