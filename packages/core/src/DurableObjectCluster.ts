/**
 * Cluster mode: the objects of a definition served by the runners of an `effect/cluster`, with exactly one live
 * copy of each object cluster-wide, calls routed to it from any node, re-homed when its runner leaves or dies.
 *
 * User code does not change: `Counter.client(id).increment(…)` needs `Runtime<"Counter">` as before; provide
 * `DurableObjectCluster.layer(Counter)` on runners (instead of `Counter.layer`) or
 * `DurableObjectCluster.layerClient(Counter)` on nodes that only call, next to effect/cluster's own runner layer
 * (`Sharding`, for example from `NodeClusterSocket.layer`) and, on runners, the storage (`SqlStorage.layer` on
 * PostgreSQL). See docs/cluster.md for the settings that matter.
 *
 * Guarantees, besides those of one process:
 * - one live copy per `(type, id)`: an object is loaded only on the runner that owns its shard, and only while
 *   it does; a new owner always starts from storage;
 * - a call re-sent by effect/cluster after its runner died is applied at most once: its reply is stored in the
 *   same fenced commit as its state;
 * - alarms run on their object's owner; one that cannot be delivered is retried without using up its retries;
 * - errors keep their types across the wire, and `ReentrantCall`, `ObjectOverloaded` and `CallTimeout` work
 *   across runners (a routed call is bounded by `callTimeout + commitTimeout + routeTimeout`).
 *
 * @since 0.2.0
 */
import { Duration, Effect, Layer } from "effect"
import type { Sharding } from "effect/cluster/Sharding"
import type { AnyDefinition, Definition, Runtime } from "./DurableObject.ts"
import * as Cluster from "./internal/cluster.ts"
import type { Scheduler, Storage } from "./Storage.ts"

/**
 * Options of cluster mode. Durations accept anything `Duration` does.
 *
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /**
   * Longest a call waits for its object's owner to become reachable (a runner that died is noticed only when
   * its shard locks expire), on top of the definition's `callTimeout` and `commitTimeout`; then the call fails
   * with `CallTimeout`. Default 45 seconds: above effect/cluster's default lock expiration (35 s) plus its
   * assignment refresh (3 s).
   */
  readonly routeTimeout?: Duration.Input | undefined
  /**
   * How long the reply of a routed call made without an idempotency key is kept, so a call effect/cluster
   * re-sends after its runner died is not applied twice. Must exceed the longest a call can be in flight
   * (`callTimeout + commitTimeout + routeTimeout`). Default 10 minutes.
   */
  readonly replyRetention?: Duration.Input | undefined
  /**
   * A runner whose event loop stood still longer than this drops every loaded copy (it may have lost its
   * shards meanwhile), so it serves no stale read once it runs again. Keep it below half effect/cluster's
   * `shardLockExpiration`. Default 5 seconds.
   */
  readonly maxPause?: Duration.Input | undefined
  /**
   * Longest a claimed alarm may wait for its object's owner to accept it (the owner then runs it, however long
   * its handler takes); then the claim is released for a retry that many milliseconds later, without counting
   * the attempt, and the shard's other alarms are handed back at once until then. Keep it below half the
   * scheduler's alarm lease. Default 5 seconds.
   */
  readonly alarmRouteTimeout?: Duration.Input | undefined
}

const millis = (input: Duration.Input | undefined, fallback: Duration.Input, name: string): number => {
  const value = Duration.toMillis(Duration.fromInputUnsafe(input ?? fallback))
  if (!(value > 0)) throw new TypeError(`durable-object: cluster option ${name} must be a positive duration`)
  return value
}

const resolve = (options: Options | undefined): Cluster.ClusterOptions => ({
  routeTimeoutMillis: millis(options?.routeTimeout, "45 seconds", "routeTimeout"),
  replyRetentionMillis: millis(options?.replyRetention, "10 minutes", "replyRetention"),
  maxPauseMillis: millis(options?.maxPause, "5 seconds", "maxPause"),
  alarmRouteTimeoutMillis: millis(options?.alarmRouteTimeout, "5 seconds", "alarmRouteTimeout"),
  pruneIntervalMillis: 60_000
})

/**
 * The runner layer of a definition: serves the objects of the shards this runner owns, and routes every call
 * made in this process to the owner of its object. Provide it instead of `definition.layer`.
 *
 * Fails to build (a defect naming the schema) when one of the handlers' schemas cannot be written as JSON.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = <Name extends string, R>(
  definition: Definition<Name, any, any, any, any, R, any, any>,
  options?: Options
): Layer.Layer<Runtime<Name>, never, Sharding | Storage | Scheduler | R> =>
  Layer.effect(
    definition.runtime,
    Effect.suspend(() => Cluster.makeRunner(definition, resolve(options))) as Effect.Effect<
      typeof definition.runtime.Service,
      never,
      Sharding | Storage | Scheduler | R
    >
  )

/**
 * The client layer of a definition, for nodes that call objects without serving any (effect/cluster's
 * `clientOnly` nodes, or runners that do not host this type). Live streams (`changes`, `events`) are served by
 * runner nodes only.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerClient = <Name extends string>(
  definition: Definition<Name, any, any, any, any, any, any, any>,
  options?: Options
): Layer.Layer<Runtime<Name>, never, Sharding> =>
  Layer.effect(
    definition.runtime,
    Effect.suspend(() => Cluster.makeRouted(definition, resolve(options), undefined)) as Effect.Effect<
      typeof definition.runtime.Service,
      never,
      Sharding
    >
  )

/**
 * The effect/cluster entity a definition's objects are served by (`durable-object/<name>`, one entity per
 * shard), for inspecting the cluster.
 *
 * @since 0.2.0
 * @category models
 */
export const entity = (definition: AnyDefinition) => Cluster.makeEntity(definition.name)
