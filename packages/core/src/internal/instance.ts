/**
 * The per-object state machine and the registry of one object type's instances: their status, committed and
 * staged state, the queue of commits not yet durable, idle lists, and activation bookkeeping.
 *
 * Invariants. Every function here keeps them, and no other module assigns an instance's fields (the mailbox
 * and idle-list links belong to `mailbox.ts` and `idleList.ts`):
 * 1. `status` moves `unloaded` → `active` (activated) ⇄ `hibernated`; a loaded instance becomes `unloaded`
 *    when its in-memory copy is dropped (a failed commit or activation) and `stopped` when it is shut down or
 *    deleted. A stopped instance has left the registry for good: whoever still holds it starts over with a
 *    fresh one from the registry.
 * 2. `state` is set only while active; `json` is the encoding of the newest state, staged changes included,
 *    and is kept while hibernated.
 * 3. `version` is the last durable version, which the head of `commits` was built on. `commits` holds the
 *    groups not yet durable, oldest first; only the head is ever in flight.
 * 4. `epoch` grows whenever the in-memory copy is dropped. Work built on an older epoch never reaches storage.
 * 5. `draining` is set exactly while one drain owns `commits`.
 * 6. `loaded` counts the instances that are active or hibernated.
 * 7. An active instance is on the active idle list once a call has finished on it since it was last swept, a
 *    hibernated one on the hibernated list; nothing else is on either.
 *
 * @internal
 */
import { type Clock, type Context, Effect, Exit, Latch, Metric } from "effect"
import type { AlarmClaimLost, StorageError, VersionConflict } from "../Errors.ts"
import * as Telemetry from "../Telemetry.ts"
import { IdleList, type IdleNode } from "./idleList.ts"
import type { Emitted } from "./live.ts"
import * as Mailbox from "./mailbox.ts"
import type { AlarmChanges, ReplyPut } from "./records.ts"
import type { JsonCodec } from "./stateCodec.ts"
import type { Identity } from "./userCode.ts"

/** How a commit can fail. */
export type CommitError = StorageError | VersionConflict | AlarmClaimLost

/**
 * One storage write carrying the changes of one or more handler runs of the same object. Consecutive
 * state-only changes merge while the group waits behind an in-flight commit, so a hot object commits once per
 * storage round trip whatever its call rate; every waiter is released when the group is durable.
 */
export interface CommitGroup {
  json: string
  readonly alarms: AlarmChanges | undefined
  /** Replies of calls made with idempotency keys, stored with this state. */
  replies: Array<ReplyPut> | undefined
  /** Events emitted by the runs in this group, published once it is durable. */
  events: Array<Emitted> | undefined
  readonly waiters: Array<(exit: Exit.Exit<void, CommitError>) => void>
  exit: Exit.Exit<void, CommitError> | undefined
  started: boolean
  /** The earliest alarm fire time to tell the scheduler about once durable. */
  readonly wakeAt: number | undefined
  /** The context its commit runs in: the runtime's own, with the span of the call that created the group. */
  readonly context: Context.Context<never>
}

export type InstanceStatus = "unloaded" | "active" | "hibernated" | "stopped"

/**
 * The reply of a call made with an idempotency key, as this runtime knows it: from its own run (durable once
 * `group` is, or `group` is `undefined`) or read back from storage.
 */
/** How many replies of keyed calls an object keeps in memory (see `Registry.keepReply`). */
const keptReplies = 64

/**
 * How far the clocks of two nodes may disagree (cluster mode): a routed call first sent more than this after
 * an object's copy began keeping every reply in memory finds its reply, if any, in memory (see
 * `Registry.repliesComplete`).
 */
export const clockSkewMillis = 2_000

export interface KeptReply {
  readonly payloadHash: string
  readonly exit: Exit.Exit<unknown, unknown>
  readonly group: CommitGroup | undefined
  readonly expiresAt: number
  /** When a routed call was first sent (its sender's clock), for calls whose key was made by routing. */
  readonly since?: number | undefined
}

