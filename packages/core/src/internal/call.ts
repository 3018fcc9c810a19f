/**
 * Calls: handlers prepared once per runtime (validators, codecs, metric series), and the call path. A call
 * reaches its object's lock in one of three ways: the lock is free and the object active (the hot path, one
 * synchronous step), it waits behind the call holding the lock (queued), or it takes the general path, which
 * activates or wakes the object first. All three then run user code the same way (`runLocked`) and end the
 * same way (`finish`): stage what the run changed, release the lock, and release the reply once what it saw is
 * durable (the output gate).
 *
 * @internal
 */
import { Cause, Context, Effect, Exit, Fiber, Metric, Result, Schema } from "effect"
import {
  CallTimeout,
  CommitTimeout,
  HandlerDefect,
  IdempotencyKeyMismatch,
  InvalidObjectId,
  InvalidPayload,
  maxObjectIdLength,
  ObjectOverloaded,
  ReentrantCall,
  RuntimeShutdown,
  StateDecodeError,
  StorageError,
  UnknownHandler
} from "../Errors.ts"
import * as Telemetry from "../Telemetry.ts"
import { awaitGroupUntil } from "./commit.ts"
import { type Cell, makeCell } from "./context.ts"
import type { AnyHandler, ObjectContext } from "./definition.ts"
import type { CommitGroup, Instance, KeptReply } from "./instance.ts"
import * as Mailbox from "./mailbox.ts"
import type { RuntimeParts } from "./parts.ts"
import type { ReplyPut } from "./records.ts"
import * as Replies from "./replies.ts"
import * as Series from "./series.ts"
import { tracing } from "./span.ts"
import { CallChain } from "./userCode.ts"

const encoder = new TextEncoder()

/** `InvalidObjectId` when `id` cannot name an object, else `undefined`. */
export const checkId = (objectType: string, id: unknown): InvalidObjectId | undefined => {
  if (typeof id !== "string") return new InvalidObjectId({ objectType, reason: "an id must be a string" })
  if (id.length === 0) return new InvalidObjectId({ objectType, reason: "an id must not be empty" })
  // A UTF-16 code unit is at most 3 UTF-8 bytes, so short ids skip the byte count.
  if (id.length * 3 > maxObjectIdLength && encoder.encode(id).length > maxObjectIdLength) {
    return new InvalidObjectId({ objectType, reason: `an id must be at most ${maxObjectIdLength} UTF-8 bytes` })
  }
  if (!id.isWellFormed()) {
    return new InvalidObjectId({ objectType, reason: "an id must be well-formed Unicode (no lone surrogates)" })
  }
  if (id.includes("\u0000")) return new InvalidObjectId({ objectType, reason: "an id must not contain NUL" })
  return undefined
}

const outcomeNames: ReadonlyArray<Telemetry.CallOutcome> = [
  "success",
  "failure",
  "defect",
  "timeout",
  "interrupted",
  "overloaded",
  "rejected"
]

const outcomeOf = (exit: Exit.Exit<unknown, unknown>): Telemetry.CallOutcome => {
  if (Exit.isSuccess(exit)) return "success"
  const cause = exit.cause
  if (Cause.hasInterruptsOnly(cause)) return "interrupted"
  const error = Cause.findError(cause)
  if (error._tag !== "Success") return "defect"
  const e = error.success
  if (e instanceof HandlerDefect) return "defect"
  if (e instanceof CallTimeout) return "timeout"
  if (e instanceof ObjectOverloaded) return "overloaded"
  if (
    e instanceof InvalidPayload || e instanceof UnknownHandler || e instanceof InvalidObjectId ||
    e instanceof ReentrantCall || e instanceof RuntimeShutdown
  ) return "rejected"
  return "failure"
}

/**
 * Whether `effect` is already an `Exit` (a run that settled synchronously). `Exit.isExit` takes any value and
 * goes through a generic property check; every value checked here is an effect, so checking the brand directly
 * costs a third as much, on a path that checks twice per call.
 */
export const isExit = (effect: Effect.Effect<unknown, unknown>): effect is Exit.Exit<unknown, unknown> =>
  "~effect/Exit" in effect

