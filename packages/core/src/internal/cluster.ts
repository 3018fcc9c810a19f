/**
 * Cluster mode: objects of one type served by the runners of an `effect/cluster`, one live copy per object.
 *
 * Shape. Each object type is one cluster entity, `durable-object/<type>`, with one entity *per shard*, not per
 * object: an object's calls go to the entity that stands for its shard (same shard, so the same runner), and
 * that entity hands them to the runner's private runtime. The runtime keeps its own mailbox, limits and write
 * coalescing; the entity is only a routing shell (about 15 KB each, so at most one per shard instead of one per
 * object: a hibernated object costs what it does in one process).
 *
 * Single activation. An object is loaded on a runner only while that runner's entity for its shard lives: the
 * entity's finalizer (shard released, rebalanced, locks lost, shutdown) stops the shard's objects gracefully,
 * and a new entity drops any copy left from an earlier ownership, so a new owner always starts from storage.
 * A runner whose event loop stood still longer than `maxPause` (frozen, starved) may have lost its shards
 * without knowing yet: it drops every copy before serving another call.
 *
 * Exactly once. effect/cluster re-sends a call whose runner died. Every routed call carries a key (the
 * caller's idempotency key, or one made for it), so the owner stores its reply in the same fenced commit as
 * its state, and a re-sent call gets that reply back instead of running again.
 *
 * Alarms. Each runner's scheduler still claims due alarms; it delivers each to the owner of its object through
 * the entity, so handlers only run on the owner, which accepts the alarm and runs it itself (the claimant does
 * not wait for the handler). An alarm that cannot be delivered is released without counting the attempt.
 *
 * @internal
 */
import {
  Cause,
  Clock,
  Context,
  DateTime,
  Duration,
  Effect,
  Exit,
  FiberSet,
  Layer,
  Metric,
  Schema,
  type Scope,
  Semaphore,
  Stream
} from "effect"
import { Entity, EntityId } from "effect/cluster"
import { Sharding } from "effect/cluster/Sharding"
import { Rpc } from "effect/rpc"
import type { AlarmInfo, When } from "../Alarms.ts"
import {
  AlarmNotFound,
  CallTimeout,
  InvalidPayload,
  ObjectOverloaded,
  ReentrantCall,
  RuntimeShutdown,
  StorageError,
  UnknownHandler
} from "../Errors.ts"
import { Scheduler, Storage } from "../Storage.ts"
import * as Telemetry from "../Telemetry.ts"
import * as AlarmCodec from "./alarmCodec.ts"
import { checkId } from "./call.ts"
import type { DefinitionSpec, ObjectRuntime } from "./definition.ts"
import type { ClaimedAlarm, SchedulerService } from "./records.ts"
import * as Replies from "./replies.ts"
import * as Runtime from "./runtime.ts"
import * as StateCodec from "./stateCodec.ts"
import { CallChain } from "./userCode.ts"
import * as Wire from "./wire.ts"

/** Options of cluster mode, resolved. */
export interface ClusterOptions {
  /** Longest a call may wait for its object's owner to be reachable, on top of its call and commit timeouts. */
  readonly routeTimeoutMillis: number
  /** How long the reply of a routed call without an idempotency key is kept for re-sends. */
  readonly replyRetentionMillis: number
  /** An event-loop stall longer than this drops every loaded copy on a runner (it may have lost its shards). */
  readonly maxPauseMillis: number
  /** Longest an alarm's delivery to its owner may take before its claim is released (uncounted). */
  readonly alarmRouteTimeoutMillis: number
  /** How often a runner forgets the ids of objects it no longer holds. */
  readonly pruneIntervalMillis: number
}

/** The entity type of an object type. */
export const entityType = (objectType: string): string => `durable-object/${objectType}`

const rpcs = [
  Rpc.make("call", {
    payload: {
      id: Schema.String,
      handler: Schema.String,
      /** The payload's JSON form, as text. */
      payload: Schema.String,
      key: Schema.String,
      /** The key was made for this call (kept for re-sends only), not given by the caller. */
      routed: Schema.Boolean,
      /** When the call was first sent, by its sender's clock (the same in every re-send). */
      since: Schema.Number,
      chain: Schema.Array(Schema.String)
    },
    success: Schema.String
  }),
  Rpc.make("admin", {
    payload: { id: Schema.String, op: Schema.String, arg: Schema.String },
    success: Schema.String
  }),
  Rpc.make("fire", { payload: { alarm: Schema.String }, success: Schema.String })
] as const

