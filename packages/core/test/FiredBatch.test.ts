/**
 * The commits of fired alarms that queue up together go out as one statement removing the fired alarms and
 * one writing the states. Each keeps its own outcome, fenced on its claim and its version, exactly as when
 * committed alone.
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Layer } from "effect"
import { Statement } from "effect/sql"
import { type Backend, sqlBackends as backends, type TestDatabase } from "./backends.ts"

/**
 * Records every SQL statement run under it, failing those that match `fail`. The leader's write (see
 * `fireAll`) is held for a moment, so the writes behind it queue up on every backend (SQLite's client runs
 * a lone statement without ever suspending).
 */
const observe = (fail?: (sql: string) => boolean) => {
  const statements: Array<string> = []
  const transformer: Statement.Transformer = (statement, sql) =>
    Effect.suspend(() => {
      const [text, params] = statement.compile()
      statements.push(text)
      if (fail !== undefined && fail(text)) {
        return Effect.succeed(sql`SELECT * FROM durable_object_injected_fault` as Statement.Statement<unknown>)
      }
      const leader = params.some((p) => typeof p === "string" && p.endsWith("_leader"))
      return leader ? Effect.as(Effect.sleep(20), statement) : Effect.succeed(statement)
    })
  return { statements, provide: Effect.provideService(Statement.CurrentTransformer, transformer) }
}

// One commit queue: the fired commits must queue behind the leader's.
const storage = (db: TestDatabase, maxBatch?: number) =>
  Layer.effect(Storage.Storage, SqlStorage.make({ ...db.options, commitConcurrency: 1, maxBatch })).pipe(
    Layer.provide(db.client())
  )

const withStorage = <A, E>(backend: Backend, f: Effect.Effect<A, E, Storage.Storage>, maxBatch?: number) =>
  Effect.flatMap(backend.database, (db) => Effect.provide(f, storage(db, maxBatch)))

