import { DurableObject, SqlStorage } from "@durable-object/core"
import { PgClient } from "@effect/sql-pg"
import { Console, Effect, Layer, Redacted, Schema, Stream } from "effect"

// #region define
export const Auction = DurableObject.defineObject({
  name: "Auction",
  state: Schema.Struct({ highest: Schema.Number, bidder: Schema.NullOr(Schema.String) }),
  initialState: () => ({ highest: 0, bidder: null }),
  // Typed events: subscribers receive { name, value }, once the run that emitted them has committed.
  events: {
    outbid: Schema.Struct({ previous: Schema.String, amount: Schema.Number })
  },
  handlers: {
    bid: {
      payload: Schema.Struct({ bidder: Schema.String, amount: Schema.Number }),
      success: Schema.Boolean,
      handle: ({ amount, bidder }, ctx) =>
        Effect.gen(function*() {
          const current = yield* ctx.state.get
          if (amount <= current.highest) return false
          yield* ctx.state.set({ highest: amount, bidder })
          if (current.bidder !== null && current.bidder !== bidder) {
            yield* ctx.emit("outbid", { previous: current.bidder, amount })
          }
          return true
        })
    }
  }
})
// #endregion define

// #region subscribe
// The current state first, then one element per commit: { version, state }, decoded and typed.
export const watchAuction = (id: string) =>
  Auction.client(id).changes.pipe(
    Stream.takeUntil(({ state }) => state.highest >= 100),
    Stream.runForEach(({ state, version }) => Console.log(`v${version}: ${state.highest} by ${state.bidder}`))
  )

// Events of committed runs only, from the moment of subscribing.
export const outbidNotices = (id: string) =>
  Auction.client(id).events.pipe(
    Stream.filter((event) => event.name === "outbid"),
    Stream.map((event) => `${event.value.previous} was outbid: ${event.value.amount}`)
  )
// #endregion subscribe

// #region postgres
// Every runtime on the database announces its commits and follows the others'.
export const storage = SqlStorage.layer({ notifyCommits: true }).pipe(
  Layer.provide(PgClient.layer({ url: Redacted.make("postgres://localhost:5432/app") }))
)
// #endregion postgres