/** The entity of an object type (one per shard; see the module's comment). */
export const makeEntity = (objectType: string) => Entity.make(entityType(objectType), rpcs)

/** Admin operations, and what their successes are written as. */
const voidCodec: Wire.OutcomeCodec = { success: StateCodec.none }
const statusCodec: Wire.OutcomeCodec = {
  success: StateCodec.make(Schema.Literals(["active", "hibernated", "stopped"]))
}
const alarmListCodec: Wire.OutcomeCodec = {
  success: StateCodec.make(Schema.Array(Schema.Struct({
    name: Schema.String,
    fireAt: Schema.Number,
    payload: Schema.Unknown,
    attempts: Schema.Number,
    cron: Schema.optional(Schema.String),
    failed: Schema.optional(Schema.Struct({ at: Schema.Number, error: Schema.String })),
    invalid: Schema.optional(Schema.String)
  })))
}
type AdminOp = "stop" | "delete" | "status" | "schedule" | "cancel" | "list" | "retry"
const adminCodecs: Record<AdminOp, Wire.OutcomeCodec> = {
  retry: { success: StateCodec.none, error: StateCodec.make(AlarmNotFound) },
  stop: voidCodec,
  delete: voidCodec,
  status: statusCodec,
  schedule: voidCodec,
  cancel: voidCodec,
  list: alarmListCodec
}

/** A `When` as it crosses the wire: a point in time (resolved by the caller's clock) or a cron schedule. */
type WireWhen = { readonly at: number } | { readonly cron: string; readonly timeZone?: string | undefined }

/** What both sides derive from a definition: its handlers' codecs and its alarms' payload codecs. */
interface Codecs {
  readonly handlers: ReadonlyMap<string, {
    readonly payload: StateCodec.JsonCodec
    readonly outcome: Wire.OutcomeCodec
    readonly validate: ((u: unknown) => Exit.Exit<unknown, Schema.SchemaError>) | undefined
    readonly decodeEncoded: ((u: unknown) => Exit.Exit<unknown, Schema.SchemaError>) | undefined
    readonly encodeSuccess: ((u: unknown) => Exit.Exit<unknown, Schema.SchemaError>) | undefined
  }>
  readonly alarms: AlarmCodec.AlarmCodecs
}

/** The parts of a schema's AST the JSON check walks (structural: the AST classes are not all exported). */
interface AstNode {
  readonly _tag: string
  readonly encoding?: unknown
  readonly annotations?: { readonly [key: string]: unknown } | undefined
  readonly typeParameters?: ReadonlyArray<AstNode> | undefined
  readonly propertySignatures?: ReadonlyArray<{ readonly type: AstNode }> | undefined
  readonly indexSignatures?: ReadonlyArray<{ readonly type: AstNode }> | undefined
  readonly elements?: ReadonlyArray<AstNode> | undefined
  readonly rest?: ReadonlyArray<AstNode> | undefined
  readonly types?: ReadonlyArray<AstNode> | undefined
}

/**
 * A declared type (`Schema.instanceOf`, `Schema.declare`) in `ast` that has no JSON codec, named by its
 * annotations, or `undefined` when every part of the schema can be written as JSON.
 */
const opaquePart = (ast: AstNode, seen: Set<AstNode>): string | undefined => {
  if (seen.has(ast) || ast.encoding !== undefined) return undefined
  seen.add(ast)
  const annotations = ast.annotations ?? {}
  const inner: Array<AstNode> = []
  if (ast._tag === "Declaration") {
    if (annotations.toCodecJson === undefined && annotations.toCodec === undefined) {
      return String(annotations.identifier ?? annotations.expected ?? annotations.title ?? "a declaration")
    }
    inner.push(...(ast.typeParameters ?? []))
  }
  for (const signature of [...(ast.propertySignatures ?? []), ...(ast.indexSignatures ?? [])]) {
    inner.push(signature.type)
  }
  inner.push(...(ast.elements ?? []), ...(ast.rest ?? []), ...(ast.types ?? []))
  for (const node of inner) {
    const found = opaquePart(node, seen)
    if (found !== undefined) return found
  }
  return undefined
}

