/**
 * Idempotency keys: a call made with a key has its effect at most once per `(type, id, key)`. Its reply is stored
 * with the state it produced; a retry gets that reply back without running again, whether it comes while the
 * first call is still in flight, after a restart, or through another runtime on the same database.
 */
import { DurableObject, DurableObjectTest, Errors, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer, Schema } from "effect"
import { TestClock } from "effect/testing"
import { counterRuntimeOn, sqlBackends } from "./backends.ts"
import { Counter } from "./fixtures.ts"

class InsufficientFunds extends Schema.TaggedError<InsufficientFunds>()("InsufficientFunds", {
  balance: Schema.Number
}) {}

/** Counts how many times handlers really ran. */
class Runs extends Context.Service<Runs, { count: number }>()("test/Runs") {}

const counted = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.andThen(
    Effect.flatMap(Effect.service(Runs), (runs) =>
      Effect.sync(() => {
        runs.count++
      })),
    effect
  )

const Wallet = DurableObject.defineObject({
  name: "Wallet",
  state: Schema.Struct({ balance: Schema.Number }),
  initialState: () => ({ balance: 0 }),
  services: [Runs],
  handlers: {
    deposit: {
      payload: Schema.Struct({ amount: Schema.Number }),
      success: Schema.Number,
      handle: ({ amount }, ctx) =>
        counted(ctx.state.modify((s) => [s.balance + amount, { balance: s.balance + amount }]))
    },
    slowDeposit: {
      payload: Schema.Struct({ amount: Schema.Number }),
      success: Schema.Number,
      handle: ({ amount }, ctx) =>
        counted(Effect.andThen(
          Effect.sleep("1 second"),
          ctx.state.modify((s) => [s.balance + amount, { balance: s.balance + amount }])
        ))
    },
    withdraw: {
      payload: Schema.Struct({ amount: Schema.Number }),
      success: Schema.Number,
      error: InsufficientFunds,
      handle: ({ amount }, ctx) =>
        counted(Effect.gen(function*() {
          const { balance } = yield* ctx.state.get
          if (balance < amount) return yield* new InsufficientFunds({ balance })
          yield* ctx.state.set({ balance: balance - amount })
          return balance - amount
        }))
    },
    balance: { success: Schema.Number, handle: (_, ctx) => counted(Effect.map(ctx.state.get, (s) => s.balance)) }
  },
  options: { idempotencyRetention: "1 hour" }
})

const runsLayer = () => Layer.succeed(Runs, { count: 0 })
const WalletTest = () => DurableObjectTest.layer(Wallet).pipe(Layer.provideMerge(runsLayer()))
const runs = Effect.map(Effect.service(Runs), (r) => r.count)
const keyed = (id: string, key: string) => Wallet.client(id, { idempotencyKey: key })
const counter = (key: string) => Counter.client("shared", { idempotencyKey: key })

