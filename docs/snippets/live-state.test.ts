import { DurableObjectTest } from "@durable-object/core"
import { assert, it } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import { Auction, outbidNotices } from "./live-state.ts"

// #region test
it.effect("subscribers see committed bids in order, and the outbid event", () =>
  Effect.gen(function*() {
    const auction = Auction.client("lot-7")
    yield* auction.bid({ bidder: "ann", amount: 10 })
    // The first element is the current state; take it and the next two commits.
    const states = yield* Effect.forkChild(Stream.runCollect(Stream.take(auction.changes, 3)))
    const notices = yield* Effect.forkChild(Stream.runCollect(Stream.take(outbidNotices("lot-7"), 1)))
    yield* Effect.yieldNow
    yield* auction.bid({ bidder: "bob", amount: 5 }) // too low: no commit, nothing published
    yield* auction.bid({ bidder: "bob", amount: 20 })
    yield* auction.bid({ bidder: "ann", amount: 30 })
    const seen = yield* Fiber.join(states)
    assert.deepStrictEqual(seen.map((s) => [s.version, s.state.highest]), [[1, 10], [2, 20], [3, 30]])
    assert.deepStrictEqual(yield* Fiber.join(notices), ["ann was outbid: 20"])
  }).pipe(Effect.provide(DurableObjectTest.layer(Auction))))
// #endregion test