/**
 * The codecs of `def`. A schema that cannot be written as JSON fails here, when the layer is built, rather than
 * on the first call that needs it.
 */
const makeCodecs = (def: DefinitionSpec): Codecs => {
  const handlers = new Map<string, Codecs["handlers"] extends ReadonlyMap<string, infer V> ? V : never>()
  for (const [name, spec] of Object.entries(def.handlers)) {
    const check = (what: string, schema: Schema.Top | undefined) => {
      if (schema === undefined) return
      const found = opaquePart(schema.ast as unknown as AstNode, new Set())
      if (found !== undefined) {
        throw new TypeError(
          `durable-object: ${def.name}.${name}'s ${what} schema cannot cross the cluster as JSON: it holds a declared type without a JSON codec (${found})`
        )
      }
    }
    check("payload", spec.payload)
    check("success", spec.success)
    check("error", spec.error)
    handlers.set(name, {
      payload: spec.payload === undefined ? StateCodec.none : StateCodec.make(spec.payload),
      outcome: Wire.handlerCodec(spec),
      validate: spec.payload === undefined
        ? undefined
        : Schema.decodeUnknownExit(Schema.toType(spec.payload) as unknown as Schema.Decoder<unknown>),
      // A payload and reply "in encoded form" are their JSON forms, as in the local runtime.
      decodeEncoded: spec.payload === undefined
        ? undefined
        : Schema.decodeUnknownExit(Schema.toCodecJson(spec.payload) as unknown as Schema.Decoder<unknown>),
      encodeSuccess: spec.success === undefined
        ? undefined
        : Schema.encodeUnknownExit(Schema.toCodecJson(spec.success) as unknown as Schema.Encoder<unknown>)
    })
  }
  return { handlers, alarms: AlarmCodec.make(def) }
}

/**
 * The entity id standing for each shard: the first of `shard-0`, `shard-1`, … that hashes to it. Every node
 * derives the same ids from the same hash, whatever its `shardsPerGroup` (which must agree anyway).
 */
export const makeShardIds = (sharding: Sharding["Service"], group: string) => {
  const byShard = new Map<number, string>()
  let next = 0
  return (objectId: string): string => {
    const shard = sharding.getShardId(EntityId.make(objectId), group).id
    let found = byShard.get(shard)
    while (found === undefined) {
      const candidate = `shard-${next++}`
      const candidateShard = sharding.getShardId(EntityId.make(candidate), group).id
      if (!byShard.has(candidateShard)) byShard.set(candidateShard, candidate)
      found = byShard.get(shard)
    }
    return found
  }
}

/** A key made for a routed call: unique per call (a snowflake of the sending node), never a caller's key. */
const routedKey = (snowflake: bigint | string): string => `~route/${String(snowflake)}`

/** The errors effect/cluster's client adds, as the runtime's own. */
const mapClientError =
  (objectType: string, id: string, capacity: number) => (error: unknown): Effect.Effect<never, unknown> => {
    const tag = (error as { readonly _tag?: unknown } | null)?._tag
    if (tag === "MailboxFull") {
      return Effect.fail(new ObjectOverloaded({ objectType, objectId: id, mailboxCapacity: capacity }))
    }
    if (tag === "EntityNotAssignedToRunner") return Effect.fail(new RuntimeShutdown({ objectType }))
    return Effect.die(error)
  }

/** What a client-only node's reads of storage fail with. */
const storageUnavailable = (what: string) =>
  new StorageError({
    operation: what,
    detail: "a client-only node has no storage to read: call it on a runner node (DurableObjectCluster.layer)",
    outcome: "not-applied"
  })

/** What a client-only node's live streams fail with. */
const liveUnavailable = <A>(what: string): Stream.Stream<A, StorageError> =>
  Stream.fail(
    new StorageError({
      operation: what,
      detail: "live state is served by runner nodes (DurableObjectCluster.layer), not by client-only nodes",
      outcome: "not-applied"
    })
  )

/** Alarms of one type an owner runs at once (the scheduler's default concurrency in one process). */
const alarmConcurrency = 256

