import { DurableObjectTest, SqlStorage, Storage } from "@durable-object/core"
import { PgClient } from "@effect/sql-pg"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Layer, Redacted } from "effect"
import { type SqlClient, Statement } from "effect/sql"
import { inject } from "vitest"
import { Counter, Journal } from "./fixtures.ts"

interface Backend {
  readonly name: string
  readonly client: () => Layer.Layer<SqlClient.SqlClient, unknown>
}

const backends: Array<Backend> = [
  { name: "PostgreSQL", client: () => PgClient.layer({ url: Redacted.make(inject("postgresUrl")), maxConnections: 8 }) }
]

/** Records every SQL statement run under it, optionally failing those that match `fail`. */
const observe = (fail?: (sql: string) => boolean) => {
  const statements: Array<string> = []
  const transformer: Statement.Transformer = (statement, sql) =>
    Effect.sync(() => {
      const text = statement.compile()[0]
      statements.push(text)
      if (fail !== undefined && fail(text)) {
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

const storageOn = (backend: Backend) => () =>
  Layer.effect(Storage.Storage, SqlStorage.make({ tablePrefix: "coalesce_" })).pipe(Layer.provide(backend.client()))

for (const backend of backends) {
  describe(`Write coalescing on ${backend.name}`, () => {
    const storage = storageOn(backend)

    it.live("concurrent commits of different objects share transactions, each caller getting its own version", () =>
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
      }).pipe(Effect.provide(storage())))

    it.live("a version conflict inside a batch fails that write alone; the others commit", () =>
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
      }).pipe(Effect.provide(storage())))

    it.live("a batch that fails fails exactly the calls it carried and rolls their objects back", () =>
      Effect.gen(function*() {
        const spy = observe((sql) => sql.includes("WITH input") || sql.includes("SAVEPOINT"))
        const ids = Array.from({ length: 50 }, (_, i) => `obj${i}`)
        yield* Effect.gen(function*() {
          yield* Effect.forEach(ids, (id) => Counter.client(id).increment({ amount: 1 }), { concurrency: 5 })
          // Now every multi-write batch fails; lone writes still go through.
          const exits = yield* Effect.forEach(
            ids,
            (id) => Effect.exit(Counter.client(id).increment({ amount: 10 })),
            { concurrency: "unbounded" }
          ).pipe(spy.provide)
          const failed = exits.filter(Exit.isFailure)
          const succeeded = exits.filter(Exit.isSuccess)
          assert.isAbove(failed.length, 0, "some batch failed")
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
              Layer.provideMerge(SqlStorage.layer({ tablePrefix: "coalesce_fail_" })),
              Layer.provide(backend.client()),
              Layer.provide(Layer.succeed(Journal, { entries: [] }))
            )
          )
        )
      }))
  })
}
