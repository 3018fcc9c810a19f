/**
 * Failures with no caller to tell: each one reaches someone who can act (a typed outcome, a metric, a retry)
 * or is shown harmless. Corrupt alarm rows, claim releases and scheduler reads that fail, shutdowns that cannot
 * store `onShutdown`'s changes, handlers stuck at shutdown, and stops right after a failed commit.
 */
import { DurableObject, DurableObjectTest, Storage, Telemetry } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Metric, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { StorageError } from "../src/Errors.ts"
import { Reminders } from "./fixtures.ts"

const failures = (attributes: Record<string, string>) =>
  Effect.map(Metric.value(Metric.withAttributes(Telemetry.backgroundFailures, attributes)), (state) => state.count)

const fired = (id: string) => Effect.map(Reminders.client(id).read(), (s) => s.fired)

const failing = (operation: string) => Effect.fail(new StorageError({ operation, detail: "injected" }))

/** Writes alarms straight into storage, as a hand edit or an older schema would have left them. */
const writeAlarms = (id: string, put: ReadonlyArray<Storage.AlarmPut>) =>
  Effect.flatMap(Storage.Storage, (storage) =>
    storage.commit({
      objectType: Reminders.name,
      objectId: id,
      expectedVersion: 0,
      state: JSON.stringify({ fired: [], attempts: [], failUntilAttempt: 0 }),
      alarms: { removeAll: false, remove: [], put }
    }))

const Tracked = DurableObject.defineObject({
  name: "Tracked",
  state: Schema.Struct({ n: Schema.Number, stopped: Schema.Boolean }),
  initialState: () => ({ n: 0, stopped: false }),
  handlers: {
    bump: { success: Schema.Number, handle: (_, ctx) => ctx.state.modify((s) => [s.n + 1, { ...s, n: s.n + 1 }]) },
    hang: { handle: () => Effect.never }
  },
  onShutdown: (ctx) => ctx.state.update((s) => ({ ...s, stopped: true })),
  options: { hibernateAfter: "1 minute", shutdownAfter: "2 minutes", callTimeout: Duration.infinity }
})

/** A request-scoped service, as a caller's context might carry one. */
class RequestScope extends Context.Service<RequestScope, { readonly payload: Array<number> }>()("test/RequestScope") {}

class Greeting extends Context.Service<Greeting, { readonly text: string }>()("test/Greeting") {}

/** An object whose handlers use a declared service: the runtime merges it into each caller's context. */
const Greeter = DurableObject.defineObject({
  name: "Greeter",
  state: Schema.Struct({ n: Schema.Number }),
  initialState: () => ({ n: 0 }),
  services: [Greeting],
  handlers: {
    greet: {
      success: Schema.String,
      handle: (_, ctx) =>
        Effect.flatMap(
          Effect.service(Greeting),
          (greeting) => ctx.state.modify((s) => [`${greeting.text} ${s.n + 1}`, { n: s.n + 1 }])
        )
    }
  }
})

/** Node's garbage collector, callable from a test (exposed at run time). */
const collectGarbage = (): () => void => {
  setFlagsFromString("--expose-gc")
  return runInNewContext("gc") as () => void
}

/** Memory storage whose commits fail while `failCommits` says so. */
const flakyCommits = Effect.gen(function*() {
  const memory = yield* Storage.makeMemory
  const control = { failCommits: false }
  const layer = Storage.layerWithScheduler(Effect.succeed({
    ...memory,
    commit: (write: Storage.WriteSet) => control.failCommits ? failing("save") : memory.commit(write)
  }))
  return { memory, control, layer }
})

