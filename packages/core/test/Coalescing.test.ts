import { DurableObjectTest, SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { Statement } from "effect/sql"
import { type Backend, backends, type TestDatabase } from "./backends.ts"
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

for (const backend of backends) {
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
