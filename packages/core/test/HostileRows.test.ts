/**
 * Rows and inputs at and past the edges (issue 14, items 1-4): alarm times outside 1970…9999, rows edited by
 * hand (text or out-of-range fire times, versions of 0, below or past 2^53), and each fails only its own
 * object or alarm, typed, while everything due or loaded beside it goes on; `delete` removes any row.
 */
import { DurableObject, DurableObjectTest, SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { type Backend, counterRuntime, sqlBackends, type TestDatabase } from "./backends.ts"
import { Counter, Reminders } from "./fixtures.ts"

/** Year 10000, the first instant past the sane range. */
const year10000 = 253402300800000

/** The tag of the typed error an exit failed with, or "defect" / "success". */
const outcome = (exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) return "success"
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")
  return error === undefined ? "defect" : (error.error as { readonly _tag: string })._tag
}

describe("alarm times outside 1970…9999", () => {
  it.effect("are refused at scheduling with a typed error, from outside and from a handler, and nothing is stored", () =>
    Effect.gen(function*() {
      for (const when of [{ at: -1 }, { at: year10000 }, { at: -1e16 }, { at: Number.MAX_SAFE_INTEGER }]) {
        const exit = yield* Effect.exit(DurableObject.scheduleAlarm(Reminders, "out", "ping", when))
        assert.strictEqual(outcome(exit), "InvalidPayload", JSON.stringify(when))
      }
      const far = yield* Effect.exit(DurableObject.scheduleAlarm(Reminders, "out", "ping", { in: 1e16 }))
      assert.strictEqual(outcome(far), "InvalidPayload")
      for (const at of [-1, 1e16, -1e16]) {
        const exit = yield* Effect.exit(Reminders.client("out").remindAt({ text: "x", at }))
        assert.strictEqual(outcome(exit), "HandlerDefect", String(at))
      }
      assert.deepStrictEqual(yield* DurableObject.listAlarms(Reminders, "out"), [])
      // The edges themselves are fine.
      yield* DurableObject.scheduleAlarm(Reminders, "out", "ping", { at: 0 })
      yield* DurableObject.scheduleAlarm(Reminders, "edge", "ping", { at: year10000 - 1 })
      assert.strictEqual((yield* DurableObject.listAlarms(Reminders, "edge")).length, 1)
    }).pipe(Effect.provide(DurableObjectTest.layer(Reminders))))
})

/** Inserts an alarm row by hand; `fireAt` is bound as given (a number, or text on SQLite). */
const insertAlarm = (
  db: TestDatabase,
  id: string,
  name: string,
  fireAt: number | string,
  payload = "null",
  cron: string | null = null
) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = yield* SqlStorage.tables(db.options)
    const json = sql.onDialectOrElse({ pg: () => sql`${payload}::jsonb`, orElse: () => sql`${payload}` })
    const at = typeof fireAt === "number" && !Number.isSafeInteger(fireAt)
      ? sql.literal(String(BigInt(fireAt)))
      : sql`${fireAt}`
    yield* sql`INSERT INTO ${sql(t.alarms)} (object_type, object_id, name, fire_at, payload, cron, attempts,
        claim_owner, claim_expires_at, failed_at, last_error, created_at)
      VALUES (${Reminders.name}, ${id}, ${name}, ${at}, ${json}, ${cron}, 0, NULL, NULL, NULL, NULL, 1)`
  })

/** Sets an object's stored version by hand (as SQL text, so values past 2^53 are exact). */
const setVersion = (db: TestDatabase, objectType: string, id: string, version: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = yield* SqlStorage.tables(db.options)
    yield* sql`UPDATE ${sql(t.objects)} SET version = ${sql.literal(version)}
      WHERE object_type = ${objectType} AND object_id = ${id}`
  })

const rowCount = (db: TestDatabase, objectType: string, id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = yield* SqlStorage.tables(db.options)
    const rows = yield* sql<{ n: number | string }>`SELECT COUNT(*) AS n FROM ${sql(t.objects)}
      WHERE object_type = ${objectType} AND object_id = ${id}`
    return Number(rows[0]!.n)
  })

/** The Reminders runtime on SQL storage with a quick poll, and the storage's calls to `nextAlarmAt` counted. */
const remindersOn = (db: TestDatabase, counter: { reads: number }, pollInterval: Duration.Input = "100 millis") =>
  Reminders.layer.pipe(
    Layer.provideMerge(Storage.layerWithScheduler(
      Effect.map(SqlStorage.make(db.options), (storage): Storage.StorageService => ({
        ...storage,
        nextAlarmAt: (types) =>
          Effect.suspend(() => {
            counter.reads++
            return storage.nextAlarmAt(types)
          })
      })),
      { pollInterval, leaseDuration: "10 seconds" }
    )),
    Layer.provideMerge(db.client())
  )

const waitFor = <A, E, R>(read: Effect.Effect<A, E, R>, done: (a: A) => boolean) =>
  Effect.gen(function*() {
    let value = yield* read
    for (let i = 0; i < 100 && !done(value); i++) {
      yield* Effect.sleep("100 millis")
      value = yield* read
    }
    return value
  })