/** How long to wait before sending again a call its owner refused while shutting down. */
const resendMillis = 100

/**
 * The routed runtime: the `ObjectRuntime` every node provides for `def` in cluster mode. Its calls go to the
 * owner of the object's shard; `local` (runners only) serves the live streams and the list of loaded ids.
 */
export const makeRouted = (
  def: DefinitionSpec,
  options: ClusterOptions,
  local: ObjectRuntime | undefined
): Effect.Effect<ObjectRuntime, never, Sharding | Scope.Scope> =>
  Effect.gen(function*() {
    const sharding = yield* Sharding
    const clock = yield* Clock.Clock
    const entity = makeEntity(def.name)
    const makeClient = yield* sharding.makeClient(entity)
    const group = entity.getShardGroup(EntityId.make("")) // the entity's group does not depend on the id
    const shardIdOf = makeShardIds(sharding, group)
    const codecs = makeCodecs(def)
    const objectType = def.name
    const handlerNames = Array.from(codecs.handlers.keys())
    const callDeadlineMillis = def.options.callTimeoutMillis + def.options.commitTimeoutMillis +
      options.routeTimeoutMillis

    const timeoutError = (id: string, handler: string) =>
      new CallTimeout({ objectType, objectId: id, handler, timeoutMillis: callDeadlineMillis })

    /**
     * Sends `send` until its owner answers with something else than `RuntimeShutdown` (an owner that is
     * shutting down ran nothing: the next owner will), at most until the routed call's deadline.
     */
    const routed = (
      id: string,
      label: string,
      codec: Wire.OutcomeCodec,
      send: Effect.Effect<string, unknown>
    ): Effect.Effect<unknown, unknown> => {
      const attempt: Effect.Effect<unknown, unknown> = send.pipe(
        Effect.catch(mapClientError(objectType, id, def.options.mailboxCapacity)),
        Effect.flatMap((text) => {
          const exit = Wire.decodeExit(codec, text)
          if (Exit.isFailure(exit)) {
            const error = Cause.findError(exit.cause)
            if (error._tag === "Success" && error.success instanceof RuntimeShutdown) {
              return Effect.flatMap(sharding.isShutdown, (down) =>
                down ? exit : Effect.andThen(Effect.sleep(resendMillis), attempt))
            }
          }
          return exit
        })
      )
      return Effect.timeoutOrElse(attempt, {
        duration: callDeadlineMillis,
        orElse: () =>
          Effect.fail(timeoutError(id, label))
      })
    }

    const callTyped = (
      chain: ReadonlyArray<string>,
      id: string,
      handler: string,
      payload: unknown,
      idempotencyKey: string | undefined,
      validated: boolean
    ): Effect.Effect<unknown, unknown> => {
      const codec = codecs.handlers.get(handler)
      if (codec === undefined) return Exit.fail(new UnknownHandler({ objectType, handler, known: handlerNames }))
      const idError = checkId(objectType, id)
      if (idError !== undefined) return Exit.fail(idError)
      const chainKey = `${objectType}/${id}`
      if (chain.includes(chainKey)) {
        return Exit.fail(new ReentrantCall({ objectType, objectId: id, handler, chain: [...chain, chainKey] }))
      }
      if (!validated && codec.validate !== undefined) {
        const valid = codec.validate(payload)
        if (Exit.isFailure(valid)) return Exit.fail(invalidPayload(handler, valid.cause))
      }
      const json = codec.payload.encode(payload)
      if (Exit.isFailure(json)) return Exit.fail(invalidPayload(handler, json.cause))
      if (idempotencyKey !== undefined) {
        const keyError = Replies.checkKey(objectType, handler, idempotencyKey)
        if (keyError !== undefined) return Exit.fail(keyError)
      }
      const client = makeClient(shardIdOf(id))
      return Effect.flatMap(
        idempotencyKey === undefined ? sharding.getSnowflake : Effect.succeed(undefined),
        (snowflake: bigint | undefined) => {
          const message = {
            id,
            handler,
            payload: json.value,
            key: snowflake === undefined ? idempotencyKey! : routedKey(snowflake),
            routed: snowflake !== undefined,
            since: clock.currentTimeMillisUnsafe(),
            chain
          }
          return routed(id, handler, codec.outcome, client.call(message))
        }
      )
    }

    const invalidPayload = (handler: string, cause: Cause.Cause<Schema.SchemaError>) => {
      const error = Cause.findError(cause)
      return new InvalidPayload({
        objectType,
        handler,
        issue: error._tag === "Success" ? error.success.message : Cause.pretty(cause)
      })
    }

    const admin = (id: string, op: AdminOp, arg: unknown): Effect.Effect<unknown, unknown> => {
      const idError = checkId(objectType, id)
      if (idError !== undefined) return Exit.fail(idError)
      return routed(
        id,
        op,
        adminCodecs[op],
        makeClient(shardIdOf(id)).admin({ id, op, arg: JSON.stringify(arg ?? null) })
      )
    }

    const toWireWhen = (when: When): Effect.Effect<WireWhen, unknown> => {
      if ("cron" in when) return Effect.succeed({ cron: when.cron, timeZone: when.timeZone })
      if ("in" in when) {
        return Effect.succeed({
          at: clock.currentTimeMillisUnsafe() + Duration.toMillis(Duration.fromInputUnsafe(when.in))
        })
      }
      return Effect.succeed({ at: typeof when.at === "number" ? when.at : DateTime.toEpochMillis(when.at) })
    }

    const runtime: ObjectRuntime = {
      call: (id, handler, ...payload) =>
        Effect.withFiber((fiber) =>
          callTyped(Context.get(fiber.context, CallChain), id, handler, payload[0], undefined, false)
        ) as never,
      callFrom: (fiber, id, handler, payload, idempotencyKey) =>
        callTyped(Context.get(fiber.context, CallChain), id, handler, payload, idempotencyKey, false),
      callEncoded: (id, handler, payload, callOptions) =>
        Effect.withFiber((fiber) => {
          const codec = codecs.handlers.get(handler)
          if (codec === undefined) return Exit.fail(new UnknownHandler({ objectType, handler, known: handlerNames }))
          let decoded: unknown = undefined
          if (codec.decodeEncoded !== undefined) {
            const result = codec.decodeEncoded(payload)
            if (Exit.isFailure(result)) return Exit.fail(invalidPayload(handler, result.cause))
            decoded = result.value
          }
          const call = callTyped(
            Context.get(fiber.context, CallChain),
            id,
            handler,
            decoded,
            callOptions?.idempotencyKey,
            true
          )
          const encodeSuccess = codec.encodeSuccess
          if (encodeSuccess === undefined) return call
          return Effect.flatMap(call, (reply) => {
            const out = encodeSuccess(reply)
            return Exit.isSuccess(out) ? Exit.succeed(out.value) : Effect.die(out.cause)
          })
        }) as never,
      stop: (id) => admin(id, "stop", null) as never,
      delete: (id) => admin(id, "delete", null) as never,
      status: (id) => Effect.orDie(admin(id, "status", null)) as never,
      loadedIds: local?.loadedIds ?? Effect.succeed([]),
      scheduleAlarm: (id, name, when, ...payload) =>
        Effect.suspend(() => {
          const codec = codecs.alarms.get(name)
          if (codec === undefined) {
            return Exit.fail(new UnknownHandler({ objectType, handler: name, known: Array.from(codecs.alarms.keys()) }))
          }
          const json = codec.toJson(payload[0])
          if (Exit.isFailure(json)) return Exit.fail(invalidPayload(name, json.cause))
          return Effect.flatMap(toWireWhen(when), (wireWhen) =>
            admin(id, "schedule", { name, when: wireWhen, payload: json.value }))
        }) as never,
      cancelAlarm: (id, name) => admin(id, "cancel", { name }) as never,
      listAlarms: (id) =>
        local !== undefined
          ? local.listAlarms(id)
          : Effect.map(admin(id, "list", null), (infos) => fromWireAlarms(codecs, infos)) as never,
      changes: (id) => local !== undefined ? local.changes(id) : liveUnavailable("changes"),
      // Reads of storage: served by the runner's own runtime (statuses are this runner's); a client-only node
      // has no storage to read.
      list: (listOptions) => local !== undefined ? local.list(listOptions) : Effect.fail(storageUnavailable("list")),
      inspect: (id) => local !== undefined ? local.inspect(id) : Effect.fail(storageUnavailable("inspect")),
      listFailedAlarms: (listOptions) =>
        local !== undefined ? local.listFailedAlarms(listOptions) : Effect.fail(storageUnavailable("listFailedAlarms")),
      // A write: serialized with the object's calls on its owner.
      retryAlarm: (id, name) => admin(id, "retry", { name }) as never,
      events: (id) =>
        local !== undefined ? local.events(id) : Stream.die(
          new TypeError(
            "durable-object: live events are served by runner nodes (DurableObjectCluster.layer), not by client-only nodes"
          )
        )
    }
    return runtime
  })

