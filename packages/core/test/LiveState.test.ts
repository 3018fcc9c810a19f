/**
 * Live state: `client(id).changes` streams an object's committed states, in commit order and never one that
 * did not commit; `client(id).events` delivers what committed runs emitted. Within one runtime through its
 * hub; across runtimes on PostgreSQL through LISTEN/NOTIFY.
 */
import { DurableObject, DurableObjectTest, Errors, SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Context, Effect, Exit, Fiber, Layer, Schema, Stream } from "effect"
import { TestClock } from "effect/testing"
import * as CommitNotifier from "../src/internal/commitNotifier.ts"
import { postgresUrl } from "./backends.ts"
import { clientFor } from "./databases.ts"

class Boom extends Schema.TaggedError<Boom>()("Boom", {}) {}

const Tally = DurableObject.defineObject({
  name: "Tally",
  state: Schema.Struct({ count: Schema.Number }),
  initialState: () => ({ count: 0 }),
  events: {
    added: Schema.Struct({ amount: Schema.Number, count: Schema.Number }),
    pinged: Schema.String
  },
  handlers: {
    add: {
      payload: Schema.Struct({ amount: Schema.Number }),
      success: Schema.Number,
      handle: ({ amount }, ctx) =>
        Effect.gen(function*() {
          const { count } = yield* ctx.state.get
          yield* ctx.state.set({ count: count + amount })
          yield* ctx.emit("added", { amount, count: count + amount })
          return count + amount
        })
    },
    /** Changes state and emits, then fails: neither may be seen. */
    addThenFail: {
      error: Boom,
      handle: (_, ctx) =>
        Effect.gen(function*() {
          yield* ctx.state.update((s) => ({ count: s.count + 1000 }))
          yield* ctx.emit("added", { amount: 1000, count: -1 })
          return yield* new Boom()
        })
    },
    /** Emits without changing state: delivered at once (there is no commit to wait for). */
    ping: { success: Schema.Void, handle: (_, ctx) => ctx.emit("pinged", "ping") }
  },
  options: { hibernateAfter: "1 minute", shutdownAfter: "2 minutes" }
})

type Snapshot = DurableObject.Snapshot<{ readonly count: number }>

/** Runs `stream` in the background, collecting what it emits. */
const collect = <A, E, R>(stream: Stream.Stream<A, E, R>) =>
  Effect.gen(function*() {
    const seen: Array<A> = []
    const fiber = yield* Effect.forkChild(Stream.runForEach(stream, (a) => Effect.sync(() => seen.push(a))))
    return { seen, fiber } as const
  })

/** Waits (scheduler turns, then real time) until `done()`; fails after `turns` tries. */
const waitUntil = (done: () => boolean, what: string, turns = 20_000) =>
  Effect.gen(function*() {
    for (let i = 0; i < turns; i++) {
      if (done()) return
      yield* i < 1000 ? Effect.yieldNow : Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 1)))
    }
    assert.fail(`timed out waiting for ${what}`)
  })

/**
 * In-memory storage that records every durable commit of `Tally` (version -> state) and fails every `failEvery`-th
 * commit before writing anything, so the runtime stages states that never become durable.
 */
const recordingStorage = (failEvery: number) => {
  const committed = new Map<number, string>()
  let commits = 0
  const layer = Storage.layerWithScheduler(Effect.map(Storage.makeMemory, (storage) => ({
    ...storage,
    commit: (write: Parameters<typeof storage.commit>[0]) =>
      Effect.suspend(() => {
        if (++commits % failEvery === 0) {
          return Effect.fail(new Errors.StorageError({ operation: "save", detail: "injected" }))
        }
        return Effect.tap(storage.commit(write), (version) =>
          Effect.sync(() => {
            if (write.state !== null) committed.set(version, write.state)
          }))
      })
  })))
  return { committed, layer }
}