/** A handler with everything a call needs of it made once. */
interface Prepared {
  readonly name: string
  readonly spec: AnyHandler
  readonly validate: ((u: unknown) => Exit.Exit<unknown, Schema.SchemaError>) | undefined
  readonly decodeEncoded: ((u: unknown) => Exit.Exit<unknown, Schema.SchemaError>) | undefined
  readonly encodeSuccess: ((u: unknown) => Exit.Exit<unknown, Schema.SchemaError>) | undefined
  readonly attributes: Record<string, string>
  readonly outcomes: Record<Telemetry.CallOutcome, Series.Series>
  readonly duration: Series.Series
  /** How replies of keyed calls are stored. */
  readonly replies: Replies.ReplyCodec
  /** Runs the handler on a run's cell with the call's payload as input. */
  readonly body: Body<unknown>
}

const prepare = (
  objectType: string,
  name: string,
  spec: AnyHandler,
  makeContext: (id: string, cell: Cell) => ObjectContext<unknown, any>
): Prepared => {
  const payload = spec.payload
  const success = spec.success
  const attributes = { object_type: objectType, handler: name }
  const outcomes = {} as Record<Telemetry.CallOutcome, Series.Series>
  for (const outcome of outcomeNames) {
    outcomes[outcome] = Series.make(Telemetry.callSeries({ ...attributes, outcome }).calls)
  }
  return {
    name,
    spec,
    validate: payload === undefined
      ? undefined
      : Schema.decodeUnknownExit(Schema.toType(payload) as unknown as Schema.Decoder<unknown>),
    decodeEncoded: payload === undefined
      ? undefined
      : Schema.decodeUnknownExit(Schema.toCodecJson(payload) as unknown as Schema.Decoder<unknown>),
    encodeSuccess: success === undefined
      ? undefined
      : Schema.encodeUnknownExit(Schema.toCodecJson(success) as unknown as Schema.Codec<unknown, unknown>),
    attributes: { [Telemetry.attributes.objectType]: objectType, [Telemetry.attributes.handler]: name },
    outcomes,
    duration: Series.make(Telemetry.callSeries(attributes).duration),
    replies: Replies.codec(spec),
    body: (inst, cell, payload) => spec.handle(payload, makeContext(inst.id, cell))
  }
}

/** A call made with an idempotency key. */
interface Keyed {
  readonly key: string
  /** Identifies the call (its handler and payload): a key reused for another call is refused. */
  readonly hash: string
  readonly replies: Replies.ReplyCodec
  /** How long its reply is kept (the definition's `idempotencyRetention`, or a routed call's shorter one). */
  readonly retentionMillis: number
  /** For a call whose key routing made: when it was first sent (its sender's clock). */
  readonly since: number | undefined
}

/** Whether a run failed with a typed error only (no defect, no interruption): such a failure can be replayed. */
const isTypedFailure = (cause: Cause.Cause<unknown>): boolean =>
  !Cause.hasDies(cause) && !Cause.hasInterrupts(cause) && Cause.findError(cause)._tag === "Success"

/** A small context of the caller's metric registry and attributes (cheaper for metric updates to read). */
const metricContext = (context: Context.Context<never>): Context.Context<never> =>
  Context.add(
    Context.make(Metric.MetricRegistry, Context.get(context, Metric.MetricRegistry)),
    Metric.CurrentMetricAttributes,
    Context.get(context, Metric.CurrentMetricAttributes)
  )

/** Keeps an effect as it is (where a path has no uninterruptible region to restore). */
const identity = <A, E>(effect: Effect.Effect<A, E>) => effect

/** User code run under an object's lock: it gets a private cell of the object's state to change. */
export type Body<A> = (inst: Instance, cell: Cell, input: unknown) => Effect.Effect<A, unknown, unknown>

/** One run of user code under an object's lock, from its start to its end (`finish`). */
interface CallRun {
  readonly inst: Instance
  /** The handler's name, or what else runs (`alarm:…`, `scheduleAlarm:…`), for errors and metrics. */
  readonly label: string
  readonly caller: Context.Context<never>
  /** The epoch of the copy the run started on: if it changes, what the run saw was dropped. */
  readonly epoch: number
  readonly cell: Cell
  readonly keyed: Keyed | undefined
}

/** What a call reads from its caller's context, resolved once per context. */
interface CallerInfo {
  readonly chain: ReadonlyArray<string>
  /** A small context of the metric registry and attributes (cheaper for metric updates to read). */
  readonly metrics: Context.Context<never>
  /** The metric registry and contextual attributes `metrics` holds, read once (see `series.ts`). */
  readonly registry: Series.Registry
  readonly attributes: Series.Attributes
  readonly refused: StorageError | undefined
  /**
   * The context user code of `userOf` last ran with for this caller (callers mostly call one object again and
   * again; a context is immutable, so runs can share it).
   */
  userOf: Instance | undefined
  userContext: Context.Context<never> | undefined
}

