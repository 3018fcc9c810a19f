import { DurableObject, DurableObjectTest, SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer } from "effect"
import { Statement } from "effect/sql"
import { type Backend, sqlBackends, type TestDatabase } from "./backends.ts"
import { Counter, Journal } from "./fixtures.ts"

/**
 * Records every SQL statement run under it, optionally failing those that match `fail`. `provide` steers the
 * statements a caller runs itself (storage used directly); `layer` steers every statement of the client it sits
 * under, the runtime's included (a runtime never runs storage work in its caller's context).
 */
const observe = (fail?: (sql: string, params: ReadonlyArray<unknown>) => boolean) => {
  const statements: Array<string> = []
  const transformer: Statement.Transformer = (statement, sql) =>
    Effect.sync(() => {
      const [text, params] = statement.compile()
      statements.push(text)
      if (fail !== undefined && fail(text, params)) {
        return sql`SELECT * FROM durable_object_injected_fault` as Statement.Statement<unknown>
      }
      return statement
    })
  return {
    statements,
    provide: Effect.provideService(Statement.CurrentTransformer, transformer),
    layer: Layer.succeed(Statement.CurrentTransformer, transformer)
  }
}

/**
 * Steers statements: records them, fails those that bind `fail` (the database reports the error), and holds
 * the first statement that binds a held id until it is released, so that others queue up behind it and go out
 * together. `held(id)` completes once that statement is being held.
 */
const steer = (
  options: { readonly hold?: ReadonlyArray<string>; readonly fail?: string; readonly armed?: boolean }
) =>
  Effect.gen(function*() {
    const gates = new Map<
      string,
      { readonly held: Deferred.Deferred<void>; readonly release: Deferred.Deferred<void> }
    >()
    for (const id of options.hold ?? []) {
      gates.set(id, { held: yield* Deferred.make<void>(), release: yield* Deferred.make<void>() })
    }
    const taken = new Set<string>()
    const statements: Array<string> = []
    let armed = options.armed ?? true
    const transformer: Statement.Transformer = (statement, sql) =>
      Effect.suspend(() => {
        if (!armed) return Effect.succeed(statement)
        const [text, params] = statement.compile()
        statements.push(text)
        if (options.fail !== undefined && params.includes(options.fail)) {
          return Effect.succeed(sql`SELECT * FROM durable_object_injected_fault` as Statement.Statement<unknown>)
        }
        for (const [id, gate] of gates) {
          if (taken.has(id) || !params.includes(id)) continue
          taken.add(id)
          return Effect.andThen(
            Deferred.succeed(gate.held, undefined),
            Effect.as(Deferred.await(gate.release), statement)
          )
        }
        return Effect.succeed(statement)
      })
    const gate = (id: string) => {
      const found = gates.get(id)
      if (found === undefined) throw new Error(`not held: ${id}`)
      return found
    }
    return {
      statements,
      provide: Effect.provideService(Statement.CurrentTransformer, transformer),
      layer: Layer.succeed(Statement.CurrentTransformer, transformer),
      /** Starts steering (for a steer made with `armed: false`). */
      arm: Effect.sync(() => {
        armed = true
      }),
      held: (id: string) => Deferred.await(gate(id).held),
      release: (id: string) => Deferred.succeed(gate(id).release, undefined)
    }
  })

const write = (objectType: string, id: string, expectedVersion: number, n: number): Storage.WriteSet => ({
  objectType,
  objectId: id,
  expectedVersion,
  state: JSON.stringify({ n })
})

// One commit queue: these tests hold a write and expect the others to queue behind it.
const storage = (db: TestDatabase) =>
  Layer.effect(Storage.Storage, SqlStorage.make({ ...db.options, commitConcurrency: 1 })).pipe(
    Layer.provide(db.client())
  )

const withStorage = <A, E>(backend: Backend, f: Effect.Effect<A, E, Storage.Storage>) =>
  Effect.flatMap(backend.database, (db) => Effect.provide(f, storage(db)))

