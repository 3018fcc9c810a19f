/**
 * The operator's side of the runtime on every backend: listing stored objects, inspecting one (including one
 * whose state no longer decodes), and finding, retrying and cancelling failed alarms through the runtime.
 */
import { Alarms, DurableObject, SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Schema, Scope } from "effect"
import { sqlBackends } from "./backends.ts"

class Broken extends Schema.TaggedError<Broken>()("Broken", { why: Schema.String }) {
  override get message(): string {
    return this.why
  }
}

/** An object whose alarm fails while its state says so, and gives up at once (no retries). */
const Job = DurableObject.defineObject({
  name: "InspectedJob",
  state: Schema.Struct({ runs: Schema.Number, broken: Schema.Boolean }),
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
    touch: { success: Schema.Number, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.runs) }
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

type Backend = {
  readonly name: string
  readonly layer: Effect.Effect<
    Layer.Layer<Storage.Storage | Storage.Scheduler, unknown>,
    never,
    import("effect").Scope.Scope
  >
}

const backends: ReadonlyArray<Backend> = [
  { name: "memory", layer: Effect.succeed(Storage.layerMemory) },
  ...sqlBackends.map((backend): Backend => ({
    name: backend.name,
    layer: Effect.map(
      backend.database,
      (db) =>
        SqlStorage.layer({ ...db.options, alarms: { pollInterval: "50 millis" } }).pipe(Layer.provide(db.client()))
    )
  }))
]

/** Runs `body` with Job's runtime over a fresh storage of `backend`. */
const withJob = <A, E>(
  backend: Backend,
  body: Effect.Effect<A, E, DurableObject.Runtime<"InspectedJob"> | Storage.Storage>
) => Effect.flatMap(backend.layer, (storage) => Effect.provide(body, Job.layer.pipe(Layer.provideMerge(storage))))

/** Waits (in real time) until `check` holds. */
const eventually = <E, R>(check: Effect.Effect<boolean, E, R>) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      if (yield* check) return
      yield* Effect.sleep("20 millis")
    }
    assert.fail("timed out waiting")
  })

