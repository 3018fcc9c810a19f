import { DurableObject, DurableObjectCluster, SqlStorage } from "@durable-object/core"
import { NodeClusterSocket } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Effect, Layer, Option, Schema } from "effect"
import { RunnerAddress } from "effect/cluster"

export const Counter = DurableObject.defineObject({
  name: "Counter",
  state: Schema.Struct({ count: Schema.Number }),
  initialState: () => ({ count: 0 }),
  handlers: {
    increment: {
      payload: Schema.Struct({ amount: Schema.Number }),
      success: Schema.Number,
      handle: ({ amount }, ctx) => ctx.state.modify((s) => [s.count + amount, { count: s.count + amount }])
    }
  }
})

// #region setup
const shardingConfig = {
  // Always explicit: the env-driven defaults pick up a PORT or HOST meant for something else.
  runnerAddress: Option.some(RunnerAddress.make("10.0.0.12", 34431)),
  shardsPerGroup: 300,
  shardLockExpiration: "15 seconds",
  runnerHealthCheckInterval: "5 seconds"
} as const

const database = PgClient.layerConfig({ url: Config.Redacted("DATABASE_URL"), maxConnections: Config.succeed(16) })

// On every runner: serve Counter's shards and route this process's calls.
export const runner = DurableObjectCluster.layer(Counter).pipe(
  Layer.provide(SqlStorage.layer()),
  Layer.provide(NodeClusterSocket.layer({ shardingConfig })),
  Layer.provide(database)
)

// On a node that only calls (it still reads shard assignments from the database):
export const client = DurableObjectCluster.layerClient(Counter).pipe(
  Layer.provide(NodeClusterSocket.layer({ clientOnly: true, shardingConfig })),
  Layer.provide(database)
)

// The same call as in one process, with the same types.
export const program = Counter.client("a").increment({ amount: 1 }).pipe(Effect.provide(client))
// #endregion setup
