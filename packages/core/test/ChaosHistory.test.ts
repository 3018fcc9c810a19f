/**
 * The counter-history checker (`chaos/history.ts`) on hand-made histories: it accepts sound ones (including
 * concurrent, overlapping and indeterminate operations) and finds each kind of broken one.
 */
import { assert, describe, it } from "@effect/vitest"
import { checkCounterHistory, HistoryRecorder, type Operation } from "./chaos/history.ts"

/** An acknowledged increment of "x" invoked at `from`, returned `value` at `to`. */
const ack = (from: number, to: number, value: number, object = "x"): Operation => ({
  object,
  invokedAt: BigInt(from),
  completedAt: BigInt(to),
  value
})
/** An increment of "x" invoked at `from` whose outcome is unknown. */
const unknown = (from: number, object = "x"): Operation => ({
  object,
  invokedAt: BigInt(from),
  indeterminate: "killed"
})

const kinds = (ops: ReadonlyArray<Operation>, final: Record<string, number>) =>
  checkCounterHistory(ops, new Map(Object.entries(final))).violations.map((v) => v.kind)

describe("counter-history checker", () => {
  it("accepts a sequential history", () => {
    const result = checkCounterHistory([ack(0, 1, 1), ack(2, 3, 2), ack(4, 5, 3)], new Map([["x", 3]]))
    assert.deepStrictEqual(result.violations, [])
    assert.strictEqual(result.acknowledged, 3)
  })

  it("accepts overlapping increments in either order, and indeterminate ones that applied or not", () => {
    // Two concurrent increments may take their counts in either order.
    assert.deepStrictEqual(kinds([ack(0, 10, 2), ack(1, 9, 1)], { x: 2 }), [])
    // An increment killed in flight applied (final 3) or not (final 2).
    const ops = [ack(0, 1, 1), unknown(2), ack(3, 4, 3)]
    assert.deepStrictEqual(kinds(ops, { x: 3 }), [])
    assert.deepStrictEqual(kinds([ack(0, 1, 1), unknown(2), ack(3, 4, 2)], { x: 2 }), [])
    assert.deepStrictEqual(kinds([ack(0, 1, 1), unknown(2), ack(3, 4, 2)], { x: 3 }), [])
    const result = checkCounterHistory([ack(0, 1, 1), unknown(2), ack(3, 4, 2)], new Map([["x", 3]]))
    assert.strictEqual(result.indeterminateApplied, 1)
  })

  it("finds a count acknowledged twice", () => {
    assert.deepStrictEqual(kinds([ack(0, 10, 1), ack(1, 9, 1)], { x: 2 }), ["duplicate"])
  })

  it("finds a stale count: an increment invoked after another returned saw a smaller count", () => {
    assert.deepStrictEqual(kinds([unknown(0), ack(1, 2, 2), ack(3, 4, 1)], { x: 2 }), ["real-time"])
    // Only pairs whose order is certain count: these overlap, so either order is fine.
    assert.deepStrictEqual(kinds([unknown(0), ack(1, 3, 2), ack(3, 4, 1)], { x: 2 }), [])
  })

  it("finds a count from nowhere: more than the increments invoked so far", () => {
    assert.deepStrictEqual(kinds([ack(0, 1, 2), unknown(5)], { x: 2 }), ["from-nowhere"])
  })

  it("finds a lost acknowledged increment", () => {
    assert.deepStrictEqual(kinds([ack(0, 1, 1), ack(2, 3, 2)], { x: 1 }), ["lost"])
    // The count is right but an acknowledged increment is missing from it (3 acks, final 2).
    assert.deepStrictEqual(kinds([ack(0, 10, 1), ack(0, 10, 2), ack(0, 10, 3)], { x: 2 }), ["lost"])
    // Nothing stored at all.
    assert.deepStrictEqual(kinds([ack(0, 1, 1)], {}), ["lost"])
  })

  it("finds a phantom: more stored than was ever invoked", () => {
    assert.deepStrictEqual(kinds([ack(0, 1, 1), unknown(2)], { x: 3 }), ["phantom"])
    assert.deepStrictEqual(kinds([], { y: 1 }), ["phantom"])
  })

  it("keeps objects apart", () => {
    const ops = [ack(0, 1, 1, "a"), ack(2, 3, 1, "b"), ack(4, 5, 2, "a")]
    assert.deepStrictEqual(kinds(ops, { a: 2, b: 1 }), [])
    assert.deepStrictEqual(kinds(ops, { a: 2, b: 0 }), ["lost"])
  })

  it("the recorder records invocations, acknowledgements, failures and abandoned calls", () => {
    const history = new HistoryRecorder()
    const a = history.invoke("x", 1n)
    const b = history.invoke("x", 2n)
    const c = history.invoke("x", 3n)
    history.ok(a, 1, 4n)
    history.fail(b, "StorageError", 5n)
    assert.strictEqual(history.abandonOpen(), 1)
    assert.strictEqual(history.acknowledged, 1)
    assert.strictEqual(history.indeterminate, 2)
    assert.deepStrictEqual(history.operations.map((op) => op.indeterminate), [undefined, "StorageError", "killed"])
    assert.throws(() => history.ok(c, 2))
    assert.deepStrictEqual(checkCounterHistory(history.operations, new Map([["x", 2]])).violations, [])
  })
})
