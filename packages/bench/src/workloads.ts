/**
 * Workloads shared by several scenarios: durable calls on a storage, and one caller's latency.
 */
import type { Alarms, Storage } from "@durable-object/core"
import { Effect, Layer } from "effect"
import type { Config } from "./config.ts"
import { Counter } from "./objects.ts"
import { closedLoop, type LoadResult } from "./stats.ts"

/** The object ids of a run: `prefix-0` … `prefix-(n-1)`. */
export const objectIds = (prefix: string, n: number): ReadonlyArray<string> =>
  Array.from({ length: n }, (_, i) => `${prefix}-${i}`)

export const pick = (ids: ReadonlyArray<string>): string => ids[Math.floor(Math.random() * ids.length)]!

/**
 * Durable calls: `increment` (a state change committed before the reply) on objects picked at random, by
 * `concurrency` callers, on the counter runtime over `storage`.
 */
export const durableCalls = <E>(
  config: Config,
  storage: Layer.Layer<Storage.Storage | Alarms.Scheduler, E>,
  options: { readonly concurrency: number; readonly objects: number; readonly prefix: string }
): Effect.Effect<LoadResult, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(Counter.layer.pipe(Layer.provide(storage)))
    const ids = objectIds(options.prefix, options.objects)
    // Every object once before the clock starts (cluster.ts does the same for its entities).
    yield* Effect.forEach(ids, (id) => Counter.client(id).increment(), {
      concurrency: options.concurrency,
      discard: true
    }).pipe(Effect.provideContext(context))
    return yield* closedLoop({
      concurrency: options.concurrency,
      warmupMs: config.warmupMs,
      durationMs: options.concurrency <= 10 ? config.lowLoadMs : config.durationMs,
      call: () => Counter.client(pick(ids)).increment()
    }).pipe(Effect.provideContext(context))
  }))