for (const backend of sqlBackends) {
  describe(`Write coalescing on ${backend.name}`, () => {
    it.live("concurrent commits of different objects share transactions, each caller getting its own version", () =>
      withStorage(
        backend,
        Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = `C${Math.random().toString(36).slice(2, 8)}`
          const spy = observe()
          const versions = yield* Effect.forEach(
            Array.from({ length: 200 }, (_, i) => i),
            (i) => store.commit(write(type, `o${i}`, 0, i)),
            { concurrency: "unbounded" }
          ).pipe(spy.provide)
          assert.isTrue(versions.every((v) => v === 1))
          const upserts = spy.statements.filter((s) => /INSERT INTO|UPDATE/i.test(s)).length
          console.log(`[${backend.name}] 200 concurrent commits ran as ${upserts} write statements`)
          assert.isBelow(upserts, 20, "commits that queued behind each other went out together")
          for (const i of [0, 99, 199]) {
            const loaded = yield* store.load(type, `o${i}`)
            assert.deepStrictEqual(JSON.parse(loaded!.state), { n: i })
          }
        })
      ))

    it.live("a batch of new and existing objects beyond one statement's rows gives each write its own outcome", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = `C${Math.random().toString(36).slice(2, 8)}`
          // 300 stored objects (version 1); "moved" ones are at version 2, so a write against 1 is stale.
          yield* Effect.forEach(
            Array.from({ length: 300 }, (_, i) => i),
            (i) => store.commit(write(type, `s${i}`, 0, i)),
            {
              concurrency: "unbounded"
            }
          )
          yield* Effect.forEach([7, 150, 299], (i) => store.commit(write(type, `s${i}`, 1, -1)))
          // Each kind of write, interleaved: an update (ok, or stale), a create (ok, or of an object that
          // exists), and an update of an object that was never stored.
          type Case = { readonly id: string; readonly expected: number; readonly outcome: number | "conflict" }
          const cases: Array<Case> = []
          for (let i = 0; i < 300; i++) {
            cases.push({ id: `s${i}`, expected: 1, outcome: [7, 150, 299].includes(i) ? "conflict" : 2 })
            if (i % 3 === 0) cases.push({ id: `n${i}`, expected: 0, outcome: 1 })
            if (i % 50 === 1) cases.push({ id: `s${i + 1}x`, expected: 3, outcome: "conflict" })
          }
          cases.push({ id: "s0", expected: 0, outcome: "conflict" })
          const spy = observe()
          const exits = yield* Effect.forEach(
            cases,
            (c, i) => Effect.exit(store.commit(write(type, c.id, c.expected, 1000 + i))),
            { concurrency: "unbounded" }
          ).pipe(spy.provide)
          const statements = spy.statements.filter((s) => /INSERT INTO|UPDATE/i.test(s)).length
          console.log(`[${backend.name}] ${cases.length} mixed commits ran as ${statements} write statements`)
          assert.isBelow(statements, 40, "the writes went out in multi-row statements")
          for (let i = 0; i < cases.length; i++) {
            const c = cases[i]!
            const exit = exits[i]!
            if (c.outcome === "conflict") {
              assert.isTrue(Exit.isFailure(exit), c.id)
              if (Exit.isFailure(exit)) assert.include(String(exit.cause), "VersionConflict", c.id)
              continue
            }
            assert.deepStrictEqual(exit, Exit.succeed(c.outcome), c.id)
          }
          // Stored rows are exactly what the acknowledged writes left (s0 is written twice: once ok, once stale).
          for (let i = 0; i < cases.length; i++) {
            const c = cases[i]!
            const stored = yield* store.load(type, c.id)
            if (c.id.endsWith("x")) {
              assert.isUndefined(stored, c.id)
            } else if (c.outcome !== "conflict") {
              assert.deepStrictEqual([JSON.parse(stored!.state), stored!.version], [{ n: 1000 + i }, c.outcome], c.id)
            } else if (c.id !== "s0") {
              assert.deepStrictEqual([JSON.parse(stored!.state), stored!.version], [{ n: -1 }, 2], c.id)
            }
          }
        }).pipe(
          Effect.provide(
            Layer.effect(Storage.Storage, SqlStorage.make({ ...db.options, maxBatch: 1000, commitConcurrency: 1 }))
              .pipe(
                Layer.provide(db.client())
              )
          )
        )
      }))

    if (backend.name === "PostgreSQL") {
      it.live("with several commit queues, a batch in flight does not hold other objects' commits", () =>
        Effect.gen(function*() {
          const db = yield* backend.database
          yield* Effect.gen(function*() {
            const store = yield* Storage.Storage
            const type = `C${Math.random().toString(36).slice(2, 8)}`
            const steered = yield* steer({ hold: ["lead"] })
            const lead = yield* Effect.forkChild(store.commit(write(type, "lead", 0, 0)).pipe(steered.provide))
            yield* steered.held("lead")
            // Objects hash to 4 queues: some of these 20 share none with "lead", and commit while it is held.
            const first = yield* Deferred.make<void>()
            const others = yield* Effect.forkChild(
              Effect.forEach(
                Array.from({ length: 20 }, (_, i) => `o${i}`),
                (id) => Effect.tap(store.commit(write(type, id, 0, 1)), () => Deferred.succeed(first, undefined)),
                { concurrency: "unbounded" }
              ).pipe(steered.provide)
            )
            yield* Deferred.await(first).pipe(Effect.timeout("20 seconds"))
            assert.isUndefined(lead.pollUnsafe(), "the held commit is still in flight")
            yield* steered.release("lead")
            assert.strictEqual(yield* Fiber.join(lead), 1)
            assert.deepStrictEqual(yield* Fiber.join(others), Array.from({ length: 20 }, () => 1))
            // An object's commits stay in order in its queue.
            const versions = yield* Effect.forEach(
              [1, 2, 3, 4, 5],
              (v) => store.commit(write(type, "lead", v, 10 + v)),
              { concurrency: 1 }
            )
            assert.deepStrictEqual(versions, [2, 3, 4, 5, 6])
          }).pipe(
            Effect.provide(
              Layer.effect(Storage.Storage, SqlStorage.make({ ...db.options, commitConcurrency: 4 })).pipe(
                Layer.provide(db.client())
              )
            )
          )
        }))
    }

    it.live("a version conflict inside a batch fails that write alone; the others commit", () =>
      withStorage(
        backend,
        Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = `C${Math.random().toString(36).slice(2, 8)}`
          yield* Effect.forEach(["a", "b", "c"], (id) => store.commit(write(type, id, 0, 0)))
          // "b" moves on elsewhere: the batch's write to it names a stale version
          yield* store.commit(write(type, "b", 1, 50))
          const exits = yield* Effect.forEach(
            ["a", "b", "c", "a2", "b2", "c2"],
            (id) => Effect.exit(store.commit(write(type, id.slice(0, 1), 1, id.length))),
            { concurrency: "unbounded" }
          )
          const tags = exits.map((e) => (Exit.isSuccess(e) ? "ok" : Exit.isFailure(e) ? "fail" : ""))
          assert.strictEqual(tags.filter((t) => t === "ok").length, 2, `only a and c commit (${tags})`)
          assert.strictEqual((yield* store.load(type, "b"))?.version, 2)
          assert.deepStrictEqual(JSON.parse((yield* store.load(type, "b"))!.state), { n: 50 })
        })
      ))

    it.live("a multi-row statement that fails fails exactly the writes of its batch, with the database's message", () =>
      withStorage(
        backend,
        Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = `C${Math.random().toString(36).slice(2, 8)}`
          // o0…o9 exist (version 1): the batch updates them and creates o10…o18 and "poison".
          const existing = Array.from({ length: 10 }, (_, i) => `o${i}`)
          yield* Effect.forEach(existing, (id) => store.commit(write(type, id, 0, 0)))
          // The lone first write is held so the next 20 queue behind it and go out as one batch.
          const steered = yield* steer({ hold: ["lead"], fail: "poison" })
          const ids = [...Array.from({ length: 19 }, (_, i) => `o${i}`), "poison"]
          const lead = yield* Effect.forkChild(
            Effect.exit(store.commit(write(type, "lead", 0, 0)).pipe(steered.provide))
          )
          yield* steered.held("lead")
          const queued = yield* Effect.forkChild(
            Effect.forEach(ids, (id, i) => Effect.exit(store.commit(write(type, id, i < 10 ? 1 : 0, 1))), {
              concurrency: "unbounded"
            }).pipe(steered.provide)
          )
          yield* Effect.sleep("20 millis")
          yield* steered.release("lead")
          const first = yield* Fiber.join(lead)
          const exits = yield* Fiber.join(queued)
          assert.deepStrictEqual(first, Exit.succeed(1))
          for (const exit of exits) {
            assert.isTrue(Exit.isFailure(exit))
            if (Exit.isFailure(exit)) {
              assert.include(String(exit.cause), "StorageError")
              assert.include(String(exit.cause), "durable_object_injected_fault", "the database's own message")
            }
          }
          // Nothing of the failed batch was written (on SQLite its updates ran before the failing insert).
          for (const id of ids) {
            const stored = yield* store.load(type, id)
            if (existing.includes(id)) {
              assert.deepStrictEqual([JSON.parse(stored!.state), stored!.version], [{ n: 0 }, 1])
            } else assert.isUndefined(stored, id)
          }
          // The same writes succeed now.
          const retried = yield* Effect.forEach(
            ids.slice(0, -1),
            (id, i) => store.commit(write(type, id, i < 10 ? 1 : 0, 2)),
            { concurrency: "unbounded" }
          )
          assert.deepStrictEqual(retried, ids.slice(0, -1).map((_, i) => (i < 10 ? 2 : 1)))
        })
      ))

    it.live("a batch that fails fails exactly the calls it carried and rolls their objects back", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        // One write is poisoned: whatever statement carries it fails, and with it the batch it rode in.
        let armed = false
        const spy = observe((_, params) => armed && params.includes("poison"))
        const ids = [...Array.from({ length: 49 }, (_, i) => `obj${i}`), "poison"]
        yield* Effect.gen(function*() {
          yield* Effect.forEach(ids, (id) => Counter.client(id).increment({ amount: 1 }), { concurrency: 5 })
          armed = true
          // The first write goes out alone; the others queue and share a batch with the poisoned one.
          const exits = yield* Effect.forEach(
            ids,
            (id) => Effect.exit(Counter.client(id).increment({ amount: 10 })),
            { concurrency: "unbounded" }
          )
          armed = false
          const failed = exits.filter(Exit.isFailure)
          const succeeded = exits.filter(Exit.isSuccess)
          assert.isTrue(Exit.isFailure(exits.at(-1)!), "the poisoned write failed")
          // How the 50 writes split into batches depends on scheduling; what must hold is below: each object
          // is exactly where its own acknowledged calls left it, whichever batch it rode in.
          console.log(`[${backend.name}] poisoned batch: ${failed.length} of 50 calls failed with it`)
          for (const exit of failed) {
            const error = Exit.isFailure(exit) ? exit.cause : undefined
            assert.include(String(error), "StorageError")
          }
          // every object is exactly where its own acknowledged calls left it
          let acknowledged = 0
          for (let i = 0; i < ids.length; i++) {
            const stored = yield* DurableObjectTest.persistedState(Counter, ids[i]!)
            const expected = Exit.isSuccess(exits[i]!) ? 11 : 1
            assert.strictEqual(stored?.count, expected, ids[i])
            assert.strictEqual(yield* Counter.client(ids[i]!).get(), expected)
            if (Exit.isSuccess(exits[i]!)) acknowledged++
          }
          assert.strictEqual(acknowledged, succeeded.length)
        }).pipe(
          Effect.provide(
            Counter.layer.pipe(
              Layer.provideMerge(SqlStorage.layer({ ...db.options, commitConcurrency: 1 })),
              Layer.provide(db.client()),
              Layer.provide(spy.layer),
              Layer.provide(Layer.succeed(Journal, { entries: [] }))
            )
          )
        )
      }))
  })
}

