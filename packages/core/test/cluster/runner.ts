/**
 * A cluster runner process for the cluster tests: serves `Tally` objects on `port`, against the test's
 * PostgreSQL. Prints `ready` once serving, and `committed <id>` when a commit of a `slow-*` object is durable,
 * after which it holds that reply back for 4 seconds (so the test can kill it between commit and reply).
 * SIGTERM shuts it down gracefully.
 *
 * argv[2]: JSON `{ url, tablePrefix, clusterPrefix, port, name }`.
 */
import { DurableObjectCluster, SqlStorage, Storage } from "@durable-object/core"
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { clusterLayer } from "../../../examples/src/cluster/transport.ts"
import { line } from "../crash/worker.ts"
import { clientFor } from "../databases.ts"
import { Relay, RunnerName, Tally } from "./objects.ts"

const config = JSON.parse(process.argv[2]!) as {
  readonly url: string
  readonly tablePrefix: string
  readonly clusterPrefix: string
  readonly port: number
  readonly name: string
}

const sql = clientFor({ backend: "PostgreSQL", url: config.url, tablePrefix: config.tablePrefix }, {
  maxConnections: 10
})

/** Holds back the replies of `slow-*` objects after their commit is durable (the test kills us meanwhile). */
const slowAck = Layer.effect(
  Storage.Storage,
  Effect.map(Effect.service(Storage.Storage), (storage) => ({
    ...storage,
    commit: (write: Parameters<typeof storage.commit>[0]) =>
      Effect.tap(storage.commit(write), () =>
        write.objectId.startsWith("slow-") && write.state !== null
          ? Effect.andThen(Effect.sync(() => line(`committed ${write.objectId}`)), Effect.sleep("4 seconds"))
          : Effect.void)
  }))
)

const storage = SqlStorage.layer({
  tablePrefix: config.tablePrefix,
  alarms: { pollInterval: "300 millis", leaseDuration: "10 seconds" }
})

const options = { routeTimeout: "20 seconds", maxPause: "2 seconds", alarmRouteTimeout: "4 seconds" } as const

// Relay's handlers call other Relay objects: its routed runtime is in the context its runner layer is built in.
const app = Layer.mergeAll(
  DurableObjectCluster.layer(Tally, options),
  DurableObjectCluster.layer(Relay, options).pipe(Layer.provide(DurableObjectCluster.layerClient(Relay, options)))
).pipe(
  Layer.provide(Layer.succeed(RunnerName, config.name)),
  Layer.provide(Layer.provideMerge(slowAck, storage)),
  Layer.provide(clusterLayer({ port: config.port, prefix: config.clusterPrefix })),
  Layer.provide(sql)
)

Layer.launch(Layer.merge(app, Layer.effectDiscard(Effect.sync(() => line("ready"))))).pipe(
  Effect.orDie,
  NodeRuntime.runMain
)