export interface Instance extends Mailbox.Mailbox, IdleNode, Identity {
  status: InstanceStatus
  /** The newest state, decoded (only while active). */
  state: unknown
  /** The newest state as JSON (the initial state's encoding while nothing is stored). */
  json: string
  /** The last durable version (0: no row). */
  version: number
  /** When the last call finished, for idle expiry. */
  lastActive: number
  /** Bumped whenever the in-memory copy is dropped, so speculative work built on it can tell. */
  epoch: number
  /** Commits not yet durable, oldest first; the first one may be in flight. */
  readonly commits: Array<CommitGroup>
  /** The drain currently committing `commits`, if any. */
  draining: object | undefined
  /** Why the last speculative chain was rolled back (the runs built on it fail with it). */
  rollback: { readonly epoch: number; readonly error: CommitError } | undefined
  /** Replies of keyed calls known in memory, by key (part of the in-memory copy: dropped with it). */
  replies: Map<string, KeptReply> | undefined
  /**
   * From when on (epoch ms) `replies` holds the reply of every routed call this copy ran: its activation or
   * wake, or later, when a routed reply that old was let go. See `Registry.repliesComplete`.
   */
  repliesFrom: number
}

/** Whether `inst` holds a loaded copy (active or hibernated). */
export const isLoaded = (inst: Instance): boolean => inst.status === "active" || inst.status === "hibernated"

/** The instances of one object type, their idle lists, and what is loaded. */
export class Registry {
  readonly objects = new Map<string, Instance>()
  // Both lists are ordered by when their objects went idle, so the head is always the one idle longest: the
  // sweeper needs no heap.
  readonly idleActive = new IdleList<Instance>()
  readonly idleHibernated = new IdleList<Instance>()
  /** Opened when the sweeper may have something new to do. */
  readonly wakeSweeper = Latch.makeUnsafe(false)
  loaded = 0
  /** Set once the runtime is closing: no new call is admitted. */
  closing = false
  /** The time the current synchronous call step started, while one runs (saves a clock read per call). */
  stepTime: number | undefined = undefined

  readonly objectType: string
  readonly clock: Clock.Clock
  readonly codec: JsonCodec
  readonly handoff: Mailbox.Handoff
  readonly deadlines: Mailbox.Deadlines | undefined
  readonly loadedGauge: Metric.Metric<number, unknown>

  constructor(options: {
    readonly objectType: string
    readonly clock: Clock.Clock
    readonly codec: JsonCodec
    readonly handoff: Mailbox.Handoff
    readonly deadlines: Mailbox.Deadlines | undefined
  }) {
    this.objectType = options.objectType
    this.clock = options.clock
    this.codec = options.codec
    this.handoff = options.handoff
    this.deadlines = options.deadlines
    this.loadedGauge = Metric.withAttributes(Telemetry.activeObjects, { object_type: options.objectType })
  }

  /** The runtime is closing: no new call is admitted from now on. */
  close(): void {
    this.closing = true
  }

  /** The registered instance of `id`, made (unloaded) when there is none. */
  instanceFor(id: string): Instance {
    let inst = this.objects.get(id)
    if (inst === undefined) {
      const chainKey = `${this.objectType}/${id}`
      inst = {
        id,
        chainKey,
        selfChain: [chainKey],
        status: "unloaded",
        state: undefined,
        json: "",
        version: 0,
        lastActive: 0,
        epoch: 0,
        commits: [],
        draining: undefined,
        rollback: undefined,
        replies: undefined,
        repliesFrom: 0,
        busy: false,
        waiters: undefined,
        idlePrev: undefined,
        idleNext: undefined,
        idleList: undefined,
        idleAt: 0
      }
      this.objects.set(id, inst)
    }
    return inst
  }

