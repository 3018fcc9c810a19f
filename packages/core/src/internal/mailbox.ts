/**
 * The per-object mailbox: a FIFO lock with a bounded queue of waiters.
 *
 * Handlers run on their callers' fibers, one at a time per object, in arrival order; the lock hands itself
 * to the next waiter directly, so a busy object never spins or re-contends. No fiber exists per object: an
 * idle object costs two fields.
 *
 * @internal
 */
import { Effect } from "effect"

/** One caller's place in line. `granted` turns true when the lock is handed to it. */
export interface Ticket {
  granted: boolean
  resume: (() => void) | undefined
}

export interface Mailbox {
  busy: boolean
  waiters: Array<Ticket>
}

export const makeTicket = (): Ticket => ({ granted: false, resume: undefined })

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
  if (mailbox.waiters.length >= capacity) return Effect.fail(onFull())
  return Effect.callback<void>((resume) => {
    // Resume through the scheduler: an inline resume would run the next handler on the releasing fiber's
    // stack, so a long queue would drain as one ever deeper synchronous chain.
    ticket.resume = () => resume(Effect.yieldNow)
    mailbox.waiters.push(ticket)
    return Effect.sync(() => {
      if (!ticket.granted) {
        const index = mailbox.waiters.indexOf(ticket)
        if (index >= 0) mailbox.waiters.splice(index, 1)
      }
    })
  })
}

/** Takes the lock only if it is free; never waits. */
export const tryAcquire = (mailbox: Mailbox): boolean => {
  if (mailbox.busy) return false
  mailbox.busy = true
  return true
}

/** Hands the lock to the next waiter, or frees it. Returns true when the lock became free. */
export const release = (mailbox: Mailbox): boolean => {
  const next = mailbox.waiters.shift()
  if (next === undefined) {
    mailbox.busy = false
    return true
  }
  next.granted = true
  next.resume!()
  return false
}