/** Marks a run that found its object stopped: it starts over with the registry's current instance. */
const RETRY: unique symbol = Symbol.for("@durable-object/core/internal/call/retry")

/** The call path of one object type. */
export interface Calls {
  /** A call from `fiber` to handler `name` of object `id` with `input` (encoded when `encoded`). */
  readonly callFrom: (
    fiber: Fiber.Fiber<unknown, unknown>,
    id: string,
    name: string,
    input: unknown,
    encoded: boolean,
    idempotencyKey?: string | undefined,
    retentionMillis?: number | undefined,
    since?: number | undefined
  ) => Effect.Effect<unknown, unknown>
  /**
   * Runs `body` in the object's serial context on the general path: waits in its mailbox (at most `capacity`
   * waiting), activates or wakes it, runs `body` under the call timeout, and finishes like any call.
   */
  readonly exclusive: <A>(
    id: string,
    label: string,
    capacity: number,
    chain: ReadonlyArray<string>,
    body: Body<A>
  ) => Effect.Effect<A, unknown>
  /** Interrupts every run that is suspended under a lock (the graceful stop's last resort). */
  readonly interruptRunning: Effect.Effect<void>
}

export const make = (
  deps: RuntimeParts & {
    /** Activates an unloaded instance, with the lock held. */
    readonly activate: (inst: Instance, chain: ReadonlyArray<string>) => Effect.Effect<void, unknown>
  }
): Calls => {
  const { activate, clock, commits, def, makeContext, own, registry, user } = deps
  const objectType = def.name
  const options = def.options
  const timed = Number.isFinite(options.callTimeoutMillis)
  const deadlines = registry.deadlines
  const maxPendingCommits = Math.max(1, options.mailboxCapacity)

  const prepared = new Map<string, Prepared>()
  for (const [name, spec] of Object.entries(def.handlers)) {
    prepared.set(name, prepare(objectType, name, spec, makeContext))
  }
  const handlerNames = Array.from(prepared.keys())
  // Runs that suspended under a lock (only those can hold one for long).
  const suspended = new Set<Fiber.Fiber<unknown, unknown>>()

  const overloaded = (inst: Instance) => () =>
    new ObjectOverloaded({ objectType, objectId: inst.id, mailboxCapacity: options.mailboxCapacity })

  const callTimeout = (inst: Instance, handler: string) =>
    new CallTimeout({ objectType, objectId: inst.id, handler, timeoutMillis: options.callTimeoutMillis })

  /** Bounds `effect` by what is left until `deadline`. */
  const withTimeout = <A, E>(inst: Instance, label: string, effect: Effect.Effect<A, E>, deadline: number) =>
    timed
      ? Effect.timeoutOrElse(effect, {
        duration: Math.max(0, deadline - clock.currentTimeMillisUnsafe()),
        orElse: () => Effect.fail(callTimeout(inst, label))
      })
      : effect

  // ---------------------------------------------------------------------------------------------------------
  // Running and finishing
  // ---------------------------------------------------------------------------------------------------------

  /**
   * With the lock held (and the object active): stages what a successful run left, releases the lock, and
   * returns the reply, or the wait for the commit it depends on (which the caller may abandon: nothing else
   * hangs on it).
   */
  const commitTimeout = (inst: Instance, label: string) =>
    new CommitTimeout({ objectType, objectId: inst.id, handler: label, timeoutMillis: options.commitTimeoutMillis })

  /**
   * Waits until `group` is durable, at most `commitTimeout`: past it the call fails with `CommitTimeout` (the
   * outcome is unknown to the caller; the runtime learns it when the commit answers, and drops its copy if the
   * commit failed).
   */
  const awaitCommit = (inst: Instance, label: string, group: CommitGroup): Effect.Effect<void, unknown> =>
    awaitGroupUntil(
      group,
      deadlines,
      (registry.stepTime ?? clock.currentTimeMillisUnsafe()) + options.commitTimeoutMillis,
      () => commitTimeout(inst, label)
    )

  /** The reply a keyed call stores: encoded with the handler's schemas, kept until the retention ends. */
  const replyPut = (keyed: Keyed, reply: string): ReplyPut => ({
    key: keyed.key,
    payloadHash: keyed.hash,
    reply,
    expiresAt: clock.currentTimeMillisUnsafe() + keyed.retentionMillis
  })

  /**
   * With the lock held (and the object active): stages what a successful run left (with its reply when the
   * call is keyed), releases the lock, and returns the reply, or the wait for the commit it depends on (which
   * the caller may abandon: nothing else hangs on it).
   */
  const succeed = (run: CallRun, exit: Exit.Success<unknown, unknown>): Effect.Effect<unknown, unknown> => {
    const { cell, epoch, inst, keyed } = run
    const reply = exit.value
    if (
      cell.state === inst.state && cell.alarms === undefined && cell.fired === undefined &&
      cell.events === undefined && inst.epoch === epoch && inst.status === "active"
    ) {
      // Nothing changed (a read needs no stored reply, keyed or not): the reply only waits for the commits
      // whose state it saw.
      registry.release(inst)
      const pending = inst.commits
      // The run's own exit is the reply (one allocation fewer on the hot path).
      return pending.length === 0
        ? exit
        : Effect.as(awaitCommit(inst, run.label, pending[pending.length - 1]!), reply)
    }
    let put: ReplyPut | undefined
    if (keyed !== undefined) {
      const stored = keyed.replies.encode(Exit.succeed(reply))
      if (stored === undefined) {
        // Storing the change without its reply would let a retry apply it twice: nothing is staged.
        registry.release(inst)
        return Exit.fail(
          new HandlerDefect({
            objectType,
            objectId: inst.id,
            handler: run.label,
            defect: reply,
            pretty: "the reply does not encode with the handler's success schema, so it cannot be stored"
          })
        )
      }
      put = replyPut(keyed, stored)
    }
    const staged = inst.epoch !== epoch || inst.status !== "active"
      // An earlier commit failed while this ran: the state it saw was speculative and is gone.
      ? Exit.fail(
        inst.rollback?.epoch === epoch
          ? inst.rollback.error
          : new StorageError({
            operation: "commit",
            detail: "the object was reloaded while the call ran",
            outcome: "not-applied"
          })
      )
      : commits.stage(inst, run.label, cell, run.caller, put)
    if (keyed !== undefined && put !== undefined && staged !== undefined && !Exit.isExit(staged)) {
      registry.keepReply(inst, keyed.key, {
        payloadHash: keyed.hash,
        exit: Exit.succeed(reply),
        group: staged,
        expiresAt: put.expiresAt,
        since: keyed.since
      })
    }
    registry.release(inst)
    if (inst.status !== "active") registry.reportLoadedUnsafe(run.caller)
    if (staged === undefined) return exit
    if (Exit.isExit(staged)) return staged
    return Effect.as(awaitCommit(inst, run.label, staged), reply)
  }

  /**
   * With the lock held: a keyed call failed with a typed error. Nothing it changed is kept, but its failure is
   * stored (alone in a commit) so that a retry with the same key gets the same answer instead of running again.
   */
  const failKeyed = (
    run: CallRun,
    keyed: Keyed,
    exit: Exit.Exit<unknown, unknown>
  ): Effect.Effect<unknown, unknown> => {
    const { inst } = run
    const stored = keyed.replies.encode(exit)
    if (stored === undefined || inst.epoch !== run.epoch || inst.status !== "active") {
      registry.release(inst)
      return exit
    }
    const put = replyPut(keyed, stored)
    const staged = commits.stage(inst, run.label, makeCell(inst.state), run.caller, put)
    if (staged === undefined || Exit.isExit(staged)) {
      registry.release(inst)
      return exit
    }
    registry.keepReply(inst, keyed.key, {
      payloadHash: keyed.hash,
      exit,
      group: staged,
      expiresAt: put.expiresAt,
      since: keyed.since
    })
    registry.release(inst)
    return Effect.andThen(awaitCommit(inst, run.label, staged), exit)
  }

  /** Ends a run that finished with `exit`: the one way every run ends. */
  const finish = (run: CallRun, exit: Exit.Exit<unknown, unknown>): Effect.Effect<unknown, unknown> => {
    if (Exit.isSuccess(exit)) return succeed(run, exit)
    if (run.keyed !== undefined && isTypedFailure(exit.cause)) return failKeyed(run, run.keyed, exit)
    registry.release(run.inst)
    return user.failure(run.inst.id, run.label, exit.cause)
  }

  /** A stored or kept reply of a keyed call, returned without running the handler (after the lock is released). */
  const replay = (inst: Instance, label: string, keyed: Keyed, kept: KeptReply): Effect.Effect<unknown, unknown> => {
    if (kept.payloadHash !== keyed.hash) {
      return Exit.fail(new IdempotencyKeyMismatch({ objectType, objectId: inst.id, handler: label, key: keyed.key }))
    }
    return kept.group === undefined || kept.group.exit !== undefined
      ? Effect.andThen(kept.group?.exit ?? Effect.void, kept.exit)
      : Effect.andThen(awaitCommit(inst, label, kept.group), kept.exit)
  }

  /**
   * With the lock held: the reply already known for a keyed call, kept in memory or read back from storage
   * (then kept), or `undefined` when the key is new (or its reply expired).
   */
  const lookup = (inst: Instance, keyed: Keyed): Effect.Effect<KeptReply | undefined, unknown> =>
    Effect.suspend(() => {
      const now = clock.currentTimeMillisUnsafe()
      const kept = registry.replyOf(inst, keyed.key, now)
      if (kept !== undefined) return Effect.succeed(kept)
      if (keyed.since !== undefined && registry.repliesComplete(inst, keyed.since)) return Effect.succeed(undefined)
      return Effect.flatMap(own.loadReply(objectType, inst.id, keyed.key, now), (stored) => {
        if (stored === undefined) return Effect.succeed(undefined)
        const decoded = keyed.replies.decode(stored.reply)
        if (Result.isFailure(decoded)) {
          return Effect.fail(
            new StateDecodeError({
              objectType,
              objectId: inst.id,
              issue: `the reply stored for idempotency key ${JSON.stringify(keyed.key)}: ${decoded.failure}`
            })
          )
        }
        const found: KeptReply = {
          payloadHash: stored.payloadHash,
          exit: decoded.success,
          group: undefined,
          expiresAt: stored.expiresAt
        }
        registry.keepReply(inst, keyed.key, found)
        return Effect.succeed(found)
      })
    })

  /**
   * Waits for user code that suspended. The end of its fiber, not the caller, finishes the run, so the lock is
   * released exactly once whatever happens to the caller. Interrupting the caller interrupts the run and waits
   * for it to stop; at the deadline the run is interrupted and the call fails with `CallTimeout`. Neither writes
   * anything.
   */
  const awaitRun = (
    run: CallRun,
    child: Fiber.Fiber<unknown, unknown>,
    deadline: number
  ): Effect.Effect<unknown, unknown> => {
    let outcome: Effect.Effect<unknown, unknown> | undefined
    let waiting: ((effect: Effect.Effect<unknown, unknown>) => void) | undefined
    let timedOut = false
    let abandoned = false
    const entry: Mailbox.Deadline | undefined = deadlines === undefined ? undefined : {
      deadline,
      onExpire: () => {
        timedOut = true
        child.interruptUnsafe()
      },
      deadlinePrev: undefined,
      deadlineNext: undefined,
      deadlineListed: false
    }
    if (entry !== undefined) deadlines!.insert(entry)
    child.addObserver((exit) => {
      if (entry !== undefined) deadlines!.remove(entry)
      let result: Effect.Effect<unknown, unknown>
      if (timedOut || abandoned) {
        // The call failed (or went away), not the user code: nothing is staged, and it is no defect.
        registry.release(run.inst)
        result = timedOut ? Exit.fail(callTimeout(run.inst, run.label)) : exit
      } else {
        result = finish(run, exit)
      }
      if (waiting === undefined) outcome = result
      else waiting(result)
    })
    return Effect.callback<unknown, unknown>((resume) => {
      if (outcome !== undefined) return resume(outcome)
      waiting = resume
      return Effect.suspend(() => {
        abandoned = true
        return Fiber.interrupt(child)
      })
    })
  }

  /**
   * Runs `body` holding the lock of `inst` (active), in a fiber of its own started on the spot with the caller's
   * context (plus the declared services and the call chain): a body that finishes without suspending (the usual
   * case) finishes the run in this same synchronous step, with no timer; one that suspends can be timed out and
   * interrupted alone. `restore` makes the wait interruptible on paths that run uninterruptibly.
   */
  const runLocked = (
    caller: Context.Context<never>,
    inst: Instance,
    label: string,
    chain: ReadonlyArray<string>,
    deadline: number,
    body: Body<unknown>,
    input: unknown,
    restore: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E>,
    keyed?: Keyed | undefined,
    userContext?: Context.Context<never> | undefined
  ): Effect.Effect<unknown, unknown> => {
    const run: CallRun = { inst, label, caller, epoch: inst.epoch, cell: makeCell(inst.state), keyed }
    // User code's requirements are in the context it runs with (its caller's and the declared services).
    const child = Effect.runForkWith(userContext ?? user.context(caller, inst, chain))(
      Effect.suspend(() => body(inst, run.cell, input)) as Effect.Effect<unknown, unknown>
    )
    const exit = child.pollUnsafe()
    if (exit === undefined) {
      suspended.add(child)
      child.addObserver(() => suspended.delete(child))
      return restore(awaitRun(run, child, deadline))
    }
    const result = finish(run, exit)
    return isExit(result) ? result : restore(result)
  }

  // ---------------------------------------------------------------------------------------------------------
  // Reaching the lock
  // ---------------------------------------------------------------------------------------------------------

  /** With the lock held: makes `inst` active (activating or waking it) with room for another commit. */
  const ready = (inst: Instance, chain: ReadonlyArray<string>): Effect.Effect<typeof RETRY | undefined, unknown> =>
    Effect.suspend(() => {
      if (inst.status === "stopped") return Effect.succeed(RETRY)
      const loaded = inst.status === "unloaded"
        ? activate(inst, chain)
        : inst.status === "hibernated"
        ? registry.wake(inst)
        : Effect.void
      return Effect.andThen(loaded, () => {
        // Bound the speculation: past this many pending commits, wait for them first (a failed one unloads
        // the object, which is then made ready again).
        if (inst.commits.length < maxPendingCommits) return Effect.succeed(undefined)
        return Effect.andThen(commits.quiesce(inst), ready(inst, chain))
      })
    })

  /**
   * With the lock held: `ready`, and for a keyed call the reply already known for its key (then the handler
   * does not run).
   */
  const readyFor = (
    inst: Instance,
    chain: ReadonlyArray<string>,
    keyed: Keyed | undefined
  ): Effect.Effect<typeof RETRY | undefined | KeptReply, unknown> =>
    keyed === undefined
      ? ready(inst, chain)
      : Effect.flatMap(
        ready(inst, chain),
        (readied): Effect.Effect<typeof RETRY | undefined | KeptReply, unknown> =>
          readied === RETRY ? Effect.succeed(RETRY) : Effect.flatMap(lookup(inst, keyed), (kept) =>
            // Reading storage let an earlier commit fail meanwhile, dropping the copy: make it ready again.
            kept === undefined && inst.status !== "active" ? readyFor(inst, chain, keyed) : Effect.succeed(kept))
      )

  const exclusive = <A>(
    id: string,
    label: string,
    capacity: number,
    chain: ReadonlyArray<string>,
    body: Body<A>,
    input?: unknown,
    held?: { readonly inst: Instance; readonly deadline: number } | undefined,
    keyed?: Keyed | undefined
  ): Effect.Effect<A, unknown> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.withFiber((fiber) => {
        const caller = fiber.context
        const attempt = (holding: typeof held): Effect.Effect<unknown, unknown> => {
          let inst: Instance
          let deadline: number
          let ticket: Mailbox.Ticket | undefined
          let prepared: Effect.Effect<typeof RETRY | undefined | KeptReply, unknown>
          if (holding !== undefined) {
            inst = holding.inst
            deadline = holding.deadline
            prepared = readyFor(inst, chain, keyed)
          } else {
            if (registry.closing) return Exit.fail(new RuntimeShutdown({ objectType }))
            const refused = own.refuse(caller)
            if (refused !== undefined) return Exit.fail(refused)
            inst = registry.instanceFor(id)
            deadline = clock.currentTimeMillisUnsafe() + options.callTimeoutMillis
            const waiting = Mailbox.makeTicket()
            ticket = waiting
            prepared = Effect.andThen(
              Mailbox.acquire(inst, waiting, capacity, overloaded(inst)),
              readyFor(inst, chain, keyed)
            )
          }
          return Effect.flatMap(Effect.exit(restore(withTimeout(inst, label, prepared, deadline))), (ready) => {
            // Failed while waiting in line: the lock was never ours.
            if (ticket !== undefined && !ticket.granted) return ready
            if (Exit.isFailure(ready)) {
              registry.release(inst)
              return inst.status === "active" ? ready : Effect.andThen(registry.reportLoaded, ready)
            }
            if (ready.value === RETRY) {
              registry.release(inst)
              return attempt(undefined)
            }
            if (ready.value !== undefined) {
              // A keyed call whose reply is known: it is not run again.
              registry.release(inst)
              return restore(replay(inst, label, keyed!, ready.value))
            }
            return runLocked(caller, inst, label, chain, deadline, body as Body<unknown>, input, restore, keyed)
          })
        }
        return attempt(held) as Effect.Effect<A, unknown>
      })
    )

  /**
   * Waits in the mailbox of `inst` (active when the call arrived) behind the call holding it, until
   * `deadline` (through the runtime's one deadline timer). Once the lock is handed over, the call runs like
   * one that found it free, unless the object changed meanwhile (then it takes the general path, keeping the
   * lock).
   */
  const queue = (
    fiber: Fiber.Fiber<unknown, unknown>,
    inst: Instance,
    label: string,
    chain: ReadonlyArray<string>,
    deadline: number,
    body: Body<unknown>,
    input: unknown
  ): Effect.Effect<unknown, unknown> => {
    const ticket = Mailbox.makeTicket()
    ticket.deadline = deadline
    return Mailbox.wait(
      inst,
      ticket,
      fiber,
      Effect.withFiber((fiber) =>
        inst.status === "active" && inst.commits.length < maxPendingCommits
          ? runLocked(fiber.context, inst, label, chain, deadline, body, input, identity)
          : exclusive(inst.id, label, options.mailboxCapacity, chain, body, input, { inst, deadline })
      ),
      deadlines === undefined ? undefined : () => Exit.fail(callTimeout(inst, label)),
      () => registry.release(inst),
      deadlines
    )
  }

  // ---------------------------------------------------------------------------------------------------------
  // Calls
  // ---------------------------------------------------------------------------------------------------------

  // Callers mostly share a context (per request, or per process), so what a call reads from its caller's is
  // resolved once per context, and kept only as long as that context lives: a finished request's context (its
  // services, a closed transaction's connection) is never retained by the runtime.
  const callers = new WeakMap<Context.Context<never>, CallerInfo>()
  const resolveCaller = (context: Context.Context<never>): CallerInfo => {
    let info = callers.get(context)
    if (info === undefined) {
      info = {
        chain: Context.get(context, CallChain),
        metrics: metricContext(context),
        registry: Context.get(context, Metric.MetricRegistry),
        attributes: Context.get(context, Metric.CurrentMetricAttributes),
        refused: own.refuse(context),
        userOf: undefined,
        userContext: undefined
      }
      callers.set(context, info)
    }
    return info
  }

  /** Records a call's outcome and duration (in milliseconds). */
  const record = (handler: Prepared, caller: CallerInfo, exit: Exit.Exit<unknown, unknown>, duration: number) => {
    Series.update(handler.outcomes[outcomeOf(exit)], 1, caller.registry, caller.attributes, caller.metrics)
    Series.update(handler.duration, duration, caller.registry, caller.attributes, caller.metrics)
  }

  /** A call made from `fiber`, once its handler, id and payload are known to be valid. */
  const execute = (
    fiber: Fiber.Fiber<unknown, unknown>,
    caller: CallerInfo,
    id: string,
    inst: Instance | undefined,
    handler: Prepared,
    payload: unknown,
    start: number,
    keyed: Keyed | undefined
  ): Effect.Effect<unknown, unknown> => {
    if (caller.refused !== undefined) return Exit.fail(caller.refused)
    const chain = caller.chain
    const reentrant = user.reentrant(chain, inst?.chainKey ?? `${objectType}/${id}`, id, handler.name)
    if (reentrant !== undefined) return Exit.fail(reentrant)
    const body = handler.body
    if (
      keyed !== undefined || registry.closing || inst === undefined || inst.status !== "active" ||
      inst.commits.length >= maxPendingCommits
    ) {
      // A keyed call looks its key up first, which may read storage: the general path.
      return exclusive(id, handler.name, options.mailboxCapacity, chain, body, payload, undefined, keyed)
    }
    const deadline = start + options.callTimeoutMillis
    if (Mailbox.tryAcquire(inst)) {
      if (caller.userOf !== inst) {
        caller.userContext = user.context(fiber.context, inst, chain)
        caller.userOf = inst
      }
      const context = caller.userContext
      return runLocked(fiber.context, inst, handler.name, chain, deadline, body, payload, identity, undefined, context)
    }
    if (Mailbox.waiting(inst) >= options.mailboxCapacity) return Exit.fail(overloaded(inst)())
    return queue(fiber, inst, handler.name, chain, deadline, body, payload)
  }

  /** `execute` with its outcome and duration recorded (synchronously when it settles at once). */
  const measured = (
    fiber: Fiber.Fiber<unknown, unknown>,
    id: string,
    inst: Instance | undefined,
    handler: Prepared,
    payload: unknown,
    keyed: Keyed | undefined
  ): Effect.Effect<unknown, unknown> => {
    const caller = resolveCaller(fiber.context)
    const start = clock.currentTimeMillisUnsafe()
    // Whatever this step releases was last active now (one clock read fewer per call).
    const outerStep = registry.stepTime
    registry.stepTime = start
    const result = execute(fiber, caller, id, inst, handler, payload, start, keyed)
    registry.stepTime = outerStep
    if (isExit(result)) {
      // Settled in the synchronous step it started in: recorded as 0 ms without a second clock read (~40 ns).
      // A `TestClock` never moves within a step, and the millisecond clock reads the same before and after such
      // a call unless its step crosses a millisecond boundary (or user code computes for a millisecond or more
      // without yielding, which the event loop's own delay shows).
      record(handler, caller, result, 0)
      return result
    }
    return Effect.onExit(result, (exit) => {
      record(handler, caller, exit, clock.currentTimeMillisUnsafe() - start)
      return Effect.void
    })
  }

  /**
   * A call from `fiber`. Spans are only made when a tracer that can export them is installed: with Effect's
   * default in-memory tracer nobody can see them, and they would cost more than the call.
   */
  const callFrom: Calls["callFrom"] = (fiber, id, name, input, encoded, idempotencyKey, retentionMillis, since) => {
    const handler = prepared.get(name)
    if (handler === undefined) {
      return Exit.fail(new UnknownHandler({ objectType, handler: String(name), known: handlerNames }))
    }
    // A loaded object's id was checked when it was loaded.
    const inst = registry.objects.get(id)
    if (inst === undefined) {
      const idError = checkId(objectType, id)
      if (idError !== undefined) return Exit.fail(idError)
    }
    let payload: unknown = undefined
    const decode = encoded ? handler.decodeEncoded : handler.validate
    if (decode !== undefined) {
      const decoded = decode(input)
      if (Exit.isFailure(decoded)) {
        const error = Cause.findError(decoded.cause)
        return Exit.fail(
          new InvalidPayload({
            objectType,
            handler: name,
            issue: error._tag === "Success" ? error.success.message : Cause.pretty(decoded.cause)
          })
        )
      }
      payload = decoded.value
    }
    let keyed: Keyed | undefined
    if (idempotencyKey !== undefined) {
      const keyError = Replies.checkKey(objectType, name, idempotencyKey)
      if (keyError !== undefined) return Exit.fail(keyError)
      const payloadJson = handler.replies.payloadJson(payload)
      // The payload decoded with its schema, so it encodes with it.
      if (Exit.isFailure(payloadJson)) return Effect.die(payloadJson.cause)
      keyed = {
        key: idempotencyKey,
        hash: Replies.callHash(name, payloadJson.value),
        replies: handler.replies,
        retentionMillis: retentionMillis ?? options.idempotencyRetentionMillis,
        since
      }
    }
    const call = tracing(fiber)
      ? Effect.withSpan(
        Effect.withFiber((fiber) => measured(fiber, id, registry.objects.get(id), handler, payload, keyed)),
        Telemetry.spanCall,
        { attributes: { ...handler.attributes, [Telemetry.attributes.objectId]: id }, captureStackTrace: false }
      )
      : measured(fiber, id, inst, handler, payload, keyed)
    if (!encoded || handler.encodeSuccess === undefined) return call
    const encodeSuccess = handler.encodeSuccess
    return Effect.flatMap(call, (reply) => {
      const out = encodeSuccess(reply)
      return Exit.isSuccess(out) ? Exit.succeed(out.value) : Effect.die(out.cause)
    })
  }

  return {
    callFrom,
    exclusive,
    interruptRunning: Effect.suspend(() => Fiber.interruptAll(Array.from(suspended)))
  }
}
