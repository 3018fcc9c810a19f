/**
 * Coalescing across objects: while one batch is being committed (or read), new requests queue, and the next
 * batch takes them all (one per key per batch, in arrival order). At low load a request goes out at once, so
 * it waits for nothing; under load, many writes share one transaction and one fsync.
 *
 * A request made with `submit` that finds the batcher idle becomes the leader and runs batches on its own
 * fiber until its own request is done, then hands the lead to the oldest waiting request. A lone request
 * therefore runs entirely in its caller's fiber and context (spans, SQL transformers). Interruption can land
 * anywhere, so every step that must not be lost (a batch taken is settled, a lead taken is handed over) is set
 * up uninterruptibly. Requests made with `submitUnsafe` (the runtime's commit pipeline) have no fiber waiting:
 * when the lead falls to one, batches run on a fiber of their own, started in its context, until the queue is
 * empty.
 *
 * @internal
 */
import { Cause, type Context, Effect, Exit } from "effect"

export interface Batcher<W, A, E> {
  /** Queues `write`; completes with its own outcome once the batch holding it committed (or failed). */
  readonly submit: (write: W) => Effect.Effect<A, E>
  /**
   * Queues `write` and calls `done` with its outcome once the batch holding it settled, without a fiber per
   * write: when no leader runs, batches run on a fiber of their own in `context`, which ends once the queue is
   * empty. `done` runs on that fiber, synchronously: it must not run user code.
   */
  readonly submitUnsafe: (write: W, context: Context.Context<never>, done: (exit: Exit.Exit<A, E>) => void) => void
}

type Restore = <X, Y, Z>(effect: Effect.Effect<X, Y, Z>) => Effect.Effect<X, Y, Z>

/** How many callers of a settled batch are resumed per scheduler turn. */
const resumePerTurn = 32

const LEAD: unique symbol = Symbol.for("@durable-object/core/internal/batcher/lead")

interface Entry<W, A, E> {
  readonly write: W
  /** Set for `submitUnsafe`'s entries: called with the outcome; no fiber waits for them. */
  readonly done: ((exit: Exit.Exit<A, E>) => void) | undefined
  /** Where such an entry's batches run when the lead falls to it. */
  readonly context: Context.Context<never> | undefined
  exit: Exit.Exit<A, E> | undefined
  resume: ((signal: Exit.Exit<A, E> | typeof LEAD) => void) | undefined
  sent: boolean
  cancelled: boolean
  leading: boolean
}

