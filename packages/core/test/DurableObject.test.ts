import {
  Alarms,
  DurableObject,
  DurableObjectTest,
  Errors,
  FairScheduler,
  Storage,
  Telemetry
} from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, Layer, Metric, References, Schema, Scope } from "effect"
import { TestClock } from "effect/testing"
import {
  Counter,
  Journal,
  LimitExceeded,
  makeGates,
  makeJournal,
  PingA,
  PingB,
  sharedMemoryStorage,
  Slow
} from "./fixtures.ts"

const journalLayer = makeJournal
const CounterTest = () => DurableObjectTest.layer(Counter).pipe(Layer.provideMerge(journalLayer()))
const entries = Effect.map(Journal, (j) => j.entries)

/** Runs `effect` against a fresh Counter runtime (a new layer) on the given storage. */
const withCounterRuntime = <A, E, R>(
  storage: Layer.Layer<Storage.Storage | Alarms.Scheduler>,
  effect: Effect.Effect<A, E, R>
) => effect.pipe(Effect.provide(Counter.layer.pipe(Layer.provide(storage), Layer.provideMerge(journalLayer()))))

/** Lets forked fibers run until they block. */
const settle = Effect.repeat(Effect.yieldNow, { times: 20 })

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  assert.isTrue(Exit.isFailure(exit), "expected a failure")
  const error = Cause.findError((exit as Exit.Failure<A, E>).cause)
  assert.strictEqual(error._tag, "Success", "expected a typed failure")
  return (error as { success: E }).success
}

