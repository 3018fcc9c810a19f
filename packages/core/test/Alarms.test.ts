import { Alarms, DurableObject, DurableObjectTest, Errors, Storage, Telemetry } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Metric } from "effect"
import { TestClock } from "effect/testing"
import { RateLimiter, Reminders } from "./fixtures.ts"

const RemindersTest = () => DurableObjectTest.layer(Reminders)
const fired = (id: string) => Effect.map(Reminders.client(id).read(), (s) => s.fired)

describe("Alarms", () => {
  it.effect("the original's rate limiter works as written: onLoad schedules, the alarm resets and reschedules", () =>
    Effect.gen(function*() {
      const limiter = RateLimiter.client("api-key")
      for (let i = 0; i < 3; i++) assert.strictEqual(yield* limiter.check({ limit: 3 }), "allowed")
      assert.strictEqual(yield* limiter.check({ limit: 3 }), "rate_limited")
      const scheduled = yield* DurableObject.listAlarms(RateLimiter, "api-key")
      assert.deepStrictEqual(scheduled.map((a) => [a.name, a.fireAt.epochMilliseconds]), [["resetWindow", 60_000]])
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* limiter.check({ limit: 3 }), "allowed")
      const next = yield* DurableObject.listAlarms(RateLimiter, "api-key")
      assert.deepStrictEqual(next.map((a) => a.fireAt.epochMilliseconds), [120_000])
      for (let i = 0; i < 2; i++) yield* limiter.check({ limit: 3 })
      assert.strictEqual(yield* limiter.check({ limit: 3 }), "rate_limited")
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* limiter.check({ limit: 3 }), "allowed")
    }).pipe(Effect.provide(DurableObjectTest.layer(RateLimiter))))

  it.effect("an alarm fires at its time and not before, with its payload", () =>
    Effect.gen(function*() {
      yield* Reminders.client("r").remind({ text: "hello", inMillis: 10_000 })
      yield* TestClock.adjust(9_999)
      assert.deepStrictEqual(yield* fired("r"), [])
      yield* TestClock.adjust(1)
      assert.deepStrictEqual(yield* fired("r"), ["note:hello"])
      assert.deepStrictEqual(yield* DurableObject.listAlarms(Reminders, "r"), [])
    }).pipe(Effect.provide(RemindersTest())))

  it.effect("scheduling a name again replaces it", () =>
    Effect.gen(function*() {
      const r = Reminders.client("r")
      yield* r.remind({ text: "first", inMillis: 1000 })
      yield* r.remind({ text: "second", inMillis: 5000 })
      yield* TestClock.adjust(4000)
      assert.deepStrictEqual(yield* fired("r"), [])
      yield* TestClock.adjust(1000)
      assert.deepStrictEqual(yield* fired("r"), ["note:second"])
    }).pipe(Effect.provide(RemindersTest())))

  it.effect("many named alarms per object fire each in due order; list shows them earliest first", () =>
    Effect.gen(function*() {
      const r = Reminders.client("r")
      yield* r.remind({ text: "n", inMillis: 3000 })
      yield* r.ping({ inMillis: 1000 })
      assert.deepStrictEqual(yield* r.list(), ["ping@1000", "note@3000"])
      yield* TestClock.adjust(3000)
      assert.deepStrictEqual(yield* fired("r"), ["ping", "note:n"])
    }).pipe(Effect.provide(RemindersTest())))

  it.effect("cancel and cancelAll remove alarms before they fire", () =>
    Effect.gen(function*() {
      const r = Reminders.client("r")
      yield* r.remind({ text: "n", inMillis: 1000 })
      yield* r.ping({ inMillis: 1000 })
      yield* r.cancel("note")
      assert.deepStrictEqual(yield* r.list(), ["ping@1000"])
      yield* r.cancelAll()
      assert.deepStrictEqual(yield* r.list(), [])
      yield* TestClock.adjust(5000)
      assert.deepStrictEqual(yield* fired("r"), [])
    }).pipe(Effect.provide(RemindersTest())))

  it.effect("alarm changes commit with the handler: a failing handler schedules nothing", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Reminders.client("r").scheduleThenFail())
      assert.isTrue(Exit.isFailure(exit))
      assert.deepStrictEqual(yield* DurableObject.listAlarms(Reminders, "r"), [])
      yield* TestClock.adjust(5000)
      assert.deepStrictEqual(yield* fired("r"), [])
    }).pipe(Effect.provide(RemindersTest())))

  it.effect("a cron alarm recurs on its schedule", () =>
    Effect.gen(function*() {
      yield* Reminders.client("c").every({ cron: "* * * * *" }) // every minute
      yield* TestClock.adjust("3 minutes")
      assert.deepStrictEqual(yield* fired("c"), ["tick", "tick", "tick"])
      const [tick] = yield* DurableObject.listAlarms(Reminders, "c")
      assert.strictEqual(tick?.cron, "* * * * *")
      assert.strictEqual(tick?.fireAt.epochMilliseconds, 240_000)
    }).pipe(Effect.provide(RemindersTest())))

  it.effect("a failing alarm is retried with backoff, sees its attempt number, and succeeds", () =>
    Effect.gen(function*() {
      yield* Reminders.client("f").flaky({ failUntilAttempt: 2 })
      yield* TestClock.adjust(1000) // attempt 1 fails; retry in 1 s
      yield* TestClock.adjust(1000) // attempt 2 fails; retry in 2 s
      assert.deepStrictEqual((yield* Reminders.client("f").read()).attempts, [])
      const [pending] = yield* DurableObject.listAlarms(Reminders, "f")
      assert.strictEqual(pending?.attempts, 2)
      assert.isUndefined(pending?.failed)
      yield* TestClock.adjust(1999)
      assert.deepStrictEqual(yield* fired("f"), [])
      yield* TestClock.adjust(1)
      const state = yield* Reminders.client("f").read()
      assert.deepStrictEqual(state.fired, ["flaky:true"])
      assert.deepStrictEqual(state.attempts, [3]) // failed attempts left no trace in state
    }).pipe(Effect.provide(RemindersTest())))

  it.effect("after its last retry a failing alarm stays listed as failed instead of vanishing", () =>
    Effect.gen(function*() {
      yield* Reminders.client("f").flaky({ failUntilAttempt: 99 })
      yield* TestClock.adjust("1 minute")
      const [failed] = yield* DurableObject.listAlarms(Reminders, "f")
      assert.strictEqual(failed?.name, "flaky")
      assert.strictEqual(failed?.attempts, 3) // the first attempt and maxRetries = 2 retries
      assert.isDefined(failed?.failed)
      assert.include(failed!.failed!.error, "AlarmFailure")
      yield* TestClock.adjust("1 hour")
      assert.deepStrictEqual(yield* fired("f"), [])
      const failures = yield* Metric.value(
        Metric.withAttributes(Telemetry.alarms, { object_type: "Reminders", alarm: "flaky", outcome: "failed" })
      )
      assert.strictEqual(failures.count, 1)
    }).pipe(Effect.provide(RemindersTest()), Effect.provideService(Metric.MetricRegistry, new Map())))

  it.effect("an alarm on a stopped object activates it", () =>
    Effect.gen(function*() {
      yield* Reminders.client("s").ping({ inMillis: 1000 })
      yield* DurableObject.stop(Reminders, "s")
      assert.strictEqual(yield* DurableObject.status(Reminders, "s"), "stopped")
      yield* TestClock.adjust(1000)
      assert.strictEqual(yield* DurableObject.status(Reminders, "s"), "active")
      assert.deepStrictEqual(yield* fired("s"), ["ping"])
    }).pipe(Effect.provide(RemindersTest())))

  it.effect("alarms can be scheduled, listed and cancelled from outside the object", () =>
    Effect.gen(function*() {
      yield* DurableObject.scheduleAlarm(Reminders, "o", "note", { in: "10 seconds" }, { text: "outside" })
      yield* DurableObject.scheduleAlarm(Reminders, "o", "ping", { at: 20_000 })
      const listed = yield* DurableObject.listAlarms(Reminders, "o")
      assert.deepStrictEqual(listed.map((a) => [a.name, a.payload]), [["note", { text: "outside" }], [
        "ping",
        undefined
      ]])
      yield* DurableObject.cancelAlarm(Reminders, "o", "ping")
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual(yield* fired("o"), ["note:outside"])
      const bad = yield* Effect.flip(DurableObject.scheduleAlarm(Reminders, "o", "note", { in: "1 second" }, {
        text: 42
      } as any))
      assert.strictEqual(bad._tag, "InvalidPayload")
      const unknown = yield* Effect.flip(DurableObject.cancelAlarm(Reminders, "o", "nope" as any))
      assert.strictEqual(unknown._tag, "UnknownHandler")
      const cron = yield* Effect.flip(DurableObject.scheduleAlarm(Reminders, "o", "ping", { cron: "not a cron" }))
      assert.strictEqual(cron._tag, "InvalidPayload")
    }).pipe(Effect.provide(RemindersTest())))

  it.effect("a commit that fails between handler and commit makes the alarm fire again; its effect applies once", () =>
    Effect.gen(function*() {
      const memory = yield* Storage.makeMemory
      let failFiredCommits = 1
      const crashing = Storage.layerWithScheduler(Effect.succeed({
        ...memory,
        commit: (write: Storage.WriteSet) =>
          Effect.suspend(() => {
            if (write.alarms?.fired !== undefined && failFiredCommits > 0) {
              failFiredCommits--
              return Effect.die(new Error("crash before commit"))
            }
            return memory.commit(write)
          })
      }))
      yield* Effect.gen(function*() {
        yield* Reminders.client("x").ping({ inMillis: 1000 })
        yield* TestClock.adjust(1000)
        assert.deepStrictEqual(yield* fired("x"), [])
        yield* TestClock.adjust("1 minute")
        assert.deepStrictEqual(yield* fired("x"), ["ping"])
      }).pipe(Effect.provide(Reminders.layer.pipe(Layer.provideMerge(crashing))))
    }))

  it.effect("a crash after the commit never repeats the alarm", () =>
    Effect.gen(function*() {
      const memory = yield* Storage.makeMemory
      let crashAfter = 1
      const crashing = Storage.layerWithScheduler(Effect.succeed({
        ...memory,
        commit: (write: Storage.WriteSet) =>
          Effect.flatMap(memory.commit(write), (version) => {
            if (write.alarms?.fired !== undefined && crashAfter > 0) {
              crashAfter--
              return Effect.die(new Error("crash after commit"))
            }
            return Effect.succeed(version)
          })
      }))
      yield* Effect.gen(function*() {
        yield* Reminders.client("y").ping({ inMillis: 1000 })
        yield* TestClock.adjust("10 minutes")
        assert.deepStrictEqual(yield* fired("y"), ["ping"])
      }).pipe(Effect.provide(Reminders.layer.pipe(Layer.provideMerge(crashing))))
    }))

  it.effect("two schedulers on one storage fire an alarm once: the claim is exclusive", () =>
    Effect.gen(function*() {
      const memory = yield* Storage.makeMemory
      const shared = () => Storage.layerWithScheduler(Effect.succeed(memory))
      const a = yield* Layer.build(Reminders.layer.pipe(Layer.provide(shared())))
      const b = yield* Layer.build(Reminders.layer.pipe(Layer.provide(shared())))
      for (let i = 0; i < 20; i++) {
        yield* Reminders.client(`obj${i}`).ping({ inMillis: 1000 + i }).pipe(Effect.provide(i % 2 === 0 ? a : b))
      }
      yield* TestClock.adjust("5 seconds")
      let total = 0
      for (let i = 0; i < 20; i++) {
        const state = yield* DurableObjectTest.persistedState(Reminders, `obj${i}`).pipe(
          Effect.provide(Layer.succeed(Storage.Storage, memory))
        )
        total += state?.fired.length ?? 0
      }
      assert.strictEqual(total, 20)
    }))

  it.effect("the test kit runs an alarm handler alone and shows what a handler scheduled", () =>
    Effect.gen(function*() {
      const run = yield* DurableObjectTest.runHandler(Reminders, "remind", {
        state: { fired: [], attempts: [], failUntilAttempt: 0 },
        payload: { text: "t", inMillis: 500 }
      })
      assert.deepStrictEqual(run.alarms.scheduled.map((a) => [a.name, a.fireAt.epochMilliseconds, a.payload]), [
        ["note", 500, { text: "t" }]
      ])
      const alarm = yield* DurableObjectTest.runAlarm(Reminders, "note", {
        state: { fired: [], attempts: [], failUntilAttempt: 0 },
        payload: { text: "t" }
      })
      assert.deepStrictEqual(alarm.state.fired, ["note:t"])
    }))

  it.effect("retry delays grow exponentially and are capped", () =>
    Effect.sync(() => {
      assert.deepStrictEqual([1, 2, 3, 6].map((r) => Alarms.retryDelayMillis(undefined, r)), [2000, 4000, 8000, 64000])
      assert.strictEqual(Alarms.retryDelayMillis({ initialDelay: "1 hour" }, 5), 3_600_000)
      assert.instanceOf(new Errors.AlarmClaimLost({ objectType: "T", objectId: "i", name: "n" }), Error)
    }))
})
