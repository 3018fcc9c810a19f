/**
 * Two runtimes on one database in one process (each with its own connections, storage and alarm scheduler, as
 * two servers would have), hammering the same 8 counters with 24 fibers each for 3 seconds. Both keep a copy of
 * every object they touch, so their commits race and fence each other (`VersionConflict`, then a reload). The
 * whole history goes through the counter-history checker against what is stored at the end.
 */
import { SqlStorage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { type Backend, sqlBackends } from "./backends.ts"
import { checkAgainstStorage } from "./chaos/check.ts"
import { HistoryRecorder, summarize } from "./chaos/history.ts"
import { ChaosCounter, describeLoad, emptyStats, startLoad } from "./chaos/load.ts"
import { soak, soakTimeout } from "./chaos/soak.ts"

const objects = 8
const ids = Array.from({ length: objects }, (_, i) => `obj-${i}`)

const suite = (backend: Backend) =>
  describe(`Chaos: two runtimes on one ${backend.name} database`, () => {
    it.live("overlapping objects: the history is linearizable, failures are typed", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const history = new HistoryRecorder()
        const stats = [emptyStats(), emptyStats()].map((s) => ({ ...s, history }))
        yield* Effect.scoped(Effect.gen(function*() {
          const loads = []
          for (const s of stats) {
            const context = yield* Layer.build(
              ChaosCounter.layer.pipe(Layer.provide(SqlStorage.layer(db.options)), Layer.provide(db.client()))
            )
            loads.push(
              yield* startLoad(
                (id) => ChaosCounter.client(id).increment({ amount: 1 }).pipe(Effect.provideContext(context)),
                { objects, fibers: 24 },
                s
              )
            )
          }
          yield* Effect.sleep(3_000 * soak)
          for (const load of loads) yield* load.stop
        }))
        for (const s of stats) assert.deepStrictEqual(s.untyped, [], "a failure that is not a typed error")
        // Contention between the runtimes is fenced (VersionConflict), never a deadlock or a broken batch: the
        // storage writes batches in key order and retries what the database rolled back.
        for (const s of stats) {
          assert.isUndefined(s.samples.get("StorageError"), "a StorageError reached a caller")
        }
        const result = yield* checkAgainstStorage(db, history, ids, `${backend.name} two runtimes`)
        console.log(
          `${summarize(`${backend.name} two runtimes`, result)}; runtime A: ${describeLoad(stats[0]!)}; ` +
            `runtime B: ${describeLoad(stats[1]!)}${
              stats.some((s) => s.samples.has("StorageError"))
                ? `; a StorageError said: ${
                  stats.find((s) => s.samples.has("StorageError"))!.samples.get("StorageError")
                }`
                : ""
            }`
        )
      }), soakTimeout(60_000))
  })

for (const backend of sqlBackends) suite(backend)
