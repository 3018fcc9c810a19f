/**
 * The alarm half of the storage conformance suite: claiming due alarms, leases, releases and the next alarm
 * time must behave the same on every `Storage` (memory, SQLite, PostgreSQL), since the scheduler relies on
 * nothing else.
 */
import { Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { TestClock } from "effect/testing"

const alarm = (name: string, fireAt: number): Storage.AlarmPut => ({ name, fireAt, payload: "null", cron: null })

const lease = 1_000

/** Writes object `id` (version 0 → 1) with `alarms`. */
const seed = (storage: Storage.Storage["Service"], t: string, id: string, alarms: ReadonlyArray<Storage.AlarmPut>) =>
  storage.commit({
    objectType: t,
    objectId: id,
    expectedVersion: 0,
    state: "{}",
    alarms: { removeAll: false, remove: [], put: alarms }
  })

const claim = (storage: Storage.Storage["Service"], types: ReadonlyArray<string>, now: number, limit = 100) =>
  storage.claimDueAlarms({ objectTypes: types, now, claim: `c${now}_${Math.random()}`, leaseMillis: lease, limit })

/** Claims come back in no particular order (SQL's RETURNING has none): they are compared by fire time. */
const byTime = (claimed: ReadonlyArray<Storage.ClaimedAlarm>) =>
  claimed.toSorted((a, b) => a.fireAt - b.fireAt || (a.objectId < b.objectId ? -1 : 1))
const keys = (claimed: ReadonlyArray<Storage.ClaimedAlarm>) => byTime(claimed).map((a) => `${a.objectId}.${a.name}`)

/** Registers the alarm conformance tests for `layer` (a fresh store, or one whose object types are unique). */
export const alarmConformance = (name: string, layer: () => Layer.Layer<Storage.Storage, unknown>) => {
  let counter = 0
  const type = () => `Alarms${++counter}_${Math.random().toString(36).slice(2, 8)}`
  const run = <A, E>(effect: (storage: Storage.Storage["Service"], t: string) => Effect.Effect<A, E>) =>
    Effect.flatMap(Storage.Storage, (storage) => effect(storage, type())).pipe(Effect.provide(layer()))

  describe(`Alarm storage conformance: ${name}`, () => {
    it.effect("claims the due alarms of the requested types, earliest first, at most `limit`", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          const other = `${t}_other`
          yield* seed(storage, t, "a", [alarm("x", 300), alarm("y", 100), alarm("later", 1_200)])
          yield* seed(storage, t, "b", [alarm("x", 200)])
          yield* seed(storage, other, "c", [alarm("x", 150)])
          assert.deepStrictEqual(keys(yield* claim(storage, [], 1_000)), [])
          const first = byTime(yield* claim(storage, [t], 1_000, 2))
          assert.deepStrictEqual(keys(first), ["a.y", "b.x"])
          assert.deepStrictEqual(first.map((a) => [a.objectType, a.attempts, a.fireAt]), [[t, 1, 100], [t, 1, 200]])
          assert.deepStrictEqual(keys(yield* claim(storage, [t], 1_000)), ["a.x"])
          assert.deepStrictEqual(keys(yield* claim(storage, [t], 1_000)), [], "claimed alarms are not claimed again")
          // Before the first claims' leases end (at 2,000): only the alarms nobody holds.
          assert.deepStrictEqual(keys(yield* claim(storage, [t, other], 1_500)), ["c.x", "a.later"])
        })
      ))

    it.effect("across several types the earliest due alarms come first", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          const u = `${t}_u`
          yield* seed(storage, t, "a", [alarm("p", 10), alarm("q", 40)])
          yield* seed(storage, u, "b", [alarm("p", 20), alarm("q", 30)])
          const claimed = byTime(yield* claim(storage, [t, u], 100, 3))
          assert.deepStrictEqual(claimed.map((a) => [a.objectType === t ? "t" : "u", a.fireAt]), [
            ["t", 10],
            ["u", 20],
            ["u", 30]
          ])
        })
      ))

    it.effect("a claim whose lease expired can be taken over; the old claim can then neither commit nor release", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* seed(storage, t, "a", [alarm("x", 100)])
          const [first] = yield* claim(storage, [t], 1_000)
          assert.strictEqual(first?.attempts, 1)
          assert.strictEqual(yield* storage.nextAlarmAt([t]), 1_000 + lease, "claimable again when the lease ends")
          assert.deepStrictEqual(keys(yield* claim(storage, [t], 1_000 + lease - 1)), [])
          const [second] = yield* claim(storage, [t], 1_000 + lease)
          assert.strictEqual(second?.attempts, 2)
          assert.notStrictEqual(second?.claim, first?.claim)
          const lost = yield* Effect.exit(storage.commit({
            objectType: t,
            objectId: "a",
            expectedVersion: 1,
            state: "{\"late\":true}",
            alarms: { fired: { name: "x", claim: first!.claim }, removeAll: false, remove: [], put: [] }
          }))
          assert.isTrue(Exit.isFailure(lost))
          assert.strictEqual((yield* storage.load(t, "a"))?.version, 1, "nothing of the stale commit applied")
          const released = yield* storage.releaseAlarm({
            objectType: t,
            objectId: "a",
            name: "x",
            claim: first!.claim,
            retryAt: 5_000,
            error: "stale",
            now: 2_000
          })
          assert.isFalse(released)
          // The current claim still commits, removing the alarm with the state change.
          assert.strictEqual(
            yield* storage.commit({
              objectType: t,
              objectId: "a",
              expectedVersion: 1,
              state: "{\"fired\":true}",
              alarms: { fired: { name: "x", claim: second!.claim }, removeAll: false, remove: [], put: [] }
            }),
            2
          )
          assert.deepStrictEqual(yield* storage.listAlarms(t, "a"), [])
          assert.isUndefined(yield* storage.nextAlarmAt([t]))
        })
      ))

    it.effect("a release retries the alarm later or marks it failed; failed alarms never fire or count as next", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* seed(storage, t, "a", [alarm("retry", 100), alarm("fail", 200)])
          const claimed = byTime(yield* claim(storage, [t], 1_000))
          assert.deepStrictEqual(keys(claimed), ["a.retry", "a.fail"])
          const [retry, fail] = claimed
          assert.isTrue(
            yield* storage.releaseAlarm({
              objectType: t,
              objectId: "a",
              name: "retry",
              claim: retry!.claim,
              retryAt: 3_000,
              error: "boom",
              now: 1_000
            })
          )
          assert.isTrue(
            yield* storage.releaseAlarm({
              objectType: t,
              objectId: "a",
              name: "fail",
              claim: fail!.claim,
              retryAt: null,
              error: "gave up",
              now: 1_000
            })
          )
          assert.strictEqual(yield* storage.nextAlarmAt([t]), 3_000)
          assert.deepStrictEqual(keys(yield* claim(storage, [t], 2_999)), [])
          const again = yield* claim(storage, [t], 10_000)
          assert.deepStrictEqual(again.map((a) => [a.name, a.attempts, a.fireAt, a.lastError]), [
            ["retry", 2, 3_000, "boom"]
          ])
          const listed = yield* storage.listAlarms(t, "a")
          const failed = listed.find((a) => a.name === "fail")
          assert.deepStrictEqual([failed?.failedAt, failed?.lastError], [1_000, "gave up"])
          assert.strictEqual(yield* storage.nextAlarmAt([t]), 10_000 + lease)
        })
      ))

    it.effect("scheduling a name again replaces a claimed alarm: the new one is unclaimed, the old claim is lost", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* seed(storage, t, "a", [alarm("x", 100)])
          const [first] = yield* claim(storage, [t], 1_000)
          yield* storage.commit({
            objectType: t,
            objectId: "a",
            expectedVersion: 1,
            state: "{}",
            alarms: { removeAll: false, remove: [], put: [alarm("x", 1_500)] }
          })
          assert.strictEqual(yield* storage.nextAlarmAt([t]), 1_500)
          const [second] = yield* claim(storage, [t], 1_500)
          assert.deepStrictEqual([second?.name, second?.attempts, second?.fireAt], ["x", 1, 1_500])
          const lost = yield* Effect.exit(storage.commit({
            objectType: t,
            objectId: "a",
            expectedVersion: 2,
            state: "{}",
            alarms: { fired: { name: "x", claim: first!.claim }, removeAll: false, remove: [], put: [] }
          }))
          assert.isTrue(Exit.isFailure(lost))
        })
      ))

    it.effect("listAlarms tells who holds an alarm until when, and since when it is scheduled", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* TestClock.setTime(50)
          yield* seed(storage, t, "a", [alarm("x", 100), alarm("y", 5_000)])
          yield* claim(storage, [t], 1_000)
          const listed = yield* storage.listAlarms(t, "a")
          assert.deepStrictEqual(
            listed.map((a) => [a.name, a.attempts, a.claimExpiresAt, a.createdAt]),
            [["x", 1, 1_000 + lease, 50], ["y", 0, null, 50]]
          )
        })
      ))

    it.effect("listFailedAlarms pages a type's failed alarms by (object id, name), with their last error", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* seed(storage, t, "b", [alarm("x", 100), alarm("pending", 100)])
          yield* seed(storage, t, "a", [alarm("y", 100), alarm("x", 100)])
          yield* seed(storage, t, "c", [alarm("x", 100), alarm("later", 9_000)])
          yield* seed(storage, `${t}_other`, "a", [alarm("x", 100)])
          const claimed = yield* claim(storage, [t, `${t}_other`], 1_000)
          for (const c of claimed) {
            if (c.name === "pending") continue
            // Every claimed alarm fails but b.pending, which waits for a retry with its error.
            yield* storage.releaseAlarm({
              objectType: c.objectType,
              objectId: c.objectId,
              name: c.name,
              claim: c.claim,
              retryAt: null,
              error: `boom ${c.objectId}.${c.name}`,
              now: 1_100
            })
          }
          const pending = claimed.find((c) => c.name === "pending")!
          yield* storage.releaseAlarm({ ...pending, retryAt: 3_000, error: "retry me", now: 1_100 })
          const page = (request: Storage.ListFailedAlarmsRequest) =>
            Effect.map(storage.listFailedAlarms(t, request), (rows) => rows.map((a) => `${a.objectId}.${a.name}`))
          assert.deepStrictEqual(yield* page({ limit: 100 }), ["a.x", "a.y", "b.x", "c.x"])
          assert.deepStrictEqual(yield* page({ limit: 2 }), ["a.x", "a.y"])
          assert.deepStrictEqual(yield* page({ limit: 2, after: { objectId: "a", name: "y" } }), ["b.x", "c.x"])
          assert.deepStrictEqual(yield* page({ limit: 2, after: { objectId: "a", name: "x" } }), ["a.y", "b.x"])
          assert.deepStrictEqual(yield* page({ limit: 2, after: { objectId: "c", name: "x" } }), [])
          const [first] = yield* storage.listFailedAlarms(t, { limit: 1 })
          assert.deepStrictEqual(
            [first!.objectId, first!.name, first!.attempts, first!.failedAt, first!.lastError, first!.claimExpiresAt],
            ["a", "x", 1, 1_100, "boom a.x", null]
          )
        })
      ))

    it.effect("cancelled alarms and the alarms of a deleted object are never claimed", () =>
      run((storage, t) =>
        Effect.gen(function*() {
          yield* seed(storage, t, "a", [alarm("x", 100), alarm("y", 100)])
          yield* seed(storage, t, "b", [alarm("x", 100)])
          yield* seed(storage, t, "c", [alarm("x", 100)])
          yield* storage.commit({
            objectType: t,
            objectId: "a",
            expectedVersion: 1,
            state: "{}",
            alarms: { removeAll: false, remove: ["x"], put: [] }
          })
          yield* storage.commit({
            objectType: t,
            objectId: "b",
            expectedVersion: 1,
            state: "{}",
            alarms: { removeAll: true, remove: [], put: [] }
          })
          yield* storage.commit({ objectType: t, objectId: "c", expectedVersion: 1, state: null })
          assert.deepStrictEqual(keys(yield* claim(storage, [t], 1_000)), ["a.y"])
          assert.strictEqual(yield* storage.nextAlarmAt([t]), 1_000 + lease)
        })
      ))
  })
}
