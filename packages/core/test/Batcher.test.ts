import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, References } from "effect"
import * as Batcher from "../src/internal/batcher.ts"

class Interrupted {
  readonly _tag = "Interrupted"
}

/** A batcher whose batches take `turns` scheduler turns and answer each request with its own number. */
const make = (options: { readonly turns: number; readonly idempotent?: boolean; readonly maxBatch?: number }) => {
  const batches: Array<ReadonlyArray<number>> = []
  const batcher = Batcher.make<number, number, Interrupted>({
    key: (n) => String(n % 1000),
    maxBatch: options.maxBatch ?? 16,
    idempotent: options.idempotent,
    interrupted: () => new Interrupted(),
    run: (batch) =>
      Effect.gen(function*() {
        batches.push(batch)
        for (let i = 0; i < options.turns; i++) yield* Effect.yieldNow
        return batch.map((n) => Exit.succeed(n))
      })
  })
  return { batcher, batches }
}

/** A deterministic pseudo-random sequence in [0, 1). */
const random = (seed: number) => () => {
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed / 2147483648
}

describe("Batcher", () => {
  it.effect("each request gets its own outcome; a key never appears twice in a batch", () =>
    Effect.gen(function*() {
      const { batcher, batches } = make({ turns: 1 })
      const results = yield* Effect.forEach(
        Array.from({ length: 100 }, (_, i) => (i % 10 === 9 ? 1005 : i)),
        (n) => batcher.submit(n),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(results, Array.from({ length: 100 }, (_, i) => (i % 10 === 9 ? 1005 : i)))
      assert.isBelow(batches.length, 30, "requests that queued went out together")
      for (const batch of batches) assert.strictEqual(new Set(batch.map((n) => n % 1000)).size, batch.length)
    }))

  it.effect("the callers of a batch are resumed a few at a time, with scheduler turns in between", () =>
    Effect.gen(function*() {
      const { batcher, batches } = make({ turns: 1, maxBatch: 256 })
      // Counts scheduler turns while the batch's callers resume.
      let turns = 0
      const ticker = yield* Effect.forkChild(
        Effect.forever(Effect.andThen(Effect.yieldNow, Effect.sync(() => turns++)))
      )
      const resumedAt: Array<number> = []
      yield* Effect.forEach(
        Array.from({ length: 161 }, (_, i) => i),
        (n) => Effect.tap(batcher.submit(n), () => Effect.sync(() => resumedAt.push(turns))),
        { concurrency: "unbounded" }
      )
      yield* Fiber.interrupt(ticker)
      assert.deepStrictEqual(batches.map((batch) => batch.length), [1, 160])
      const perTurn = new Map<number, number>()
      for (const turn of resumedAt) perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1)
      // 32 per turn; the ticker may run before one group and after the next, so two groups can share a count.
      assert.isAtMost(Math.max(...perTurn.values()), 65, "the callers were not all resumed at once")
      assert.isAtLeast(perTurn.size, 3)
    }))

  for (const idempotent of [false, true]) {
    it.live(`requests interrupted anywhere never leave the batcher stuck (idempotent: ${idempotent})`, () =>
      Effect.gen(function*() {
        for (let seed = 1; seed <= 300; seed++) {
          const next = random(seed)
          const { batcher } = make({ turns: 1 + Math.floor(next() * 3), idempotent })
          const fibers: Array<Fiber.Fiber<number, Interrupted>> = []
          const doomed = new Set<number>()
          // Writes queued without a fiber (the commit pipeline's) mixed in: nothing interrupts them.
          const unsafe = new Map<number, Exit.Exit<number, Interrupted> | undefined>()
          // A tiny operation budget makes fibers yield between almost any two steps, where an interruption
          // can land (below 3 Effect's scheduler would only ever yield).
          yield* Effect.gen(function*() {
            for (let n = 0; n < 60; n++) {
              fibers.push(yield* Effect.forkChild(batcher.submit(n), { startImmediately: true }))
              if (next() < 0.3) {
                const write = 500 + n
                unsafe.set(write, undefined)
                const context = yield* Effect.context<never>()
                batcher.submitUnsafe(write, context, (exit) => unsafe.set(write, exit))
              }
              if (next() < 0.5) yield* Effect.yieldNow
              if (next() < 0.35) {
                const victim = Math.floor(next() * fibers.length)
                doomed.add(victim)
                yield* Fiber.interrupt(fibers[victim]!)
              }
            }
          }).pipe(Effect.provideService(References.MaxOpsBeforeYield, 3 + Math.floor(next() * 4)))
          const exits = yield* Effect.forEach(fibers, Fiber.await).pipe(Effect.timeoutOrElse({
            duration: "2 seconds",
            orElse: () => Effect.die(new Error(`seed ${seed}: a request never completed`))
          }))
          exits.forEach((exit, n) => {
            if (Exit.isSuccess(exit)) return assert.strictEqual(exit.value, n)
            if (doomed.has(n)) return
            // Only a commit's batch whose leader was interrupted fails others, as unknown.
            assert.isFalse(idempotent, `seed ${seed}: request ${n} failed`)
            assert.deepStrictEqual(
              exit as Exit.Exit<unknown, Interrupted>,
              Exit.fail(new Interrupted()),
              `seed ${seed}: request ${n}`
            )
          })
          yield* Effect.yieldNow.pipe(
            Effect.repeat({ until: () => Array.from(unsafe.values()).every((exit) => exit !== undefined) }),
            Effect.timeoutOrElse({
              duration: "2 seconds",
              orElse: () => Effect.die(new Error(`seed ${seed}: a write queued without a fiber never completed`))
            })
          )
          for (const [write, exit] of unsafe) {
            if (exit === undefined) continue
            if (Exit.isSuccess(exit)) assert.strictEqual(exit.value, write)
            // It can only fail as part of a batch whose (fiber) leader was interrupted mid-commit.
            else {assert.deepStrictEqual(
                exit as Exit.Exit<unknown, Interrupted>,
                Exit.fail(new Interrupted()),
                `seed ${seed}: write ${write}`
              )}
          }
          // Whatever happened above, a new request still goes out.
          const after = yield* batcher.submit(999).pipe(Effect.timeoutOrElse({
            duration: "2 seconds",
            orElse: () => Effect.die(new Error(`seed ${seed}: the batcher is stuck`))
          }))
          assert.strictEqual(after, 999)
        }
      }))
  }

  it.effect("writes queued without a fiber go out together, share batches with fiber callers, and each gets its outcome", () =>
    Effect.gen(function*() {
      const { batcher, batches } = make({ turns: 2 })
      const context = yield* Effect.context<never>()
      const outcomes = new Map<number, Exit.Exit<number, Interrupted>>()
      // Queued in one synchronous step: they wait for one scheduler turn and then go out together.
      for (let n = 0; n < 40; n++) batcher.submitUnsafe(n, context, (exit) => outcomes.set(n, exit))
      assert.strictEqual(batches.length, 0, "nothing goes out in the step that queued them")
      // Fiber callers arrive while those batches run, and more writes without a fiber after them.
      const callers = yield* Effect.forEach(
        Array.from({ length: 20 }, (_, i) => 100 + i),
        (n) => Effect.forkChild(batcher.submit(n), { startImmediately: true })
      )
      for (let n = 200; n < 220; n++) batcher.submitUnsafe(n, context, (exit) => outcomes.set(n, exit))
      const replies = yield* Effect.forEach(callers, Fiber.join)
      assert.deepStrictEqual(replies, Array.from({ length: 20 }, (_, i) => 100 + i))
      while (outcomes.size < 60) yield* Effect.yieldNow
      for (const [n, exit] of outcomes) assert.deepStrictEqual(exit, Exit.succeed(n))
      assert.deepStrictEqual(batches[0], Array.from({ length: 16 }, (_, i) => i), "the first batch is full")
      assert.isAtMost(batches.length, 6, "queued writes went out together")
      // Once the queue is empty the batches' own fiber has ended: a new fiber caller leads again.
      assert.strictEqual(yield* batcher.submit(999), 999)
    }))

  it.effect("when a leader is interrupted mid-batch, the others of its batch fail as unknown, or re-run if reads", () =>
    Effect.gen(function*() {
      for (const idempotent of [false, true]) {
        const { batcher, batches } = make({ turns: 5, idempotent })
        // The first request leads a batch of its own; the next ones queue, and the first of them leads their batch.
        const first = yield* Effect.forkChild(batcher.submit(1000), { startImmediately: true })
        while (batches.length < 1) yield* Effect.yieldNow
        const leader = yield* Effect.forkChild(batcher.submit(0), { startImmediately: true })
        const others = yield* Effect.forEach(
          [1, 2, 3],
          (n) => Effect.forkChild(Effect.exit(batcher.submit(n)), { startImmediately: true })
        )
        assert.strictEqual(yield* Fiber.join(first), 1000)
        while (batches.length < 2) yield* Effect.yieldNow
        assert.deepStrictEqual(batches[1], [0, 1, 2, 3])
        yield* Fiber.interrupt(leader)
        const exits = yield* Effect.forEach(others, Fiber.join)
        if (idempotent) {
          assert.deepStrictEqual(exits, [Exit.succeed(1), Exit.succeed(2), Exit.succeed(3)])
          assert.deepStrictEqual(batches.at(-1), [1, 2, 3], "re-run by the next leader")
        } else {
          for (const exit of exits) assert.deepStrictEqual(exit, Exit.fail(new Interrupted()))
        }
      }
    }))
})
