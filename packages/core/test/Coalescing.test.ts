import { DurableObjectTest, SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { Statement } from "effect/sql"
import { type Backend, sqlBackends, type TestDatabase } from "./backends.ts"
import { Counter, Journal } from "./fixtures.ts"

/** Records every SQL statement run under it, optionally failing those that match `fail`. */
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
  return { statements, provide: Effect.provideService(Statement.CurrentTransformer, transformer) }
}

const write = (objectType: string, id: string, expectedVersion: number, n: number): Storage.WriteSet => ({
  objectType,
  objectId: id,
  expectedVersion,
  state: JSON.stringify({ n })
})

const storage = (db: TestDatabase) =>
  Layer.effect(Storage.Storage, SqlStorage.make(db.options)).pipe(Layer.provide(db.client()))

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
            Layer.effect(Storage.Storage, SqlStorage.make({ ...db.options, maxBatch: 1000 })).pipe(
              Layer.provide(db.client())
            )
          )
        )
      }))

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
          let held = false
          // The lone first write is held so the next 20 queue behind it and go out as one batch.
          const transformer: Statement.Transformer = (statement, sql) =>
            Effect.suspend(() => {
              const [, params] = statement.compile()
              if (params.includes("poison")) {
                return Effect.succeed(sql`SELECT * FROM durable_object_injected_fault` as Statement.Statement<unknown>)
              }
              if (!held && params.includes("lead")) {
                held = true
                return Effect.as(Effect.sleep("50 millis"), statement)
              }
              return Effect.succeed(statement)
            })
          const ids = [...Array.from({ length: 19 }, (_, i) => `o${i}`), "poison"]
          const [first, exits] = yield* Effect.all([
            Effect.exit(store.commit(write(type, "lead", 0, 0))),
            Effect.andThen(
              Effect.sleep("10 millis"),
              Effect.forEach(ids, (id) => Effect.exit(store.commit(write(type, id, 0, 1))), {
                concurrency: "unbounded"
              })
            )
          ], { concurrency: "unbounded" }).pipe(Effect.provideService(Statement.CurrentTransformer, transformer))
          assert.deepStrictEqual(first, Exit.succeed(1))
          for (const exit of exits) {
            assert.isTrue(Exit.isFailure(exit))
            if (Exit.isFailure(exit)) {
              assert.include(String(exit.cause), "StorageError")
              assert.include(String(exit.cause), "durable_object_injected_fault", "the database's own message")
            }
          }
          for (const id of ids) assert.isUndefined(yield* store.load(type, id), id)
          // Nothing of the failed batch was written: the same writes succeed now.
          const retried = yield* Effect.forEach(ids.slice(0, -1), (id) => store.commit(write(type, id, 0, 2)), {
            concurrency: "unbounded"
          })
          assert.isTrue(retried.every((v) => v === 1))
        })
      ))

    it.live("a batch that fails fails exactly the calls it carried and rolls their objects back", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        // One write is poisoned: whatever statement carries it fails, and with it the batch it rode in.
        const spy = observe((_, params) => params.includes("poison"))
        const ids = [...Array.from({ length: 49 }, (_, i) => `obj${i}`), "poison"]
        yield* Effect.gen(function*() {
          yield* Effect.forEach(ids, (id) => Counter.client(id).increment({ amount: 1 }), { concurrency: 5 })
          // The first write goes out alone; the others queue and share a batch with the poisoned one.
          const exits = yield* Effect.forEach(
            ids,
            (id) => Effect.exit(Counter.client(id).increment({ amount: 10 })),
            { concurrency: "unbounded" }
          ).pipe(spy.provide)
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
              Layer.provideMerge(SqlStorage.layer(db.options)),
              Layer.provide(db.client()),
              Layer.provide(Layer.succeed(Journal, { entries: [] }))
            )
          )
        )
      }))
  })
}