/** Listed alarms as they cross the wire (times in epoch milliseconds, payloads in their JSON form). */
interface WireAlarm {
  readonly name: string
  readonly fireAt: number
  readonly payload: unknown
  readonly attempts: number
  readonly cron?: string | undefined
  readonly failed?: { readonly at: number; readonly error: string } | undefined
  readonly invalid?: string | undefined
}

const toWireAlarms = (codecs: Codecs, infos: ReadonlyArray<AlarmInfo>): ReadonlyArray<WireAlarm> =>
  infos.map((info) => {
    const codec = codecs.alarms.get(info.name)
    const payload = info.invalid !== undefined || codec === undefined ? info.payload : codec.toJson(info.payload)
    return {
      name: info.name,
      fireAt: DateTime.toEpochMillis(info.fireAt),
      payload: Exit.isExit(payload) ? (Exit.isSuccess(payload) ? payload.value : null) : payload,
      attempts: info.attempts,
      cron: info.cron,
      failed: info.failed === undefined
        ? undefined
        : { at: DateTime.toEpochMillis(info.failed.at), error: info.failed.error },
      invalid: info.invalid
    }
  })

const fromWireAlarms = (codecs: Codecs, infos: unknown): ReadonlyArray<AlarmInfo> =>
  (infos as ReadonlyArray<WireAlarm>).map((wire) => {
    const codec = codecs.alarms.get(wire.name)
    const decoded = wire.invalid !== undefined || codec === undefined ? undefined : codec.fromJson(wire.payload)
    return {
      name: wire.name,
      fireAt: DateTime.makeUnsafe(wire.fireAt),
      payload: decoded === undefined ? wire.payload : Exit.isSuccess(decoded) ? decoded.value : wire.payload,
      attempts: wire.attempts,
      cron: wire.cron,
      failed: wire.failed === undefined
        ? undefined
        : { at: DateTime.makeUnsafe(wire.failed.at), error: wire.failed.error },
      ...(wire.invalid === undefined ? {} : { invalid: wire.invalid })
    }
  })