const ids = ["a", "b", "c", "d", "e"]
const now = 10_000
const isBulkDelete = (sql: string) => /DELETE FROM .* IN \(VALUES/s.test(sql)

/** Objects `objectIds` (version 1), each with alarm "tick" due, all claimed; returns the claims by object. */
const seed = (store: Storage.Storage["Service"], type: string, objectIds: ReadonlyArray<string> = ids) =>
  Effect.gen(function*() {
    for (const id of objectIds) {
      yield* store.commit({
        objectType: type,
        objectId: id,
        expectedVersion: 0,
        state: "{\"n\":0}",
        alarms: { removeAll: false, remove: [], put: [{ name: "tick", fireAt: now - 1, payload: "null", cron: null }] }
      })
    }
    const claimed = yield* store.claimDueAlarms({
      objectTypes: [type],
      now,
      claim: "claim-1",
      leaseMillis: 60_000,
      limit: 1000
    })
    assert.strictEqual(claimed.length, objectIds.length)
    return claimed
  })

/**
 * Commits the fired alarm of each of `objectIds` concurrently, behind a leader write to another object, so
 * they queue while the leader commits and go out as one batch.
 */
const fireAll = (
  store: Storage.Storage["Service"],
  type: string,
  claim: (id: string) => string,
  objectIds: ReadonlyArray<string> = ids
) =>
  Effect.gen(function*() {
    const leader = yield* Effect.forkChild(
      store.commit({ objectType: `${type}_leader`, objectId: "x", expectedVersion: 0, state: "{}" }),
      { startImmediately: true }
    )
    const exits = yield* Effect.forEach(
      objectIds,
      (id) =>
        Effect.exit(store.commit({
          objectType: type,
          objectId: id,
          expectedVersion: 1,
          state: `{"n":1,"id":"${id}"}`,
          alarms: { fired: { name: "tick", claim: claim(id) }, removeAll: false, remove: [], put: [] }
        })),
      { concurrency: "unbounded" }
    )
    yield* Fiber.await(leader)
    return exits
  })

const failureTag = (exit: Exit.Exit<unknown, unknown>) => {
  if (Exit.isSuccess(exit)) return "ok"
  const error = Cause.findError(exit.cause)
  return error._tag === "Success" ? (error.success as { readonly _tag: string })._tag : "defect"
}

for (const backend of backends) {
  describe(`Batched alarm commits on ${backend.name}`, () => {
    it.live("fired alarms commit together; one whose claim was lost fails alone and writes nothing", () =>
      withStorage(
        backend,
        Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = `F${Math.random().toString(36).slice(2, 8)}`
          yield* seed(store, type)
          const spy = observe()
          const exits = yield* fireAll(store, type, (id) => (id === "c" ? "someone-else" : "claim-1")).pipe(spy.provide)
          assert.deepStrictEqual(exits.map(failureTag), ["ok", "ok", "AlarmClaimLost", "ok", "ok"])
          assert.strictEqual(spy.statements.filter(isBulkDelete).length, 1, "the fired commits went out together")
          for (const id of ids) {
            const lost = id === "c"
            assert.strictEqual((yield* store.load(type, id))?.version, lost ? 1 : 2)
            assert.strictEqual((yield* store.listAlarms(type, id)).length, lost ? 1 : 0)
          }
        })
      ))

    it.live("a batch of more fired alarms than one statement removes keeps each write's own outcome", () =>
      withStorage(
        backend,
        Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = `F${Math.random().toString(36).slice(2, 8)}`
          const many = Array.from({ length: 300 }, (_, i) => `m${i}`)
          yield* seed(store, type, many)
          // one lost claim in each statement's share of the batch
          const lost = new Set(["m3", "m290"])
          const spy = observe()
          const exits = yield* fireAll(store, type, (id) => (lost.has(id) ? "lost" : "claim-1"), many).pipe(
            spy.provide
          )
          assert.deepStrictEqual(exits.map(failureTag), many.map((id) => (lost.has(id) ? "AlarmClaimLost" : "ok")))
          assert.isAbove(spy.statements.filter(isBulkDelete).length, 0, "the fired commits went out together")
          for (const id of many) {
            assert.strictEqual((yield* store.load(type, id))?.version, lost.has(id) ? 1 : 2)
            assert.strictEqual((yield* store.listAlarms(type, id)).length, lost.has(id) ? 1 : 0)
          }
        }),
        1024
      ))

    it.live("alarms they cancel or schedule (a recurring alarm re-arming) go with them; a lost claim's do not", () =>
      withStorage(
        backend,
        Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = `F${Math.random().toString(36).slice(2, 8)}`
          yield* seed(store, type)
          // every object also has an alarm "other" that its handler cancels
          for (const id of ids) {
            yield* store.commit({
              objectType: type,
              objectId: id,
              expectedVersion: 1,
              state: "{\"n\":0}",
              alarms: {
                removeAll: false,
                remove: [],
                put: [{ name: "other", fireAt: now + 99_000, payload: "null", cron: null }]
              }
            })
          }
          const spy = observe()
          // Under the spy too: it holds the leader's write, so the fired commits queue behind it.
          const leader = yield* Effect.forkChild(
            store.commit({ objectType: `${type}_leader`, objectId: "x", expectedVersion: 0, state: "{}" }).pipe(
              spy.provide
            ),
            { startImmediately: true }
          )
          const exits = yield* Effect.forEach(
            ids,
            (id) =>
              Effect.exit(store.commit({
                objectType: type,
                objectId: id,
                expectedVersion: 2,
                state: `{"n":1,"id":"${id}"}`,
                alarms: {
                  fired: { name: "tick", claim: id === "b" ? "lost" : "claim-1" },
                  removeAll: false,
                  remove: ["other"],
                  put: [
                    { name: "tick", fireAt: now + 60_000, payload: `{"again":"${id}"}`, cron: "{}" },
                    { name: "next", fireAt: now + 5_000, payload: "null", cron: null }
                  ]
                }
              })),
            { concurrency: "unbounded" }
          ).pipe(spy.provide)
          yield* Fiber.await(leader)
          assert.deepStrictEqual(exits.map(failureTag), ["ok", "AlarmClaimLost", "ok", "ok", "ok"])
          assert.strictEqual(spy.statements.filter(isBulkDelete).length, 2, "fired alarms, then cancelled ones")
          if (backend.name === "PostgreSQL") {
            assert.strictEqual(spy.statements.filter((s) => s.includes("pg_notify")).length, 1)
          }
          for (const id of ids) {
            const listed = (yield* store.listAlarms(type, id)).map((a) => [a.name, a.fireAt, a.attempts, a.cron])
            if (id === "b") {
              assert.strictEqual((yield* store.load(type, id))?.version, 2)
              assert.deepStrictEqual(listed, [["tick", now - 1, 1, null], ["other", now + 99_000, 0, null]])
            } else {
              assert.strictEqual((yield* store.load(type, id))?.version, 3)
              assert.deepStrictEqual(listed, [["next", now + 5_000, 0, null], ["tick", now + 60_000, 0, "{}"]])
              const tick = (yield* store.listAlarms(type, id)).find((a) => a.name === "tick")
              assert.deepStrictEqual(JSON.parse(tick!.payload), { again: id })
            }
          }
        })
      ))

    it.live("a version conflict among them undoes the batch; each write then gets its own outcome", () =>
      withStorage(
        backend,
        Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = `F${Math.random().toString(36).slice(2, 8)}`
          yield* seed(store, type)
          // "d" moves on elsewhere: its alarm's commit names a stale version
          yield* store.commit({ objectType: type, objectId: "d", expectedVersion: 1, state: "{\"n\":50}" })
          const spy = observe()
          const exits = yield* fireAll(store, type, () => "claim-1").pipe(spy.provide)
          assert.deepStrictEqual(exits.map(failureTag), ["ok", "ok", "ok", "VersionConflict", "ok"])
          assert.strictEqual(spy.statements.filter(isBulkDelete).length, 1, "the batch was tried first")
          for (const id of ids) {
            const conflicted = id === "d"
            assert.strictEqual((yield* store.load(type, id))?.version, 2)
            assert.strictEqual((yield* store.listAlarms(type, id)).length, conflicted ? 1 : 0)
          }
          assert.deepStrictEqual(JSON.parse((yield* store.load(type, "d"))!.state), { n: 50 })
        })
      ))

    it.live("an SQL failure of the batched statement fails every write of the batch, and nothing is written", () =>
      withStorage(
        backend,
        Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = `F${Math.random().toString(36).slice(2, 8)}`
          yield* seed(store, type)
          const spy = observe(isBulkDelete)
          const exits = yield* fireAll(store, type, () => "claim-1").pipe(spy.provide)
          assert.deepStrictEqual(exits.map(failureTag), ids.map(() => "StorageError"))
          for (const id of ids) {
            assert.strictEqual((yield* store.load(type, id))?.version, 1)
            assert.strictEqual((yield* store.listAlarms(type, id)).length, 1)
          }
        })
      ))
  })
}
