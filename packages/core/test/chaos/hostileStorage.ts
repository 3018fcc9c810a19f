/**
 * Hostile input at the storage's edges (issue 14, items 1–5): huge values, alarm times out of range, prototype
 * alarm names, rows edited by hand. Each check asserts what the issue asks for.
 *
 * `ChaosHostile.test.ts` registers every check on both SQL backends; {@link allChecks} says how each failed before
 * its fix.
 */
import { DurableObject, SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import type { Backend, TestDatabase } from "../backends.ts"
import { Counter, makeJournal, Reminders } from "../fixtures.ts"

export const prototypeNames = [
  "constructor",
  "__proto__",
  "toString",
  "valueOf",
  "hasOwnProperty",
  "isPrototypeOf",
  "propertyIsEnumerable",
  "toLocaleString",
  "__defineGetter__",
  "__lookupGetter__",
  "prototype"
]

/** The failure of an exit as a typed tag, or "defect: …" for anything that is not a typed error. */
export const outcome = <A, E>(exit: Exit.Exit<A, E>): string => {
  if (Exit.isSuccess(exit)) return "ok"
  const error = Cause.findError(exit.cause)
  if (error._tag === "Success") {
    const e = error.success as { readonly _tag?: unknown }
    return typeof e._tag === "string" ? e._tag : `untagged: ${String(e)}`
  }
  return `defect: ${Cause.pretty(exit.cause).split("\n")[0]}`
}

/** An object that grows its state on demand, and schedules one large alarm beside healthy ones. */
export const Blob = DurableObject.defineObject({
  name: "Blob",
  state: Schema.Struct({ chunks: Schema.Array(Schema.String), fired: Schema.Array(Schema.String) }),
  initialState: () => ({ chunks: [], fired: [] }),
  handlers: {
    append: {
      payload: Schema.Struct({ bytes: Schema.Number }),
      success: Schema.Number,
      handle: ({ bytes }, ctx) =>
        ctx.state.modify((s) => {
          const chunks = [...s.chunks, "x".repeat(bytes)]
          return [chunks.length, { ...s, chunks }]
        })
    },
    count: { success: Schema.Number, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.chunks.length) },
    fired: { success: Schema.Array(Schema.String), handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.fired) }
  },
  alarms: {
    big: {
      payload: Schema.Struct({ data: Schema.String }),
      handle: (_, ctx) => ctx.state.update((s) => ({ ...s, fired: [...s.fired, "big"] }))
    },
    small: { handle: (_, ctx) => ctx.state.update((s) => ({ ...s, fired: [...s.fired, "small"] })) }
  },
  options: { alarmRetry: { maxRetries: 0 } }
})

const runtimes = (db: TestDatabase) =>
  Layer.mergeAll(Counter.layer, Reminders.layer, Blob.layer).pipe(
    Layer.provide(makeJournal()),
    Layer.provideMerge(SqlStorage.layer({ ...db.options, alarms: { pollInterval: "100 millis" } })),
    Layer.provideMerge(db.client())
  )

export type Check =
  | "cancelAlarm prototype names"
  | "alarm times out of range"
  | "state size limit"
  | "alarm payload size limit"
  | "hand-edited alarm rows"
  | "hand-edited versions"
  | "hand-edited fire_at does not spin"

/** Every check; each failed before its fix (item numbers from issue 14). */
export const allChecks: ReadonlyArray<Check> = [
  "cancelAlarm prototype names", // item 5: cancelAlarm constructor succeeded and wrote a row
  "alarm times out of range", // item 3: { at: -1e16 } was accepted, then stuck SQLite's claims
  "state size limit", // item 2: twenty 1 MB appends were acknowledged
  "alarm payload size limit", // item 1: a 17 MiB payload was accepted
  "hand-edited alarm rows",
  "hand-edited versions", // item 4: version 0 gave VersionConflict forever, delete left the row
  "hand-edited fire_at does not spin" // item 4: a text fire_at cost the idle scheduler a core
]

const registerIf = (checks: ReadonlyArray<Check>) => (name: Check, body: () => Effect.Effect<void, unknown, any>) => {
  if (checks.includes(name)) it.live(name, body, 90_000)
}