  /** The ids of the loaded instances. */
  loadedIds(): ReadonlyArray<string> {
    const ids: Array<string> = []
    for (const inst of this.objects.values()) if (isLoaded(inst)) ids.push(inst.id)
    return ids
  }

  /** Reports the loaded count to the gauge. */
  readonly reportLoaded: Effect.Effect<void> = Effect.suspend(() => Metric.update(this.loadedGauge, this.loaded))

  /** `reportLoaded` as one synchronous step, in `context`. */
  reportLoadedUnsafe(context: Context.Context<never>): void {
    this.loadedGauge.updateUnsafe(this.loaded, context)
  }

  /** An activation finished loading: `inst` is active on `state` (encoded as `json`) at `version`. */
  activated(inst: Instance, state: unknown, json: string, version: number): void {
    inst.state = state
    inst.json = json
    inst.version = version
    inst.status = "active"
    inst.repliesFrom = this.clock.currentTimeMillisUnsafe()
    this.loaded++
  }

  /** Forgets the in-memory copy; the next call reloads from storage. */
  unload(inst: Instance): void {
    if (isLoaded(inst)) this.loaded--
    inst.status = "unloaded"
    inst.state = undefined
    inst.replies = undefined
    inst.epoch++
    this.idleActive.remove(inst)
    this.idleHibernated.remove(inst)
  }

  /** Drops `inst` for good (shut down or deleted). */
  markStopped(inst: Instance): void {
    this.unload(inst)
    inst.status = "stopped"
    if (this.objects.get(inst.id) === inst) this.objects.delete(inst.id)
  }

  /** Wakes a hibernated instance: its state is decoded from its JSON again. */
  wake(inst: Instance): Effect.Effect<void> {
    const decoded = this.codec.decode(inst.json)
    // We encoded this JSON ourselves from a valid state, so failing to decode it is a bug.
    if (Exit.isFailure(decoded)) return Effect.die(decoded.cause)
    inst.state = decoded.value
    inst.status = "active"
    // Replies were dropped on hibernation: only calls sent from now on can rely on memory.
    inst.repliesFrom = this.clock.currentTimeMillisUnsafe()
    this.idleHibernated.remove(inst)
    return Effect.void
  }

  /** Hibernates an idle active instance: only its JSON stays in memory. */
  hibernate(inst: Instance): void {
    inst.state = undefined
    inst.replies = undefined
    inst.repliesFrom = Number.MAX_SAFE_INTEGER
    inst.status = "hibernated"
    this.idleHibernated.insert(inst, inst.lastActive)
  }

  /**
   * Notes that `inst` was just active. An instance already on the idle list stays where it is (moving it on
   * every call costs cache misses on its neighbours): the sweeper puts it back in order when it reaches it.
   */
  touch(inst: Instance): void {
    const now = this.stepTime ?? this.clock.currentTimeMillisUnsafe()
    inst.lastActive = now
    if (inst.idleList === (this.idleActive as IdleList<IdleNode>)) return
    // Only a list that was empty can have left the sweeper asleep with nothing to wait for; waking it on every
    // call would cost it a new timer per call. (Open the latch last: it may run the sweeper inline.)
    const wasEmpty = this.idleActive.size === 0
    this.idleActive.insert(inst, now)
    if (wasEmpty) this.wakeSweeper.openUnsafe()
  }

  /** Puts an idle instance the sweeper reached back in line at `at`, or takes it off the lists. */
  relist(inst: Instance, at: number | undefined): void {
    if (at === undefined) {
      this.idleActive.remove(inst)
      this.idleHibernated.remove(inst)
    } else {
      inst.idleList?.insert(inst, at)
    }
  }

  /** Hands the lock of `inst` to its next caller, or frees it (then notes the object idle or drops it). */
  release(inst: Instance): void {
    if (!Mailbox.release(this.handoff, inst, this.deadlines)) return
    if (inst.status === "active") this.touch(inst)
    else if (inst.status === "unloaded") this.markStopped(inst)
  }

