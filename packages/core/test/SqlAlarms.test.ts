import { Alarms, DurableObject, DurableObjectTest, SqlStorage, Storage } from "@durable-object/core"
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Layer, Redacted, Schema } from "effect"
import type { SqlClient } from "effect/sql"
import { inject } from "vitest"
import { sqlBackends as backends, type TestDatabase } from "./backends.ts"
import { Reminders } from "./fixtures.ts"

/** Records when each alarm ran relative to its due time. */
const Lateness = DurableObject.defineObject({
  name: "Lateness",
  state: Schema.Struct({ lateness: Schema.Array(Schema.Number) }),
  initialState: () => ({ lateness: [] }),
  handlers: {
    at: {
      payload: Schema.Struct({ at: Schema.Number }),
      handle: ({ at }, ctx) => ctx.alarms.schedule("due", { at })
    },
    read: { success: Schema.Array(Schema.Number), handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.lateness) }
  },
  alarms: {
    due: {
      handle: (_, ctx) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) =>
          ctx.state.update((s) => ({
            lateness: [...s.lateness, now - ctx.alarm.scheduledAt.epochMilliseconds]
          })))
    }
  }
})

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN

/** `SqlStorage` (with a quick-polling scheduler) on the test's database, over new connections. */
const storage = (db: TestDatabase, client?: Layer.Layer<SqlClient.SqlClient, unknown>) =>
  SqlStorage.layer({ ...db.options, alarms: { pollInterval: "100 millis", leaseDuration: "10 seconds" } }).pipe(
    Layer.provide(client ?? db.client())
  )

const runtime = <D extends DurableObject.AnyDefinition>(
  definition: D,
  db: TestDatabase,
  client?: Layer.Layer<SqlClient.SqlClient, unknown>
) =>
  definition.layer.pipe(Layer.provideMerge(storage(db, client))) as Layer.Layer<
    DurableObject.Runtime<D["name"]> | import("@durable-object/core").Storage.Storage,
    unknown
  >

