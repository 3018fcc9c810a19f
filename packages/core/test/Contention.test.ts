/**
 * Two runtimes on one PostgreSQL writing the same objects at once (issue 14, item 6): their coalesced batches
 * lock rows in key order, so they never deadlock each other, and the deadlocks or serialization failures that
 * remain (between other kinds of writes) are retried inside the storage: none reaches a caller. Every
 * `StorageError` says whether its write may have applied.
 */
import { Errors, SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, type Scope } from "effect"
import { SqlClient, Statement } from "effect/sql"
import { type Backend, counterRuntimeOn, sqlBackends } from "./backends.ts"
import { clientFor } from "./databases.ts"
import { Counter } from "./fixtures.ts"

const postgres: Backend = sqlBackends.find((backend) => backend.name === "PostgreSQL")!

/** The reason tag of the `SqlError` behind a `StorageError`, if any. */
const sqlReason = (error: Errors.StorageError): string | undefined => {
  const cause = error.cause as { readonly _tag?: unknown; readonly reason?: { readonly _tag?: unknown } } | undefined
  return cause?._tag === "SqlError" && typeof cause.reason?._tag === "string" ? cause.reason._tag : undefined
}

describe("two runtimes on one PostgreSQL", () => {
  it.live(
    "hammering overlapping objects: no deadlock reaches a caller, and every acknowledged increment is stored once",
    () =>
      Effect.gen(function*() {
        const db = yield* postgres.database
        const ids = Array.from({ length: 24 }, (_, i) => `hot${i}`)
        const runtime = () =>
          Layer.build(counterRuntimeOn(db, clientFor(db.spec, { maxConnections: 4 }))) as unknown as Effect.Effect<
            Context.Context<never>,
            unknown,
            Scope.Scope
          >
        const a = yield* runtime()
        const b = yield* runtime()
        // A table of realistic size: the planner then reaches rows through the primary key in each statement's
        // row order, not by scanning the table in one order for everyone (which hides the problem).
        yield* Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const t = yield* SqlStorage.tables(db.options)
          yield* sql`INSERT INTO ${sql(t.objects)} (object_type, object_id, state, version, created_at, updated_at)
            SELECT ${Counter.name}, 'cold' || g, '{"count":0,"lastIncrementedAt":null}'::jsonb, 1, 1, 1
            FROM generate_series(1, 20000) AS g`
          yield* sql`ANALYZE ${sql(t.objects)}`
        }).pipe(Effect.provideContext(a as Context.Context<any>))
        // Each runtime keeps 64 calls in flight on random objects for a few seconds, so both coalesce writes of
        // many objects into each batch, overlapping the other's.
        const seconds = 4
        const hammer = (context: Context.Context<never>, until: number) =>
          Effect.map(
            Effect.forEach(
              Array.from({ length: 64 }, () => 0),
              () =>
                Effect.gen(function*() {
                  const exits: Array<Exit.Exit<number, unknown>> = []
                  while (Date.now() < until) {
                    const id = ids[Math.floor(Math.random() * ids.length)]!
                    exits.push(
                      yield* Effect.exit(Counter.client(id).increment({ amount: 1 })).pipe(
                        Effect.provideContext(context as Context.Context<any>)
                      )
                    )
                  }
                  return exits
                }),
              { concurrency: "unbounded" }
            ),
            (perFiber) => perFiber.flat()
          )
        const serverDeadlocks = Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const rows = yield* sql<{ n: number | string }>`SELECT deadlocks AS n FROM pg_stat_database
            WHERE datname = current_database()`
          return Number(rows[0]?.n ?? 0)
        }).pipe(Effect.provideContext(a as Context.Context<any>))
        const deadlocksBefore = yield* serverDeadlocks
        const started = Date.now()
        const until = started + seconds * 1000
        const [fromA, fromB] = yield* Effect.all([hammer(a, until), hammer(b, until)], { concurrency: 2 })
        const elapsed = Date.now() - started
        const exits = [...fromA, ...fromB]

        let acknowledged = 0
        let conflicts = 0
        let unknown = 0
        const storageErrors: Array<Errors.StorageError> = []
        const other: Array<string> = []
        for (const exit of exits) {
          if (Exit.isSuccess(exit)) {
            acknowledged++
            continue
          }
          const failure = exit.cause.reasons.find((reason) => reason._tag === "Fail")
          const error = failure?.error
          if (error instanceof Errors.VersionConflict) conflicts++
          else if (error instanceof Errors.StorageError) {
            storageErrors.push(error)
            if (error.outcome === "unknown") unknown++
          } else other.push(String(exit.cause))
        }
        const deadlocks = storageErrors.filter((e) => {
          const reason = sqlReason(e)
          return reason === "DeadlockError" || reason === "SerializationError"
        })
        yield* Effect.sleep("1 second") // the server's statistics are flushed within a second
        const inDatabase = (yield* serverDeadlocks) - deadlocksBefore
        console.log(
          `[PostgreSQL, two runtimes] ${exits.length} calls on ${ids.length} objects in ${elapsed} ms: ` +
            `${acknowledged} acknowledged, ${conflicts} VersionConflict, ${storageErrors.length} StorageError ` +
            `(${deadlocks.length} deadlock or serialization failures), ${other.length} other; ` +
            `${inDatabase} deadlocks detected by the server (all retried inside the storage)`
        )
        assert.deepStrictEqual(other, [], "nothing but conflicts and storage errors")
        assert.strictEqual(deadlocks.length, 0, "no deadlock or serialization failure reached a caller")
        assert.isAbove(acknowledged, 0)

        // Linearizable counters: the stored total is every acknowledged increment, plus at most the ones whose
        // outcome is unknown.
        const storage = Context.get(a as Context.Context<Storage.Storage>, Storage.Storage)
        const stored = yield* Effect.forEach(ids, (id) => storage.load(Counter.name, id))
        const total = stored.reduce((sum, row) => sum + (row === undefined ? 0 : JSON.parse(row.state).count), 0)
        assert.isAtLeast(total, acknowledged)
        assert.isAtMost(total, acknowledged + unknown)
      }),
    60_000
  )
})

