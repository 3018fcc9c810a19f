import { DurableObject, Storage } from "@durable-object/core"
import { Context, DateTime, Effect, Layer, Schema } from "effect"

// #region state
const Entry = Schema.Struct({ amount: Schema.Int, at: Schema.DateTimeUtc })

const AccountState = Schema.Struct({
  balance: Schema.Int,
  history: Schema.Array(Entry),
  openedAt: Schema.NullOr(Schema.DateTimeUtc)
})
// #endregion state

// #region errors
export class Overdrawn extends Schema.TaggedError<Overdrawn>()("Overdrawn", {
  balance: Schema.Int,
  requested: Schema.Int
}) {
  override get message(): string {
    return `Cannot withdraw ${this.requested}: the balance is ${this.balance}`
  }
}
// #endregion errors

// #region services
/** Some service of your application that handlers use. */
export class Audit extends Context.Service<Audit, {
  readonly record: (line: string) => Effect.Effect<void>
}>()("app/Audit") {}
// #endregion services

// #region define
const Amount = Schema.Int.check(Schema.isGreaterThan(0))

export const Account = DurableObject.defineObject({
  name: "Account",
  state: AccountState,
  initialState: () => ({ balance: 0, history: [], openedAt: null }),
  services: [Audit],
  handlers: {
    deposit: {
      payload: Schema.Struct({ amount: Amount }),
      success: Schema.Int,
      handle: ({ amount }, ctx) =>
        Effect.gen(function*() {
          const at = yield* DateTime.now
          return yield* ctx.state.modify((s) => [
            s.balance + amount,
            { ...s, balance: s.balance + amount, history: [...s.history, { amount, at }] }
          ])
        })
    },
    withdraw: {
      payload: Schema.Struct({ amount: Amount }),
      success: Schema.Int,
      error: Overdrawn,
      handle: ({ amount }, ctx) =>
        Effect.gen(function*() {
          const s = yield* ctx.state.get
          if (s.balance < amount) return yield* new Overdrawn({ balance: s.balance, requested: amount })
          const at = yield* DateTime.now
          yield* ctx.state.set({ ...s, balance: s.balance - amount, history: [...s.history, { amount: -amount, at }] })
          return s.balance - amount
        })
    },
    balance: { success: Schema.Int, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.balance) }
  },
  onLoad: (ctx) =>
    Effect.gen(function*() {
      const s = yield* ctx.state.get
      if (s.openedAt === null) yield* ctx.state.set({ ...s, openedAt: yield* DateTime.now })
    }),
  onShutdown: (ctx) => Audit.use((audit) => audit.record(`${ctx.id} left memory`)),
  options: { hibernateAfter: "1 minute", shutdownAfter: "15 minutes", mailboxCapacity: 256, callTimeout: "2 seconds" }
})
// #endregion define

// #region calling
export const program = Effect.gen(function*() {
  const alice = Account.client("alice") // free: nothing runs until a method's Effect does
  yield* alice.deposit({ amount: 100 })
  const overdrawn = yield* alice.withdraw({ amount: 500 }).pipe(
    Effect.catchTag("Overdrawn", (e) => Effect.succeed(`refused: ${e.message}`))
  )
  // The generic form: same types, same guarantees.
  const balance: number = yield* DurableObject.call(Account, "alice", "balance")
  // By name, with the payload in its encoded (JSON) form, e.g. from an HTTP body.
  const encoded: unknown = yield* DurableObject.callEncoded(Account, "alice", "deposit", { amount: 5 })
  // Lifecycle: stop (onShutdown runs, state stays), status, delete (state and alarms gone).
  yield* DurableObject.stop(Account, "alice")
  const status = yield* DurableObject.status(Account, "alice") // "stopped"
  return { overdrawn, balance, encoded, status }
})
// #endregion calling

// #region layers
const AuditLive = Layer.succeed(Audit, { record: (line) => Effect.log(line) })

// The runtime of the type needs a Storage (here in memory) and the services its handlers declared.
export const AccountLive = Account.layer.pipe(Layer.provide(AuditLive), Layer.provide(Storage.layerMemory))

export const main = program.pipe(Effect.provide(AccountLive))
// #endregion layers
