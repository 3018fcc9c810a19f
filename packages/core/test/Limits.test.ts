/**
 * Size limits (issue 14, items 1 and 2): an encoded state or alarm payload past its limit is refused before
 * anything is written, with the typed `ValueTooLarge`; rows already past what the storage reads back (written
 * by hand, or before the limit) fail only their own object or alarm, never a whole coalesced load or claim, and
 * `delete` still removes them.
 */
import { DurableObject, DurableObjectTest, SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { type Backend, sqlBackends, type TestDatabase } from "./backends.ts"
import { Reminders } from "./fixtures.ts"

/** An object whose state holds whatever text it is given. */
const Blob = DurableObject.defineObject({
  name: "Blob",
  state: Schema.Struct({ text: Schema.String }),
  initialState: () => ({ text: "" }),
  handlers: {
    write: { payload: Schema.String, handle: (text, ctx) => ctx.state.set({ text }) },
    length: { success: Schema.Number, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.text.length) }
  }
})

/** The typed error an exit failed with ("success" or "defect" otherwise). */
const failureOf = (exit: Exit.Exit<unknown, unknown>): { readonly _tag: string; readonly [k: string]: unknown } => {
  if (Exit.isSuccess(exit)) return { _tag: "success" }
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")
  return error === undefined ? { _tag: "defect" } : error.error as { readonly _tag: string }
}

const MiB = 1024 * 1024

describe("size limits with the default storage limits", () => {
  it.effect("a state or alarm payload past its limit fails the call with ValueTooLarge and writes nothing", () =>
    Effect.gen(function*() {
      assert.strictEqual(Storage.defaultLimits.maxStateBytes, 4 * MiB)
      assert.strictEqual(Storage.defaultLimits.maxAlarmPayloadBytes, 256 * 1024)
      yield* Blob.client("b").write("small")
      const big = yield* Effect.exit(Blob.client("b").write("x".repeat(4 * MiB)))
      const error = failureOf(big)
      assert.strictEqual(error._tag, "ValueTooLarge")
      assert.strictEqual(error.what, "state")
      assert.strictEqual(error.limit, 4 * MiB)
      assert.isAbove(error.bytes as number, 4 * MiB)
      assert.deepStrictEqual(yield* DurableObjectTest.persistedState(Blob, "b"), { text: "small" })
      assert.strictEqual(yield* Blob.client("b").length(), 5, "the object kept its last state")
      // Bytes, not characters: 2 MiB of "é" is 4 MiB of UTF-8, plus the JSON around it.
      const wide = failureOf(yield* Effect.exit(Blob.client("b").write("é".repeat(2 * MiB))))
      assert.strictEqual(wide._tag, "ValueTooLarge")
      assert.strictEqual(yield* Blob.client("b").length(), 5)
    }).pipe(Effect.provide(DurableObjectTest.layer(Blob))))

  it.effect("an alarm payload past its limit fails, from a handler and from outside, and schedules nothing", () =>
    Effect.gen(function*() {
      const text = "y".repeat(256 * 1024)
      const inside = failureOf(yield* Effect.exit(Reminders.client("r").remind({ text, inMillis: 1000 })))
      assert.strictEqual(inside._tag, "ValueTooLarge")
      assert.strictEqual(inside.what, "alarm payload")
      assert.strictEqual(inside.name, "note")
      const outside = failureOf(
        yield* Effect.exit(DurableObject.scheduleAlarm(Reminders, "r", "note", { in: 1000 }, { text }))
      )
      assert.strictEqual(outside._tag, "ValueTooLarge")
      assert.deepStrictEqual(yield* DurableObject.listAlarms(Reminders, "r"), [])
      yield* Reminders.client("r").remind({ text: "fits", inMillis: 1000 })
      assert.strictEqual((yield* DurableObject.listAlarms(Reminders, "r")).length, 1)
    }).pipe(Effect.provide(DurableObjectTest.layer(Reminders))))
})

const rowCount = (db: TestDatabase, objectType: string, id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = yield* SqlStorage.tables(db.options)
    const rows = yield* sql<{ n: number | string }>`SELECT COUNT(*) AS n FROM ${sql(t.objects)}
      WHERE object_type = ${objectType} AND object_id = ${id}`
    return Number(rows[0]!.n)
  })

const runtimeOn = <D extends DurableObject.AnyDefinition>(
  definition: D,
  db: TestDatabase,
  options: SqlStorage.Options
) =>
  definition.layer.pipe(
    Layer.provideMerge(SqlStorage.layer({ ...db.options, ...options })),
    Layer.provideMerge(db.client())
  ) as Layer.Layer<DurableObject.Runtime<D["name"]> | Storage.Storage | SqlClient.SqlClient, unknown>

