/**
 * Scenario 5a, cold activation on SQLite: 100,000 objects with stored state (written through the `Storage`
 * service), then a new runtime on a new connection calls `get` once on each, 1,000 callers at a time: every
 * call loads, decodes and activates its object. Timed from the first call to the last reply; stopping the
 * runtime afterwards (with every object loaded) is reported in the notes.
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { join } from "node:path"
import { tempDirectory } from "./backends.ts"
import type { Config } from "./config.ts"
import { Counter } from "./objects.ts"
import { sqliteLayer } from "./sqlite.ts"
import { count, type Row, row, timed } from "./stats.ts"
import { objectIds } from "./workloads.ts"

const scenario = "5 cold activation (SQLite)"

export const run = (config: Config): Effect.Effect<ReadonlyArray<Row>, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const dir = yield* tempDirectory
    const filename = join(dir, "objects.db")
    const ids = objectIds("cold", config.coldObjects)

    const written = yield* timed(Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(SqlStorage.layer().pipe(Layer.provide(sqliteLayer(filename))))
      const storage = Context.get(context, Storage.Storage)
      yield* Effect.forEach(
        ids,
        (objectId, i) =>
          storage.commit({
            objectType: Counter.name,
            objectId,
            expectedVersion: 0,
            state: JSON.stringify({ count: i })
          }),
        { concurrency: 256, discard: true }
      )
    })))

    // The runtime starts before the clock does and stops after it: stopping 100,000 loaded objects is
    // timed on its own.
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(
      Counter.layer.pipe(Layer.provide(SqlStorage.layer()), Layer.provide(sqliteLayer(filename))),
      scope
    )
    let next = 0
    let sum = 0
    const worker = Effect.gen(function*() {
      while (next < ids.length) {
        const i = next++
        // (not `sum += yield* …`: that reads `sum` before the call suspends)
        const count = yield* Counter.client(ids[i]!).get()
        sum += count
      }
    })
    const activated = yield* timed(
      Effect.all(Array.from({ length: config.concurrency }, () => worker), {
        concurrency: "unbounded",
        discard: true
      }).pipe(Effect.provideContext(context))
    )
    const expected = (ids.length * (ids.length - 1)) / 2
    if (sum !== expected) return yield* Effect.die(new Error(`activated state sums to ${sum}, not ${expected}`))
    const stopped = yield* timed(Scope.close(scope, Exit.void))

    const rate = ids.length / activated.seconds
    return [
      row({
        id: "activation.cold",
        scenario,
        label: `${count(ids.length)} objects activated cold`,
        kind: "measure",
        value: rate,
        unit: "objects/s",
        eventLoop: activated.eventLoop,
        targets: [
          { label: "≥ 30k/s", pass: rate >= 30_000 },
          // The closing is timed apart from the activation, so its loop delay is a target of its own.
          { label: "loop max < 50 ms while closing", pass: stopped.eventLoop.maxMs < 50 }
        ],
        note: `activated in ${activated.seconds.toFixed(2)} s; the ${count(ids.length)} rows were written through ` +
          `Storage.commit in ${written.seconds.toFixed(2)} s (${
            Math.round(ids.length / written.seconds)
          } rows/s, coalesced); closing the runtime (stopping every loaded object) took ${
            stopped.seconds.toFixed(2)
          } s with the loop held up to ${stopped.eventLoop.maxMs.toFixed(0)} ms`,
        details: {
          objects: ids.length,
          seconds: activated.seconds,
          writeSeconds: written.seconds,
          stopSeconds: stopped.seconds,
          stopLoopMaxMs: stopped.eventLoop.maxMs
        }
      })
    ]
  }))