  // ------------------------------------------------------------------------------------------------------
  // Staged state and the commit queue (driven by commit.ts)
  // ------------------------------------------------------------------------------------------------------

  /** A run left `state` (encoded as `json`): it becomes the newest state, ahead of storage. */
  stage(inst: Instance, state: unknown, json: string): void {
    inst.state = state
    inst.json = json
  }

  /** Queues `group` as the newest commit; returns a drain token when no drain runs yet (start one with it). */
  enqueue(inst: Instance, group: CommitGroup): object | undefined {
    inst.commits.push(group)
    if (inst.draining !== undefined) return undefined
    const token = {}
    inst.draining = token
    return token
  }

  /** The head commit became durable at `version`; returns it. */
  committed(inst: Instance, version: number): CommitGroup {
    inst.version = version
    return inst.commits.shift()!
  }

  /**
   * The head commit failed: every queued commit was built on it, so all are taken off (returned, to be failed
   * with the same outcome), the in-memory copy is dropped (the next call reloads the truth), and runs still
   * built on it fail with `error`.
   */
  rollBack(inst: Instance, error: CommitError): Array<CommitGroup> {
    inst.rollback = { epoch: inst.epoch, error }
    const failed = inst.commits.splice(0)
    this.unload(inst)
    inst.draining = undefined
    return failed
  }

  /** The copy the queued commits were built on was dropped meanwhile: takes them off, to be failed. */
  dropStale(inst: Instance): Array<CommitGroup> {
    inst.draining = undefined
    return inst.commits.splice(0)
  }

  /** A drain was interrupted mid-commit: nobody can know the outcome, so the copy is dropped too. */
  abandon(inst: Instance): Array<CommitGroup> {
    const abandoned = inst.commits.splice(0)
    this.unload(inst)
    return abandoned
  }

  /** The reply kept for `key` that has not expired by `now`, if any. */
  replyOf(inst: Instance, key: string, now: number): KeptReply | undefined {
    const kept = inst.replies?.get(key)
    if (kept === undefined || kept.expiresAt > now) return kept
    inst.replies!.delete(key)
    return undefined
  }

  /**
   * Keeps the reply of a keyed call for later calls with the same key (while the copy lives). At most
   * `keptReplies` are kept per object, plus the routed replies of the last `2 × clockSkewMillis` (a re-sent
   * call must find those in memory): the oldest durable ones go first (storage has them; a retry reads them
   * back), replies whose commit is still in flight always stay (storage may not have them yet).
   */
  keepReply(inst: Instance, key: string, reply: KeptReply): void {
    const replies = inst.replies ??= new Map()
    replies.set(key, reply)
    if (replies.size <= keptReplies) return
    const recent = this.clock.currentTimeMillisUnsafe() - 2 * clockSkewMillis
    for (const [oldKey, old] of replies) {
      if (replies.size <= keptReplies) break
      if (old.group !== undefined && old.group.exit === undefined) continue
      if (old.since !== undefined) {
        if (old.since > recent) continue
        if (old.since > inst.repliesFrom) inst.repliesFrom = old.since
      }
      replies.delete(oldKey)
    }
  }

  /**
   * Whether a routed call first sent at `since` can only have a reply in memory: it was sent well after this
   * copy began keeping every routed reply it ran (a copy that ran it earlier, elsewhere, committed before this
   * one was activated, or its own commit would fail on the version), so storage need not be read.
   */
  repliesComplete(inst: Instance, since: number): boolean {
    return inst.status === "active" && since > inst.repliesFrom + clockSkewMillis
  }

  /** The drain with `token` ended; returns whether it still owned the queue. */
  endDrain(inst: Instance, token: object): boolean {
    if (inst.draining !== token) return false
    inst.draining = undefined
    return true
  }
}