const suite = (backend: Backend) =>
  describe(`size limits on ${backend.name}`, () => {
    it.live("the limits are SqlStorage options: past them a commit fails with ValueTooLarge before any SQL runs", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          yield* Blob.client("s").write("a".repeat(900))
          const error = failureOf(yield* Effect.exit(Blob.client("s").write("a".repeat(1000))))
          assert.strictEqual(error._tag, "ValueTooLarge")
          assert.strictEqual(error.limit, 1000)
          assert.strictEqual(yield* Blob.client("s").length(), 900)
          assert.strictEqual(yield* rowCount(db, "Blob", "s"), 1)
          const fresh = failureOf(yield* Effect.exit(Blob.client("new").write("a".repeat(1000))))
          assert.strictEqual(fresh._tag, "ValueTooLarge")
          assert.strictEqual(yield* rowCount(db, "Blob", "new"), 0, "nothing written")
        }).pipe(Effect.provide(runtimeOn(Blob, db, { maxStateBytes: 1000 })))
      }))
  })

for (const backend of sqlBackends) suite(backend)

const postgres = sqlBackends.find((backend) => backend.name === "PostgreSQL")!

describe("rows past what PostgreSQL's driver reads back (16 MiB messages)", () => {
  it.live(
    "a huge state fails only its own object, the objects loaded with it activate, and delete removes it",
    () =>
      Effect.gen(function*() {
        const db = yield* postgres.database
        yield* Effect.gen(function*() {
          const ids = Array.from({ length: 10 }, (_, i) => `fine${i}`)
          for (const id of ids) yield* Blob.client(id).write(id)
          for (const id of ids) yield* DurableObject.stop(Blob, id)
          const sql = yield* SqlClient.SqlClient
          const t = yield* SqlStorage.tables(db.options)
          yield* sql`INSERT INTO ${sql(t.objects)} (object_type, object_id, state, version, created_at, updated_at)
          VALUES ('Blob', 'huge', jsonb_build_object('text', repeat('x', ${17 * MiB})), 3, 1, 1)`

          const exits = yield* Effect.forEach(
            ["huge", ...ids],
            (id) => Effect.exit(Blob.client(id).length()),
            { concurrency: "unbounded" }
          )
          const huge = failureOf(exits[0]!)
          assert.strictEqual(huge._tag, "StateDecodeError")
          assert.include(huge.issue as string, "bytes")
          assert.deepStrictEqual(exits.slice(1).map((exit) => failureOf(exit)._tag), ids.map(() => "success"))
          assert.strictEqual(failureOf(yield* Effect.exit(Blob.client("huge").length()))._tag, "StateDecodeError")

          yield* DurableObject.delete(Blob, "huge")
          assert.strictEqual(yield* rowCount(db, "Blob", "huge"), 0)
          yield* Blob.client("huge").write("small again")
          assert.strictEqual(yield* Blob.client("huge").length(), 11)
        }).pipe(Effect.provide(runtimeOn(Blob, db, {})))
      }),
    60_000
  )

  it.live(
    "a huge alarm payload fails only its own alarm: the alarms due with it fire, it is listed and marked failed",
    () =>
      Effect.gen(function*() {
        const db = yield* postgres.database
        yield* Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const t = yield* SqlStorage.tables(db.options)
          const now = Date.now()
          const insert = (id: string, payload: ReturnType<typeof sql.literal> | string) =>
            sql`INSERT INTO ${sql(t.alarms)} (object_type, object_id, name, fire_at, payload, cron, attempts,
              claim_owner, claim_expires_at, failed_at, last_error, created_at)
            VALUES ('Reminders', ${id}, 'note', ${now - 1000},
              ${typeof payload === "string" ? sql`${payload}::jsonb` : payload}, NULL, 0, NULL, NULL, NULL, NULL, 1)`
          yield* insert("huge", sql.literal(`jsonb_build_object('text', repeat('z', ${17 * MiB}))`))
          const healthy = ["h1", "h2", "h3", "h4", "h5"]
          for (const id of healthy) yield* insert(id, JSON.stringify({ text: id }))

          let fired: ReadonlyArray<number> = []
          for (let i = 0; i < 100; i++) {
            fired = yield* Effect.forEach(
              healthy,
              (id) => Effect.map(Reminders.client(id).read(), (s) => s.fired.length)
            )
            if (
              fired.every((n) => n === 1)
            ) break
            yield* Effect.sleep("100 millis")
          }
          assert.deepStrictEqual(fired, [1, 1, 1, 1, 1], "the healthy alarms fired")
          let listed = yield* DurableObject.listAlarms(Reminders, "huge")
          for (let i = 0; i < 50 && listed[0]?.failed === undefined; i++) {
            yield* Effect.sleep("100 millis")
            listed = yield* DurableObject.listAlarms(Reminders, "huge")
          }
          assert.strictEqual(listed.length, 1)
          assert.include(listed[0]!.invalid, "bytes")
          assert.include(listed[0]!.failed?.error, "bytes")
          assert.deepStrictEqual((yield* Reminders.client("huge").read()).fired, [], "its handler never ran")
        }).pipe(
          Effect.provide(
            runtimeOn(Reminders, db, { alarms: { pollInterval: "100 millis", leaseDuration: "10 seconds" } })
          )
        )
      }),
    60_000
  )
})
