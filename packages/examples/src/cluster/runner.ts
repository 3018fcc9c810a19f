/**
 * One runner of the cluster demo: serves `Visits` objects on a port, against PostgreSQL. Prints `ready` once it
 * serves; SIGTERM stops it gracefully.
 *
 * argv[2]: JSON `{ url, port, name }`.
 */
import { DurableObjectCluster, SqlStorage } from "@durable-object/core"
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { RunnerName, Visits } from "./objects.ts"
import { clusterLayer } from "./transport.ts"

const config = JSON.parse(process.argv[2]!) as { readonly url: string; readonly port: number; readonly name: string }

const runner = DurableObjectCluster.layer(Visits, { maxPause: "2 seconds" }).pipe(
  Layer.provide(Layer.succeed(RunnerName, config.name)),
  Layer.provide(SqlStorage.layer({ tablePrefix: "demo_" })),
  Layer.provide(clusterLayer({ port: config.port, prefix: "demo_cluster" })),
  Layer.provide(PgClient.layer({ url: Redacted.make(config.url), maxConnections: 8 }))
)

Layer.launch(Layer.merge(runner, Layer.effectDiscard(Effect.sync(() => process.stdout.write("ready\n"))))).pipe(
  Effect.orDie,
  NodeRuntime.runMain
)
