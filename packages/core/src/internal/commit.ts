/**
 * Commits: staging what a run left as a commit of its object, coalescing queued changes, draining them to
 * storage in order, and settling the runs that wait on them (the output gate).
 *
 * It also owns the rule of which context storage work runs in: **always the runtime's own, captured when its
 * layer was built, never a caller's.** A caller's context can hold an SQL transaction, whose rollback would take
 * an acknowledged write with it, or a connection that a commit would then wait for. Only the caller's span
 * crosses over, so storage spans stay children of the call's span. User code still runs with its caller's
 * context (see `userCode.ts`).
 *
 * @internal
 */
import { Cause, Context, Effect, Exit, Fiber, Scheduler, Tracer } from "effect"
import { HandlerDefect, StorageError, type ValueTooLarge } from "../Errors.ts"
import type { Cell } from "./context.ts"
import { type CommitError, type CommitGroup, type Instance, type Registry } from "./instance.ts"
import * as Limits from "./limits.ts"
import type { Live } from "./live.ts"
import type * as Mailbox from "./mailbox.ts"
import { commitUnsafeOf, type ReplyPut, type SchedulerService, type StorageService, type WriteSet } from "./records.ts"
import { tracingIn } from "./span.ts"

/** Settles `group` with `exit`, releasing everyone waiting on it. */
const settle = (group: CommitGroup, exit: Exit.Exit<void, CommitError>): void => {
  group.exit = exit
  for (const waiter of group.waiters) waiter(exit)
  group.waiters.length = 0
}

/**
 * Resumes a waiting fiber as a task of its own dispatcher rather than on the stack that settles the commit.
 * Resuming inline, a commit that settles at once (in-memory storage) ran every waiting caller's next call, and
 * the commit that call staged, and the callers it released, in one unbroken chain: 1,000 callers on one object
 * held the event loop for seconds. As tasks, the scheduler gives the loop its turns between them.
 */
const resumeLater = (
  dispatcher: Fiber.Fiber<unknown, unknown>["currentDispatcher"],
  resume: (exit: Exit.Exit<void, never>) => void,
  exit: Exit.Exit<void, never>
) => dispatcher.scheduleTask(() => resume(exit), 0)

/** Waits until `group` is durable (or failed). Leaving the wait early leaves the commit alone. */
export const awaitGroup = (group: CommitGroup): Effect.Effect<void, CommitError> =>
  group.exit !== undefined ? group.exit : Effect.withFiber((fiber) =>
    Effect.callback<void, CommitError>((resume) => {
      if (group.exit !== undefined) return resume(group.exit)
      const dispatcher = fiber.currentDispatcher
      const waiter = (exit: Exit.Exit<void, CommitError>) => resumeLater(dispatcher, resume, exit as never)
      group.waiters.push(waiter)
      return Effect.sync(() => {
        const index = group.waiters.indexOf(waiter)
        if (index >= 0) group.waiters.splice(index, 1)
      })
    })
  )

/**
 * Waits until `group` is durable (or failed), at most until `deadline` on `deadlines` (none: no bound); past it,
 * gives up with `expired()`. Leaving the wait early leaves the commit alone.
 */
export const awaitGroupUntil = <E>(
  group: CommitGroup,
  deadlines: Mailbox.Deadlines | undefined,
  deadline: number,
  expired: () => E
): Effect.Effect<void, CommitError | E> => {
  if (group.exit !== undefined) return group.exit
  if (deadlines === undefined || !Number.isFinite(deadline)) return awaitGroup(group)
  return Effect.withFiber((fiber) =>
    Effect.callback<void, CommitError | E>((resume) => {
      if (group.exit !== undefined) return resume(group.exit)
      const dispatcher = fiber.currentDispatcher
      const unwait = () => {
        const index = group.waiters.indexOf(waiter)
        if (index >= 0) group.waiters.splice(index, 1)
      }
      const entry: Mailbox.Deadline = {
        deadline,
        onExpire: () => {
          unwait()
          resume(Exit.fail(expired()))
        },
        deadlinePrev: undefined,
        deadlineNext: undefined,
        deadlineListed: false
      }
      const waiter = (exit: Exit.Exit<void, CommitError>) => {
        deadlines.remove(entry)
        resumeLater(dispatcher, resume, exit as never)
      }
      group.waiters.push(waiter)
      deadlines.insert(entry)
      return Effect.sync(() => {
        unwait()
        deadlines.remove(entry)
      })
    })
  )
}