for (const backend of backends) {
  describe(`Alarms on ${backend.name}`, () => {
    it.live("an alarm survives a restart of the runtime and fires when the runtime is back", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Reminders.client("r1").ping({ inMillis: 300 }).pipe(Effect.provide(runtime(Reminders, db)))
        // the first runtime is gone before the alarm is due
        yield* Effect.sleep("500 millis")
        const fired = yield* Effect.gen(function*() {
          for (let i = 0; i < 50; i++) {
            const state = yield* DurableObjectTest.persistedState(Reminders, "r1")
            if ((state?.fired.length ?? 0) > 0) return state!.fired
            yield* Effect.sleep("100 millis")
          }
          return []
        }).pipe(Effect.provide(runtime(Reminders, db)))
        assert.deepStrictEqual(fired, ["ping"])
      }))

    it.live(
      "two runtimes on one database fire each of 1,000 alarms exactly once in effect",
      () =>
        Effect.gen(function*() {
          const db = yield* backend.database
          const ids = Array.from({ length: 1000 }, (_, i) => `o${i}`)
          // Two runtimes, each with its own storage and scheduler, over one client: on SQLite one client per
          // file and process is the supported setup (docs/storage.md); on PostgreSQL it is one pool.
          const client = Layer.succeedContext(yield* Layer.build(db.client()))
          const a = yield* Layer.build(runtime(Reminders, db, client))
          const b = yield* Layer.build(runtime(Reminders, db, client))
          yield* Effect.forEach(
            ids,
            (id, i) =>
              Reminders.client(id).ping({ inMillis: 200 + Math.floor(Math.random() * 800) }).pipe(
                Effect.provide(i % 2 === 0 ? a : b)
              ),
            { concurrency: 50, discard: true }
          )
          const counts = yield* Effect.gen(function*() {
            for (let round = 0; round < 100; round++) {
              yield* Effect.sleep("200 millis")
              const states = yield* Effect.forEach(ids, (id) => DurableObjectTest.persistedState(Reminders, id), {
                concurrency: 20
              })
              const fired = states.map((s) => s?.fired.length ?? 0)
              if (fired.every((n) => n >= 1)) return fired
            }
            return []
          }).pipe(Effect.provide(a))
          assert.strictEqual(counts.length, 1000, "every alarm fired")
          assert.isTrue(counts.every((n) => n === 1), "no alarm's effect was applied twice")
          const left = yield* Effect.forEach(ids, (id) => DurableObject.listAlarms(Reminders, id), { concurrency: 20 })
            .pipe(Effect.provide(a))
          assert.strictEqual(left.flat().length, 0)
        }),
      60_000
    )

    it.live(
      "recurring alarms of many objects due together re-arm through their shared commits",
      () =>
        Effect.gen(function*() {
          const db = yield* backend.database
          const ids = Array.from({ length: 300 }, (_, i) => `r${i}`)
          yield* Effect.gen(function*() {
            yield* Effect.forEach(ids, (id) => Reminders.client(id).every({ cron: "* * * * * *" }), {
              concurrency: 50,
              discard: true
            })
            let fired: ReadonlyArray<number> = []
            for (let round = 0; round < 60; round++) {
              yield* Effect.sleep("250 millis")
              fired = yield* Effect.forEach(
                ids,
                (id) => Effect.map(Reminders.client(id).read(), (s) => s.fired.length),
                {
                  concurrency: 50
                }
              )
              if (fired.every((n) => n >= 2)) break
            }
            assert.isTrue(fired.every((n) => n >= 2), "every object's alarm fired at least twice")
            const now = yield* Clock.currentTimeMillis
            const alarms = yield* Effect.forEach(ids, (id) => DurableObject.listAlarms(Reminders, id), {
              concurrency: 50
            })
            for (const listed of alarms) {
              assert.deepStrictEqual(listed.map((a) => a.name), ["tick"], "re-armed, once")
              assert.isTrue(listed[0]!.fireAt.epochMilliseconds > now - 2_000)
            }
          }).pipe(Effect.provide(runtime(Reminders, db)))
        }),
      60_000
    )

    it.live(
      "near alarms fire within milliseconds of their time (lateness is measured and reported)",
      () =>
        Effect.gen(function*() {
          const db = yield* backend.database
          yield* Effect.gen(function*() {
            const now = yield* Clock.currentTimeMillis
            const ids = Array.from({ length: 300 }, (_, i) => `l${i}`)
            yield* Effect.forEach(
              ids,
              (id) => Lateness.client(id).at({ at: now + 500 + Math.floor(Math.random() * 2000) }),
              { concurrency: 30, discard: true }
            )
            yield* Effect.sleep("3 seconds")
            const lateness: Array<number> = []
            for (let round = 0; round < 50 && lateness.length < ids.length; round++) {
              lateness.length = 0
              for (const id of ids) lateness.push(...(yield* Lateness.client(id).read()))
              if (lateness.length < ids.length) yield* Effect.sleep("200 millis")
            }
            const sorted = lateness.toSorted((x, y) => x - y)
            console.log(
              `[${backend.name}] alarm lateness over ${sorted.length} alarms: p50 ${percentile(sorted, 0.5)} ms, p99 ${
                percentile(sorted, 0.99)
              } ms, max ${sorted.at(-1)} ms`
            )
            assert.strictEqual(sorted.length, ids.length)
          }).pipe(Effect.provide(runtime(Lateness, db)))
        }),
      30_000
    )
  })
}

const pg = () => PgClient.layer({ url: Redacted.make(inject("postgresUrl")), maxConnections: 4 })

describe("Alarms on PostgreSQL: LISTEN/NOTIFY", () => {
  it.live("an alarm committed by another process wakes this runtime long before its next poll", () => {
    const prefix = `notify_${Date.now() % 100000}_`
    // The writer has no scheduler of its own: only the listener can fire the alarm.
    const writer = Reminders.layer.pipe(
      Layer.provide(
        Layer.succeed(Alarms.Scheduler, { register: () => Effect.void, wake: () => {}, repliesStored: () => {} })
      ),
      Layer.provideMerge(Layer.effect(Storage.Storage, SqlStorage.make({ tablePrefix: prefix }))),
      Layer.provide(pg())
    )
    const listener = Reminders.layer.pipe(
      Layer.provideMerge(SqlStorage.layer({ tablePrefix: prefix, alarms: { pollInterval: "1 hour" } })),
      Layer.provide(pg())
    )
    return Effect.gen(function*() {
      const listening = yield* Layer.build(listener)
      yield* Effect.sleep("300 millis") // let LISTEN settle before the write
      yield* Reminders.client("n").ping({ inMillis: 200 }).pipe(Effect.provide(writer))
      let fired: ReadonlyArray<string> = []
      for (let i = 0; i < 30 && fired.length === 0; i++) {
        yield* Effect.sleep("100 millis")
        fired = (yield* DurableObjectTest.persistedState(Reminders, "n").pipe(Effect.provide(listening)))?.fired ?? []
      }
      assert.deepStrictEqual(fired, ["ping"])
    })
  }, 20_000)
})
