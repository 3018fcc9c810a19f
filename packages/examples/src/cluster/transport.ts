/**
 * effect/cluster over TCP, with the settings docs/cluster.md recommends: explicit runner addresses (nothing read
 * from the environment), `noDelay` sockets on both ends (Node's default Nagle delay costs tens of milliseconds
 * under bursty traffic), volatile messages only (cluster mode makes calls exactly-once itself), runner storage and
 * shard locks in PostgreSQL under a prefix, and a fast failure-detection profile. The cluster demo, the cluster
 * tests and the cluster benchmark all run on it; copy it into an application and tune `fastProfile`.
 */
import { NodeSocket, NodeSocketServer } from "@effect/platform-node"
import { Effect, Layer, Option } from "effect"
import {
  MessageStorage,
  RunnerAddress,
  RunnerHealth,
  Runners,
  ShardingConfig,
  SocketRunner,
  SqlRunnerStorage
} from "effect/cluster"
import { RpcClient, RpcSerialization } from "effect/rpc"
import { Socket } from "effect/socket"
import type { SqlClient } from "effect/sql"

/** The failure-detection profile of the tests: a dead runner's shards move within about 5 seconds. */
export const fastProfile = {
  shardsPerGroup: 30,
  shardLockExpiration: "5 seconds",
  shardLockRefreshInterval: "1 second",
  refreshAssignmentsInterval: "500 millis",
  runnerHealthCheckInterval: "2 seconds",
  sendRetryInterval: "100 millis"
} as const

const clientProtocol = Layer.effect(Runners.RpcClientProtocol)(Effect.gen(function*() {
  const serialization = yield* RpcSerialization.RpcSerialization
  return {
    codecFor: serialization.codecFor,
    make: Effect.fnUntraced(function*(address: RunnerAddress.RunnerAddress) {
      const socket = yield* NodeSocket.makeNet({
        openTimeout: 1000,
        timeout: 5500,
        host: address.host,
        port: address.port,
        noDelay: true
      })
      return yield* RpcClient.makeProtocolSocket().pipe(
        Effect.provideService(Socket.Socket, socket),
        Effect.provideService(RpcSerialization.RpcSerialization, serialization)
      )
    }, Effect.orDie)
  }
}))

/** A runner listening on `port` (or, without a port, a client-only node), over the `SqlClient` in context. */
export const clusterLayer = (options: { readonly port?: number | undefined; readonly prefix: string }) => {
  const config = ShardingConfig.layer({
    ...fastProfile,
    runnerAddress: options.port === undefined
      ? Option.none()
      : Option.some(RunnerAddress.make("127.0.0.1", options.port))
  })
  const transport = options.port === undefined
    ? Layer.provide(SocketRunner.layerClientOnly, clientProtocol)
    : Layer.provide(SocketRunner.layer, [
      NodeSocketServer.layer({ host: "127.0.0.1", port: options.port, noDelay: true }),
      clientProtocol
    ]).pipe(Layer.provide(RunnerHealth.layerPing.pipe(Layer.provide(Runners.layerRpc), Layer.provide(clientProtocol))))
  return transport.pipe(
    Layer.provide(MessageStorage.layerNoop),
    Layer.provide(Layer.orDie(SqlRunnerStorage.layerWith({ prefix: options.prefix }))),
    Layer.provide(config),
    Layer.provide(RpcSerialization.layerSchemaBinary())
  ) as Layer.Layer<import("effect/cluster/Sharding").Sharding, never, SqlClient.SqlClient>
}
