/**
 * A database with real objects and a real failed alarm for the CLI's and the inspector's tests: a `Job` type
 * whose `work` alarm fails (no retries) while the job is broken, run by a real runtime over `SqlStorage`.
 */
import { Alarms, DurableObject, SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { PgClient } from "@effect/sql-pg"
import { assert } from "@effect/vitest"
import { Effect, Layer, Redacted, Schema } from "effect"
import type { SqlClient, SqlError } from "effect/sql"

export class Broken extends Schema.TaggedError<Broken>()("Broken", { why: Schema.String }) {
  override get message(): string {
    return this.why
  }
}

export const Job = DurableObject.defineObject({
  name: "Job",
  state: Schema.Struct({ runs: Schema.Int, broken: Schema.Boolean }),
  initialState: () => ({ runs: 0, broken: false }),
  handlers: {
    schedule: {
      payload: Schema.Struct({ broken: Schema.Boolean, inMillis: Schema.Number }),
      handle: ({ broken, inMillis }, ctx) =>
        Effect.andThen(
          ctx.state.update((s) => ({ ...s, broken })),
          ctx.alarms.schedule("work", { in: inMillis }, { task: `task of ${ctx.id}` })
        )
    },
    repair: { handle: (_, ctx) => ctx.state.update((s) => ({ ...s, broken: false })) },
    runs: { success: Schema.Int, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.runs) }
  },
  alarms: {
    work: {
      payload: Schema.Struct({ task: Schema.String }),
      handle: ({ task }, ctx) =>
        Effect.flatMap(ctx.state.get, (s) =>
          s.broken
            ? Effect.fail(new Broken({ why: `cannot run ${task}` }))
            : ctx.state.set({ ...s, runs: s.runs + 1 }))
    }
  },
  options: { alarmRetry: { maxRetries: 0 } }
})

/** A database the tests seed: a SQLite file, or a table prefix on the test run's PostgreSQL. */
export type Db =
  | { readonly kind: "sqlite"; readonly file: string }
  | { readonly kind: "pg"; readonly url: string; readonly prefix: string }

export const clientOf = (db: Db): Layer.Layer<SqlClient.SqlClient, SqlError.SqlError> =>
  db.kind === "sqlite"
    ? SqliteClient.layer({ filename: db.file })
    : PgClient.layer({ url: Redacted.make(db.url), maxConnections: 2 })

export const optionsOf = (db: Db): SqlStorage.Options => (db.kind === "pg" ? { tablePrefix: db.prefix } : {})

/** The CLI flags naming the database. */
export const dbFlags = (db: Db): Array<string> =>
  db.kind === "sqlite" ? ["--database", db.file] : ["--database", db.url, "--table-prefix", db.prefix]

/** Runs `body` with Job's runtime on the database (its scheduler polling every 50 ms), then stops it. */
export const withJobs = <A, E>(db: Db, body: Effect.Effect<A, E, DurableObject.Runtime<"Job">>) =>
  Effect.provide(
    body,
    Job.layer.pipe(
      Layer.provide(SqlStorage.layer({ ...optionsOf(db), alarms: { pollInterval: "50 millis" } })),
      Layer.provide(clientOf(db))
    )
  )

/** Waits (in real time) until `check` holds. */
export const eventually = <E, R>(check: Effect.Effect<boolean, E, R>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 250; i++) {
      if (yield* check) return
      yield* Effect.sleep("20 millis")
    }
    assert.fail("timed out waiting")
  })

/**
 * Seeds: `job-01` … `job-12` with a far alarm, `broken-a` and `broken-b` whose alarm failed (with its last
 * error), once the scheduler has given up on them.
 */
export const seed = (db: Db) =>
  withJobs(
    db,
    Effect.gen(function*() {
      for (let i = 1; i <= 12; i++) {
        yield* Job.client(`job-${String(i).padStart(2, "0")}`).schedule({ broken: false, inMillis: 3_600_000 })
      }
      for (const id of ["broken-a", "broken-b"]) yield* Job.client(id).schedule({ broken: true, inMillis: 10 })
      yield* eventually(Effect.map(Alarms.listFailed(Job), (page) => page.alarms.length === 2))
    })
  )
