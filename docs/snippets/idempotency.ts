import { DurableObject } from "@durable-object/core"
import { Effect, Schema } from "effect"

// #region define
export class InsufficientFunds extends Schema.TaggedError<InsufficientFunds>()("InsufficientFunds", {
  balance: Schema.Number
}) {}

export const Account = DurableObject.defineObject({
  name: "Account",
  state: Schema.Struct({ balance: Schema.Number }),
  initialState: () => ({ balance: 0 }),
  handlers: {
    deposit: {
      payload: Schema.Struct({ amount: Schema.Number }),
      success: Schema.Number,
      handle: ({ amount }, ctx) => ctx.state.modify((s) => [s.balance + amount, { balance: s.balance + amount }])
    },
    withdraw: {
      payload: Schema.Struct({ amount: Schema.Number }),
      success: Schema.Number,
      error: InsufficientFunds,
      handle: ({ amount }, ctx) =>
        Effect.gen(function*() {
          const { balance } = yield* ctx.state.get
          if (balance < amount) return yield* new InsufficientFunds({ balance })
          yield* ctx.state.set({ balance: balance - amount })
          return balance - amount
        })
    }
  },
  options: { idempotencyRetention: "7 days" } // default 24 hours
})
// #endregion define

// #region call
/** A payment the caller may send again (after a timeout, a lost connection, a crash) without paying twice. */
export const pay = (account: string, paymentId: string, amount: number) =>
  Account.client(account, { idempotencyKey: paymentId }).withdraw({ amount }).pipe(
    // Retrying is safe: a retry of a payment that went through gets its stored reply back.
    Effect.retry({ times: 3, while: (error) => error._tag === "CallTimeout" || error._tag === "CommitTimeout" })
  )
// #endregion call
