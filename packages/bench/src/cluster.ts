/**
 * Scenario 4, what a user would build instead: an `effect/cluster` entity on a single runner
 * (`SingleRunner.layer`, on the same PostgreSQL) that holds the counter in memory and saves it with an
 * upsert per message, under the load of scenario 3 (1,000 entities, 1,000 concurrent callers). Durable
 * objects run the same load on the same server right after, so the ratio compares like with like.
 */
import { SqlStorage } from "@durable-object/core"
import { NodeCrypto } from "@effect/platform-node"
import { Effect, Layer, Ref, References, Schema } from "effect"
import { Entity, SingleRunner } from "effect/cluster"
import { Rpc } from "effect/rpc"
import { SqlClient } from "effect/sql"
import { pgLayer, postgresDatabase } from "./backends.ts"
import type { Config } from "./config.ts"
import { createKv, upsertKv } from "./durablePostgres.ts"
import { closedLoop, loadRow, ratioTo, type Row } from "./stats.ts"
import { durableCalls, objectIds, pick } from "./workloads.ts"

const scenario = "4 vs effect/cluster (PostgreSQL)"

const Increment = Rpc.make("Increment", { success: Schema.Number })
export const CounterEntity = Entity.make("BenchCounter", [Increment])

/** The entity: its count in a `Ref`, saved with an upsert before each reply (the handler runs serially). */
const CounterEntityLive = CounterEntity.toLayer(Effect.gen(function*() {
  const { entityId } = yield* Entity.CurrentAddress
  const sql = yield* SqlClient.SqlClient
  const count = yield* Ref.make(0)
  return CounterEntity.of({
    Increment: () =>
      Ref.updateAndGet(count, (n) => n + 1).pipe(
        Effect.tap((n) => upsertKv(sql, entityId, n)),
        Effect.orDie
      )
  })
}))

export const run = (config: Config): Effect.Effect<ReadonlyArray<Row>, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const url = yield* postgresDatabase
    const ids = objectIds("entity", config.durableObjects)

    const entityResult = yield* Effect.scoped(
      Effect.gen(function*() {
        yield* createKv
        const client = yield* CounterEntity.client
        // Every entity once before the clock starts, as durableCalls does for the objects: the runner's
        // start-up (registration, shard acquisition) is not what is measured.
        yield* Effect.forEach(ids, (id) => client(id).Increment(), { concurrency: config.concurrency, discard: true })
        return yield* closedLoop({
          concurrency: config.concurrency,
          warmupMs: config.warmupMs,
          durationMs: config.durationMs,
          call: () => client(pick(ids)).Increment()
        })
      }).pipe(
        Effect.provide(CounterEntityLive.pipe(
          Layer.provideMerge(SingleRunner.layer()),
          Layer.provideMerge(Layer.mergeAll(pgLayer(url), NodeCrypto.layerDigest))
        )),
        // The single runner logs "No healthy runners available" while it registers itself.
        Effect.provideService(References.MinimumLogLevel, "Error")
      )
    )
    const entity = loadRow(
      { id: "cluster.entity", scenario, label: "cluster entity + upsert per message", kind: "baseline" },
      entityResult,
      "calls/s"
    )

    const result = yield* durableCalls(config, SqlStorage.layer().pipe(Layer.provide(pgLayer(url))), {
      concurrency: config.concurrency,
      objects: config.durableObjects,
      prefix: "entity"
    })
    const durable = loadRow(
      { id: "cluster.durable", scenario, label: "durable objects, same load", kind: "measure" },
      result,
      "calls/s",
      {
        ratios: [ratioTo(result.throughput, entity, "entity")],
        targets: [{ label: "≥ 5× entity", pass: result.throughput >= 5 * entity.value }]
      }
    )
    return [entity, durable]
  }))