describe("live state in one runtime", () => {
  it.effect("starts with the current state, then every commit in order; never a state that did not commit", () => {
    const storage = recordingStorage(7)
    return Effect.gen(function*() {
      const client = Tally.client("t")
      const { fiber, seen } = yield* collect(client.changes)
      yield* waitUntil(() => seen.length === 1, "the initial state")
      assert.deepStrictEqual(seen[0], { version: 0, state: { count: 0 } })
      // Waves of concurrent calls, some failing in the handler, some whose commit fails in storage. The
      // subscriber catches up between waves; a wave commits fewer times than its buffer holds.
      for (let wave = 0; wave < 30; wave++) {
        yield* Effect.forEach(
          Array.from({ length: 10 }, (_, i) => i),
          (i) => Effect.exit(i === 3 ? client.addThenFail() : client.add({ amount: 1 })),
          { concurrency: "unbounded" }
        )
        const last = Math.max(...storage.committed.keys())
        yield* waitUntil(() => seen.at(-1)!.version === last, `commit ${last}`)
      }
      for (let i = 1; i < seen.length; i++) {
        const snapshot = seen[i]!
        assert.isAbove(snapshot.version, seen[i - 1]!.version, "in commit order")
        const stored = storage.committed.get(snapshot.version)
        assert.isDefined(stored, `version ${snapshot.version} was committed`)
        assert.deepStrictEqual(snapshot.state, JSON.parse(stored!), "the state committed at that version")
      }
      assert.isTrue(seen.every((s: Snapshot) => s.state.count < 1000), "no failed handler's state")
      // One element per commit: every durable version, none skipped.
      assert.deepStrictEqual(
        seen.slice(1).map((s) => s.version),
        Array.from(storage.committed.keys()).toSorted((a, b) => a - b)
      )
      assert.isAtLeast(storage.committed.size, 20)
      yield* Fiber.interrupt(fiber)
    }).pipe(Effect.provide(Tally.layer.pipe(Layer.provideMerge(storage.layer))))
  })

  it.effect("a late subscriber starts from the committed state; a delete brings back the initial state", () =>
    Effect.gen(function*() {
      const client = Tally.client("late")
      yield* client.add({ amount: 5 })
      yield* client.add({ amount: 2 })
      const { fiber, seen } = yield* collect(client.changes)
      yield* waitUntil(() => seen.length === 1, "the current state")
      assert.deepStrictEqual(seen[0], { version: 2, state: { count: 7 } })
      yield* DurableObject.delete(Tally, "late")
      yield* waitUntil(() => seen.length === 2, "the reset")
      assert.deepStrictEqual(seen[1], { version: 0, state: { count: 0 } })
      yield* client.add({ amount: 1 })
      yield* waitUntil(() => seen.length === 3, "the commit after the delete")
      assert.deepStrictEqual(seen[2], { version: 1, state: { count: 1 } })
      yield* Fiber.interrupt(fiber)
    }).pipe(Effect.provide(DurableObjectTest.layer(Tally))))

  it.effect("events arrive after their commit, in order; a failed handler emits nothing", () =>
    Effect.gen(function*() {
      const client = Tally.client("e")
      const { fiber, seen } = yield* collect(client.events)
      // The subscription starts in the background: ping until it is seen, then start over.
      yield* client.ping().pipe(Effect.andThen(Effect.yieldNow), Effect.repeat({ until: () => seen.length > 0 }))
      seen.length = 0
      const failed = yield* Effect.exit(client.addThenFail())
      assert.isTrue(Exit.isFailure(failed))
      yield* client.add({ amount: 2 })
      yield* client.add({ amount: 3 })
      yield* waitUntil(() => seen.length === 2, "two events")
      assert.deepStrictEqual(seen, [
        { name: "added", value: { amount: 2, count: 2 } },
        { name: "added", value: { amount: 3, count: 5 } }
      ])
      const versions = yield* DurableObjectTest.persistedVersion(Tally, "e")
      assert.strictEqual(versions, 2)
      yield* Fiber.interrupt(fiber)
    }).pipe(Effect.provide(DurableObjectTest.layer(Tally))))

  it.effect("alarm handlers emit too (the alarm's context is a whole handler context), once the firing commits", () => {
    const Ticker = DurableObject.defineObject({
      name: "Ticker",
      state: Schema.Struct({ ticks: Schema.Number }),
      initialState: () => ({ ticks: 0 }),
      events: { ticked: Schema.Number },
      handlers: {
        start: { success: Schema.Void, handle: (_, ctx) => ctx.alarms.schedule("tick", { in: 1000 }) },
        ping: { success: Schema.Void, handle: () => Effect.void }
      },
      alarms: {
        tick: {
          handle: (_, ctx) =>
            Effect.gen(function*() {
              const { ticks } = yield* ctx.state.get
              yield* ctx.state.set({ ticks: ticks + 1 })
              yield* ctx.emit("ticked", ctx.alarm.attempt)
            })
        }
      }
    })
    return Effect.gen(function*() {
      const client = Ticker.client("t")
      const { fiber, seen } = yield* collect(client.events)
      yield* client.start()
      yield* Effect.yieldNow
      yield* TestClock.adjust("1 second")
      yield* waitUntil(() => seen.length === 1, "the alarm's event")
      assert.deepStrictEqual(seen, [{ name: "ticked", value: 1 }])
      yield* Fiber.interrupt(fiber)
    }).pipe(Effect.provide(DurableObjectTest.layer(Ticker)))
  })

  it.effect("a run whose commit fails emits nothing; the runs around it do", () => {
    const storage = recordingStorage(2)
    return Effect.gen(function*() {
      const client = Tally.client("c")
      const { fiber, seen } = yield* collect(client.events)
      yield* client.ping().pipe(Effect.andThen(Effect.yieldNow), Effect.repeat({ until: () => seen.length > 0 }))
      seen.length = 0
      yield* client.add({ amount: 1 }) // commit 1
      const failed = yield* Effect.exit(client.add({ amount: 10 })) // commit 2: fails in storage
      assert.isTrue(Exit.isFailure(failed))
      yield* client.add({ amount: 100 }) // commit 3, on the reloaded state
      yield* waitUntil(() => seen.length === 2, "two events")
      assert.deepStrictEqual(seen, [
        { name: "added", value: { amount: 1, count: 1 } },
        { name: "added", value: { amount: 100, count: 101 } }
      ])
      yield* Fiber.interrupt(fiber)
    }).pipe(Effect.provide(Tally.layer.pipe(Layer.provideMerge(storage.layer))))
  })

  it.effect("the test kit's runHandler reports the events a handler emitted", () =>
    Effect.gen(function*() {
      const run = yield* DurableObjectTest.runHandler(Tally, "add", { state: { count: 1 }, payload: { amount: 2 } })
      assert.deepStrictEqual(run.events, [{ name: "added", value: { amount: 2, count: 3 } }])
      const undeclared = (ctx: DurableObject.ObjectContext<{ count: number }, {}, typeof Tally.events>) =>
        // @ts-expect-error: an event the definition does not declare
        ctx.emit("nope", 1)
      assert.isFunction(undeclared)
      // At run time too (an untyped caller): emitting it is a defect of the handler.
      const Loose = DurableObject.defineObject({
        name: "Loose",
        state: Schema.Number,
        initialState: () => 0,
        handlers: {
          emit: {
            success: Schema.Void,
            handle: (_, ctx) => (ctx.emit as (name: string, value: unknown) => Effect.Effect<void>)("nope", 1)
          }
        }
      })
      const exit = yield* Effect.exit(DurableObjectTest.runHandler(Loose, "emit", { state: 0 }))
      assert.isTrue(Exit.isFailure(exit) && Cause.hasDies(exit.cause))
    }))

  it.effect("subscribing neither activates nor keeps an object active; subscribers stay across shutdown", () =>
    Effect.gen(function*() {
      const client = Tally.client("idle")
      const { fiber, seen } = yield* collect(client.changes)
      yield* waitUntil(() => seen.length === 1, "the initial state")
      assert.strictEqual(yield* DurableObject.status(Tally, "idle"), "stopped")
      yield* client.add({ amount: 1 })
      yield* TestClock.adjust("90 seconds")
      assert.strictEqual(yield* DurableObject.status(Tally, "idle"), "hibernated")
      yield* TestClock.adjust("5 minutes")
      assert.strictEqual(yield* DurableObject.status(Tally, "idle"), "stopped")
      yield* client.add({ amount: 1 })
      yield* waitUntil(() => seen.length === 3, "the commit after the shutdown")
      assert.deepStrictEqual(seen.map((s) => s.state.count), [0, 1, 2])
      yield* Fiber.interrupt(fiber)
    }).pipe(Effect.provide(DurableObjectTest.layer(Tally))))

  it.effect("a subscriber that never reads does not slow calls, and later gets the newest state", () =>
    Effect.gen(function*() {
      const client = Tally.client("slow")
      // Pulls the current state, then stalls: everything after it piles up in its sliding buffer.
      const stalled = yield* Effect.forkChild(
        client.changes.pipe(Stream.tap(() => Effect.never), Stream.runDrain)
      )
      const reader = yield* collect(client.changes)
      yield* waitUntil(() => reader.seen.length === 1, "the initial state")
      for (let i = 0; i < 500; i++) yield* client.add({ amount: 1 })
      yield* Fiber.interrupt(reader.fiber)
      // A fresh reader over the same topic still gets the newest state first.
      const late = yield* collect(client.changes)
      yield* waitUntil(() => late.seen.length === 1, "the newest state")
      assert.deepStrictEqual(late.seen[0], { version: 500, state: { count: 500 } })
      yield* Fiber.interrupt(late.fiber)
      yield* Fiber.interrupt(stalled)
    }).pipe(Effect.provide(DurableObjectTest.layer(Tally))))

  it.effect("a subscriber more than 16 states behind skips to the 16 newest, in order", () =>
    Effect.gen(function*() {
      const client = Tally.client("behind")
      const pull = yield* Stream.toPull(client.changes)
      assert.deepStrictEqual(yield* pull, [{ version: 0, state: { count: 0 } }])
      // 50 commits while the subscriber does not pull.
      for (let i = 0; i < 50; i++) yield* client.add({ amount: 1 })
      const batch = yield* pull
      assert.deepStrictEqual(batch.map((s) => s.version), Array.from({ length: 16 }, (_, i) => 35 + i))
      assert.deepStrictEqual(batch.at(-1), { version: 50, state: { count: 50 } })
      // Caught up: the next pull waits for the next commit.
      const next = yield* Effect.forkChild(pull)
      yield* client.add({ amount: 1 })
      assert.deepStrictEqual(yield* Fiber.join(next), [{ version: 51, state: { count: 51 } }])
    }).pipe(Effect.provide(DurableObjectTest.layer(Tally))))

  it.effect("an invalid id fails the stream with InvalidObjectId", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Stream.runDrain(Tally.client("").changes))
      assert.strictEqual(error._tag, "InvalidObjectId")
    }).pipe(Effect.provide(DurableObjectTest.layer(Tally))))

  it("handlers cannot be named changes or events", () => {
    assert.throws(
      () =>
        DurableObject.defineObject({
          name: "Clash",
          state: Schema.Number,
          initialState: () => 0,
          handlers: { changes: { success: Schema.Number, handle: () => Effect.succeed(1) } }
        }),
      /cannot name a handler "changes"/
    )
  })
})

