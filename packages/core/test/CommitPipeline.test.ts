/**
 * The commit pipeline over SQL storage, where commits are queued without a fiber per write (the storage's
 * callback form): every staged change still reaches storage through the `commit` in the service, in order,
 * one per object at a time, coalesced across objects.
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Counter, Journal } from "./fixtures.ts"

const sqlite = () => SqliteClient.layer({ filename: ":memory:" })

describe("commit pipeline", () => {
  it.effect("a storage that wraps SqlStorage's commit sees every commit: the wrapper is never bypassed", () => {
    const seen: Array<string> = []
    const wrapped = Storage.layerWithScheduler(Effect.map(SqlStorage.make(), (storage) => ({
      ...storage,
      commit: (write: Parameters<typeof storage.commit>[0]) =>
        Effect.tap(storage.commit(write), (version) => Effect.sync(() => seen.push(`${write.objectId}@${version}`)))
    })))
    return Effect.gen(function*() {
      yield* Effect.forEach(["a", "b"], (id) => Counter.client(id).increment({ amount: 1 }), { concurrency: 2 })
      yield* Counter.client("a").increment({ amount: 1 })
      assert.deepStrictEqual(seen.toSorted(), ["a@1", "a@2", "b@1"])
    }).pipe(
      Effect.provide(Counter.layer.pipe(
        Layer.provide(wrapped),
        Layer.provide(sqlite()),
        Layer.provide(Layer.succeed(Journal, { entries: [] }))
      ))
    )
  })

  it.effect("many callers on many objects: every acknowledged increment is stored, in order per object", () =>
    Effect.gen(function*() {
      const ids = Array.from({ length: 50 }, (_, i) => `o${i}`)
      const replies = yield* Effect.forEach(
        Array.from({ length: 1000 }, (_, i) => i),
        (i) => Counter.client(ids[i % ids.length]!).increment({ amount: 1 }),
        { concurrency: 200 }
      )
      // Each object's replies are 1..20 in some order: no write lost, none applied twice.
      const perObject = new Map<string, Array<number>>()
      replies.forEach((reply, i) => {
        const id = ids[i % ids.length]!
        perObject.set(id, [...(perObject.get(id) ?? []), reply])
      })
      for (const [id, seen] of perObject) {
        assert.deepStrictEqual(seen.toSorted((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1), id)
      }
      // And storage holds the last of them.
      const storage = yield* Storage.Storage
      for (const id of ids) {
        const stored = yield* storage.load(Counter.name, id)
        assert.strictEqual(JSON.parse(stored!.state!).count, 20, id)
      }
    }).pipe(
      Effect.provide(Counter.layer.pipe(
        Layer.provideMerge(SqlStorage.layer()),
        Layer.provide(sqlite()),
        Layer.provide(Layer.succeed(Journal, { entries: [] }))
      ))
    ))
})