describe("idempotency keys", () => {
  it.effect("a retried call with the same key gets the stored reply and does not run again", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* keyed("w", "pay-1").deposit({ amount: 10 }), 10)
      assert.strictEqual(yield* keyed("w", "pay-1").deposit({ amount: 10 }), 10)
      assert.strictEqual(yield* keyed("w", "pay-2").deposit({ amount: 10 }), 20)
      assert.strictEqual(yield* Wallet.client("w").balance(), 20)
      assert.strictEqual(yield* runs, 3, "two deposits and one read ran; the retry did not")
      // Keys belong to one object: the same key on another object is another call.
      assert.strictEqual(yield* keyed("v", "pay-1").deposit({ amount: 5 }), 5)
    }).pipe(Effect.provide(WalletTest())))

  it.effect("the reply is stored with the state: after a stop (and reload from storage) a retry still replays", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* keyed("w", "k").deposit({ amount: 7 }), 7)
      yield* DurableObject.stop(Wallet, "w")
      assert.strictEqual(yield* DurableObject.status(Wallet, "w"), "stopped")
      assert.strictEqual(yield* keyed("w", "k").deposit({ amount: 7 }), 7)
      assert.strictEqual(yield* Wallet.client("w").balance(), 7)
      assert.strictEqual(yield* runs, 2)
    }).pipe(Effect.provide(WalletTest())))

  it.effect("an object called with many keys keeps only recent replies in memory; older retries read theirs back", () =>
    Effect.gen(function*() {
      for (let i = 1; i <= 300; i++) yield* keyed("w", `many-${i}`).deposit({ amount: 1 })
      assert.strictEqual(yield* keyed("w", "many-1").deposit({ amount: 1 }), 1, "the first reply, from storage")
      assert.strictEqual(yield* keyed("w", "many-300").deposit({ amount: 1 }), 300)
      assert.strictEqual(yield* Wallet.client("w").balance(), 300)
      assert.strictEqual(yield* runs, 301, "300 deposits and one read ran; no retry did")
    }).pipe(Effect.provide(WalletTest())))

  it.effect("a typed failure is stored too: a retry gets the same error, even once it would now succeed", () =>
    Effect.gen(function*() {
      const first = yield* Effect.flip(keyed("w", "wd").withdraw({ amount: 5 }))
      assert.deepStrictEqual(first, new InsufficientFunds({ balance: 0 }))
      yield* Wallet.client("w").deposit({ amount: 100 })
      const retried = yield* Effect.flip(keyed("w", "wd").withdraw({ amount: 5 }))
      assert.instanceOf(retried, InsufficientFunds)
      assert.strictEqual(yield* Wallet.client("w").balance(), 100)
      // A new key is a new attempt.
      assert.strictEqual(yield* keyed("w", "wd-2").withdraw({ amount: 5 }), 95)
    }).pipe(Effect.provide(WalletTest())))

  it.effect("a key reused with another payload or handler fails with IdempotencyKeyMismatch and changes nothing", () =>
    Effect.gen(function*() {
      yield* keyed("w", "k").deposit({ amount: 1 })
      const otherPayload = yield* Effect.flip(keyed("w", "k").deposit({ amount: 2 }))
      assert.instanceOf(otherPayload, Errors.IdempotencyKeyMismatch)
      assert.strictEqual(otherPayload._tag === "IdempotencyKeyMismatch" && otherPayload.key, "k")
      const otherHandler = yield* Effect.flip(keyed("w", "k").withdraw({ amount: 1 }))
      assert.strictEqual(otherHandler._tag, "IdempotencyKeyMismatch")
      assert.strictEqual(yield* Wallet.client("w").balance(), 1)
    }).pipe(Effect.provide(WalletTest())))

  it.effect("a call with the same key while the first is in flight waits for it and gets its reply", () =>
    Effect.gen(function*() {
      const first = yield* Effect.forkChild(keyed("w", "slow").slowDeposit({ amount: 3 }))
      const second = yield* Effect.forkChild(keyed("w", "slow").slowDeposit({ amount: 3 }))
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual([yield* Fiber.join(first), yield* Fiber.join(second)], [3, 3])
      assert.strictEqual(yield* runs, 1)
    }).pipe(Effect.provide(WalletTest())))

  it.effect("a read-only call stores nothing: with a key it simply runs again", () =>
    Effect.gen(function*() {
      yield* Wallet.client("w").deposit({ amount: 4 })
      assert.strictEqual(yield* Wallet.client("w", { idempotencyKey: "read" }).balance(), 4)
      assert.strictEqual(yield* Wallet.client("w", { idempotencyKey: "read" }).balance(), 4)
      assert.strictEqual(yield* runs, 3)
      const storage = yield* Storage.Storage
      assert.isUndefined(yield* storage.loadReply("Wallet", "w", "read", 0))
    }).pipe(Effect.provide(WalletTest())))

  it.effect("stored replies expire after the retention and are purged; the key is then new again", () =>
    Effect.gen(function*() {
      const storage = yield* Storage.Storage
      yield* keyed("w", "old").deposit({ amount: 1 })
      assert.isDefined(yield* storage.loadReply("Wallet", "w", "old", 0))
      yield* TestClock.adjust("61 minutes")
      // The scheduler's purge removed it: nothing expired is left for a purge to find.
      assert.strictEqual(yield* storage.purgeReplies(61 * 60_000, 1000), 0)
      assert.isUndefined(yield* storage.loadReply("Wallet", "w", "old", 0))
      assert.strictEqual(yield* keyed("w", "old").deposit({ amount: 1 }), 2)
      assert.strictEqual(yield* runs, 2)
    }).pipe(Effect.provide(WalletTest())))

  it.effect("bad keys are refused with InvalidPayload before anything runs", () =>
    Effect.gen(function*() {
      const empty = yield* Effect.flip(keyed("w", "").deposit({ amount: 1 }))
      assert.strictEqual(empty._tag, "InvalidPayload")
      const long = yield* Effect.flip(keyed("w", "x".repeat(257)).deposit({ amount: 1 }))
      assert.strictEqual(long._tag, "InvalidPayload")
      assert.strictEqual(yield* runs, 0)
    }).pipe(Effect.provide(WalletTest())))

  it.effect("callEncoded takes the key too, for callers speaking JSON", () =>
    Effect.gen(function*() {
      const call = DurableObject.callEncoded(Wallet, "w", "deposit", { amount: 2 }, { idempotencyKey: "http-1" })
      assert.deepStrictEqual([yield* call, yield* call], [2, 2])
      assert.strictEqual(yield* runs, 1)
    }).pipe(Effect.provide(WalletTest())))
})

