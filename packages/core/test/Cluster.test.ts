import { assert, describe, it } from "@effect/vitest"
import { Clock, Effect, Exit, Layer, Schema } from "effect"
import { TestRunner } from "effect/cluster"
import { Sharding } from "effect/cluster/Sharding"
import * as Alarms from "../src/Alarms.ts"
import * as DurableObject from "../src/DurableObject.ts"
import * as DurableObjectCluster from "../src/DurableObjectCluster.ts"
import * as Errors from "../src/Errors.ts"
import * as Cluster from "../src/internal/cluster.ts"
import * as Storage from "../src/Storage.ts"
import { Counter, LimitExceeded, makeJournal, PingA, PingB, Reminders } from "./fixtures.ts"

/**
 * One runner, in memory: effect/cluster's test runner with the cluster layers of the fixtures. Handlers that call
 * other objects find their routed runtimes in the context the runner layers are built in.
 */
const runner = (storage: Layer.Layer<Storage.Storage | Storage.Scheduler>) =>
  Layer.mergeAll(
    DurableObjectCluster.layer(Counter),
    DurableObjectCluster.layer(PingA),
    DurableObjectCluster.layer(PingB)
  ).pipe(
    Layer.provide([
      storage,
      makeJournal(),
      DurableObjectCluster.layerClient(PingA),
      DurableObjectCluster.layerClient(PingB)
    ]),
    Layer.provideMerge(TestRunner.layer)
  )

