/**
 * Counter histories: a recorder for increment operations and a checker that they are consistent with one
 * linearizable counter per object. Plain TypeScript (no vitest), so worker processes can use the recorder too.
 *
 * An operation is one `increment({ amount: 1 })` of one object. It is *invoked* at some instant and then either
 * *acknowledged* with the count it returned, or it is *indeterminate*: it failed, or its process was killed
 * before it returned (a failed commit may still have applied, so a failure proves nothing either way).
 *
 * Times are `process.hrtime.bigint()` nanoseconds: Linux's monotonic clock, the same in every process of the
 * machine, so operations recorded by different processes can be ordered. `invokedAt` is taken before the call
 * starts and `completedAt` after it returned, so "A completed before B was invoked" holds whenever
 * `A.completedAt < B.invokedAt` (and may hold in other cases, which the checker then simply does not use).
 *
 * What the checker demands of each object's history, given its final stored count:
 * - acknowledged counts are distinct (two increments never both saw the same count);
 * - real-time order: an operation acknowledged before another was invoked returned a smaller count;
 * - no count from nowhere: a count `v` was acknowledged only once at least `v` increments had been invoked;
 * - the final count is every acknowledged increment plus some of the indeterminate ones: at least the number of
 *   acknowledgements and their highest count, at most acknowledgements plus indeterminate operations.
 */

/** One increment, as recorded. `value` is the acknowledged count; undefined when the outcome is unknown. */
export interface Operation {
  readonly object: string
  readonly invokedAt: bigint
  readonly completedAt?: bigint | undefined
  readonly value?: number | undefined
  /** Why the outcome is unknown (an error tag, or "killed"), for reports. */
  readonly indeterminate?: string | undefined
}

/** The current instant on the machine-wide monotonic clock. */
export const now = (): bigint => process.hrtime.bigint()

/** Records operations as they happen (in one process, or from several processes' reports). */
export class HistoryRecorder {
  readonly operations: Array<Operation> = []
  private readonly open = new Map<number, { readonly object: string; readonly invokedAt: bigint }>()
  private nextId = 0

  /** An increment of `object` is about to be issued; returns its handle. */
  invoke(object: string, invokedAt: bigint = now()): number {
    const id = this.nextId++
    this.open.set(id, { object, invokedAt })
    return id
  }

  /** The increment returned `value`. */
  ok(handle: number, value: number, completedAt: bigint = now()): void {
    const op = this.take(handle)
    this.operations.push({ object: op.object, invokedAt: op.invokedAt, completedAt, value })
  }

  /** The increment failed: its outcome is unknown. */
  fail(handle: number, reason: string, completedAt: bigint = now()): void {
    const op = this.take(handle)
    this.operations.push({ object: op.object, invokedAt: op.invokedAt, completedAt, indeterminate: reason })
  }

  /** Every increment still open never returned (its process was killed): their outcomes are unknown. */
  abandonOpen(reason = "killed"): number {
    const count = this.open.size
    for (const op of this.open.values()) this.operations.push({ ...op, indeterminate: reason })
    this.open.clear()
    return count
  }

  get acknowledged(): number {
    return this.operations.reduce((n, op) => n + (op.value === undefined ? 0 : 1), 0)
  }

  get indeterminate(): number {
    return this.operations.reduce((n, op) => n + (op.value === undefined ? 1 : 0), 0)
  }

  private take(handle: number) {
    const op = this.open.get(handle)
    if (op === undefined) throw new Error(`history: operation ${handle} is not open`)
    this.open.delete(handle)
    return op
  }
}

export interface Violation {
  readonly object: string
  readonly kind: "duplicate" | "real-time" | "from-nowhere" | "lost" | "phantom"
  readonly detail: string
}

export interface CheckResult {
  readonly objects: number
  readonly acknowledged: number
  readonly indeterminate: number
  /** Indeterminate increments that applied (final counts minus acknowledgements). */
  readonly indeterminateApplied: number
  readonly violations: ReadonlyArray<Violation>
}