for (const backend of backends) {
  describe(`Listing and inspection on ${backend.name}`, () => {
    it.live("list pages the stored objects with their status; objects never written are not listed", () =>
      withJob(
        backend,
        Effect.gen(function*() {
          for (const id of ["c", "a", "b/1", "b/2"]) {
            yield* Job.client(id).schedule({ broken: false, inMillis: 3_600_000 })
          }
          yield* Job.client("only-read").touch()
          yield* DurableObject.stop(Job, "a")
          const first = yield* DurableObject.list(Job, { limit: 2 })
          assert.deepStrictEqual(first.objects.map((o) => [o.id, o.version, o.status]), [
            ["a", 1, "stopped"],
            ["b/1", 1, "active"]
          ])
          assert.strictEqual(first.next, "b/1")
          const second = yield* DurableObject.list(Job, { limit: 2, after: first.next })
          assert.deepStrictEqual(second.objects.map((o) => o.id), ["b/2", "c"])
          assert.isUndefined(second.next, "the last page has no next")
          const prefixed = yield* DurableObject.list(Job, { prefix: "b/" })
          assert.deepStrictEqual(prefixed.objects.map((o) => o.id), ["b/1", "b/2"])
          const o = first.objects[0]!
          assert.isTrue(o.updatedAt.epochMilliseconds >= o.createdAt.epochMilliseconds)
          assert.isTrue(o.createdAt.epochMilliseconds > 0)
        })
      ))

    it.live("bad listing options get InvalidListOptions and read nothing", () =>
      withJob(
        backend,
        Effect.gen(function*() {
          for (const options of [{ limit: 0 }, { limit: 1001 }, { limit: 1.5 }, { after: "" }, { prefix: "\u0000" }]) {
            const error = yield* Effect.flip(DurableObject.list(Job, options))
            assert.strictEqual(error._tag, "InvalidListOptions", JSON.stringify(options))
          }
          const failed = yield* Effect.flip(Alarms.listFailed(Job, { limit: -1 }))
          assert.strictEqual(failed._tag, "InvalidListOptions")
        })
      ))

    it.live("inspect shows the decoded state, version, times and alarms; an object not stored is ObjectNotFound", () =>
      withJob(
        backend,
        Effect.gen(function*() {
          yield* Job.client("j").schedule({ broken: false, inMillis: 3_600_000 })
          const seen = yield* DurableObject.inspect(Job, "j")
          assert.deepStrictEqual(seen.state, { runs: 0, broken: false })
          assert.deepStrictEqual(JSON.parse(seen.stateJson), { runs: 0, broken: false })
          assert.isUndefined(seen.decodeError)
          assert.strictEqual(seen.version, 1)
          assert.strictEqual(seen.status, "active")
          assert.deepStrictEqual(
            seen.alarms.map((
              a
            ) => [a.name, a.payload, JSON.parse(a.payloadJson), a.attempts, a.failed, a.claimedUntil]),
            [["work", { task: "task of j" }, { task: "task of j" }, 0, undefined, undefined]]
          )
          assert.isDefined(seen.alarms[0]!.scheduledAt)
          const missing = yield* Effect.flip(DurableObject.inspect(Job, "nobody"))
          assert.strictEqual(missing._tag, "ObjectNotFound")
          assert.strictEqual((yield* Effect.flip(DurableObject.inspect(Job, "")))._tag, "InvalidObjectId")
        })
      ))

    it.live("inspect shows a state that no longer decodes as stored, with the StateDecodeError", () =>
      withJob(
        backend,
        Effect.gen(function*() {
          const storage = yield* Storage.Storage
          yield* storage.commit({
            objectType: Job.name,
            objectId: "old",
            expectedVersion: 0,
            state: "{\"runs\":\"many\"}"
          })
          const seen = yield* DurableObject.inspect(Job, "old")
          assert.isUndefined(seen.state)
          assert.deepStrictEqual(JSON.parse(seen.stateJson), { runs: "many" })
          assert.strictEqual(seen.decodeError?._tag, "StateDecodeError")
          assert.strictEqual(seen.version, 1)
          // Calls still fail as before: inspecting changed nothing.
          assert.strictEqual((yield* Effect.flip(Job.client("old").touch()))._tag, "StateDecodeError")
        })
      ))

    it.live("a failed alarm is listed with its last error, retried after a repair, and cancelled", () =>
      withJob(
        backend,
        Effect.gen(function*() {
          for (const id of ["x", "y", "z"]) yield* Job.client(id).schedule({ broken: true, inMillis: 10 })
          yield* Job.client("fine").schedule({ broken: false, inMillis: 10 })
          yield* eventually(Effect.map(Alarms.listFailed(Job), (page) => page.alarms.length === 3))
          yield* eventually(Effect.map(DurableObject.inspect(Job, "fine"), (o) => o.state?.runs === 1))
          const page = yield* Alarms.listFailed(Job, { limit: 2 })
          assert.deepStrictEqual(page.alarms.map((a) => [a.id, a.name, a.attempts]), [["x", "work", 1], [
            "y",
            "work",
            1
          ]])
          assert.deepStrictEqual(page.next, { id: "y", name: "work" })
          const failed = page.alarms[0]!
          assert.include(failed.failed?.error ?? "", "cannot run task of x")
          assert.include(failed.lastError ?? "", "cannot run task of x")
          assert.deepStrictEqual(failed.payload, { task: "task of x" })
          const rest = yield* Alarms.listFailed(Job, { after: page.next })
          assert.deepStrictEqual(rest.alarms.map((a) => a.id), ["z"])
          assert.isUndefined(rest.next)
          assert.deepStrictEqual((yield* DurableObject.inspect(Job, "fine")).alarms, [], "a run alarm is gone")

          // Retrying before the repair fails again; after it, the alarm runs and leaves the failed list.
          yield* Job.client("x").repair()
          yield* Alarms.retry(Job, "x", "work")
          yield* eventually(Effect.map(DurableObject.inspect(Job, "x"), (o) => o.state?.runs === 1))
          const x = yield* DurableObject.inspect(Job, "x")
          assert.deepStrictEqual(x.alarms, [], "the retried alarm ran and is gone")
          yield* Alarms.cancel(Job, "y", "work")
          assert.deepStrictEqual((yield* DurableObject.inspect(Job, "y")).alarms, [])
          assert.deepStrictEqual((yield* Alarms.listFailed(Job)).alarms.map((a) => a.id), ["z"])

          const missing = yield* Effect.flip(Alarms.retry(Job, "y", "work"))
          assert.strictEqual(missing._tag, "AlarmNotFound")
          const unknown = yield* Effect.flip(Alarms.cancel(Job, "z", "nothing"))
          assert.strictEqual(unknown._tag, "UnknownHandler")
        })
      ))

    it.live("an alarm the definition no longer declares can still be cancelled and retried by name", () =>
      withJob(
        backend,
        Effect.gen(function*() {
          const storage = yield* Storage.Storage
          yield* storage.commit({
            objectType: Job.name,
            objectId: "legacy",
            expectedVersion: 0,
            state: "{\"runs\":0,\"broken\":false}",
            alarms: {
              removeAll: false,
              remove: [],
              put: [{ name: "gone", fireAt: 4_000_000_000_000, payload: "null", cron: null }]
            }
          })
          const seen = yield* DurableObject.inspect(Job, "legacy")
          assert.deepStrictEqual(seen.alarms.map((a) => [a.name, a.invalid !== undefined]), [["gone", true]])
          yield* Alarms.cancel(Job, "legacy", "gone")
          assert.deepStrictEqual((yield* DurableObject.inspect(Job, "legacy")).alarms, [])
          assert.strictEqual((yield* DurableObject.inspect(Job, "legacy")).version, 2, "the cancel committed")
        })
      ))
  })
}