for (const backend of sqlBackends) {
  describe(`idempotency keys on ${backend.name}`, () => {
    it.live("a stored reply survives a restart, and two runtimes racing with one key apply it once", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* counter("a").increment({ amount: 5 }).pipe(Effect.provide(counterRuntimeOn(db, db.client())))
        // A new runtime on new connections: the reply comes from storage.
        assert.strictEqual(
          yield* counter("a").increment({ amount: 5 }).pipe(Effect.provide(counterRuntimeOn(db, db.client()))),
          5
        )
        const first = yield* Layer.build(counterRuntimeOn(db, db.client()))
        const second = yield* Layer.build(counterRuntimeOn(db, db.client()))
        const keys = Array.from({ length: 40 }, (_, i) => `race-${i}`)
        // Each key is sent through both runtimes at once; a runtime that loses the race conflicts, and the
        // caller's retry (same key) gets the stored reply.
        const send = (context: Context.Context<never>, key: string) =>
          counter(key).increment({ amount: 1 }).pipe(
            Effect.retry({ times: 50, while: (error) => error._tag === "VersionConflict" }),
            Effect.provideContext(context as Context.Context<DurableObject.Runtime<"Counter">>)
          )
        const replies = yield* Effect.forEach(
          keys,
          (key) => Effect.all([send(first, key), send(second, key)], { concurrency: 2 }),
          { concurrency: 4 }
        )
        for (const [a, b] of replies) assert.strictEqual(a, b, "both runtimes gave the same reply")
        assert.strictEqual(new Set(replies.map(([a]) => a)).size, keys.length, "each key applied once")
        // Read from storage: either runtime's copy may be behind the other's last commit until it writes again.
        const stored = yield* Effect.flatMap(Storage.Storage, (storage) => storage.load("Counter", "shared")).pipe(
          Effect.provideContext(first as Context.Context<Storage.Storage>)
        )
        assert.deepStrictEqual(JSON.parse(stored!.state).count, 5 + keys.length)
      }))
  })
}

it.effect("stored reply rows are deleted with their object", () =>
  Effect.gen(function*() {
    const storage = yield* Storage.Storage
    yield* keyed("d", "k").deposit({ amount: 1 })
    yield* DurableObject.delete(Wallet, "d")
    assert.isUndefined(yield* storage.loadReply("Wallet", "d", "k", 0))
    assert.strictEqual(yield* keyed("d", "k").deposit({ amount: 1 }), 1)
    assert.isTrue(Exit.isSuccess(yield* Effect.exit(Wallet.client("d").balance())))
  }).pipe(Effect.provide(WalletTest())))