describe("DurableObject", () => {
  describe("calls", () => {
    it.effect("a first call starts the object from initialState and later calls see its state", () =>
      Effect.gen(function*() {
        assert.strictEqual(yield* DurableObject.status(Counter, "a"), "stopped")
        const counter = Counter.client("a")
        assert.strictEqual(yield* counter.increment({ amount: 2 }), 2)
        assert.strictEqual(yield* counter.increment({ amount: 3 }), 5)
        assert.strictEqual(yield* counter.get(), 5)
        assert.strictEqual(yield* DurableObject.status(Counter, "a"), "active")
        assert.deepStrictEqual(yield* entries, ["load:a"])
      }).pipe(Effect.provide(CounterTest())))

    it.effect("the generic API has the same types and effect as the client", () =>
      Effect.gen(function*() {
        const n: number = yield* DurableObject.call(Counter, "g", "increment", { amount: 4 })
        assert.strictEqual(n, 4)
        assert.strictEqual(yield* DurableObject.call(Counter, "g", "get"), 4)
        yield* DurableObject.call(Counter, "g", "reset")
        assert.strictEqual(yield* Counter.client("g").get(), 0)
      }).pipe(Effect.provide(CounterTest())))

    it.effect("objects with different ids have separate state", () =>
      Effect.gen(function*() {
        yield* Counter.client("x").increment({ amount: 1 })
        yield* Counter.client("y").increment({ amount: 10 })
        assert.strictEqual(yield* Counter.client("x").get(), 1)
        assert.strictEqual(yield* Counter.client("y").get(), 10)
      }).pipe(Effect.provide(CounterTest())))

    it.effect("state is stored in its schema's encoded form and decodes back exactly (DateTime included)", () =>
      Effect.gen(function*() {
        yield* TestClock.setTime(1_700_000_000_123)
        yield* Counter.client("d").increment({ amount: 1 })
        const storage = yield* Storage.Storage
        const stored = yield* storage.load("Counter", "d")
        assert.deepStrictEqual(JSON.parse(stored!.state), {
          count: 1,
          lastIncrementedAt: "2023-11-14T22:13:20.123Z"
        })
        const state = yield* DurableObjectTest.persistedState(Counter, "d")
        assert.strictEqual(state?.lastIncrementedAt?.epochMilliseconds, 1_700_000_000_123)
      }).pipe(Effect.provide(CounterTest())))

    it.effect("callEncoded decodes an encoded payload, encodes the reply, and names unknown handlers", () =>
      Effect.gen(function*() {
        assert.strictEqual(yield* DurableObject.callEncoded(Counter, "e", "increment", { amount: 7 }), 7)
        const unknown = yield* Effect.exit(DurableObject.callEncoded(Counter, "e", "explode", {}))
        const error = failureOf(unknown) as Errors.UnknownHandler
        assert.strictEqual(error._tag, "UnknownHandler")
        assert.strictEqual(error.handler, "explode")
        assert.include(error.known, "increment")
        assert.strictEqual(yield* DurableObject.status(Counter, "e"), "active")
      }).pipe(Effect.provide(CounterTest())))

    it.effect("the members of ctx.state and ctx.alarms work when taken off their object", () => {
      const Loose = DurableObject.defineObject({
        name: "Loose",
        state: Schema.Struct({ n: Schema.Number }),
        initialState: () => ({ n: 0 }),
        handlers: {
          bump: {
            success: Schema.Number,
            handle: (_, ctx) => {
              const { get, set, update, modify } = ctx.state
              const { schedule, cancel, list } = ctx.alarms
              return Effect.gen(function*() {
                yield* set({ n: (yield* get).n + 1 })
                yield* update((s) => ({ n: s.n + 1 }))
                yield* schedule("ping", { in: "1 hour" })
                yield* cancel("ping")
                assert.deepStrictEqual(yield* Effect.orDie(list), [])
                return yield* modify((s) => [s.n + 1, { n: s.n + 1 }])
              })
            }
          }
        },
        alarms: { ping: { handle: () => Effect.void } }
      })
      return Effect.gen(function*() {
        assert.strictEqual(yield* Loose.client("l").bump(), 3)
        assert.strictEqual(yield* Loose.client("l").bump(), 6)
      }).pipe(Effect.provide(DurableObjectTest.layer(Loose)))
    })

    it.effect("handlers can use the services they declare", () =>
      Effect.gen(function*() {
        yield* Counter.client("s").log("hello")
        assert.deepStrictEqual(yield* entries, ["load:s", "hello"])
      }).pipe(Effect.provide(CounterTest())))
  })

  describe("persistence", () => {
    it.effect("state survives a fresh runtime on the same storage", () =>
      Effect.gen(function*() {
        const storage = yield* sharedMemoryStorage
        yield* withCounterRuntime(storage, Counter.client("p").increment({ amount: 41 }))
        const n = yield* withCounterRuntime(storage, Counter.client("p").increment({ amount: 1 }))
        assert.strictEqual(n, 42)
      }))

    it.effect("nothing is written for an object whose state never changed", () =>
      Effect.gen(function*() {
        assert.strictEqual(yield* Counter.client("r").get(), 0)
        yield* Counter.client("r").reset() // count is already 0: same encoded state
        assert.strictEqual(yield* DurableObjectTest.persistedVersion(Counter, "r"), 0)
        assert.isUndefined(yield* DurableObjectTest.persistedState(Counter, "r"))
      }).pipe(Effect.provide(CounterTest())))

    it.effect("each committed change bumps the stored version by one; reads bump nothing", () =>
      Effect.gen(function*() {
        const c = Counter.client("v")
        yield* c.increment({ amount: 1 })
        yield* c.increment({ amount: 1 })
        yield* c.get()
        assert.strictEqual(yield* DurableObjectTest.persistedVersion(Counter, "v"), 2)
      }).pipe(Effect.provide(CounterTest())))
  })

  describe("transactional handlers", () => {
    it.effect("a handler's typed error reaches the caller and leaves no trace", () =>
      Effect.gen(function*() {
        const c = Counter.client("t")
        yield* c.increment({ amount: 5 })
        const error = failureOf(yield* Effect.exit(c.incrementThenFail()))
        assert.instanceOf(error, LimitExceeded)
        assert.strictEqual(yield* c.get(), 5)
        assert.strictEqual((yield* DurableObjectTest.persistedState(Counter, "t"))?.count, 5)
        assert.strictEqual(yield* DurableObjectTest.persistedVersion(Counter, "t"), 1)
      }).pipe(Effect.provide(CounterTest())))

    it.effect("a defect becomes HandlerDefect, resets the object and touches no other object", () =>
      Effect.gen(function*() {
        yield* Counter.client("t").increment({ amount: 5 })
        yield* Counter.client("other").increment({ amount: 9 })
        const error = failureOf(yield* Effect.exit(Counter.client("t").incrementThenDie())) as Errors.HandlerDefect
        assert.strictEqual(error._tag, "HandlerDefect")
        assert.strictEqual(error.handler, "incrementThenDie")
        assert.include(error.pretty, "boom")
        assert.strictEqual(yield* Counter.client("t").get(), 5)
        assert.strictEqual(yield* Counter.client("other").get(), 9)
        assert.strictEqual(yield* DurableObjectTest.persistedVersion(Counter, "t"), 1)
      }).pipe(Effect.provide(CounterTest())))

    it.effect("a call past callTimeout gets CallTimeout and its changes are rolled back", () =>
      Effect.gen(function*() {
        const c = Counter.client("slow")
        yield* c.increment({ amount: 1 })
        const fiber = yield* Effect.forkChild(Effect.exit(c.incrementThenSleep({ millis: 60_000 })))
        yield* TestClock.adjust("5 seconds")
        const error = failureOf(yield* Fiber.join(fiber)) as Errors.CallTimeout
        assert.strictEqual(error._tag, "CallTimeout")
        assert.strictEqual(error.timeoutMillis, 5000)
        assert.strictEqual(yield* c.get(), 1)
        assert.strictEqual(yield* DurableObjectTest.persistedVersion(Counter, "slow"), 1)
      }).pipe(Effect.provide(CounterTest())))

    it.effect("an interrupted call writes nothing and the object stays usable", () =>
      Effect.gen(function*() {
        const c = Counter.client("int")
        yield* c.increment({ amount: 1 })
        const fiber = yield* Effect.forkChild(c.incrementThenSleep({ millis: 1000 }))
        yield* Effect.yieldNow
        yield* Fiber.interrupt(fiber)
        assert.strictEqual(yield* c.get(), 1)
        assert.strictEqual(yield* c.increment({ amount: 1 }), 2)
        assert.strictEqual(yield* DurableObjectTest.persistedVersion(Counter, "int"), 2)
      }).pipe(Effect.provide(CounterTest())))

    it.effect("a reply is released only after its state is committed", () =>
      Effect.gen(function*() {
        let committedBeforeReply = false
        const memory = yield* Storage.makeMemory
        const observing = Storage.layerWithScheduler(Effect.succeed({
          ...memory,
          commit: (write: Storage.WriteSet) =>
            Effect.tap(memory.commit(write), () =>
              Effect.sync(() => {
                committedBeforeReply = true
              }))
        }))
        const n = yield* withCounterRuntime(observing, Counter.client("o").increment({ amount: 3 }))
        assert.strictEqual(n, 3)
        assert.isTrue(committedBeforeReply)
      }))

    it.effect("a failed commit fails the call with StorageError, reverts state, and the next call works", () =>
      Effect.gen(function*() {
        const memory = yield* Storage.makeMemory
        let failNext = false
        const flaky = Storage.layerWithScheduler(Effect.succeed({
          ...memory,
          commit: (write: Storage.WriteSet) =>
            Effect.suspend(() => {
              if (failNext) {
                failNext = false
                return Effect.fail(new Errors.StorageError({ operation: "commit", detail: "disk on fire" }))
              }
              return memory.commit(write)
            })
        }))
        yield* withCounterRuntime(
          flaky,
          Effect.gen(function*() {
            const c = Counter.client("f")
            yield* c.increment({ amount: 1 })
            failNext = true
            const error = failureOf(yield* Effect.exit(c.increment({ amount: 1 })))
            assert.strictEqual((error as Errors.StorageError)._tag, "StorageError")
            assert.strictEqual(yield* c.get(), 1)
            assert.strictEqual(yield* c.increment({ amount: 1 }), 2)
          })
        )
      }))

    it.effect("two runtimes on one storage never lose an update: the stale one gets VersionConflict and reloads", () =>
      Effect.gen(function*() {
        const storage = yield* sharedMemoryStorage
        const runtimeA = Counter.layer.pipe(Layer.provide(storage), Layer.provide(journalLayer()))
        const runtimeB = Counter.layer.pipe(Layer.provide(storage), Layer.provide(journalLayer()))
        const contextA = yield* Layer.build(runtimeA)
        const contextB = yield* Layer.build(runtimeB)
        const onA = <A, E>(e: Effect.Effect<A, E, DurableObject.Runtime<"Counter">>) => Effect.provide(e, contextA)
        const onB = <A, E>(e: Effect.Effect<A, E, DurableObject.Runtime<"Counter">>) => Effect.provide(e, contextB)
        const c = Counter.client("shared")
        assert.strictEqual(yield* onA(c.increment({ amount: 1 })), 1)
        assert.strictEqual(yield* onB(c.increment({ amount: 1 })), 2) // B loads version 1
        const conflict = failureOf(yield* Effect.exit(onA(c.increment({ amount: 1 })))) as Errors.VersionConflict
        assert.strictEqual(conflict._tag, "VersionConflict")
        assert.strictEqual(conflict.expectedVersion, 1)
        assert.strictEqual(conflict.actualVersion, 2)
        assert.strictEqual(yield* onA(c.increment({ amount: 1 })), 3) // A reloaded
        const stale = failureOf(yield* Effect.exit(onB(c.increment({ amount: 1 })))) as Errors.VersionConflict
        assert.strictEqual(stale._tag, "VersionConflict")
        assert.strictEqual(yield* onB(c.increment({ amount: 1 })), 4) // B reloaded too
        assert.strictEqual(
          yield* DurableObjectTest.persistedVersion(Counter, "shared").pipe(Effect.provide(storage)),
          4
        )
      }))
  })

  describe("output gate", () => {
    /** Memory storage whose commits wait until the test releases them, one at a time. */
    const gatedStorage = Effect.gen(function*() {
      const memory = yield* Storage.makeMemory
      const pending: Array<{ readonly write: Storage.WriteSet; readonly release: (fail: boolean) => void }> = []
      const layer = Storage.layerWithScheduler(Effect.succeed({
        ...memory,
        commit: (write: Storage.WriteSet) =>
          Effect.callback<boolean>((resume) => {
            pending.push({ write, release: (fail) => resume(Effect.succeed(fail)) })
          }).pipe(
            Effect.flatMap((fail) =>
              fail
                ? Effect.fail(new Errors.StorageError({ operation: "commit", detail: "injected" }))
                : memory.commit(write)
            )
          )
      }))
      return { layer, pending, memory }
    })

    it.effect("calls behind an in-flight commit run on its state, merge into one commit, and reply when it lands", () =>
      Effect.gen(function*() {
        const gated = yield* gatedStorage
        yield* Effect.gen(function*() {
          const c = Counter.client("pipe")
          const first = yield* Effect.forkChild(c.increment({ amount: 1 }))
          yield* settle
          assert.strictEqual(gated.pending.length, 1)
          const rest = yield* Effect.forEach([1, 2, 3], () => Effect.forkChild(c.increment({ amount: 1 })))
          yield* settle
          // the handlers ran (the object was not blocked by the commit) but nobody has a reply yet
          assert.isUndefined(first.pollUnsafe())
          assert.isTrue(rest.every((f) => f.pollUnsafe() === undefined))
          assert.strictEqual(gated.pending.length, 1, "one commit in flight, the rest wait merged")
          gated.pending.shift()!.release(false)
          yield* settle
          assert.strictEqual(yield* Fiber.join(first), 1)
          assert.strictEqual(gated.pending.length, 1, "the three queued changes go out as one commit")
          assert.isTrue(rest.every((f) => f.pollUnsafe() === undefined), "their replies wait for it")
          gated.pending.shift()!.release(false)
          assert.deepStrictEqual(yield* Effect.forEach(rest, Fiber.join), [2, 3, 4])
          const stored = yield* gated.memory.load("Counter", "pipe")
          assert.strictEqual(stored?.version, 2)
          assert.strictEqual(JSON.parse(stored!.state).count, 4)
        }).pipe(Effect.provide(Counter.layer.pipe(Layer.provideMerge(gated.layer), Layer.provide(journalLayer()))))
      }))

    it.effect("a read behind an in-flight commit replies only once that commit is durable", () =>
      Effect.gen(function*() {
        const gated = yield* gatedStorage
        yield* Effect.gen(function*() {
          const c = Counter.client("read")
          const write = yield* Effect.forkChild(c.increment({ amount: 5 }))
          yield* settle
          const read = yield* Effect.forkChild(c.get())
          yield* settle
          assert.isUndefined(read.pollUnsafe())
          gated.pending.shift()!.release(false)
          assert.strictEqual(yield* Fiber.join(read), 5)
          assert.strictEqual(yield* Fiber.join(write), 5)
        }).pipe(Effect.provide(Counter.layer.pipe(Layer.provideMerge(gated.layer), Layer.provide(journalLayer()))))
      }))

    it.effect("closing the runtime lets in-flight commits finish before objects stop", () =>
      Effect.gen(function*() {
        const gated = yield* gatedStorage
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(
          Counter.layer.pipe(Layer.provideMerge(gated.layer), Layer.provide(journalLayer())),
          scope
        )
        const call = yield* Effect.forkChild(
          Counter.client("closing").increment({ amount: 7 }).pipe(Effect.provide(context))
        )
        yield* settle
        const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
        yield* settle
        assert.isUndefined(closing.pollUnsafe(), "the runtime waits for the commit")
        gated.pending.shift()!.release(false)
        yield* Fiber.join(closing)
        assert.strictEqual(yield* Fiber.join(call), 7)
        assert.strictEqual(JSON.parse((yield* gated.memory.load("Counter", "closing"))!.state).count, 7)
      }))

    it.effect("when an in-flight commit fails, every call that saw its state fails too and the object reverts", () =>
      Effect.gen(function*() {
        const gated = yield* gatedStorage
        yield* Effect.gen(function*() {
          const c = Counter.client("rollback")
          const base = yield* Effect.forkChild(c.increment({ amount: 1 }))
          yield* settle
          gated.pending.shift()!.release(false)
          assert.strictEqual(yield* Fiber.join(base), 1)
          const doomed = yield* Effect.forkChild(Effect.exit(c.increment({ amount: 10 })))
          yield* settle
          const speculativeWrite = yield* Effect.forkChild(Effect.exit(c.increment({ amount: 100 })))
          const speculativeRead = yield* Effect.forkChild(Effect.exit(c.get()))
          yield* settle
          gated.pending.shift()!.release(true)
          for (const fiber of [doomed, speculativeWrite, speculativeRead]) {
            const exit = yield* Fiber.join(fiber)
            assert.strictEqual(failureOf(exit)._tag, "StorageError")
          }
          assert.strictEqual(gated.pending.length, 0, "nothing built on the failed commit reaches storage")
          const read = yield* Effect.forkChild(c.get())
          yield* settle
          assert.strictEqual(yield* Fiber.join(read), 1, "reloaded from storage")
        }).pipe(Effect.provide(Counter.layer.pipe(Layer.provideMerge(gated.layer), Layer.provide(journalLayer()))))
      }))

    it.effect("a caller that waited while the object was dropped gets it reloaded when its turn comes", () =>
      Effect.gen(function*() {
        const gated = yield* gatedStorage
        yield* Effect.gen(function*() {
          const c = Counter.client("dropped")
          yield* c.get() // active
          const doomed = yield* Effect.forkChild(Effect.exit(c.increment({ amount: 1 })))
          yield* settle
          // Runs on the speculative state and holds the object while it sleeps.
          const holder = yield* Effect.forkChild(Effect.exit(c.incrementThenSleep({ millis: 1000 })))
          yield* settle
          const waiter = yield* Effect.forkChild(c.get())
          yield* settle
          gated.pending.shift()!.release(true) // the first commit fails: the in-memory copy is dropped
          yield* settle
          yield* TestClock.adjust("1 second")
          assert.strictEqual(failureOf(yield* Fiber.join(doomed))._tag, "StorageError")
          assert.strictEqual(failureOf(yield* Fiber.join(holder))._tag, "StorageError")
          assert.strictEqual(yield* Fiber.join(waiter), 0, "reloaded from storage, where nothing was written")
          assert.strictEqual(gated.pending.length, 0)
        }).pipe(Effect.provide(Counter.layer.pipe(Layer.provideMerge(gated.layer), Layer.provide(journalLayer()))))
      }))
  })

  describe("concurrency", () => {
    it.effect("1,000 concurrent increments on one object end at exactly 1,000", () =>
      Effect.gen(function*() {
        const c = Counter.client("hot")
        yield* Effect.forEach(Array.from({ length: 1000 }), () => c.increment({ amount: 1 }), {
          concurrency: "unbounded",
          discard: true
        })
        assert.strictEqual(yield* c.get(), 1000)
        assert.strictEqual((yield* DurableObjectTest.persistedState(Counter, "hot"))?.count, 1000)
      }).pipe(Effect.provide(CounterTest())))

    it.effect(
      "a long queue on one object drains without deep stacks or lost wake-ups, whatever the yield budget",
      () =>
        Effect.gen(function*() {
          for (const ops of [2048, 256]) {
            const c = Counter.client(`queue${ops}`)
            let done = 0
            // 1,000 callers each calling again as soon as they have a reply keep the mailbox full for a while.
            yield* Effect.forEach(
              Array.from({ length: 1000 }),
              () =>
                Effect.gen(function*() {
                  for (let i = 0; i < 50; i++) {
                    yield* c.get()
                    done++
                  }
                }),
              { concurrency: "unbounded", discard: true }
            ).pipe(Effect.provideService(References.MaxOpsBeforeYield, ops))
            assert.strictEqual(done, 50_000)
          }
        }).pipe(Effect.provide(CounterTest())),
      30_000
    )

    it.effect("1,000 racing first calls activate the object exactly once", () =>
      Effect.gen(function*() {
        const results = yield* Effect.forEach(
          Array.from({ length: 1000 }),
          () => Effect.exit(Counter.client("race").get()),
          { concurrency: "unbounded" }
        )
        assert.isTrue(results.every(Exit.isSuccess))
        assert.deepStrictEqual(yield* entries, ["load:race"])
        const activations = yield* Metric.value(
          Metric.withAttributes(Telemetry.activations, { object_type: "Counter" })
        )
        assert.strictEqual(activations.count, 1)
      }).pipe(Effect.provide(CounterTest()), Effect.provideService(Metric.MetricRegistry, new Map())))

    it.effect("one object's handlers run one at a time, in arrival order", () =>
      Effect.gen(function*() {
        const gates = yield* makeGates
        yield* Effect.gen(function*() {
          const s = Slow.client("order")
          const first = yield* Effect.forkChild(s.append({ entry: "1", gate: "g1" }))
          yield* settle
          const second = yield* Effect.forkChild(s.append({ entry: "2" }))
          yield* settle
          const third = yield* Effect.forkChild(s.append({ entry: "3" }))
          yield* settle
          assert.isUndefined(second.pollUnsafe(), "the second call must wait for the first")
          yield* gates.open("g1")
          assert.deepStrictEqual(yield* Fiber.join(first), ["1"])
          assert.deepStrictEqual(yield* Fiber.join(second), ["1", "2"])
          assert.deepStrictEqual(yield* Fiber.join(third), ["1", "2", "3"])
        }).pipe(Effect.provide(DurableObjectTest.layer(Slow).pipe(Layer.provide(gates.layer))))
      }))

    it.effect("different objects run in parallel", () =>
      Effect.gen(function*() {
        const gates = yield* makeGates
        yield* Effect.gen(function*() {
          const blocked = yield* Effect.forkChild(Slow.client("a").append({ entry: "a", gate: "never" }))
          yield* settle
          assert.deepStrictEqual(yield* Slow.client("b").append({ entry: "b" }), ["b"])
          yield* Fiber.interrupt(blocked)
        }).pipe(Effect.provide(DurableObjectTest.layer(Slow).pipe(Layer.provide(gates.layer))))
      }))

    it.effect("calls beyond mailboxCapacity get ObjectOverloaded and change nothing", () =>
      Effect.gen(function*() {
        const gates = yield* makeGates
        yield* Effect.gen(function*() {
          const s = Slow.client("busy")
          const running = yield* Effect.forkChild(s.append({ entry: "running", gate: "g" }))
          yield* settle
          const w1 = yield* Effect.forkChild(s.append({ entry: "w1" }))
          yield* settle
          const w2 = yield* Effect.forkChild(s.append({ entry: "w2" }))
          yield* settle
          const overflow = failureOf(yield* Effect.exit(s.append({ entry: "overflow" }))) as Errors.ObjectOverloaded
          assert.strictEqual(overflow._tag, "ObjectOverloaded")
          assert.strictEqual(overflow.mailboxCapacity, 2)
          yield* gates.open("g")
          yield* Fiber.join(running)
          yield* Fiber.join(w1)
          yield* Fiber.join(w2)
          assert.deepStrictEqual(yield* s.read(), ["running", "w1", "w2"])
        }).pipe(Effect.provide(DurableObjectTest.layer(Slow).pipe(Layer.provide(gates.layer))))
      }))

    it.effect("a call waiting past its deadline gets CallTimeout and leaves the line; the others run in order", () =>
      Effect.gen(function*() {
        const gates = yield* makeGates
        yield* Effect.gen(function*() {
          const s = Slow.client("deadline")
          yield* s.read() // active: calls take the hot path
          // The holder cannot be interrupted, so its own timeout cannot free the lock before the waiter's.
          const holder = yield* Effect.forkChild(Effect.exit(s.appendStubborn({ entry: "holder", gate: "g" })))
          yield* settle
          yield* TestClock.adjust("10 seconds")
          const waiter = yield* Effect.forkChild(Effect.exit(s.append({ entry: "waiter" })))
          yield* settle
          yield* TestClock.adjust("55 seconds") // the holder is past its deadline, the waiter not yet
          assert.isUndefined(waiter.pollUnsafe(), "the waiter's deadline has not passed")
          const late = yield* Effect.forkChild(Effect.exit(s.append({ entry: "late" })))
          yield* settle
          yield* TestClock.adjust("10 seconds") // the waiter is past its deadline; the lock is still held
          const timedOut = failureOf(yield* Fiber.join(waiter)) as Errors.CallTimeout
          assert.strictEqual(timedOut._tag, "CallTimeout")
          assert.strictEqual(timedOut.handler, "append")
          assert.isUndefined(late.pollUnsafe(), "the lock is still held")
          yield* gates.open("g")
          const holderError = failureOf(yield* Fiber.join(holder)) as Errors.CallTimeout
          assert.strictEqual(holderError._tag, "CallTimeout", "a handler that ran past its deadline writes nothing")
          assert.deepStrictEqual(yield* Fiber.join(late), Exit.succeed(["late"]))
          assert.deepStrictEqual(yield* s.read(), ["late"])
        }).pipe(Effect.provide(DurableObjectTest.layer(Slow).pipe(Layer.provide(gates.layer))))
      }))

    it.effect("an interrupted waiter leaves the line, and one interrupted as the lock reaches it passes it on", () =>
      Effect.gen(function*() {
        const gates = yield* makeGates
        yield* Effect.gen(function*() {
          const s = Slow.client("leave")
          yield* s.read()
          const holder = yield* Effect.forkChild(s.append({ entry: "holder", gate: "g" }))
          yield* settle
          const gone = yield* Effect.forkChild(s.append({ entry: "gone" }))
          yield* settle
          const next = yield* Effect.forkChild(s.append({ entry: "next" }))
          yield* settle
          yield* Fiber.interrupt(gone)
          const granted = yield* Effect.forkChild(s.append({ entry: "granted" }))
          yield* settle
          // Opening the gate ends the holder's handler, which hands the lock to `next`; interrupting it before
          // it resumes must hand the lock on to `granted`.
          yield* gates.open("g")
          yield* Fiber.interrupt(next)
          assert.deepStrictEqual(yield* Fiber.join(holder), ["holder"])
          assert.deepStrictEqual(yield* Fiber.join(granted), ["holder", "granted"])
          assert.deepStrictEqual(yield* s.read(), ["holder", "granted"])
        }).pipe(Effect.provide(DurableObjectTest.layer(Slow).pipe(Layer.provide(gates.layer))))
      }))

    it.effect("a handler calling its own object gets ReentrantCall instead of a deadlock", () =>
      Effect.gen(function*() {
        const error = failureOf(yield* Effect.exit(Counter.client("self").callSelf())) as Errors.ReentrantCall
        assert.strictEqual(error._tag, "ReentrantCall")
        assert.deepStrictEqual(error.chain, ["Counter/self"])
        assert.strictEqual(yield* Counter.client("self").get(), 0) // still usable
      }).pipe(Effect.provide(CounterTest())))

    it.effect("a cycle across objects (A -> B -> A) gets ReentrantCall", () =>
      Effect.gen(function*() {
        const error = failureOf(yield* Effect.exit(PingA.client("p").viaB())) as Errors.ReentrantCall
        assert.strictEqual(error._tag, "ReentrantCall")
        assert.deepStrictEqual(error.chain, ["PingA/p", "PingB/p"])
      }).pipe(Effect.provide(DurableObjectTest.layer(PingA, PingB))))
  })

  describe("bad input", () => {
    it.effect("an invalid payload gets InvalidPayload and does not activate the object", () =>
      Effect.gen(function*() {
        const error = failureOf(
          yield* Effect.exit(DurableObject.call(Counter, "bad", "increment", { amount: "five" } as any))
        ) as Errors.InvalidPayload
        assert.strictEqual(error._tag, "InvalidPayload")
        assert.strictEqual(error.handler, "increment")
        assert.include(error.issue, "amount")
        assert.strictEqual(yield* DurableObject.status(Counter, "bad"), "stopped")
        assert.deepStrictEqual(yield* entries, [])
      }).pipe(Effect.provide(CounterTest())))

    it.effect.prop(
      "any payload that does not match the schema is rejected with InvalidPayload, and a matching one is accepted",
      { input: Schema.Json },
      ({ input }) =>
        Effect.gen(function*() {
          const valid = typeof input === "object" && input !== null && !Array.isArray(input) &&
            typeof (input as any).amount === "number"
          const exit = yield* Effect.exit(DurableObject.callEncoded(Counter, "fuzz", "increment", input))
          if (valid) {
            assert.isTrue(Exit.isSuccess(exit) || failureOf(exit)._tag === "LimitExceeded")
          } else {
            assert.strictEqual(failureOf(exit)._tag, "InvalidPayload")
          }
        }).pipe(Effect.provide(CounterTest())),
      { fastCheck: { numRuns: 200 } } as any
    )

    it.effect("ids that are empty, too long or malformed get InvalidObjectId; odd but valid ids work", () =>
      Effect.gen(function*() {
        for (const id of ["", "x".repeat(Errors.maxObjectIdLength + 1), "é".repeat(600), "a\uD800b", "nul\u0000"]) {
          const error = failureOf(yield* Effect.exit(Counter.client(id).get()))
          assert.strictEqual(error._tag, "InvalidObjectId", `id ${JSON.stringify(id.slice(0, 10))}`)
        }
        for (const id of ["x".repeat(Errors.maxObjectIdLength), "Robert'); DROP TABLE objects;--", "ünï 🎉 \"q\""]) {
          assert.strictEqual(yield* Counter.client(id).increment({ amount: 1 }), 1)
          assert.strictEqual((yield* DurableObjectTest.persistedState(Counter, id))?.count, 1)
        }
      }).pipe(Effect.provide(CounterTest())))

    it.effect("stored state that does not decode gets StateDecodeError, stays inactive, and is left untouched", () =>
      Effect.gen(function*() {
        const storage = yield* Storage.Storage
        yield* storage.commit({
          objectType: "Counter",
          objectId: "corrupt",
          expectedVersion: 0,
          state: JSON.stringify({ count: "not a number" })
        })
        const error = failureOf(yield* Effect.exit(Counter.client("corrupt").get())) as Errors.StateDecodeError
        assert.strictEqual(error._tag, "StateDecodeError")
        assert.include(error.issue, "count")
        assert.strictEqual(yield* DurableObject.status(Counter, "corrupt"), "stopped")
        const stored = yield* storage.load("Counter", "corrupt")
        assert.deepStrictEqual(stored, { state: JSON.stringify({ count: "not a number" }), version: 1 })
        // and it can still be deleted, after which it starts afresh
        yield* DurableObject.delete(Counter, "corrupt")
        assert.strictEqual(yield* Counter.client("corrupt").get(), 0)
      }).pipe(Effect.provide(CounterTest())))

    it.effect("stored state that is not JSON at all gets StateDecodeError too", () =>
      Effect.gen(function*() {
        const storage = yield* Storage.Storage
        yield* storage.commit({ objectType: "Counter", objectId: "garbled", expectedVersion: 0, state: "{count: 1" })
        const error = failureOf(yield* Effect.exit(Counter.client("garbled").get())) as Errors.StateDecodeError
        assert.strictEqual(error._tag, "StateDecodeError")
        assert.strictEqual(yield* DurableObject.status(Counter, "garbled"), "stopped")
      }).pipe(Effect.provide(CounterTest())))
  })

  describe("lifecycle", () => {
    it.effect("after hibernateAfter idle an object hibernates, and the next call wakes it with its state", () =>
      Effect.gen(function*() {
        yield* Counter.client("h").increment({ amount: 3 })
        yield* TestClock.adjust("4 minutes")
        assert.strictEqual(yield* DurableObject.status(Counter, "h"), "active")
        yield* TestClock.adjust("1 minute")
        assert.strictEqual(yield* DurableObject.status(Counter, "h"), "hibernated")
        assert.strictEqual(yield* Counter.client("h").increment({ amount: 1 }), 4)
        assert.strictEqual(yield* DurableObject.status(Counter, "h"), "active")
        assert.deepStrictEqual(yield* entries, ["load:h"]) // woken, not reloaded
      }).pipe(Effect.provide(CounterTest())))

    it.effect("after shutdownAfter idle onShutdown has run and the object is gone; a call re-activates it", () =>
      Effect.gen(function*() {
        yield* Counter.client("s").increment({ amount: 3 })
        yield* TestClock.adjust("59 minutes")
        assert.strictEqual(yield* DurableObject.status(Counter, "s"), "hibernated")
        yield* TestClock.adjust("1 minute")
        assert.strictEqual(yield* DurableObject.status(Counter, "s"), "stopped")
        assert.deepStrictEqual(yield* entries, ["load:s", "shutdown:s"])
        assert.deepStrictEqual(yield* DurableObject.loadedIds(Counter), [])
        assert.strictEqual(yield* Counter.client("s").get(), 3)
        assert.deepStrictEqual(yield* entries, ["load:s", "shutdown:s", "load:s"])
      }).pipe(Effect.provide(CounterTest())))

    it.effect("thousands of objects idle at once all shut down beside busy callers, and come back on their next call", () =>
      Effect.gen(function*() {
        const Idler = DurableObject.defineObject({
          name: "Idler",
          state: Schema.Struct({}),
          initialState: () => ({}),
          handlers: { hello: { success: Schema.String, handle: () => Effect.succeed("hi") } },
          options: { hibernateAfter: "1 second", shutdownAfter: "1 second" }
        })
        const n = 5_000
        yield* Effect.gen(function*() {
          yield* Effect.forEach(Array.from({ length: n }, (_, i) => `i${i}`), (id) => Idler.client(id).hello(), {
            discard: true
          })
          assert.strictEqual((yield* DurableObject.loadedIds(Idler)).length, n)
          // Callers that never suspend (calls on an active object finish synchronously) keep every turn busy.
          let stop = false
          const busy = yield* Effect.forkChild(Effect.all(
            Array.from({ length: 20 }, (_, k) =>
              Effect.whileLoop({
                while: () => !stop,
                body: () => Idler.client(`busy${k}`).hello(),
                step: () => undefined
              })),
            { concurrency: "unbounded", discard: true }
          ))
          yield* TestClock.adjust("2 seconds")
          const idleLeft = Effect.map(DurableObject.loadedIds(Idler), (ids) => ids.filter((id) => id.startsWith("i")))
          let left = yield* idleLeft
          for (let turn = 0; turn < 1_000 && left.length > 0; turn++) {
            yield* Effect.yieldNow
            left = yield* idleLeft
          }
          stop = true
          yield* Fiber.join(busy)
          assert.deepStrictEqual(left, [])
          assert.strictEqual(yield* DurableObject.status(Idler, "i0"), "stopped")
          assert.strictEqual(yield* Idler.client("i0").hello(), "hi")
        }).pipe(Effect.provide(Idler.layer.pipe(Layer.provide(Storage.layerMemory))))
      }))

    it.effect("activity resets the idle timers", () =>
      Effect.gen(function*() {
        const c = Counter.client("busy")
        yield* c.get()
        for (let i = 0; i < 5; i++) {
          yield* TestClock.adjust("4 minutes")
          yield* c.get()
        }
        assert.strictEqual(yield* DurableObject.status(Counter, "busy"), "active")
        yield* TestClock.adjust("5 minutes")
        assert.strictEqual(yield* DurableObject.status(Counter, "busy"), "hibernated")
      }).pipe(Effect.provide(CounterTest())))

    it.effect("each object hibernates after its own last activity, whatever order they were first used in", () =>
      Effect.gen(function*() {
        const a = Counter.client("first")
        const b = Counter.client("second")
        yield* a.get() // t = 0
        yield* TestClock.adjust("1 minute")
        yield* b.get() // t = 1 min
        yield* TestClock.adjust("2 minutes")
        yield* a.get() // t = 3 min: `first` is now the more recently active
        yield* TestClock.adjust("3 minutes") // t = 6 min
        assert.strictEqual(yield* DurableObject.status(Counter, "second"), "hibernated")
        assert.strictEqual(yield* DurableObject.status(Counter, "first"), "active")
        yield* TestClock.adjust("2 minutes") // t = 8 min
        assert.strictEqual(yield* DurableObject.status(Counter, "first"), "hibernated")
      }).pipe(Effect.provide(CounterTest())))

    it.effect("stop runs onShutdown after the call in progress and keeps the stored state", () =>
      Effect.gen(function*() {
        yield* Counter.client("st").increment({ amount: 2 })
        yield* DurableObject.stop(Counter, "st")
        assert.strictEqual(yield* DurableObject.status(Counter, "st"), "stopped")
        assert.deepStrictEqual(yield* entries, ["load:st", "shutdown:st"])
        yield* DurableObject.stop(Counter, "st") // stopping a stopped object does nothing
        assert.strictEqual(yield* Counter.client("st").get(), 2)
      }).pipe(Effect.provide(CounterTest())))

    it.effect("delete removes the stored state; the next call starts from initialState", () =>
      Effect.gen(function*() {
        yield* Counter.client("del").increment({ amount: 2 })
        yield* DurableObject.delete(Counter, "del")
        assert.strictEqual(yield* DurableObject.status(Counter, "del"), "stopped")
        assert.isUndefined(yield* DurableObjectTest.persistedState(Counter, "del"))
        assert.strictEqual(yield* Counter.client("del").get(), 0)
        yield* DurableObject.delete(Counter, "never-existed")
      }).pipe(Effect.provide(CounterTest())))

    it.effect("closing the runtime stops loaded objects gracefully", () =>
      Effect.gen(function*() {
        const storage = yield* sharedMemoryStorage
        const journal = { entries: [] as Array<string> }
        yield* Counter.client("bye").increment({ amount: 1 }).pipe(
          Effect.provide(Counter.layer.pipe(Layer.provide(storage), Layer.provide(Layer.succeed(Journal, journal))))
        )
        assert.deepStrictEqual(journal.entries, ["load:bye", "shutdown:bye"])
      }))

    it.effect("1,000 callers writing one object on in-memory storage each get their own reply, in order", () =>
      Effect.gen(function*() {
        // Commits to memory settle at once, and their waiting callers are resumed as scheduler tasks of their
        // own (not inline, where one chain ran every caller's next call): every caller still gets its reply.
        const callers = 1000
        const callsEach = 5
        const counter = Counter.client("crowded")
        const replies = yield* Effect.forEach(
          Array.from({ length: callers }, (_, i) => i),
          () =>
            Effect.forEach(Array.from({ length: callsEach }), () => counter.increment({ amount: 1 }), {
              concurrency: 1
            }),
          { concurrency: "unbounded" }
        )
        // Each caller's own replies grow; together they are every count from 1 to the total, once.
        for (const own of replies) for (let k = 1; k < own.length; k++) assert.isAbove(own[k]!, own[k - 1]!)
        const all = replies.flat().toSorted((a, b) => a - b)
        assert.deepStrictEqual(all, Array.from({ length: callers * callsEach }, (_, i) => i + 1))
        assert.strictEqual(
          yield* DurableObjectTest.persistedState(Counter, "crowded").pipe(
            Effect.map((state) => state?.count)
          ),
          callers * callsEach
        )
      }).pipe(Effect.provide(CounterTest()), Effect.provide(FairScheduler.layer())))

    it.effect("closing a runtime with many loaded objects stops them all and lets other fibers run meanwhile", () =>
      Effect.gen(function*() {
        // No onShutdown: each stop completes synchronously, so only the graceful stop's own yields let the
        // rest of the program (here, a watcher fiber) run while thousands of objects stop.
        const n = 5_000
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(
          PingA.layer.pipe(Layer.provide(yield* sharedMemoryStorage)),
          scope
        )
        yield* Effect.forEach(
          Array.from({ length: n }, (_, i) => `o${i}`),
          (id) => PingA.client(id).hello(),
          { concurrency: 64, discard: true }
        ).pipe(Effect.provideContext(context))
        const loaded = () => Effect.runSync(DurableObject.loadedIds(PingA).pipe(Effect.provideContext(context)))
        assert.strictEqual(loaded().length, n)
        const seen: Array<number> = []
        const watcher = yield* Effect.forkChild(Effect.forever(Effect.andThen(
          Effect.sync(() => seen.push(loaded().length)),
          Effect.yieldNow
        )))
        yield* Effect.yieldNow
        yield* Scope.close(scope, Exit.void)
        yield* Fiber.interrupt(watcher)
        assert.strictEqual(loaded().length, 0)
        assert.isTrue(seen.some((count) => count > 0 && count < n), `the watcher ran mid-stop: ${seen.length} looks`)
      }))
  })

  describe("telemetry", () => {
    it.effect("calls record a span with type, id and handler, and metrics by outcome", () => {
      const { layer: tracer, spans } = DurableObjectTest.spanRecorder()
      return Effect.gen(function*() {
        yield* Counter.client("m").increment({ amount: 1 })
        yield* Effect.exit(Counter.client("m").incrementThenFail())
        const call = spans.find((s) => s.name === Telemetry.spanCall)!
        assert.strictEqual(call.attributes.get(Telemetry.attributes.objectType), "Counter")
        assert.strictEqual(call.attributes.get(Telemetry.attributes.objectId), "m")
        assert.strictEqual(call.attributes.get(Telemetry.attributes.handler), "increment")
        assert.isTrue(spans.some((s) => s.name === Telemetry.spanActivate))
        const success = yield* Metric.value(
          Metric.withAttributes(Telemetry.calls, { object_type: "Counter", handler: "increment", outcome: "success" })
        )
        const failure = yield* Metric.value(
          Metric.withAttributes(Telemetry.calls, {
            object_type: "Counter",
            handler: "incrementThenFail",
            outcome: "failure"
          })
        )
        assert.strictEqual(success.count, 1)
        assert.strictEqual(failure.count, 1)
        const loaded = yield* Metric.value(Metric.withAttributes(Telemetry.activeObjects, { object_type: "Counter" }))
        assert.strictEqual(loaded.value, 1)
        const duration = yield* Metric.value(
          Metric.withAttributes(Telemetry.callDuration, { object_type: "Counter", handler: "increment" })
        )
        assert.strictEqual(duration.count, 1)
      }).pipe(
        Effect.provide(CounterTest()),
        Effect.provide(tracer),
        Effect.provideService(Metric.MetricRegistry, new Map())
      )
    })
  })

  describe("test kit", () => {
    it.effect("runHandler runs one handler against a given state without a runtime", () =>
      Effect.gen(function*() {
        const run = yield* DurableObjectTest.runHandler(Counter, "increment", {
          state: { count: 41, lastIncrementedAt: null },
          payload: { amount: 1 }
        })
        assert.strictEqual(run.reply, 42)
        assert.strictEqual(run.state.count, 42)
        const failed = yield* Effect.flip(
          DurableObjectTest.runHandler(Counter, "incrementThenFail", { state: { count: 0, lastIncrementedAt: null } })
        )
        assert.instanceOf(failed, LimitExceeded)
      }).pipe(Effect.provide(journalLayer())))
  })
})
