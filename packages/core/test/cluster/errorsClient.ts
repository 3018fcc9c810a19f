/**
 * A client-only node that calls `Relay` objects across runners and prints how each call ended, as
 * `result <case> <outcome>` lines (`outcome`: the error's tag and whether it is an instance of its class, or
 * `ok`), then `done`.
 *
 * argv[2]: JSON `{ url, tablePrefix, clusterPrefix, unreachable? }`; with `unreachable` (no runner is up), one call
 * only, whose routing must give up (`result unreachable <outcome> <ms>`).
 */
import { DurableObject, DurableObjectCluster, Errors } from "@durable-object/core"
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { clusterLayer } from "../../../examples/src/cluster/transport.ts"
import { line } from "../crash/worker.ts"
import { clientFor } from "../databases.ts"
import { Relay, RelayError } from "./objects.ts"

const config = JSON.parse(process.argv[2]!) as {
  readonly url: string
  readonly tablePrefix: string
  readonly clusterPrefix: string
  readonly unreachable?: boolean | undefined
}

const classes: Record<string, new(...args: any) => unknown> = {
  RelayError,
  HandlerDefect: Errors.HandlerDefect,
  ReentrantCall: Errors.ReentrantCall,
  ObjectOverloaded: Errors.ObjectOverloaded,
  CallTimeout: Errors.CallTimeout,
  InvalidPayload: Errors.InvalidPayload,
  UnknownHandler: Errors.UnknownHandler
}

const report = <R>(name: string, effect: Effect.Effect<unknown, unknown, R>) =>
  Effect.flatMap(Effect.exit(effect), (exit) =>
    Effect.sync(() => {
      if (exit._tag === "Success") return line(`result ${name} ok`)
      const failure = exit.cause.reasons.find((r) => r._tag === "Fail") as
        | { readonly error: { readonly _tag: string } }
        | undefined
      if (failure === undefined) return line(`result ${name} defect`)
      const error = failure.error
      line(`result ${name} ${error._tag} ${classes[error._tag] !== undefined && error instanceof classes[error._tag]!}`)
    }))

const unreachable = Effect.gen(function*() {
  const start = performance.now()
  yield* report("unreachable", Relay.client("nowhere").hello())
  line(`elapsed ${Math.round(performance.now() - start)}`)
  line("done")
})

const main = config.unreachable === true ? unreachable : Effect.gen(function*() {
  // Two objects on different runners, so the chain crosses the wire both ways.
  const home = new Map<string, string>()
  for (let i = 0; i < 30 && new Set(home.values()).size < 2; i++) {
    home.set(`e-${i}`, yield* Relay.client(`e-${i}`).hello())
  }
  const [first] = home.keys()
  const second = Array.from(home.keys()).find((id) => home.get(id) !== home.get(first!))!
  line(`pair ${home.get(first!)} ${home.get(second)}`)
  yield* report("reentrant", Relay.client(first!).viaPeer({ peer: second }))
  yield* report("typed", Relay.client(first!).fail())
  yield* report("defect", Relay.client(first!).die())
  yield* report("invalid", Relay.client(first!).sleep({ millis: "x" as never }))
  yield* report("unknown", DurableObject.callEncoded(Relay, first!, "nope", {}))
  yield* report("timeout", Relay.client(second).sleep({ millis: 3_000 }))
  // A mailbox of one: of four calls at once, one runs, one waits, the rest are refused.
  yield* Effect.forEach(
    [0, 1, 2, 3],
    (i) => report(`overload${i}`, Relay.client(`busy-${first}`).sleep({ millis: 300 })),
    { concurrency: "unbounded" }
  )
  line("done")
})

main.pipe(
  Effect.provide(
    DurableObjectCluster.layerClient(Relay, { routeTimeout: "1 second" }).pipe(
      Layer.provide(clusterLayer({ prefix: config.clusterPrefix })),
      Layer.provide(clientFor({ backend: "PostgreSQL", url: config.url, tablePrefix: config.tablePrefix }))
    )
  ),
  NodeRuntime.runMain
)