export const make = <W, A, E>(options: {
  /** Writes with the same key never share a batch (the later waits for the next one). */
  readonly key: (write: W) => string
  readonly maxBatch: number
  /** Commits a batch; returns one outcome per write, or fails the whole batch. */
  readonly run: (batch: ReadonlyArray<W>) => Effect.Effect<ReadonlyArray<Exit.Exit<A, E>>, E>
  /** The failure of the writes of a batch whose leader was interrupted mid-commit (outcome unknown). */
  readonly interrupted: () => E
  /**
   * Whether running a batch twice is harmless (reads). Then the unfinished entries of a batch whose leader
   * was interrupted go back to the front of the queue for the next leader instead of failing.
   */
  readonly idempotent?: boolean | undefined
}): Batcher<W, A, E> => {
  let queue: Array<Entry<W, A, E>> = []
  let running = false

  /** Callers whose outcome is settled but who were not resumed yet. */
  let waking: Array<() => void> = []

  const complete = (entry: Entry<W, A, E>, exit: Exit.Exit<A, E>) => {
    entry.exit = exit
    if (entry.done !== undefined) return entry.done(exit)
    const resume = entry.resume
    entry.resume = undefined
    if (resume !== undefined) waking.push(() => resume(exit))
  }

  /**
   * Resumes the callers of the batch just settled, `resumePerTurn` at a time with a scheduler turn in
   * between: each runs on inline until it suspends again (often into its next call), so a whole batch resumed
   * at once would hold the event loop for all of them. The next batch waits, so it still carries what they send.
   */
  const wake: Effect.Effect<void> = Effect.suspend(() => {
    const batch = waking
    waking = []
    const from = (start: number): Effect.Effect<void> => {
      const end = Math.min(batch.length, start + resumePerTurn)
      for (let i = start; i < end; i++) batch[i]!()
      return end < batch.length ? Effect.andThen(Effect.yieldNow, Effect.suspend(() => from(end))) : Effect.void
    }
    return from(0)
  })

  const takeBatch = (): Array<Entry<W, A, E>> => {
    const batch: Array<Entry<W, A, E>> = []
    const keys = new Set<string>()
    const rest: Array<Entry<W, A, E>> = []
    for (const entry of queue) {
      if (entry.cancelled) continue
      const key = options.key(entry.write)
      if (batch.length < options.maxBatch && !keys.has(key)) {
        keys.add(key)
        entry.sent = true
        batch.push(entry)
      } else {
        rest.push(entry)
      }
    }
    queue = rest
    return batch
  }

  const handOver = () => {
    const next = queue.find((entry) => !entry.cancelled && !entry.sent)
    if (next === undefined) {
      running = false
      return
    }
    next.leading = true
    if (next.done !== undefined) return startLeader(next.context!)
    const resume = next.resume
    next.resume = undefined
    resume?.(LEAD)
  }

  /**
   * Takes the next batch and runs it; false when nothing is left to send. Taking the batch and registering
   * what settles it happen uninterruptibly: entries taken but never settled would wait forever.
   */
  const runNext = (leader: Entry<W, A, E> | undefined): Effect.Effect<boolean> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const batch = takeBatch()
        if (batch.length === 0) return Effect.succeed(false)
        // The leader's interruption surfaces again once this region ends; here it only settles the batch.
        return Effect.andThen(
          Effect.exit(Effect.onExit(restore(options.run(batch.map((entry) => entry.write))), (exit) =>
            Effect.sync(() => {
              if (Exit.isSuccess(exit)) {
                batch.forEach((entry, i) => complete(entry, exit.value[i]!))
              } else if (!Cause.hasInterrupts(exit.cause)) {
                for (const entry of batch) complete(entry, Exit.failCause(exit.cause))
              } else if (options.idempotent === true) {
                // The leader was interrupted: the others' entries run again with the next leader.
                const unfinished = batch.filter((entry) =>
                  entry.exit === undefined && !entry.cancelled && entry !== leader
                )
                for (const entry of unfinished) entry.sent = false
                queue = [...unfinished, ...queue]
              } else {
                // The leader was interrupted in the middle of a commit: nobody can know its outcome.
                const failure = Exit.fail(options.interrupted())
                for (const entry of batch) if (entry.exit === undefined) complete(entry, failure)
              }
            }))),
          Effect.as(wake, true)
        )
      })
    )

  /**
   * Runs batches until `entry` is done, then hands the lead over. Entered uninterruptibly, so the hand-over
   * is in place before anything can interrupt the batches (which `restore` makes interruptible): a leader that
   * vanished without handing over would leave every later request waiting forever.
   */
  const lead = (entry: Entry<W, A, E>, restore: Restore): Effect.Effect<A, E> =>
    Effect.ensuring(
      restore(Effect.gen(function*() {
        while (entry.exit === undefined && (yield* runNext(entry)));
        return entry.exit
      })),
      Effect.sync(() => {
        // An interrupted leader whose own request never went out withdraws it: nobody waits for its outcome.
        if (!entry.sent) entry.cancelled = true
        handOver()
      })
    ).pipe(Effect.flatMap((exit) => exit ?? Effect.failCause(Cause.interrupt())))

  /**
   * Batches on a fiber of their own, for `submitUnsafe`'s entries: a scheduler turn first, so the writes queued
   * in this one go together, and another after each batch, so the callers it released can queue their next.
   * Nothing holds this fiber, so nothing interrupts it.
   */
  const leaderLoop: Effect.Effect<void> = Effect.ensuring(
    Effect.gen(function*() {
      yield* Effect.yieldNow
      while (yield* runNext(undefined)) yield* Effect.yieldNow
    }),
    Effect.sync(handOver)
  )
  const startLeader = (context: Context.Context<never>) => {
    Effect.runForkWith(context)(leaderLoop, { uninterruptible: true })
  }

  const submitUnsafe = (write: W, context: Context.Context<never>, done: (exit: Exit.Exit<A, E>) => void) => {
    queue.push({
      write,
      done,
      context,
      exit: undefined,
      resume: undefined,
      sent: false,
      cancelled: false,
      leading: false
    })
    if (!running) {
      running = true
      startLeader(context)
    }
  }

  const submit = (write: W): Effect.Effect<A, E> =>
    Effect.uninterruptibleMask((restore) =>
      Effect.suspend(() => {
        const entry: Entry<W, A, E> = {
          write,
          done: undefined,
          context: undefined,
          exit: undefined,
          resume: undefined,
          sent: false,
          cancelled: false,
          leading: false
        }
        queue.push(entry)
        if (!running) {
          running = true
          entry.leading = true
          return lead(entry, restore)
        }
        return Effect.flatMap(
          Effect.onInterrupt(
            restore(Effect.callback<Exit.Exit<A, E> | typeof LEAD>((resume) => {
              if (entry.exit !== undefined) return resume(Effect.succeed(entry.exit))
              if (entry.leading) return resume(Effect.succeed(LEAD))
              entry.resume = (signal) => resume(Effect.succeed(signal))
            })),
            () =>
              Effect.sync(() => {
                entry.resume = undefined
                entry.cancelled = true
                // A request handed the lead but interrupted before taking it passes it on.
                if (!entry.sent && entry.leading) handOver()
              })
          ),
          (signal) => (signal === LEAD ? lead(entry, restore) : signal)
        )
      })
    )

  return { submit, submitUnsafe }
}