/** Registers `checks` on `backend` (all of them by default). */
export const hostileStorageSuite = (
  backend: Backend,
  checks: ReadonlyArray<Check> = allChecks
) =>
  describe(`Chaos: hostile input at the storage's edges on ${backend.name}`, () => {
    const check = registerIf(checks)

    check("cancelAlarm prototype names", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const storage = yield* Storage.Storage
          for (const name of prototypeNames) {
            const id = `cancel-${name}`
            const exit = yield* Effect.exit(DurableObject.cancelAlarm(Reminders, id, name as "ping"))
            assert.strictEqual(outcome(exit), "UnknownHandler", `cancelAlarm ${name}`)
            assert.isUndefined(yield* storage.load("Reminders", id), `cancelAlarm ${name} wrote a row`)
          }
        }).pipe(Effect.provide(runtimes(db)))
      }))

    check("alarm times out of range", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          for (const at of [-1e16, 1e16, Number.MAX_SAFE_INTEGER, -1, 253402300800000 /* year 10000 */]) {
            const exit = yield* Effect.exit(DurableObject.scheduleAlarm(Reminders, "range", "ping", { at }))
            assert.strictEqual(outcome(exit), "InvalidPayload", `scheduleAlarm at ${at}`)
          }
          // An in-range alarm beside them still lists and fires.
          yield* DurableObject.scheduleAlarm(Reminders, "range", "ping", { in: 10 })
          assert.lengthOf(yield* DurableObject.listAlarms(Reminders, "range"), 1)
        }).pipe(Effect.provide(runtimes(db)))
      }))

    check("state size limit", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        // 20 appends of 1 MB: past the limit, a typed error and nothing written.
        const outcomes = yield* Effect.gen(function*() {
          const result: Array<string> = []
          for (let i = 0; i < 20; i++) {
            result.push(outcome(yield* Effect.exit(Blob.client("huge").append({ bytes: 1e6 }))))
          }
          return result
        }).pipe(Effect.provide(runtimes(db)))
        assert.isTrue(outcomes.some((o) => o !== "ok"), `every append of 1 MB was acknowledged: ${outcomes}`)
        assert.isTrue(outcomes.every((o) => !o.startsWith("defect")), `${outcomes}`)
        const accepted = outcomes.filter((o) => o === "ok").length
        // After a restart the object loads (with what was acknowledged), and so do objects loaded beside it.
        yield* Effect.gen(function*() {
          const counts = yield* Effect.all(
            [Blob.client("huge").count(), ...Array.from({ length: 9 }, (_, i) => Blob.client(`beside-${i}`).count())],
            { concurrency: "unbounded" }
          )
          assert.deepStrictEqual(counts, [accepted, 0, 0, 0, 0, 0, 0, 0, 0, 0])
          yield* DurableObject.delete(Blob, "huge")
        }).pipe(Effect.provide(runtimes(db)))
      }))

    check("alarm payload size limit", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const big = yield* Effect.exit(
          DurableObject.scheduleAlarm(Blob, "big-alarm", "big", { in: 200 }, { data: "x".repeat(17 * 1024 * 1024) })
        ).pipe(Effect.provide(runtimes(db)))
        assert.notStrictEqual(outcome(big), "ok", "a 17 MiB alarm payload was accepted")
        // Healthy alarms beside it fire (after a restart).
        yield* Effect.gen(function*() {
          for (let i = 0; i < 5; i++) yield* DurableObject.scheduleAlarm(Blob, `healthy-${i}`, "small", { in: 100 })
        }).pipe(Effect.provide(runtimes(db)))
        yield* Effect.gen(function*() {
          yield* Effect.sleep(1_500)
          for (let i = 0; i < 5; i++) assert.deepStrictEqual(yield* Blob.client(`healthy-${i}`).fired(), ["small"])
        }).pipe(Effect.provide(runtimes(db)))
      }))

    check("hand-edited alarm rows", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const tables = yield* SqlStorage.tables(db.options)
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(runtimes(db))
          const sql = Context.get(context, SqlClient.SqlClient)
          const run = <A, E>(effect: Effect.Effect<A, E, any>) => Effect.provideContext(effect, context)
          const edits: ReadonlyArray<readonly [string, string]> = [
            ["cron", `'not json'`],
            ["cron", `'{"expression": "not a cron"}'`],
            ["payload", backend.name === "SQLite" ? `'not json'` : `'"not the schema"'::jsonb`],
            ["attempts", "-5"],
            ["failed_at", "-1"],
            ["claim_expires_at", "9007199254740993"]
          ]
          for (let i = 0; i < edits.length; i++) {
            yield* run(DurableObject.scheduleAlarm(Reminders, `edited-${i}`, "note", { in: 60_000 }, { text: "t" }))
          }
          for (let i = 0; i < edits.length; i++) {
            const [column, value] = edits[i]!
            yield* sql.unsafe(
              `UPDATE ${tables.alarms} SET ${column} = ${value} WHERE object_id = '${`edited-${i}`}'`
            )
          }
          for (let i = 0; i < edits.length; i++) {
            const exit = yield* Effect.exit(run(DurableObject.listAlarms(Reminders, `edited-${i}`)))
            assert.isFalse(outcome(exit).startsWith("defect"), `listAlarms after ${edits[i]}: ${outcome(exit)}`)
            const deleted = yield* Effect.exit(run(DurableObject.delete(Reminders, `edited-${i}`)))
            assert.strictEqual(outcome(deleted), "ok", `delete after ${edits[i]}`)
            assert.deepStrictEqual(yield* run(DurableObject.listAlarms(Reminders, `edited-${i}`)), [])
          }
        }))
      }))

    check("hand-edited versions", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const tables = yield* SqlStorage.tables(db.options)
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(runtimes(db))
          const sql = Context.get(context, SqlClient.SqlClient)
          const run = <A, E>(effect: Effect.Effect<A, E, any>) => Effect.provideContext(effect, context)
          const versions = ["0", "-3", "9007199254740993", "9223372036854775807"]
          for (let i = 0; i < versions.length; i++) {
            yield* run(Counter.client(`v-${i}`).increment({ amount: 1 }))
            yield* run(DurableObject.stop(Counter, `v-${i}`))
            yield* sql.unsafe(`UPDATE ${tables.objects} SET version = ${versions[i]} WHERE object_id = 'v-${i}'`)
          }
          for (let i = 0; i < versions.length; i++) {
            // A row no runtime wrote is refused with a typed error for that object alone (never a defect, never a
            // write on top of it), and delete always removes it, after which the object starts afresh.
            const first = outcome(yield* Effect.exit(run(Counter.client(`v-${i}`).increment({ amount: 1 }))))
            assert.strictEqual(first, "StateDecodeError", `version ${versions[i]}`)
            assert.strictEqual(
              outcome(yield* Effect.exit(run(Counter.client(`v-${i + 1000}`).increment({ amount: 1 })))),
              "ok",
              `version ${versions[i]}: another object is unaffected`
            )
            yield* run(DurableObject.delete(Counter, `v-${i}`))
            const rows = yield* sql`SELECT 1 FROM ${sql(tables.objects)} WHERE object_id = ${`v-${i}`}`
            assert.lengthOf(rows, 0, `version ${versions[i]}: delete left the row`)
            const after = outcome(yield* Effect.exit(run(Counter.client(`v-${i}`).increment({ amount: 1 }))))
            assert.strictEqual(after, "ok", `version ${versions[i]}: after delete`)
          }
        }))
      }))

    check("hand-edited fire_at does not spin", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        if (db.spec.backend !== "SQLite") return // PostgreSQL's BIGINT column refuses text
        const tables = yield* SqlStorage.tables(db.options)
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(runtimes(db))
          const sql = Context.get(context, SqlClient.SqlClient)
          yield* Effect.provideContext(
            DurableObject.scheduleAlarm(Reminders, "text-fire-at", "ping", { in: 60_000 }),
            context
          )
          yield* sql.unsafe(`UPDATE ${tables.alarms} SET fire_at = 'soon' WHERE object_id = 'text-fire-at'`)
          const before = process.cpuUsage()
          yield* Effect.sleep(1_000)
          const used = process.cpuUsage(before)
          const cpuMs = (used.user + used.system) / 1000
          assert.isBelow(cpuMs, 300, `the idle scheduler used ${Math.round(cpuMs)} ms of CPU in 1 s`)
        }))
      }))
  })