const suite = (backend: Backend) =>
  describe(`hand-edited rows on ${backend.name}`, () => {
    it.live("stored alarm times outside 1970…9999 fail alone, stay listed, and never hold up the alarms due with them", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const counter = { reads: 0 }
        yield* Effect.gen(function*() {
          const now = Date.now()
          // Committed through the runtime first, so the objects exist.
          const healthy = ["ok1", "ok2", "ok3", "ok4", "ok5"]
          yield* insertAlarm(db, "bad-past", "ping", -1e16)
          yield* insertAlarm(db, "bad-1969", "ping", -1)
          yield* insertAlarm(db, "bad-far", "ping", Number.MAX_SAFE_INTEGER)
          yield* insertAlarm(db, "bad-1e16", "ping", 1e16)
          for (const id of healthy) yield* insertAlarm(db, id, "ping", now - 1000)

          const fired = yield* waitFor(
            Effect.forEach(healthy, (id) => Effect.map(Reminders.client(id).read(), (s) => s.fired.length)),
            (counts) => counts.every((n) => n === 1)
          )
          assert.deepStrictEqual(fired, [1, 1, 1, 1, 1], "the healthy alarms due with the bad ones fired")

          // The due ones (before 1970) are marked failed with the reason; listing never dies.
          for (const id of ["bad-past", "bad-1969"]) {
            const listed = yield* waitFor(DurableObject.listAlarms(Reminders, id), (l) => l[0]?.failed !== undefined)
            assert.strictEqual(listed.length, 1, id)
            assert.include(listed[0]!.invalid, "1970", id)
            assert.include(listed[0]!.failed?.error, "1970", id)
          }
          for (const id of ["bad-far", "bad-1e16"]) {
            const listed = yield* DurableObject.listAlarms(Reminders, id)
            assert.strictEqual(listed.length, 1, id)
            assert.include(listed[0]!.invalid, "9999", id)
          }
          // ctx.alarms.list too.
          const inside = yield* Effect.exit(Reminders.client("bad-far").list())
          assert.strictEqual(outcome(inside), "success")
          assert.deepStrictEqual((yield* Reminders.client("bad-past").read()).fired, [], "no handler ran")
        }).pipe(Effect.provide(remindersOn(db, counter)))
      }))

    it.live("a version of 0, below 0 or past 2^53 fails only its own object, typed; loads beside it work; delete removes it", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const bad: ReadonlyArray<readonly [string, string]> = [
            ["zero", "0"],
            ["negative", "-3"],
            ["past-2^53", "9007199254740993"],
            ["max-int64", "9223372036854775807"]
          ]
          const good = Array.from({ length: 12 }, (_, i) => `good${i}`)
          for (const id of [...bad.map(([id]) => id), ...good]) {
            yield* Counter.client(id).increment({ amount: 1 })
          }
          for (const [id, version] of bad) yield* setVersion(db, "Counter", id, version)
          // Nothing loaded: every object activates again, together (one coalesced load).
          for (const id of [...bad.map(([id]) => id), ...good]) yield* DurableObject.stop(Counter, id)

          const exits = yield* Effect.forEach(
            [...bad.map(([id]) => id), ...good],
            (id) => Effect.exit(Counter.client(id).increment({ amount: 1 })),
            { concurrency: "unbounded" }
          )
          const outcomes = exits.map(outcome)
          assert.deepStrictEqual(outcomes.slice(0, bad.length), bad.map(() => "StateDecodeError"))
          assert.deepStrictEqual(outcomes.slice(bad.length), good.map(() => "success"))
          for (const [id] of bad) {
            const again = yield* Effect.exit(Counter.client(id).get())
            assert.strictEqual(outcome(again), "StateDecodeError", id)
            yield* DurableObject.delete(Counter, id)
            assert.strictEqual(yield* rowCount(db, "Counter", id), 0, `${id}: delete removed the row`)
            assert.strictEqual(yield* Counter.client(id).increment({ amount: 5 }), 5, id)
          }
        }).pipe(Effect.provide(counterRuntime(db)))
      }))

    it.live("a stored cron (and, on SQLite, a payload) that is not JSON is listed as invalid and fails alone", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const counter = { reads: 0 }
        yield* Effect.gen(function*() {
          const now = Date.now()
          yield* insertAlarm(db, "odd-cron", "tick", now - 1000, "null", "{not json")
          const odd = ["odd-cron"]
          if (backend.name === "SQLite") {
            yield* insertAlarm(db, "odd-payload", "note", now - 1000, "{not json")
            odd.push("odd-payload")
          }
          yield* insertAlarm(db, "fine", "ping", now - 1000)
          const fired = yield* waitFor(
            Effect.map(Reminders.client("fine").read(), (s) => s.fired),
            (f) => f.length > 0
          )
          assert.deepStrictEqual(fired, ["ping"])
          for (const id of odd) {
            const listed = yield* waitFor(DurableObject.listAlarms(Reminders, id), (l) => l[0]?.failed !== undefined)
            assert.strictEqual(listed.length, 1, id)
            assert.isDefined(listed[0]!.invalid, id)
            assert.isDefined(listed[0]!.failed, id)
            assert.deepStrictEqual((yield* Reminders.client(id).read()).fired, [], `${id}: no handler ran`)
          }
        }).pipe(Effect.provide(remindersOn(db, counter)))
      }))
  })

for (const backend of sqlBackends) suite(backend)

describe("hand-edited rows on SQLite only", () => {
  it.live("a text fire_at never makes the scheduler spin, and is listed as invalid", () =>
    Effect.gen(function*() {
      const db = yield* sqlBackends[1]!.database
      const counter = { reads: 0 }
      yield* Effect.gen(function*() {
        yield* insertAlarm(db, "text", "ping", "soon")
        yield* Effect.sleep("1500 millis")
        // With a 1 s poll: a few reads, not thousands.
        assert.isAtMost(counter.reads, 6, `${counter.reads} reads of the next alarm time in 1.5 s`)
        const listed = yield* DurableObject.listAlarms(Reminders, "text")
        assert.strictEqual(listed.length, 1)
        assert.include(listed[0]!.invalid, "soon")
      }).pipe(Effect.provide(remindersOn(db, counter, "1 second")))
    }))
})
