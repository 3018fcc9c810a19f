/**
 * The per-object mailbox: a FIFO lock with a bounded queue of waiters, and the deadlines of waiting calls.
 *
 * Handlers run on their callers' fibers, one at a time per object, in arrival order; the lock hands itself
 * to the next waiter directly, so a busy object never spins or re-contends. No fiber exists per object: an
 * idle object costs two fields.
 *
 * @internal
 */
import { type Clock, Effect, type Fiber, Latch } from "effect"

/** A place in the runtime's deadline list (see `Deadlines`). */
export interface Deadline {
  /** When the entry expires, in the runtime clock's epoch milliseconds. */
  deadline: number
  /** Called once, by the timer, when the entry is still listed at its deadline (after it is unlisted). */
  onExpire: (() => void) | undefined
  deadlinePrev: Deadline | undefined
  deadlineNext: Deadline | undefined
  deadlineListed: boolean
}

/** One caller's place in line. `granted` turns true when the lock is handed to it. */
export interface Ticket extends Deadline {
  granted: boolean
  /** Resumes the waiting fiber once the lock is its own (set while it waits). */
  resume: (() => void) | undefined
  /** Where the waiting fiber's hand-off is scheduled. */
  dispatcher: Fiber.Fiber<unknown, unknown>["currentDispatcher"] | undefined
}

export interface Mailbox {
  busy: boolean
  /** Allocated on first use: most objects never have a caller waiting. */
  waiters: Array<Ticket> | undefined
}

/** How many callers wait for the lock. */
export const waiting = (mailbox: Mailbox): number => mailbox.waiters === undefined ? 0 : mailbox.waiters.length

const remove = (mailbox: Mailbox, ticket: Ticket) => {
  const waiters = mailbox.waiters
  const index = waiters === undefined ? -1 : waiters.indexOf(ticket)
  if (index >= 0) waiters!.splice(index, 1)
}

export const makeTicket = (): Ticket => ({
  granted: false,
  resume: undefined,
  dispatcher: undefined,
  deadline: Infinity,
  onExpire: undefined,
  deadlinePrev: undefined,
  deadlineNext: undefined,
  deadlineListed: false
})

/**
 * Hands locks to waiting fibers. A release never resumes the next waiter on its own stack (a long queue
 * would drain as one ever deeper synchronous chain): it queues the waiter here, and one scheduler task
 * resumes queued waiters one after another, each on a fresh stack, until a budget is spent; the rest go on
 * in the next task. A queue of waiters thus drains `budget` calls per scheduler turn instead of one, and the
 * event loop gets a turn between budgets.
 */
export interface Handoff {
  readonly ready: Array<Ticket>
  readonly budget: number
  scheduled: boolean
  readonly run: () => void
}

export const makeHandoff = (budget: number): Handoff => {
  const handoff: Handoff = {
    ready: [],
    budget,
    scheduled: false,
    run: () => {
      const ready = handoff.ready
      for (let n = 0; n < handoff.budget; n++) {
        const ticket = ready.shift()
        if (ticket === undefined) {
          handoff.scheduled = false
          return
        }
        const resume = ticket.resume
        ticket.resume = undefined
        resume?.()
      }
      if (ready.length === 0) handoff.scheduled = false
      else ready[0]!.dispatcher!.scheduleTask(handoff.run, 0)
    }
  }
  return handoff
}

/**
 * Queues `ticket` behind the holder of the lock (the caller has checked that it is held) and waits, as
 * `fiber`, to be resumed with `granted` once the lock is handed to it. With `deadlines`, the ticket is
 * listed there until then, and if its deadline passes first it leaves the line and resumes with
 * `expired()`. Interrupting the wait removes the ticket from the line, or, when the lock was already handed
 * to it, calls `onCancelGranted` (which must release it).
 */
export const wait = <A, E>(
  mailbox: Mailbox,
  ticket: Ticket,
  fiber: Fiber.Fiber<unknown, unknown>,
  granted: Effect.Effect<A, E>,
  expired: (() => Effect.Effect<A, E>) | undefined,
  onCancelGranted: () => void,
  deadlines: Deadlines | undefined
): Effect.Effect<A, E> =>
  Effect.callback<A, E>((resume) => {
    ticket.dispatcher = fiber.currentDispatcher
    ticket.resume = () => resume(granted)
    ;(mailbox.waiters ??= []).push(ticket)
    if (deadlines !== undefined && expired !== undefined) {
      ticket.onExpire = () => {
        ticket.resume = undefined
        remove(mailbox, ticket)
        resume(expired())
      }
      deadlines.insert(ticket)
    }
    return Effect.sync(() => {
      deadlines?.remove(ticket)
      ticket.resume = undefined
      if (ticket.granted) return onCancelGranted()
      remove(mailbox, ticket)
    })
  })