/** Runs `effect` on the runtime built into `context`. */
const on = <X, E>(context: Context.Context<never>, effect: Effect.Effect<X, E, DurableObject.Runtime<"Tally">>) =>
  Effect.provideContext(effect, context as Context.Context<DurableObject.Runtime<"Tally">>)

describe("live state across runtimes on PostgreSQL", () => {
  it.live("a subscriber on one runtime sees, in order, the commits made on another", () =>
    Effect.gen(function*() {
      const spec = {
        backend: "PostgreSQL" as const,
        url: postgresUrl(),
        tablePrefix: `live${process.pid}_${Math.random().toString(36).slice(2, 8)}_`
      }
      const options = { tablePrefix: spec.tablePrefix, notifyCommits: true }
      yield* Effect.addFinalizer(() =>
        SqlStorage.migrateDown({ tablePrefix: spec.tablePrefix }).pipe(Effect.provide(clientFor(spec)), Effect.orDie)
      )
      const runtime = () =>
        Tally.layer.pipe(Layer.provideMerge(SqlStorage.layer(options)), Layer.provide(clientFor(spec)))
      const a = yield* Layer.build(runtime())
      const b = yield* Layer.build(runtime())
      const client = Tally.client("x")
      const seen: Array<Snapshot> = []
      const fiber = yield* Effect.forkChild(
        Stream.runForEach(client.changes, (s) => Effect.sync(() => seen.push(s))).pipe(
          Effect.provideContext(b as Context.Context<DurableObject.Runtime<"Tally">>)
        )
      )
      yield* waitUntil(() => seen.length === 1, "the initial state")
      for (let i = 0; i < 20; i++) yield* on(a, client.add({ amount: 1 }))
      yield* waitUntil(() => seen.at(-1)?.version === 20, "runtime A's last commit on runtime B", 5_000)
      for (let i = 1; i < seen.length; i++) {
        assert.isAbove(seen[i]!.version, seen[i - 1]!.version)
        assert.strictEqual(seen[i]!.state.count, seen[i]!.version, "the state committed at that version")
      }
      // B's own commit reaches its subscriber directly; then A sees B's commit and goes on from it.
      yield* on(
        b,
        client.add({ amount: 1 }).pipe(Effect.retry({ times: 5, while: (e) => e._tag === "VersionConflict" }))
      )
      yield* waitUntil(() => seen.at(-1)?.version === 21, "runtime B's commit", 5_000)
      const seenOnA: Array<Snapshot> = []
      const fiberA = yield* Effect.forkChild(
        Stream.runForEach(client.changes, (s) => Effect.sync(() => seenOnA.push(s))).pipe(
          Effect.provideContext(a as Context.Context<DurableObject.Runtime<"Tally">>)
        )
      )
      yield* waitUntil(() => seenOnA.length === 1, "the state on A", 5_000)
      assert.deepStrictEqual(seenOnA[0], { version: 21, state: { count: 21 } })
      yield* Fiber.interrupt(fiberA)
      yield* Fiber.interrupt(fiber)
    }), 30_000)
})

describe("commit announcements", () => {
  it("pack many commits per notification, each under PostgreSQL's payload limit, and read back exactly", () => {
    const commits = Array.from(
      { length: 2000 },
      (_, i) => [`Type${i % 3}`, `object-${i}-${"x".repeat(i % 90)}`, i] as const
    )
    const payloads = CommitNotifier.encode(commits)
    assert.isAbove(payloads.length, 1)
    for (const payload of payloads) assert.isBelow(new TextEncoder().encode(payload).length, 8000)
    assert.deepStrictEqual(payloads.flatMap(CommitNotifier.decode), commits)
    // Anything else on the channel is ignored.
    assert.deepStrictEqual(CommitNotifier.decode("not json"), [])
    assert.deepStrictEqual(CommitNotifier.decode(`[["a","b",1],["a",2,3],"x"]`), [["a", "b", 1]])
  })
})
