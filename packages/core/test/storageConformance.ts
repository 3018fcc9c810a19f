/**
 * The storage conformance suite: every `Storage` implementation (memory, SQLite, PostgreSQL) must pass these
 * same tests, so the runtime can rely on identical semantics everywhere.
 */
import { Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { TestClock } from "effect/testing"

const alarm = (name: string, fireAt: number, payload = "null"): Storage.AlarmPut => ({
  name,
  fireAt,
  payload,
  cron: null
})

/**
 * Registers the conformance tests for `layer`. `layer` must give each test a fresh, empty store (or one whose
 * object types the tests make unique).
 */
export const storageConformance = (name: string, layer: () => Layer.Layer<Storage.Storage, unknown>) => {
  let counter = 0
  const type = () => `Conformance${++counter}_${Math.random().toString(36).slice(2, 8)}`
  const run = <A, E>(effect: (storage: Storage.Storage["Service"], objectType: string) => Effect.Effect<A, E>) =>
    Effect.flatMap(Storage.Storage, (storage) => effect(storage, type())).pipe(Effect.provide(layer()))

  describe(`Storage conformance: ${name}`, () => {
    it.effect("an object never written loads as undefined", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          assert.isUndefined(yield* storage.load(t, "absent"))
          assert.deepStrictEqual(yield* storage.listAlarms(t, "absent"), [])
        })
      ))

    it.effect("the first commit creates version 1 and later commits bump it by one", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          assert.strictEqual(
            yield* storage.commit({ objectType: t, objectId: "a", expectedVersion: 0, state: "{\"n\":1}" }),
            1
          )
          assert.strictEqual(
            yield* storage.commit({ objectType: t, objectId: "a", expectedVersion: 1, state: "{\"n\":2}" }),
            2
          )
          const loaded = yield* storage.load(t, "a")
          assert.strictEqual(loaded?.version, 2)
          assert.deepStrictEqual(JSON.parse(loaded!.state), { n: 2 })
        })
      ))

    it.effect("a commit against a stale version fails with VersionConflict and writes nothing", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* storage.commit({ objectType: t, objectId: "a", expectedVersion: 0, state: "{\"n\":1}" })
          const stale = yield* Effect.exit(storage.commit({
            objectType: t,
            objectId: "a",
            expectedVersion: 0,
            state: "{\"n\":99}",
            alarms: { removeAll: false, remove: [], put: [alarm("x", 1000)] }
          }))
          assert.isTrue(Exit.isFailure(stale))
          const error = yield* Effect.flip(
            storage.commit({ objectType: t, objectId: "a", expectedVersion: 5, state: "{}" })
          )
          assert.strictEqual(error._tag, "VersionConflict")
          if (error._tag === "VersionConflict") {
            assert.strictEqual(error.expectedVersion, 5)
            assert.strictEqual(error.actualVersion, 1)
          }
          const loaded = yield* storage.load(t, "a")
          assert.strictEqual(loaded?.version, 1)
          assert.deepStrictEqual(JSON.parse(loaded!.state), { n: 1 })
          assert.deepStrictEqual(yield* storage.listAlarms(t, "a"), [])
        })
      ))

    it.effect("committing to an object that exists elsewhere as new (expected 0) conflicts", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* storage.commit({ objectType: t, objectId: "a", expectedVersion: 0, state: "{}" })
          const error = yield* Effect.flip(
            storage.commit({ objectType: t, objectId: "a", expectedVersion: 0, state: "{}" })
          )
          assert.strictEqual(error._tag, "VersionConflict")
        })
      ))

    it.effect("a delete removes the object and all its alarms, and is fenced too", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* storage.commit({
            objectType: t,
            objectId: "a",
            expectedVersion: 0,
            state: "{}",
            alarms: { removeAll: false, remove: [], put: [alarm("x", 1), alarm("y", 2)] }
          })
          const stale = yield* Effect.flip(
            storage.commit({ objectType: t, objectId: "a", expectedVersion: 7, state: null })
          )
          assert.strictEqual(stale._tag, "VersionConflict")
          assert.strictEqual(
            yield* storage.commit({ objectType: t, objectId: "a", expectedVersion: 1, state: null }),
            0
          )
          assert.isUndefined(yield* storage.load(t, "a"))
          assert.deepStrictEqual(yield* storage.listAlarms(t, "a"), [])
          // after a delete the object can be created afresh
          assert.strictEqual(
            yield* storage.commit({ objectType: t, objectId: "a", expectedVersion: 0, state: "{}" }),
            1
          )
        })
      ))

    it.effect("alarm changes commit with the state: put replaces by name, remove and removeAll delete", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* storage.commit({
            objectType: t,
            objectId: "a",
            expectedVersion: 0,
            state: "{}",
            alarms: { removeAll: false, remove: [], put: [alarm("late", 3000), alarm("early", 1000, "{\"k\":1}")] }
          })
          assert.deepStrictEqual(
            (yield* storage.listAlarms(t, "a")).map((a) => [a.name, a.fireAt, JSON.parse(a.payload), a.attempts]),
            [["early", 1000, { k: 1 }, 0], ["late", 3000, null, 0]]
          )
          yield* storage.commit({
            objectType: t,
            objectId: "a",
            expectedVersion: 1,
            state: "{}",
            alarms: { removeAll: false, remove: ["early"], put: [alarm("late", 500)] }
          })
          assert.deepStrictEqual((yield* storage.listAlarms(t, "a")).map((a) => [a.name, a.fireAt]), [["late", 500]])
          yield* storage.commit({
            objectType: t,
            objectId: "a",
            expectedVersion: 2,
            state: "{}",
            alarms: { removeAll: true, remove: [], put: [alarm("fresh", 9)] }
          })
          assert.deepStrictEqual((yield* storage.listAlarms(t, "a")).map((a) => a.name), ["fresh"])
        })
      ))

    it.effect("ids and states with quotes, unicode and SQL metacharacters round-trip unchanged", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          const ids = [
            "Robert'); DROP TABLE durable_objects;--",
            "ünïcødé 🎉",
            "back\\slash \"quoted\" %_*",
            "x".repeat(1024)
          ]
          for (const id of ids) {
            const state = JSON.stringify({ text: `${id} — ' " \\ \u2028` })
            yield* storage.commit({ objectType: t, objectId: id, expectedVersion: 0, state })
            const loaded = yield* storage.load(t, id)
            assert.deepStrictEqual(JSON.parse(loaded!.state), JSON.parse(state))
          }
        })
      ))

    it.effect("object types are separate namespaces", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* storage.commit({ objectType: t, objectId: "same", expectedVersion: 0, state: "{\"t\":1}" })
          yield* storage.commit({ objectType: `${t}x`, objectId: "same", expectedVersion: 0, state: "{\"t\":2}" })
          assert.deepStrictEqual(JSON.parse((yield* storage.load(t, "same"))!.state), { t: 1 })
          assert.deepStrictEqual(JSON.parse((yield* storage.load(`${t}x`, "same"))!.state), { t: 2 })
        })
      ))

    it.effect("listObjects pages the stored objects of a type by id, in code point order, without their state", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          // Code point order: "Z" < "a…" < "b" < U+E000 < U+1F600 (UTF-16 order would put U+1F600 first).
          const ids = ["b", "a/2", "\u{1F600}", "ab", "a", "\uE000", "Z", "a/1"]
          yield* TestClock.setTime(1_000)
          for (const id of ids) yield* storage.commit({ objectType: t, objectId: id, expectedVersion: 0, state: "{}" })
          yield* storage.commit({ objectType: `${t}x`, objectId: "other type", expectedVersion: 0, state: "{}" })
          yield* TestClock.adjust(500)
          yield* storage.commit({ objectType: t, objectId: "ab", expectedVersion: 1, state: "{\"n\":1}" })
          const order = ["Z", "a", "a/1", "a/2", "ab", "b", "\uE000", "\u{1F600}"]
          const page = (request: Storage.ListObjectsRequest) =>
            Effect.map(storage.listObjects(t, request), (rows) => rows.map((row) => row.objectId))
          assert.deepStrictEqual(yield* page({ limit: 100 }), order)
          assert.deepStrictEqual(yield* page({ limit: 3 }), order.slice(0, 3))
          assert.deepStrictEqual(yield* page({ limit: 3, after: "a/1" }), order.slice(3, 6))
          assert.deepStrictEqual(yield* page({ limit: 3, after: "b" }), order.slice(6))
          assert.deepStrictEqual(yield* page({ limit: 3, after: "\u{1F600}" }), [])
          assert.deepStrictEqual(yield* page({ limit: 100, prefix: "a" }), ["a", "a/1", "a/2", "ab"])
          assert.deepStrictEqual(yield* page({ limit: 100, prefix: "a/" }), ["a/1", "a/2"])
          assert.deepStrictEqual(yield* page({ limit: 1, prefix: "a/", after: "a/1" }), ["a/2"])
          assert.deepStrictEqual(yield* page({ limit: 100, prefix: "\uE000" }), ["\uE000"])
          assert.deepStrictEqual(yield* page({ limit: 100, prefix: "c" }), [])
          const [ab] = yield* storage.listObjects(t, { limit: 1, after: "a/2" })
          assert.deepStrictEqual(ab, { objectId: "ab", version: 2, createdAt: 1_000, updatedAt: 1_500 })
          assert.deepStrictEqual(yield* storage.listObjects(`${t}_none`, { limit: 10 }), [])
        })
      ))

    it.effect("inspectObject reads an object's state, version and times; a deleted object is not stored", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          assert.isUndefined(yield* storage.inspectObject(t, "a"))
          yield* TestClock.setTime(2_000)
          yield* storage.commit({ objectType: t, objectId: "a", expectedVersion: 0, state: "{\"n\":1}" })
          yield* TestClock.adjust(250)
          yield* storage.commit({ objectType: t, objectId: "a", expectedVersion: 1, state: "{\"n\":2}" })
          const stored = yield* storage.inspectObject(t, "a")
          assert.deepStrictEqual(JSON.parse(stored!.state), { n: 2 })
          assert.deepStrictEqual({ ...stored, state: undefined }, {
            state: undefined,
            version: 2,
            createdAt: 2_000,
            updatedAt: 2_250
          })
          yield* storage.commit({ objectType: t, objectId: "a", expectedVersion: 2, state: null })
          assert.isUndefined(yield* storage.inspectObject(t, "a"))
          assert.deepStrictEqual(yield* storage.listObjects(t, { limit: 10 }), [])
        })
      ))

    it.effect("concurrent commits against the same version: exactly one wins", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* storage.commit({ objectType: t, objectId: "a", expectedVersion: 0, state: "{}" })
          const exits = yield* Effect.forEach(
            Array.from({ length: 10 }, (_, i) => i),
            (i) =>
              Effect.exit(storage.commit({ objectType: t, objectId: "a", expectedVersion: 1, state: `{"i":${i}}` })),
            { concurrency: "unbounded" }
          )
          assert.strictEqual(exits.filter(Exit.isSuccess).length, 1)
          assert.strictEqual((yield* storage.load(t, "a"))?.version, 2)
        })
      ))
  })
}