/** Storage as the runtime uses it: every operation in the runtime's own context (see the module's comment). */
export interface OwnStorage {
  /** The context storage work started from a caller with `caller` runs in. */
  readonly context: (caller: Context.Context<never>) => Context.Context<never>
  /** Why the storage cannot serve a caller with this context (see `StorageService.refuseCaller`). */
  readonly refuse: (caller: Context.Context<never>) => StorageError | undefined
  readonly load: StorageService["load"]
  readonly commit: StorageService["commit"]
  readonly listAlarms: StorageService["listAlarms"]
  readonly releaseAlarm: StorageService["releaseAlarm"]
  readonly loadReply: StorageService["loadReply"]
  readonly listObjects: StorageService["listObjects"]
  readonly inspectObject: StorageService["inspectObject"]
  readonly listFailedAlarms: StorageService["listFailedAlarms"]
}

/** `storage` with its work moved into `own`, the runtime's context. */
export const ownStorage = (storage: StorageService, own: Context.Context<never>): OwnStorage => {
  const context = (caller: Context.Context<never>): Context.Context<never> => {
    const parent = Context.getOption(caller, Tracer.ParentSpan)
    return parent._tag === "Some" ? Context.add(own, Tracer.ParentSpan, parent.value) : own
  }
  const refuseCaller = storage.refuseCaller
  const refuse = (caller: Context.Context<never>) => refuseCaller === undefined ? undefined : refuseCaller(caller)
  const inOwn = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, E | StorageError> =>
    Effect.withFiber((fiber) => {
      const refused = refuse(fiber.context)
      return refused !== undefined
        ? Effect.fail(refused)
        : Effect.updateContext(effect as Effect.Effect<A, E | StorageError>, () => context(fiber.context))
    })
  return {
    context,
    refuse,
    load: (objectType, objectId) => inOwn(storage.load(objectType, objectId)),
    commit: (write) => inOwn(storage.commit(write)),
    listAlarms: (objectType, objectId) => inOwn(storage.listAlarms(objectType, objectId)),
    releaseAlarm: (release) => inOwn(storage.releaseAlarm(release)),
    loadReply: (objectType, objectId, key, now) => inOwn(storage.loadReply(objectType, objectId, key, now)),
    listObjects: (objectType, request) => inOwn(storage.listObjects(objectType, request)),
    inspectObject: (objectType, objectId) => inOwn(storage.inspectObject(objectType, objectId)),
    listFailedAlarms: (objectType, request) => inOwn(storage.listFailedAlarms(objectType, request))
  }
}

/** The commit pipeline of one object type. */
export interface Commits {
  /**
   * Stages what user code left in `cell` (state and alarm changes, the removal of a fired alarm), and the
   * `reply` of a keyed call to store with it, as a commit of `inst`, applying it to the in-memory copy ahead of storage, and returns the group to wait for (`undefined`
   * when nothing changed and nothing is pending), or the failure. One synchronous step, run with the lock held;
   * a new drain starts on its own (not through an effect the caller might never run once interrupted).
   */
  readonly stage: (
    inst: Instance,
    handler: string,
    cell: Cell,
    caller: Context.Context<never>,
    reply?: ReplyPut | undefined
  ) => CommitGroup | undefined | Exit.Exit<never, HandlerDefect | ValueTooLarge>
  /** Stages `cell` and waits until it is durable: for hooks and administrative writes. */
  readonly commitCell: (
    inst: Instance,
    handler: string,
    cell: Cell
  ) => Effect.Effect<void, CommitError | HandlerDefect | ValueTooLarge>
  /** Waits for the commits of `inst` in flight or queued, however they end (their callers learn how). */
  readonly quiesce: (inst: Instance) => Effect.Effect<void>
  /**
   * Stops the drains still running when the runtime's scope closes: commits on fibers of their own are
   * interrupted, and every drain still waiting for storage is abandoned (its callers fail with an unknown
   * outcome; a late answer from storage is ignored).
   */
  readonly interruptDrains: Effect.Effect<void>
}

