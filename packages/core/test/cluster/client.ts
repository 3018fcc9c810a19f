/**
 * A client-only node for the cluster tests: calls `Tally` objects through the cluster and prints every step as
 * a line: `start <id> <ms>`, `ack <id> <count> <runner> <ms>`, `fail <id> <tag> <ms>`, then `done`.
 *
 * argv[2]: JSON `{ url, tablePrefix, clusterPrefix, ids, durationMillis, pauseMillis, ticksIn? }`: each id gets
 * one loop of increments until the duration has passed; with `ticksIn`, each object schedules its `tick` alarm
 * that many milliseconds after the node is up instead (printed first, as `due <ms>`).
 */
import { DurableObjectCluster } from "@durable-object/core"
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { clusterLayer } from "../../../examples/src/cluster/transport.ts"
import { line } from "../crash/worker.ts"
import { clientFor } from "../databases.ts"
import { Tally } from "./objects.ts"

const config = JSON.parse(process.argv[2]!) as {
  readonly url: string
  readonly tablePrefix: string
  readonly clusterPrefix: string
  readonly ids: ReadonlyArray<string>
  readonly durationMillis: number
  readonly pauseMillis: number
  readonly ticksIn?: number | undefined
}

const now = () => Math.round(performance.timeOrigin + performance.now())

const loop = (id: string, dueAt: number) =>
  Effect.gen(function*() {
    if (config.ticksIn !== undefined) {
      yield* Tally.client(id).scheduleTick({ at: dueAt })
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

const main = Effect.suspend(() => {
  const dueAt = now() + (config.ticksIn ?? 0)
  if (config.ticksIn !== undefined) line(`due ${dueAt}`)
  return Effect.forEach(config.ids, (id) => loop(id, dueAt), { concurrency: "unbounded", discard: true })
}).pipe(
  Effect.andThen(Effect.sync(() => line("done"))),
  Effect.provide(
    DurableObjectCluster.layerClient(Tally, { routeTimeout: "20 seconds" }).pipe(
      Layer.provide(clusterLayer({ prefix: config.clusterPrefix })),
      Layer.provide(clientFor({ backend: "PostgreSQL", url: config.url, tablePrefix: config.tablePrefix }))
    )
  )
)

NodeRuntime.runMain(main)