const backgroundFailures = Metric.withAttributes(Telemetry.backgroundFailures, { operation: "cluster" })

/**
 * The runner side: builds `def`'s private runtime (reachable only through routing), registers the entity that
 * serves its shards, routes its alarms to their owners, and returns the routed runtime of this node.
 */
export const makeRunner = (
  def: DefinitionSpec,
  options: ClusterOptions
): Effect.Effect<ObjectRuntime, never, Sharding | Storage | Scheduler | Scope.Scope> =>
  Effect.gen(function*() {
    const sharding = yield* Sharding
    const storage = yield* Storage
    const scheduler = yield* Scheduler
    const clock = yield* Clock.Clock
    const objectType = def.name
    const entity = makeEntity(objectType)
    const codecs = makeCodecs(def)
    const group = entity.getShardGroup(EntityId.make(""))
    const shardIdOf = makeShardIds(sharding, group)
    const makeClient = yield* sharding.makeClient(entity)

    // Alarms reach handlers only through their owner: the private runtime registers its handler here, and the
    // storage's scheduler gets one that delivers each claimed alarm to the owner of its object.
    let fireLocal: ((alarm: ClaimedAlarm) => Effect.Effect<void>) | undefined
    // Shards whose owner did not accept an alarm lately, until when: their alarms are handed back at once
    // instead of each waiting out the timeout (and holding one of the scheduler's slots meanwhile).
    const unreachable = new Map<number, number>()
    const release = (alarm: ClaimedAlarm, retryAt: number, why: string) => {
      const now = clock.currentTimeMillisUnsafe()
      return storage.releaseAlarm({
        objectType: alarm.objectType,
        objectId: alarm.objectId,
        name: alarm.name,
        claim: alarm.claim,
        retryAt,
        error: `not delivered to its object's owner: ${why}`,
        now,
        undelivered: true
      }).pipe(
        Effect.catchCause((cause) =>
          Effect.andThen(
            Metric.update(backgroundFailures, 1),
            Effect.logWarning("durable-object: an undelivered alarm's claim could not be released").pipe(
              Effect.annotateLogs({ objectType, objectId: alarm.objectId, cause: Cause.pretty(cause) })
            )
          )
        ),
        Effect.asVoid
      )
    }
    /** Hands a claimed alarm to its object's owner, which runs it; waits only until the owner accepted it. */
    const deliver = (alarm: ClaimedAlarm): Effect.Effect<void> =>
      Effect.suspend(() => {
        const shard = sharding.getShardId(EntityId.make(alarm.objectId), group).id
        const now = clock.currentTimeMillisUnsafe()
        const until = unreachable.get(shard)
        if (until !== undefined && until > now) return release(alarm, until, "its owner is unreachable")
        return makeClient(shardIdOf(alarm.objectId)).fire({ alarm: JSON.stringify(alarm) }).pipe(
          Effect.asVoid,
          Effect.timeout(options.alarmRouteTimeoutMillis),
          Effect.catchCause((cause) => {
            const retryAt = clock.currentTimeMillisUnsafe() + options.alarmRouteTimeoutMillis
            unreachable.set(shard, retryAt)
            return release(alarm, retryAt, Cause.pretty(cause).split("\n")[0]!)
          })
        )
      })
    const routedScheduler: SchedulerService = {
      register: (type, fire) => {
        fireLocal = fire
        return scheduler.register(type, deliver)
      },
      wake: scheduler.wake,
      repliesStored: scheduler.repliesStored
    }

    const local = yield* Runtime.make(def).pipe(Effect.provideService(Scheduler, routedScheduler))
    const alarmFibers = yield* FiberSet.make<void, never>()
    const firing = yield* Semaphore.make(alarmConcurrency)

    // The ids this runner served, by shard: what a shard's entity stops when it goes.
    const byShard = new Map<number, Set<string>>()
    const track = (shard: number, id: string) => {
      let ids = byShard.get(shard)
      if (ids === undefined) byShard.set(shard, ids = new Set())
      ids.add(id)
    }
    const forEachOf = (shard: number, f: (id: string) => Effect.Effect<void>) =>
      Effect.suspend(() => {
        const ids = byShard.get(shard)
        if (ids === undefined) return Effect.void
        byShard.delete(shard)
        return Effect.forEach(ids, f, { concurrency: 16, discard: true })
      })
    const stopQuietly = (id: string) =>
      local.stop(id).pipe(
        Effect.catchCause((cause) =>
          Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.andThen(
            Metric.update(backgroundFailures, 1),
            Effect.logWarning("durable-object: an object leaving this runner could not stop gracefully").pipe(
              Effect.annotateLogs({ objectType, objectId: id, cause: Cause.pretty(cause) })
            )
          )
        )
      )

    const runAdmin = (id: string, op: string, argText: string): Effect.Effect<unknown, unknown> => {
      const arg = JSON.parse(argText) as any
      switch (op as AdminOp) {
        case "stop":
          return local.stop(id)
        case "delete":
          return local.delete(id)
        case "status":
          return local.status(id)
        case "schedule": {
          const codec = codecs.alarms.get(arg.name)
          const payload = codec === undefined ? Exit.succeed(undefined) : codec.fromJson(arg.payload)
          if (Exit.isFailure(payload)) return Effect.die(payload.cause)
          return (local.scheduleAlarm as any)(id, arg.name, arg.when, payload.value)
        }
        case "cancel":
          return local.cancelAlarm(id, arg.name)
        case "list":
          return Effect.map(local.listAlarms(id), (infos) => toWireAlarms(codecs, infos))
        case "retry":
          return local.retryAlarm(id, arg.name)
      }
      return Effect.die(new TypeError(`durable-object: unknown cluster operation ${op}`))
    }

    const handlers = Effect.gen(function*() {
      const address = yield* Entity.CurrentAddress
      const shard = address.shardId.id
      // A new entity for this shard: copies left from an earlier ownership of it are stale.
      yield* forEachOf(shard, local.drop)
      yield* Effect.addFinalizer(() => forEachOf(shard, stopQuietly))
      return entity.of({
        call: (request) => {
          const message = request.payload
          track(shard, message.id)
          const codec = codecs.handlers.get(message.handler)
          if (codec === undefined) {
            return Effect.succeed(Wire.encodeExit(
              voidCodec,
              Exit.fail(
                new UnknownHandler({ objectType, handler: message.handler, known: Array.from(codecs.handlers.keys()) })
              )
            ))
          }
          const payload = codec.payload.decode(message.payload)
          if (Exit.isFailure(payload)) {
            const error = Cause.findError(payload.cause)
            return Effect.succeed(Wire.encodeExit(
              codec.outcome,
              Exit.fail(
                new InvalidPayload({
                  objectType,
                  handler: message.handler,
                  issue: error._tag === "Success" ? error.success.message : Cause.pretty(payload.cause)
                })
              )
            ))
          }
          return Effect.withFiber((fiber) =>
            local.callKeyed(
              fiber,
              message.id,
              message.handler,
              payload.value,
              message.key,
              message.routed ? options.replyRetentionMillis : undefined,
              message.routed ? message.since : undefined
            )
          ).pipe(
            Effect.provideService(CallChain, message.chain),
            Effect.exit,
            Effect.map((exit) => Wire.encodeExit(codec.outcome, exit))
          )
        },
        admin: (request) => {
          const { arg, id, op } = request.payload
          track(shard, id)
          const codec = adminCodecs[op as AdminOp] ?? voidCodec
          return runAdmin(id, op, arg).pipe(Effect.exit, Effect.map((exit) => Wire.encodeExit(codec, exit)))
        },
        fire: (request) => {
          const alarm = JSON.parse(request.payload.alarm) as ClaimedAlarm
          track(shard, alarm.objectId)
          const fire = fireLocal
          // Accepted: the alarm runs here, however long its handler takes, as many at once as the scheduler
          // would run in one process; its claim is released or committed by the alarm runner as usual.
          return fire === undefined
            ? Effect.succeed("")
            : Effect.as(FiberSet.run(alarmFibers, firing.withPermits(1)(fire(alarm))), "")
        }
      })
    })
    yield* Layer.buildWithScope(
      entity.toLayer(handlers, {
        maxIdleTime: Duration.infinity,
        concurrency: "unbounded",
        mailboxCapacity: "unbounded",
        disableFatalDefects: true
      }),
      yield* Effect.scope
    ).pipe(Effect.provideService(Sharding, sharding))

    // A stalled event loop may have outlived this runner's shard locks: every copy may be stale.
    yield* Effect.forkScoped(Effect.gen(function*() {
      const tick = Math.max(10, Math.min(250, options.maxPauseMillis / 4))
      let last = clock.currentTimeMillisUnsafe()
      while (true) {
        yield* Effect.sleep(tick)
        const now = clock.currentTimeMillisUnsafe()
        if (now - last - tick > options.maxPauseMillis) {
          const loaded = yield* local.loadedIds
          yield* Effect.logWarning("durable-object: the event loop stood still; dropping every loaded copy").pipe(
            Effect.annotateLogs({ objectType, pausedMillis: now - last - tick, loaded: loaded.length })
          )
          yield* Effect.forEach(loaded, local.drop, { concurrency: "unbounded", discard: true })
        }
        last = clock.currentTimeMillisUnsafe()
      }
    }))

    // Forget ids that are no longer loaded here, in slices.
    yield* Effect.forkScoped(Effect.gen(function*() {
      while (true) {
        yield* Effect.sleep(options.pruneIntervalMillis)
        const loaded = new Set(yield* local.loadedIds)
        for (const ids of byShard.values()) {
          let seen = 0
          for (const id of ids) {
            if (!loaded.has(id)) ids.delete(id)
            if (++seen % 4096 === 0) yield* Effect.yieldNow
          }
        }
      }
    }))

    return yield* makeRouted(def, options, local)
  })