describe("failures without a caller", () => {
  it.effect("a stored alarm whose payload or schedule no longer reads back is listed as invalid and fails alone, without running", () =>
    Effect.gen(function*() {
      yield* writeAlarms("odd", [
        { name: "note", fireAt: 1000, payload: "{not json", cron: null },
        { name: "tick", fireAt: 1000, payload: "null", cron: "{\"expression\": \"not a cron\"}" },
        { name: "ping", fireAt: 1000, payload: "null", cron: null }
      ])
      const listed = yield* DurableObject.listAlarms(Reminders, "odd")
      const byName = new Map(listed.map((alarm) => [alarm.name, alarm]))
      assert.include(byName.get("note")?.invalid, "payload")
      assert.strictEqual(byName.get("note")?.payload, "{not json")
      assert.include(byName.get("tick")?.invalid, "cron")
      assert.isUndefined(byName.get("ping")?.invalid)

      yield* TestClock.adjust("2 seconds")
      // The healthy alarm fired; the two bad ones ran no handler and are kept as failed, saying why.
      assert.deepStrictEqual(yield* fired("odd"), ["ping"])
      const after = new Map((yield* DurableObject.listAlarms(Reminders, "odd")).map((alarm) => [alarm.name, alarm]))
      assert.include(after.get("note")?.failed?.error, "does not decode")
      assert.include(after.get("tick")?.failed?.error, "does not parse")
      assert.isFalse(after.has("ping"))
    }).pipe(Effect.provide(DurableObjectTest.layer(Reminders))))

  it.effect("a claim release that fails is retried, and one that keeps failing is counted; the alarm fires again after its lease", () =>
    Effect.gen(function*() {
      const memory = yield* Storage.makeMemory
      let failReleases = 2
      const storage = Storage.layerWithScheduler(Effect.succeed({
        ...memory,
        releaseAlarm: (release: Storage.AlarmRelease) =>
          Effect.suspend(() => failReleases-- > 0 ? failing("release") : memory.releaseAlarm(release))
      }))
      yield* Effect.gen(function*() {
        // First attempt fails; its release fails twice, then goes through: the retry comes after the policy's
        // 1 s, not after the 60 s lease.
        yield* Reminders.client("r").flaky({ failUntilAttempt: 1 })
        yield* TestClock.adjust("3 seconds")
        assert.deepStrictEqual(yield* fired("r"), ["flaky:true"])
        assert.strictEqual(yield* failures({ object_type: "Reminders", operation: "alarm_release" }), 0)

        // Now every release fails: counted once the retries are spent; the lease brings the alarm back.
        failReleases = Infinity
        yield* Reminders.client("s").flaky({ failUntilAttempt: 1 })
        yield* TestClock.adjust("3 seconds")
        assert.deepStrictEqual(yield* fired("s"), [])
        assert.strictEqual(yield* failures({ object_type: "Reminders", operation: "alarm_release" }), 1)
        yield* TestClock.adjust("1 minute")
        assert.deepStrictEqual(yield* fired("s"), ["flaky:true"])
      }).pipe(
        Effect.provide(Reminders.layer.pipe(Layer.provideMerge(storage))),
        Effect.provideService(Metric.MetricRegistry, new Map())
      )
    }))

  it.effect("the scheduler backs off while storage cannot claim due alarms, counts each failure, and fires once it can", () =>
    Effect.gen(function*() {
      const memory = yield* Storage.makeMemory
      let claims = 0
      let failClaims = 3
      const storage = Storage.layerWithScheduler(Effect.succeed({
        ...memory,
        claimDueAlarms: (request: Storage.ClaimRequest) =>
          Effect.suspend(() => {
            claims++
            return failClaims-- > 0 ? failing("claim") : memory.claimDueAlarms(request)
          })
      }))
      yield* Effect.gen(function*() {
        yield* Reminders.client("b").ping({ inMillis: 0 })
        yield* TestClock.adjust("1 second")
        // 100 + 200 + 400 ms of backoff, then the claim that works: a handful of attempts, not one per ms.
        assert.deepStrictEqual(yield* fired("b"), ["ping"])
        assert.isAtMost(claims, 6)
        assert.strictEqual(yield* failures({ operation: "alarm_claim" }), 3)
      }).pipe(
        Effect.provide(Reminders.layer.pipe(Layer.provideMerge(storage))),
        Effect.provideService(Metric.MetricRegistry, new Map())
      )
    }))

  it.effect("an idle shutdown whose onShutdown changes cannot be stored is counted, and the object still stops", () =>
    Effect.gen(function*() {
      const { control, layer, memory } = yield* flakyCommits
      yield* Effect.gen(function*() {
        assert.strictEqual(yield* Tracked.client("t").bump(), 1)
        control.failCommits = true
        yield* TestClock.adjust("3 minutes")
        assert.strictEqual(yield* DurableObject.status(Tracked, "t"), "stopped")
        assert.strictEqual(yield* failures({ object_type: "Tracked", operation: "shutdown" }), 1)
        const stored = yield* memory.load("Tracked", "t")
        assert.deepStrictEqual(JSON.parse(stored!.state), { n: 1, stopped: false })
      }).pipe(
        Effect.provide(Tracked.layer.pipe(Layer.provideMerge(layer))),
        Effect.provideService(Metric.MetricRegistry, new Map())
      )
    }))

  it.effect("a stop or delete right after a failed commit works on what storage holds", () =>
    Effect.gen(function*() {
      const { control, layer, memory } = yield* flakyCommits
      yield* Effect.gen(function*() {
        assert.strictEqual(yield* Tracked.client("s").bump(), 1)
        control.failCommits = true
        const failed = yield* Effect.exit(Tracked.client("s").bump())
        assert.isTrue(Exit.isFailure(failed), "the failed commit failed its own call")
        control.failCommits = false
        // The failed commit already dropped the in-memory copy, so there is nothing loaded left to stop.
        yield* DurableObject.stop(Tracked, "s")
        assert.strictEqual(yield* DurableObject.status(Tracked, "s"), "stopped")
        assert.deepStrictEqual(JSON.parse((yield* memory.load("Tracked", "s"))!.state), { n: 1, stopped: false })
        assert.strictEqual(yield* Tracked.client("s").bump(), 2)

        assert.strictEqual(yield* Tracked.client("d").bump(), 1)
        control.failCommits = true
        assert.isTrue(Exit.isFailure(yield* Effect.exit(Tracked.client("d").bump())))
        control.failCommits = false
        yield* DurableObject.delete(Tracked, "d")
        assert.isUndefined(yield* memory.load("Tracked", "d"))
        assert.strictEqual(yield* Tracked.client("d").bump(), 1)
      }).pipe(Effect.provide(Tracked.layer.pipe(Layer.provideMerge(layer))))
    }))

  it.effect("with an infinite call timeout, closing the runtime interrupts a handler still stuck after the grace period", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.buildWithScope(Tracked.layer.pipe(Layer.provideMerge(Storage.layerMemory)), scope)
      const stuck = yield* Effect.forkChild(Tracked.client("h").hang().pipe(Effect.provideContext(context)))
      yield* TestClock.adjust("1 second")
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* TestClock.adjust("29 seconds")
      assert.isUndefined(closing.pollUnsafe(), "the graceful stop waits for the handler during the grace period")
      yield* TestClock.adjust("2 seconds")
      yield* Fiber.join(closing)
      const exit = yield* Fiber.await(stuck)
      assert.isTrue(Exit.isFailure(exit), "the stuck call ended")
    }))

  it.live("a finished caller's context (its request-scoped services) is not kept alive by the runtime", () =>
    Effect.gen(function*() {
      const gc = collectGarbage()
      const runtime = yield* Layer.build(
        Greeter.layer.pipe(
          Layer.provideMerge(Storage.layerMemory),
          Layer.provide(Layer.succeed(Greeting, { text: "hello" }))
        )
      )
      const callOnce = (i: number) =>
        Effect.gen(function*() {
          const scoped = { payload: Array.from({ length: 1000 }, (_, j) => i + j) }
          const reply = yield* Greeter.client("g").greet().pipe(
            Effect.provideService(RequestScope, scoped),
            Effect.provideContext(runtime)
          )
          return { reply, ref: new WeakRef(scoped) }
        })
      const first = yield* callOnce(1)
      const second = yield* callOnce(2)
      assert.deepStrictEqual([first.reply, second.reply], ["hello 1", "hello 2"])
      // WeakRef targets survive until the job that made them ends: collect in later turns.
      yield* Effect.sleep("10 millis")
      gc()
      yield* Effect.sleep("10 millis")
      gc()
      assert.isUndefined(first.ref.deref(), "the first caller's context was collected")
      assert.isUndefined(second.ref.deref(), "the last caller's context was collected")
    }))

  it.effect("a commit that does not answer fails its call with CommitTimeout; when it lands, later calls build on it", () =>
    Effect.gen(function*() {
      const memory = yield* Storage.makeMemory
      const gate = yield* Deferred.make<void>()
      let hold = false
      const frozen = Storage.layerWithScheduler(Effect.succeed({
        ...memory,
        commit: (write: Storage.WriteSet) =>
          hold ? Effect.andThen(Deferred.await(gate), memory.commit(write)) : memory.commit(write)
      }))
      const Bounded = DurableObject.defineObject({
        name: "Bounded",
        state: Schema.Struct({ n: Schema.Number }),
        initialState: () => ({ n: 0 }),
        handlers: {
          bump: { success: Schema.Number, handle: (_, ctx) => ctx.state.modify((s) => [s.n + 1, { n: s.n + 1 }]) }
        },
        options: { callTimeout: "10 seconds", commitTimeout: "1 second" }
      })
      yield* Effect.gen(function*() {
        assert.strictEqual(yield* Bounded.client("b").bump(), 1)
        hold = true
        const stuck = yield* Effect.forkChild(Effect.flip(Bounded.client("b").bump()))
        yield* TestClock.adjust("999 millis")
        assert.isUndefined(stuck.pollUnsafe())
        yield* TestClock.adjust("1 millis")
        const error = yield* Fiber.join(stuck)
        assert.strictEqual(error._tag, "CommitTimeout")
        // The database answers after all: the write landed, and the next call builds on it.
        hold = false
        yield* Deferred.succeed(gate, undefined)
        assert.strictEqual(yield* Bounded.client("b").bump(), 3)
        assert.deepStrictEqual(JSON.parse((yield* memory.load("Bounded", "b"))!.state), { n: 3 })
      }).pipe(Effect.provide(Bounded.layer.pipe(Layer.provideMerge(frozen))))
    }))

  it.effect("names an object inherits are no handlers or alarms: each is UnknownHandler and nothing is written", () =>
    Effect.gen(function*() {
      const storage = yield* Storage.Storage
      for (const name of ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf"]) {
        const tags = [
          yield* Effect.flip(DurableObject.callEncoded(Reminders, "proto", name, {})),
          yield* Effect.flip(DurableObject.cancelAlarm(Reminders, "proto", name as "note")),
          yield* Effect.flip(DurableObject.scheduleAlarm(Reminders, "proto", name as "ping", { in: 1000 }))
        ].map((error) => error._tag)
        assert.deepStrictEqual(tags, ["UnknownHandler", "UnknownHandler", "UnknownHandler"], name)
      }
      assert.isUndefined(yield* storage.load("Reminders", "proto"))
    }).pipe(Effect.provide(DurableObjectTest.layer(Reminders))))
})