describe("DurableObjectCluster", () => {
  it.live("calls through the cluster reach the object, unchanged for the caller, and are stored", () =>
    Effect.gen(function*() {
      const storage = yield* Storage.makeMemory
      const layer = runner(Storage.layerWithScheduler(Effect.succeed(storage)))
      const counts = yield* Effect.gen(function*() {
        const first = yield* Counter.client("a").increment({ amount: 2 })
        const second = yield* Counter.client("a").increment({ amount: 3 })
        const read = yield* Counter.client("a").get()
        return [first, second, read]
      }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(counts, [2, 5, 5])
      const stored = yield* storage.load("Counter", "a")
      assert.strictEqual(stored?.version, 2)
    }))

  it.live("handler errors and runtime errors arrive as instances of their classes", () =>
    Effect.gen(function*() {
      const limit = yield* Effect.flip(Counter.client("b").increment({ amount: 2_000_000 }))
      assert.instanceOf(limit, LimitExceeded)
      const defect = yield* Effect.flip(Counter.client("b").incrementThenDie())
      assert.instanceOf(defect, Errors.HandlerDefect)
      const invalid = yield* Effect.flip(Counter.client("b").increment({ amount: "x" as never }))
      assert.instanceOf(invalid, Errors.InvalidPayload)
      const unknown = yield* Effect.flip(DurableObject.callEncoded(Counter, "b", "nope", {}))
      assert.instanceOf(unknown, Errors.UnknownHandler)
      const badId = yield* Effect.flip(Counter.client("").get())
      assert.instanceOf(badId, Errors.InvalidObjectId)
      // Nothing above changed the object.
      assert.strictEqual(yield* Counter.client("b").get(), 0)
      const encoded = yield* DurableObject.callEncoded(Counter, "b", "increment", { amount: 4 })
      assert.strictEqual(encoded, 4)
    }).pipe(Effect.provide(runner(Storage.layerMemory))))

  it.live("a runner whose event loop stood still past maxPause drops its copies: the next call reads storage", () =>
    Effect.gen(function*() {
      const storage = yield* Storage.makeMemory
      const layer = DurableObjectCluster.layer(Counter, { maxPause: "200 millis" }).pipe(
        Layer.provide([Storage.layerWithScheduler(Effect.succeed(storage)), makeJournal()]),
        Layer.provideMerge(TestRunner.layer)
      )
      yield* Effect.gen(function*() {
        assert.strictEqual(yield* Counter.client("p").increment({ amount: 1 }), 1)
        // Meanwhile (as if another runner had taken the shard while this one stood still) storage moves on.
        yield* storage.commit({
          objectType: "Counter",
          objectId: "p",
          expectedVersion: 1,
          state: JSON.stringify({ count: 41, lastIncrementedAt: null })
        })
        // The event loop stands still for longer than maxPause.
        const until = performance.now() + 600
        while (performance.now() < until) {
          // busy: nothing else runs
        }
        yield* Effect.sleep("300 millis")
        assert.strictEqual(yield* Counter.client("p").get(), 41, "the stale copy was served")
        assert.strictEqual(yield* Counter.client("p").increment({ amount: 1 }), 42)
      }).pipe(Effect.provide(layer))
    }))

  it.live("a call re-sent with its routing key runs once, its reply still in memory or only in storage", () =>
    Effect.gen(function*() {
      const sharding = yield* Sharding
      const entityIdOf = Cluster.makeShardIds(sharding, "default")
      const client = (yield* DurableObjectCluster.entity(Counter).client)(entityIdOf("r"))
      // What effect/cluster re-sends after a lost reply: the very same message.
      const message = {
        id: "r",
        handler: "increment",
        payload: JSON.stringify({ amount: 1 }),
        key: "~route/1",
        routed: true,
        since: yield* Clock.currentTimeMillis,
        chain: []
      }
      const replies = [yield* client.call(message), yield* client.call(message)]
      // A new copy (as on a new owner after a failover) has nothing in memory: the reply comes from storage.
      yield* DurableObject.stop(Counter, "r")
      replies.push(yield* client.call(message))
      assert.deepStrictEqual(replies.map((text: string) => JSON.parse(text)), [{ s: 1 }, { s: 1 }, { s: 1 }])
      assert.strictEqual(yield* Counter.client("r").get(), 1)
    }).pipe(Effect.scoped, Effect.provide(runner(Storage.layerMemory))))

  it.live("a call chain that comes back to an object fails fast with ReentrantCall", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(PingA.client("x").viaB())
      assert.instanceOf(error, Errors.ReentrantCall)
    }).pipe(Effect.provide(runner(Storage.layerMemory))))

  it.live("alarms scheduled inside and outside handlers fire through the owner; listing, status and stop are routed", () =>
    Effect.gen(function*() {
      yield* Reminders.client("m").remind({ text: "inside", inMillis: 50 })
      const now = yield* Clock.currentTimeMillis
      yield* DurableObject.scheduleAlarm(Reminders, "m", "note", { at: now + 80 }, { text: "outside" })
      const listed = yield* DurableObject.listAlarms(Reminders, "m")
      assert.deepStrictEqual(listed.map((a) => [a.name, a.payload]), [["note", { text: "outside" }]])
      yield* Effect.sleep("1 second")
      const state = yield* Reminders.client("m").read()
      assert.deepStrictEqual(state.fired, ["note:outside"], "the later schedule replaced the earlier one")
      assert.deepStrictEqual(yield* DurableObject.listAlarms(Reminders, "m"), [])
      assert.strictEqual(yield* DurableObject.status(Reminders, "m"), "active")
      // Alarms.retry is a write: routed to the owner, serialized with the object's calls.
      yield* Reminders.client("m").remind({ text: "later", inMillis: 3_600_000 })
      yield* Alarms.retry(Reminders, "m", "note")
      yield* Effect.sleep("500 millis")
      assert.deepStrictEqual((yield* Reminders.client("m").read()).fired, ["note:outside", "note:later"])
      const missing = yield* Effect.flip(Alarms.retry(Reminders, "m", "note"))
      assert.instanceOf(missing, Errors.AlarmNotFound)
      // Listing and inspecting read storage on the runner.
      const page = yield* DurableObject.list(Reminders)
      assert.deepStrictEqual(page.objects.map((o) => [o.id, o.status]), [["m", "active"]])
      const inspected = yield* DurableObject.inspect(Reminders, "m")
      assert.deepStrictEqual(inspected.state?.fired, ["note:outside", "note:later"])
      yield* DurableObject.stop(Reminders, "m")
      assert.strictEqual(yield* DurableObject.status(Reminders, "m"), "stopped")
    }).pipe(
      Effect.provide(
        DurableObjectCluster.layer(Reminders).pipe(
          Layer.provide(Storage.layerWithScheduler(Storage.makeMemory, { pollInterval: "50 millis" })),
          Layer.provideMerge(TestRunner.layer)
        )
      )
    ))

  it.live("a definition whose schemas cannot be written as JSON fails when its layer is built", () =>
    Effect.gen(function*() {
      const Opaque = DurableObject.defineObject({
        name: "Opaque",
        state: Schema.Struct({}),
        initialState: () => ({}),
        handlers: { take: { payload: Schema.instanceOf(URL), handle: () => Effect.void } }
      })
      const exit = yield* Effect.exit(
        Effect.provide(
          Opaque.client("a").take(new URL("https://example.com")),
          DurableObjectCluster.layer(Opaque).pipe(
            Layer.provide(Storage.layerMemory),
            Layer.provideMerge(TestRunner.layer)
          )
        )
      )
      assert.isTrue(Exit.isFailure(exit))
      assert.include(String(Exit.isFailure(exit) ? exit.cause : ""), "cannot cross the cluster as JSON")
    }))
})