/**
 * Checks a history against the final stored counts (`finalCounts.get(object)`, 0 when absent). Objects
 * with a final count but no operation are checked too (a count no increment explains is a phantom).
 */
export const checkCounterHistory = (
  operations: ReadonlyArray<Operation>,
  finalCounts: ReadonlyMap<string, number>
): CheckResult => {
  const byObject = new Map<string, Array<Operation>>()
  for (const op of operations) {
    const list = byObject.get(op.object)
    if (list === undefined) byObject.set(op.object, [op])
    else list.push(op)
  }
  for (const object of finalCounts.keys()) if (!byObject.has(object)) byObject.set(object, [])
  const violations: Array<Violation> = []
  let acknowledged = 0
  let indeterminate = 0
  let indeterminateApplied = 0
  for (const [object, ops] of byObject) {
    const acks = ops.filter((op): op is Operation & { value: number; completedAt: bigint } =>
      op.value !== undefined && op.completedAt !== undefined
    )
    const unknown = ops.length - acks.length
    acknowledged += acks.length
    indeterminate += unknown
    const final = finalCounts.get(object) ?? 0

    // Acknowledged counts are distinct.
    const seen = new Map<number, number>()
    for (const op of acks) seen.set(op.value, (seen.get(op.value) ?? 0) + 1)
    for (const [value, times] of seen) {
      if (times > 1) {
        violations.push({ object, kind: "duplicate", detail: `count ${value} acknowledged ${times} times` })
      }
    }

    // Real time: for each acknowledged B, every acknowledged A with A.completedAt < B.invokedAt has A < B.
    const byCompletion = acks.toSorted((
      a,
      b
    ) => (a.completedAt < b.completedAt ? -1 : a.completedAt > b.completedAt ? 1 : 0))
    const byInvocation = acks.toSorted((a, b) => (a.invokedAt < b.invokedAt ? -1 : a.invokedAt > b.invokedAt ? 1 : 0))
    let i = 0
    let highest: (typeof acks)[number] | undefined
    for (const b of byInvocation) {
      while (i < byCompletion.length && byCompletion[i]!.completedAt < b.invokedAt) {
        const a = byCompletion[i]!
        if (highest === undefined || a.value > highest.value) highest = a
        i++
      }
      if (highest !== undefined && highest.value >= b.value) {
        violations.push({
          object,
          kind: "real-time",
          detail:
            `count ${b.value} was acknowledged to an increment invoked after one that had returned ${highest.value}`
        })
      }
    }

    // No count from nowhere: when v is acknowledged, at least v increments had been invoked.
    const invocations = ops.map((op) => op.invokedAt).toSorted((a, b) => (a < b ? -1 : a > b ? 1 : 0))
    let invoked = 0
    for (const op of byCompletion) {
      while (invoked < invocations.length && invocations[invoked]! <= op.completedAt) invoked++
      if (op.value > invoked) {
        violations.push({
          object,
          kind: "from-nowhere",
          detail: `count ${op.value} acknowledged when only ${invoked} increments had been invoked`
        })
      }
    }

    // The final count: every acknowledged increment, plus some indeterminate ones.
    const highestAck = acks.reduce((m, op) => Math.max(m, op.value), 0)
    if (final < acks.length || final < highestAck) {
      violations.push({
        object,
        kind: "lost",
        detail: `final count ${final}, but ${acks.length} increments were acknowledged (highest ${highestAck})`
      })
    } else if (final > acks.length + unknown) {
      violations.push({
        object,
        kind: "phantom",
        detail: `final count ${final}, but only ${acks.length} acknowledged and ${unknown} indeterminate increments`
      })
    } else {
      indeterminateApplied += final - acks.length
    }
  }
  return { objects: byObject.size, acknowledged, indeterminate, indeterminateApplied, violations }
}

/** A one-line summary of a check, for test output. */
export const summarize = (label: string, result: CheckResult): string =>
  `${label}: ${result.objects} objects, ${result.acknowledged} acknowledged increments checked, ` +
  `${result.indeterminate} indeterminate (${result.indeterminateApplied} of them applied), ` +
  `${result.violations.length} violations`