for (const backend of sqlBackends) {
  describe(`Operating alarms across two runtimes on ${backend.name}`, () => {
    it.live("a retry is fenced like any commit: from a stale copy it fails with VersionConflict and changes nothing", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const client = Layer.succeedContext(yield* Layer.build(db.client()))
        const runtime = () =>
          Job.layer.pipe(
            Layer.provideMerge(SqlStorage.layer({ ...db.options, alarms: { pollInterval: "50 millis" } })),
            Layer.provide(client)
          )
        const a = yield* Layer.build(runtime())
        const scopeOfB = yield* Scope.make()
        const b = yield* Layer.buildWithScope(runtime(), scopeOfB)
        const onA = <X, E>(effect: Effect.Effect<X, E, DurableObject.Runtime<"InspectedJob">>) =>
          Effect.provide(effect, a)
        const onB = <X, E>(effect: Effect.Effect<X, E, DurableObject.Runtime<"InspectedJob">>) =>
          Effect.provide(effect, b)

        yield* onA(Job.client("f").schedule({ broken: true, inMillis: 10 }))
        yield* eventually(onA(Effect.map(Alarms.listFailed(Job), (page) => page.alarms.length === 1)))
        const stale = (yield* onA(DurableObject.inspect(Job, "f"))).version
        yield* onA(Job.client("f").touch()) // A holds the object at `stale`
        yield* onB(Job.client("f").repair()) // B commits past it

        const conflict = yield* Effect.flip(onA(Alarms.retry(Job, "f", "work")))
        assert.strictEqual(conflict._tag, "VersionConflict")
        const after = yield* onB(DurableObject.inspect(Job, "f"))
        assert.strictEqual(after.version, stale + 1, "only B's repair was stored")
        assert.isDefined(after.alarms[0]?.failed, "the alarm is still failed")

        // A reloaded after the conflict: the retry now commits, and the repaired object runs the alarm. (B goes
        // first: its scheduler could fire the alarm from its copy, now stale, and this alarm has no retries.)
        yield* Scope.close(scopeOfB, Exit.void)
        yield* onA(Alarms.retry(Job, "f", "work"))
        yield* eventually(onA(Effect.map(DurableObject.inspect(Job, "f"), (o) => o.state?.runs === 1)))
        assert.deepStrictEqual((yield* onA(Alarms.listFailed(Job))).alarms, [])
      }))
  })
}