export const make = (deps: {
  readonly objectType: string
  readonly registry: Registry
  readonly storage: StorageService
  readonly own: OwnStorage
  readonly scheduler: SchedulerService
  readonly live: Live
}): Commits => {
  const { live, objectType, own, registry, scheduler, storage } = deps
  const codec = registry.codec
  const limits = storage.limits ?? Limits.defaultLimits
  const ownContext = own.context(Context.empty())
  // The callback form makes no span: with a tracer that exports them, every write goes through `commit`.
  const commitUnsafe = tracingIn(ownContext) ? undefined : commitUnsafeOf(storage.commit)
  const dispatcher = Context.get(ownContext, Scheduler.Scheduler).makeDispatcher()
  /** Objects whose drain owns their commit queue (see `registry.enqueue`). */
  const draining = new Set<Instance>()
  /** Commits run on fibers of their own (storages without the callback form): interrupted at close. */
  const fibers = new Set<Fiber.Fiber<number, CommitError>>()

  /** Runs one commit in `context` and calls `done` with its outcome. */
  const runCommit = (
    write: WriteSet,
    context: Context.Context<never>,
    done: (exit: Exit.Exit<number, CommitError>) => void
  ) => {
    if (commitUnsafe !== undefined) return commitUnsafe(write, context, done)
    const fiber = Effect.runForkWith(context)(storage.commit(write))
    if (fiber.pollUnsafe() === undefined) {
      fibers.add(fiber)
      fiber.addObserver(() => fibers.delete(fiber))
    }
    fiber.addObserver(done)
  }

  /** Stops the drain of `inst` mid-commit (the runtime is going away): nobody can know the outcome any more. */
  const abandon = (inst: Instance, token: object) => {
    draining.delete(inst)
    if (!registry.endDrain(inst, token)) return
    const error = new StorageError({ operation: "commit", detail: "interrupted; the outcome is unknown" })
    for (const g of registry.abandon(inst)) settle(g, Exit.fail(error))
  }

  /**
   * Commits the head group of `inst` and then the next ones, in order, one in flight at a time, without a fiber
   * of its own: each commit's outcome calls the next step. A failed commit fails its group and every later one
   * (they were built on its speculative state), and drops the in-memory copy: the outcome of a commit that did
   * not answer is unknown, so the next call reloads the truth. Each commit runs in its group's context: the
   * runtime's, with the span of the call that created it.
   */
  const pump = (inst: Instance, token: object, epoch: number): void => {
    if (inst.draining !== token) return
    const group = inst.commits[0]
    if (group === undefined) {
      draining.delete(inst)
      registry.endDrain(inst, token)
      return
    }
    if (inst.epoch !== epoch) {
      // The copy these commits were built on was dropped: none of them may reach storage.
      draining.delete(inst)
      const error = new StorageError({
        operation: "commit",
        detail: "the object was reloaded before this commit",
        outcome: "not-applied" // it never reached storage
      })
      for (const stale of registry.dropStale(inst)) settle(stale, Exit.fail(error))
      return
    }
    group.started = true
    runCommit(
      {
        objectType,
        objectId: inst.id,
        expectedVersion: inst.version,
        state: group.json,
        alarms: group.alarms,
        replies: group.replies
      },
      group.context,
      (exit) => {
        // Abandoned meanwhile (the runtime closed): its callers were told already.
        if (inst.draining !== token) return
        if (Exit.isSuccess(exit)) {
          registry.committed(inst, exit.value)
          // Subscribers see only durable states, in commit order: this is the one place a commit lands.
          live.committed(inst.id, exit.value, group.json, group.events)
          if (group.wakeAt !== undefined) scheduler.wake(group.wakeAt)
          if (group.replies !== undefined) {
            for (const reply of group.replies) scheduler.repliesStored(reply.expiresAt)
          }
          settle(group, Exit.void)
          return pump(inst, token, epoch)
        }
        if (Cause.hasInterrupts(exit.cause)) return abandon(inst, token)
        draining.delete(inst)
        const error = Cause.findError(exit.cause)
        const failed = registry.rollBack(
          inst,
          error._tag === "Success"
            ? error.success
            : new StorageError({ operation: "commit", detail: Cause.pretty(exit.cause) })
        )
        for (const g of failed) settle(g, exit)
        registry.reportLoadedUnsafe(group.context)
      }
    )
  }

  const startDrain = (inst: Instance, token: object) => {
    draining.add(inst)
    // The drain starts in the next scheduler turn, so the writes staged in this one reach storage together
    // (started on the spot, they went one by one: fewer coalesced on SQLite).
    dispatcher.scheduleTask(() => pump(inst, token, inst.epoch), 0)
  }

  const stage: Commits["stage"] = (inst, handler, cell, caller, reply) => {
    const ops = cell.alarms
    const alarmChanges = cell.fired !== undefined ||
      (ops !== undefined && (ops.removeAll || ops.remove.size > 0 || ops.put.size > 0))
    let json = inst.json
    let stateChanged = false
    if (cell.state !== inst.state) {
      const encoded = codec.encode(cell.state)
      if (Exit.isFailure(encoded)) {
        return Exit.fail(
          new HandlerDefect({
            objectType,
            objectId: inst.id,
            handler,
            defect: encoded.cause,
            pretty: `the new state does not encode with the state schema: ${Cause.pretty(encoded.cause)}`
          })
        )
      }
      // A new state object with the same encoding is no change to store.
      if (encoded.value !== inst.json) {
        json = encoded.value
        stateChanged = true
      }
    }
    // Past the storage's limits nothing is staged: a value no backend can read back would poison every later
    // load or claim that includes it.
    const tooLarge = Limits.check(
      limits,
      { objectType, objectId: inst.id, handler },
      stateChanged ? json : undefined,
      ops === undefined ? [] : ops.put.values()
    )
    if (tooLarge !== undefined) return Exit.fail(tooLarge)
    const commits = inst.commits
    const last = commits.length === 0 ? undefined : commits[commits.length - 1]
    registry.stage(inst, cell.state, json)
    const events = cell.events
    if (!stateChanged && !alarmChanges && reply === undefined) {
      // Nothing to write: the run's events go out with the commit it waits for, or now when there is none.
      if (events !== undefined) {
        if (last === undefined) live.emitted(inst.id, events)
        else (last.events ??= []).push(...events)
      }
      return last
    }
    if (!alarmChanges && last !== undefined && !last.started && last.alarms === undefined) {
      last.json = json
      if (reply !== undefined) (last.replies ??= []).push(reply)
      if (events !== undefined) (last.events ??= []).push(...events)
      return last
    }
    let wakeAt: number | undefined
    const puts = ops === undefined ? [] : Array.from(ops.put.values())
    for (const put of puts) if (wakeAt === undefined || put.fireAt < wakeAt) wakeAt = put.fireAt
    const group: CommitGroup = {
      json,
      alarms: alarmChanges
        ? {
          fired: cell.fired === undefined ? undefined : { name: cell.fired.name, claim: cell.fired.claim },
          removeAll: ops?.removeAll ?? false,
          remove: ops === undefined ? [] : Array.from(ops.remove),
          put: puts
        }
        : undefined,
      replies: reply === undefined ? undefined : [reply],
      events,
      waiters: [],
      exit: undefined,
      started: false,
      wakeAt,
      context: own.context(caller)
    }
    const token = registry.enqueue(inst, group)
    if (token !== undefined) startDrain(inst, token)
    return group
  }

  return {
    stage,
    commitCell: (inst, handler, cell) =>
      Effect.withFiber((fiber): Effect.Effect<void, CommitError | HandlerDefect | ValueTooLarge> => {
        const staged = stage(inst, handler, cell, fiber.context)
        if (staged === undefined) return Effect.void
        return Exit.isExit(staged) ? staged : awaitGroup(staged)
      }),
    quiesce: (inst) => {
      const last = inst.commits.at(-1)
      return last === undefined ? Effect.void : Effect.ignore(awaitGroup(last))
    },
    interruptDrains: Effect.suspend(() =>
      Effect.andThen(
        Fiber.interruptAll(Array.from(fibers)),
        Effect.sync(() => {
          for (const inst of Array.from(draining)) if (inst.draining !== undefined) abandon(inst, inst.draining)
        })
      )
    )
  }
}
