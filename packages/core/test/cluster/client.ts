/**
 * A client-only node for the cluster tests: calls `Tally` objects through the cluster and prints every step as
 * a line: `start <id> <ms>`, `ack <id> <count> <runner> <ms>`, `fail <id> <tag> <ms>`, then `done`.
 *
 * argv[2]: JSON `{ url, tablePrefix, clusterPrefix, ids, durationMillis, pauseMillis, ticksAt? }`: each id gets
 * one loop of increments until the duration has passed; with `ticksAt`, each object first schedules its
 * `tick` alarm at that time instead.
 */
import { DurableObjectCluster } from "@durable-object/core"
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { line } from "../crash/worker.ts"
import { clientFor } from "../databases.ts"
import { Tally } from "./objects.ts"
import { clusterLayer } from "./transport.ts"

const config = JSON.parse(process.argv[2]!) as {
  readonly url: string
  readonly tablePrefix: string
  readonly clusterPrefix: string
  readonly ids: ReadonlyArray<string>
  readonly durationMillis: number
  readonly pauseMillis: number
  readonly ticksAt?: number | undefined
}

const now = () => Math.round(performance.timeOrigin + performance.now())

const loop = (id: string) =>
  Effect.gen(function*() {
    if (config.ticksAt !== undefined) {
      yield* Tally.client(id).scheduleTick({ at: config.ticksAt })
      line(`scheduled ${id} ${now()}`)
      return
    }
    const end = now() + config.durationMillis
    while (now() < end) {
      line(`start ${id} ${now()}`)
      const result = yield* Effect.exit(Tally.client(id).increment())
      if (result._tag === "Success") line(`ack ${id} ${result.value.count} ${result.value.runner} ${now()}`)
      else {
        const error = result.cause.reasons.find((r) => r._tag === "Fail")
        line(
          `fail ${id} ${error === undefined ? "defect" : (error as { error: { _tag: string } }).error._tag} ${now()}`
        )
      }
      yield* Effect.sleep(config.pauseMillis)
    }
  })

const main = Effect.forEach(config.ids, loop, { concurrency: "unbounded", discard: true }).pipe(
  Effect.andThen(Effect.sync(() => line("done"))),
  Effect.provide(
    DurableObjectCluster.layerClient(Tally, { routeTimeout: "20 seconds" }).pipe(
      Layer.provide(clusterLayer({ prefix: config.clusterPrefix })),
      Layer.provide(clientFor({ backend: "PostgreSQL", url: config.url, tablePrefix: config.tablePrefix }))
    )
  )
)

NodeRuntime.runMain(main)