/** `n` stored objects `s0…` of a fresh type (returned), each with state { n: i } at version 1. */
const stored = (store: Storage.Storage["Service"], n: number) =>
  Effect.gen(function*() {
    const type = `L${Math.random().toString(36).slice(2, 8)}`
    yield* Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) => store.commit(write(type, `s${i}`, 0, i)), {
      concurrency: "unbounded"
    })
    return type
  })

for (const backend of sqlBackends) {
  describe(`Load coalescing on ${backend.name}`, () => {
    it.live("loads that queue behind a running one go out together, beyond one statement's rows, each getting its own row", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = yield* stored(store, 400)
          // 400 stored objects and 200 never written, interleaved, behind a held lone load.
          const ids = Array.from({ length: 600 }, (_, i) => (i % 3 === 2 ? `missing${i}` : `s${i - Math.floor(i / 3)}`))
          const steered = yield* steer({ hold: ["s399"] })
          const lead = yield* Effect.forkChild(store.load(type, "s399").pipe(steered.provide))
          yield* steered.held("s399")
          const queued = yield* Effect.forkChild(
            Effect.forEach(ids, (id) => store.load(type, id), { concurrency: "unbounded" }).pipe(steered.provide)
          )
          yield* Effect.sleep("20 millis")
          yield* steered.release("s399")
          assert.deepStrictEqual(JSON.parse((yield* Fiber.join(lead))!.state), { n: 399 })
          const loaded = yield* Fiber.join(queued)
          const selects = steered.statements.filter((s) => /^\s*SELECT/i.test(s)).length
          console.log(`[${backend.name}] 601 concurrent loads ran as ${selects} statements`)
          assert.isBelow(selects, 10, "the queued loads went out in multi-row statements")
          ids.forEach((id, i) => {
            const row = loaded[i]
            if (id.startsWith("missing")) return assert.isUndefined(row, id)
            assert.deepStrictEqual([JSON.parse(row!.state), row!.version], [{ n: Number(id.slice(1)) }, 1], id)
          })
        }).pipe(
          Effect.provide(
            Layer.effect(Storage.Storage, SqlStorage.make({ ...db.options, maxBatch: 1000, commitConcurrency: 1 }))
              .pipe(
                Layer.provide(db.client())
              )
          )
        )
      }))

    it.live("a batched load that fails is retried object by object: only the load that fails alone gets the error, with the database's message", () =>
      withStorage(
        backend,
        Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = yield* stored(store, 30)
          const steered = yield* steer({ hold: ["s0"], fail: "poison" })
          const lead = yield* Effect.forkChild(store.load(type, "s0").pipe(steered.provide))
          yield* steered.held("s0")
          const ids = [...Array.from({ length: 19 }, (_, i) => `s${i + 1}`), "poison"]
          const queued = yield* Effect.forkChild(
            Effect.forEach(ids, (id) => Effect.exit(store.load(type, id)), { concurrency: "unbounded" })
              .pipe(steered.provide)
          )
          yield* Effect.sleep("20 millis")
          yield* steered.release("s0")
          assert.strictEqual((yield* Fiber.join(lead))?.version, 1, "the load of another batch succeeds")
          const exits = yield* Fiber.join(queued)
          // The batch's statement failed (it reads "poison"); each load was then read on its own, and only the
          // poisoned one failed again.
          for (const exit of exits.slice(0, -1)) assert.strictEqual(Exit.isSuccess(exit) && exit.value?.version, 1)
          const poisoned = exits.at(-1)!
          assert.isTrue(Exit.isFailure(poisoned))
          if (Exit.isFailure(poisoned)) {
            assert.include(String(poisoned.cause), "StorageError")
            assert.include(String(poisoned.cause), "durable_object_injected_fault", "the database's own message")
          }
          assert.isTrue(
            steered.statements.some((text) => text.includes("VALUES")),
            "the loads went out together first"
          )
          // Loads after the failed batch work.
          const again = yield* Effect.forEach(ids.slice(0, -1), (id) => store.load(type, id), {
            concurrency: "unbounded"
          })
          assert.isTrue(again.every((row) => row?.version === 1))
        })
      ))

    it.live("when the caller leading a batch of loads is interrupted, the others' loads go out with the next leader", () =>
      withStorage(
        backend,
        Effect.gen(function*() {
          const store = yield* Storage.Storage
          const type = yield* stored(store, 20)
          // s0 leads alone and is held; s1 (the next leader) and s2… queue behind it. Then s1's batch is held
          // and s1's caller interrupted mid-batch.
          const steered = yield* steer({ hold: ["s0", "s1"] })
          const first = yield* Effect.forkChild(store.load(type, "s0").pipe(steered.provide))
          yield* steered.held("s0")
          const second = yield* Effect.forkChild(store.load(type, "s1").pipe(steered.provide))
          yield* Effect.sleep("10 millis")
          const others = Array.from({ length: 18 }, (_, i) => `s${i + 2}`)
          const rest = yield* Effect.forkChild(
            Effect.forEach(others, (id) => store.load(type, id), { concurrency: "unbounded" }).pipe(steered.provide)
          )
          yield* Effect.sleep("10 millis")
          yield* steered.release("s0")
          yield* steered.held("s1")
          yield* Fiber.interrupt(second)
          assert.strictEqual((yield* Fiber.join(first))?.version, 1)
          const loaded = yield* Fiber.join(rest)
          others.forEach((id, i) => assert.deepStrictEqual(JSON.parse(loaded[i]!.state), { n: i + 2 }, id))
        })
      ))

    it.live("activations that load together each decode their own row: an undecodable one fails its caller alone", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const steered = yield* steer({ hold: ["c0"], armed: false })
        yield* Effect.gen(function*() {
          const ids = Array.from({ length: 30 }, (_, i) => `c${i}`)
          yield* Effect.forEach(ids, (id, i) => Counter.client(id).increment({ amount: i + 1 }), { concurrency: 5 })
          const store = yield* Storage.Storage
          const bad = yield* store.load("Counter", "c7")
          yield* store.commit({
            objectType: "Counter",
            objectId: "c7",
            expectedVersion: bad!.version,
            state: JSON.stringify({ count: "seven", lastIncrementedAt: null })
          })
          yield* Effect.forEach(ids, (id) => DurableObject.stop(Counter, id))
          // c0's load is held; the 29 others activate behind it and load in one batch.
          yield* steered.arm
          const lead = yield* Effect.forkChild(Counter.client("c0").get())
          yield* steered.held("c0")
          const queued = yield* Effect.forkChild(
            Effect.forEach(ids.slice(1), (id) => Effect.exit(Counter.client(id).get()), { concurrency: "unbounded" })
          )
          yield* Effect.sleep("20 millis")
          yield* steered.release("c0")
          assert.strictEqual(yield* Fiber.join(lead), 1)
          const exits = yield* Fiber.join(queued)
          exits.forEach((exit, i) => {
            const id = ids[i + 1]!
            if (id !== "c7") return assert.deepStrictEqual(exit, Exit.succeed(i + 2), id)
            assert.isTrue(Exit.isFailure(exit))
            if (Exit.isFailure(exit)) assert.include(String(exit.cause), "StateDecodeError")
          })
        }).pipe(
          Effect.provide(
            Counter.layer.pipe(
              Layer.provideMerge(SqlStorage.layer(db.options)),
              Layer.provide(db.client()),
              Layer.provide(steered.layer),
              Layer.provide(Layer.succeed(Journal, { entries: [] }))
            )
          )
        )
      }))
  })
}