/**
 * Takes the lock for `ticket`, waiting in line if it is held. Fails with `onFull()` without queueing when
 * `capacity` callers are already waiting. Interrupting a waiting caller removes it from the line; a caller
 * whose ticket was granted must `release`.
 */
export const acquire = <E>(
  mailbox: Mailbox,
  ticket: Ticket,
  capacity: number,
  onFull: () => E
): Effect.Effect<void, E> => {
  if (!mailbox.busy) {
    mailbox.busy = true
    ticket.granted = true
    return Effect.void
  }
  if (waiting(mailbox) >= capacity) return Effect.fail(onFull())
  return Effect.withFiber((fiber) => wait(mailbox, ticket, fiber, Effect.void, undefined, () => {}, undefined))
}

/** Takes the lock only if it is free; never waits. */
export const tryAcquire = (mailbox: Mailbox): boolean => {
  if (mailbox.busy) return false
  mailbox.busy = true
  return true
}

/** Hands the lock to the next waiter, or frees it. Returns true when the lock became free. */
export const release = (handoff: Handoff, mailbox: Mailbox, deadlines: Deadlines | undefined): boolean => {
  const next = mailbox.waiters?.shift()
  if (next === undefined) {
    mailbox.busy = false
    return true
  }
  next.granted = true
  if (next.deadlineListed) deadlines?.remove(next)
  handoff.ready.push(next)
  if (!handoff.scheduled) {
    handoff.scheduled = true
    next.dispatcher!.scheduleTask(handoff.run, 0)
  }
  return false
}

/**
 * The deadlines of a runtime's waiting calls, earliest first: an intrusive doubly linked list, so listing
 * and unlisting are O(1) in the usual case (every call has the same timeout, so a new deadline is the
 * latest), and one timer serves them all instead of one timer per waiting call.
 */
export class Deadlines {
  head: Deadline | undefined = undefined
  tail: Deadline | undefined = undefined

  /** Runs whenever an insert lists a new earliest entry (to re-arm the timer). */
  readonly onHead: (entry: Deadline) => void

  constructor(onHead: (entry: Deadline) => void) {
    this.onHead = onHead
  }

  /** Lists `entry` in deadline order (searching from the end). */
  insert(entry: Deadline): void {
    if (entry.deadlineListed) this.remove(entry)
    let after = this.tail
    while (after !== undefined && after.deadline > entry.deadline) after = after.deadlinePrev
    entry.deadlinePrev = after
    entry.deadlineNext = after === undefined ? this.head : after.deadlineNext
    if (entry.deadlineNext === undefined) this.tail = entry
    else entry.deadlineNext.deadlinePrev = entry
    if (after === undefined) this.head = entry
    else after.deadlineNext = entry
    entry.deadlineListed = true
    if (this.head === entry) this.onHead(entry)
  }

  /** Unlists `entry` if it is listed. */
  remove(entry: Deadline): void {
    if (!entry.deadlineListed) return
    if (entry.deadlinePrev === undefined) this.head = entry.deadlineNext
    else entry.deadlinePrev.deadlineNext = entry.deadlineNext
    if (entry.deadlineNext === undefined) this.tail = entry.deadlinePrev
    else entry.deadlineNext.deadlinePrev = entry.deadlinePrev
    entry.deadlinePrev = undefined
    entry.deadlineNext = undefined
    entry.deadlineListed = false
  }

  /** Unlists and expires every entry whose deadline is at or before `now`. */
  expire(now: number): void {
    while (this.head !== undefined && this.head.deadline <= now) {
      const entry = this.head
      this.remove(entry)
      const onExpire = entry.onExpire
      entry.onExpire = undefined
      onExpire?.()
    }
  }
}

/**
 * A deadline list served by one timer fiber (`run`), instead of a timer per waiting call. Listing an entry
 * earlier than the one the timer waits for wakes it sooner.
 */
export interface DeadlineTimer {
  readonly list: Deadlines
  /** The timer: expires entries at their deadlines, forever (fork it in the runtime's scope). */
  readonly run: Effect.Effect<never>
}

export const makeDeadlineTimer = (clock: Clock.Clock): DeadlineTimer => {
  const wake = Latch.makeUnsafe(false)
  // When the timer wakes next.
  let target = Infinity
  const list = new Deadlines((entry) => {
    if (entry.deadline < target) wake.openUnsafe()
  })
  const run = Effect.gen(function*() {
    while (true) {
      wake.closeUnsafe()
      const head = list.head
      const now = clock.currentTimeMillisUnsafe()
      if (head !== undefined && head.deadline <= now) {
        list.expire(now)
        continue
      }
      target = head === undefined ? Infinity : head.deadline
      yield* head === undefined ? wake.await : Effect.raceFirst(Effect.sleep(head.deadline - now), wake.await)
    }
  })
  return { list, run }
}