/**
 * Makes the next `times` writing statements about `objectId` fail with a genuine PostgreSQL error of SQLSTATE
 * `code` (raised by the server, so the driver classifies it exactly as a real deadlock or serialization failure).
 */
const failingWrites = (objectId: string, code: "40P01" | "40001") => {
  const control = { left: 0, injected: 0 }
  const transformer: Statement.Transformer = (statement, sql) =>
    Effect.suspend(() => {
      if (control.left <= 0) return Effect.succeed(statement)
      const [text, params] = statement.compile()
      if (!params.includes(objectId) || /^\s*SELECT/i.test(text)) return Effect.succeed(statement)
      control.left--
      control.injected++
      return Effect.succeed(
        sql.unsafe(`DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '${code}'; END $$`) as Statement.Statement<
          unknown
        >
      )
    })
  return { control, layer: Layer.succeed(Statement.CurrentTransformer, transformer) }
}

describe("deadlocks and serialization failures on PostgreSQL", () => {
  for (const code of ["40P01", "40001"] as const) {
    it.live(`${code} is retried inside the storage: the call succeeds once, and past the retries fails as not applied`, () =>
      Effect.gen(function*() {
        const db = yield* postgres.database
        const { control, layer } = failingWrites("victim", code)
        yield* Effect.gen(function*() {
          assert.strictEqual(yield* Counter.client("victim").increment({ amount: 1 }), 1)
          control.left = 3
          assert.strictEqual(yield* Counter.client("victim").increment({ amount: 1 }), 2, "retried, applied once")
          assert.strictEqual(control.injected, 3)

          control.left = 1000
          const error = yield* Effect.flip(Counter.client("victim").increment({ amount: 1 }))
          control.left = 0
          assert.strictEqual(error._tag, "StorageError")
          if (error._tag === "StorageError") {
            assert.strictEqual(error.outcome, "not-applied")
            assert.strictEqual(sqlReason(error), code === "40P01" ? "DeadlockError" : "SerializationError")
          }
          assert.strictEqual(yield* Counter.client("victim").get(), 2, "nothing of the failed call was stored")
          assert.strictEqual(yield* Counter.client("victim").increment({ amount: 1 }), 3)
        }).pipe(Effect.provide(counterRuntimeOn(db, Layer.merge(db.client(), layer))))
      }))
  }
})
