/**
 * Listing stays indexed at scale: the statements `listObjects` and `listFailedAlarms` really send (captured
 * with a statement transformer) are explained on a table of many objects and pending alarms, and must read
 * an index range of about one page, never scan the table.
 *
 * `DURABLE_OBJECT_PLAN_ROWS` sets the number of rows (default 100,000; docs/storage.md shows the plans at
 * 1,000,000) and `DURABLE_OBJECT_PLAN_PRINT=1` prints the plans.
 */
import { SqlStorage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { SqlClient, Statement } from "effect/sql"
import { sqlBackends } from "./backends.ts"

const rows = Number(process.env.DURABLE_OBJECT_PLAN_ROWS ?? 100_000)
const print = process.env.DURABLE_OBJECT_PLAN_PRINT === "1"

/** Runs `effect`, returning the compiled statements it sent. */
const capture = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const sent: Array<readonly [string, ReadonlyArray<unknown>]> = []
    const transformer: Statement.Transformer = (statement) =>
      Effect.sync(() => {
        sent.push(statement.compile())
        return statement
      })
    const result = yield* effect.pipe(Effect.provideService(Statement.CurrentTransformer, transformer))
    return { result, sent }
  })

type PgPlan = {
  readonly "Node Type": string
  readonly "Actual Rows"?: number
  readonly "Index Name"?: string
  readonly Plans?: ReadonlyArray<PgPlan>
}

const nodes = (plan: PgPlan): Array<PgPlan> => [plan, ...(plan.Plans ?? []).flatMap(nodes)]

for (const backend of sqlBackends) {
  describe(`Listing plans on ${backend.name}`, () => {
    it.live(
      `list and failed-alarm pages read an index range, not ${rows.toLocaleString("en")} rows`,
      () =>
        Effect.gen(function*() {
          const db = yield* backend.database
          yield* Effect.gen(function*() {
            const sql = yield* SqlClient.SqlClient
            const storage = yield* SqlStorage.make(db.options)
            const t = yield* SqlStorage.tables(db.options)
            const isPg = backend.name === "PostgreSQL"
            // Many objects of the listed type and of another, one pending alarm each, and 1 in 1,000 failed.
            const series = isPg
              ? sql.literal(`generate_series(1, ${rows})`)
              : sql.literal(
                `(WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < ${rows})
                SELECT value FROM s)`
              )
            const n = sql.literal(isPg ? "g" : "value")
            const from = isPg ? sql`FROM ${series} AS g` : sql`FROM ${series}`
            const json = sql.literal(isPg ? "'{}'::jsonb" : "'{}'")
            const id = sql.literal(isPg ? "'user-' || lpad(g::text, 7, '0')" : "'user-' || printf('%07d', value)")
            yield* sql`INSERT INTO ${sql(t.objects)} (object_type, object_id, state, version, created_at, updated_at)
            SELECT type, ${id}, ${json}, 1, 0, 0 ${from} CROSS JOIN (SELECT 'Big' AS type UNION ALL SELECT 'Other') AS types`
            yield* sql`INSERT INTO ${sql(t.alarms)} (object_type, object_id, name, fire_at, payload, attempts,
              failed_at, last_error, created_at)
            SELECT 'Big', ${id}, 'work', 1000, ${json}, 1,
              CASE WHEN ${n} % 1000 = 0 THEN 5 END, CASE WHEN ${n} % 1000 = 0 THEN 'boom' END, 0 ${from}`
            yield* sql`ANALYZE`

            const limit = 100
            const middle = Math.floor(rows / 2)
            const lists = yield* capture(
              storage.listObjects("Big", {
                after: `user-${String(middle).padStart(7, "0")}`,
                prefix: "user-",
                limit: limit + 1
              })
            )
            assert.deepStrictEqual(
              lists.result.map((o) => o.objectId),
              Array.from(
                { length: Math.min(limit + 1, rows - middle) },
                (_, i) => `user-${String(middle + i + 1).padStart(7, "0")}`
              )
            )
            const failed = yield* capture(
              storage.listFailedAlarms("Big", { after: { objectId: "user-0050000", name: "work" }, limit: limit + 1 })
            )
            assert.strictEqual(failed.result[0]?.objectId, rows >= 51_000 ? "user-0051000" : undefined)

            for (const [name, captured] of [["listObjects", lists], ["listFailedAlarms", failed]] as const) {
              assert.strictEqual(captured.sent.length, 1)
              const [text, params] = captured.sent[0]!
              if (isPg) {
                const [explained] = yield* sql.unsafe<{ "QUERY PLAN": ReadonlyArray<{ Plan: PgPlan }> }>(
                  `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ${text}`,
                  params
                )
                const plan = explained!["QUERY PLAN"][0]!.Plan
                if (print) {
                  const textPlan = yield* sql.unsafe<{ "QUERY PLAN": string }>(
                    `EXPLAIN (ANALYZE, BUFFERS) ${text}`,
                    params
                  )
                  console.log(`${name} at ${rows} rows:\n${textPlan.map((r) => r["QUERY PLAN"]).join("\n")}`)
                }
                const all = nodes(plan)
                assert.deepStrictEqual(all.filter((node) => node["Node Type"].includes("Seq Scan")), [], name)
                const scans = all.filter((node) => node["Node Type"].includes("Index"))
                assert.isAbove(scans.length, 0, `${name} uses an index`)
                for (const scan of scans) assert.isAtMost(scan["Actual Rows"] ?? 0, limit + 1, `${name} reads a page`)
              } else {
                const plan = yield* sql.unsafe<{ detail: string }>(`EXPLAIN QUERY PLAN ${text}`, params)
                const details = plan.map((row) => row.detail)
                if (print) console.log(`${name} at ${rows} rows:\n${details.join("\n")}`)
                assert.isTrue(
                  details.some((d) => /^SEARCH .* USING (COVERING )?INDEX|PRIMARY KEY/.test(d)),
                  details.join("; ")
                )
                assert.isFalse(details.some((d) => d.startsWith("SCAN ")), details.join("; "))
                assert.isFalse(
                  details.some((d) => d.includes("TEMP B-TREE")),
                  `${name} needs no sort: ${details.join("; ")}`
                )
              }
            }
          }).pipe(Effect.provide(db.client()))
        }),
      120_000
    )
  })
}
