import type { Errors } from "@durable-object/core"
import { Effect, Schedule } from "effect"
import { Account } from "./defining-objects.ts"

// #region retry
/** Errors after which nothing was written, so a call can be repeated safely whatever its handler does. */
const nothingWritten = (error: { readonly _tag: string }) =>
  error._tag === "VersionConflict" || error._tag === "ObjectOverloaded" || error._tag === "CallTimeout"

export const deposit = (id: string, amount: number) =>
  Account.client(id).deposit({ amount }).pipe(
    Effect.retry({ while: nothingWritten, schedule: Schedule.exponential("20 millis"), times: 3 })
  )
// #endregion retry

// #region handle
export const withdraw = (id: string, amount: number) =>
  Account.client(id).withdraw({ amount }).pipe(
    Effect.map((balance) => ({ status: 200, body: { balance } })),
    Effect.catchTags({
      Overdrawn: (e) => Effect.succeed({ status: 409, body: { error: e._tag, balance: e.balance } }),
      InvalidPayload: (e) => Effect.succeed({ status: 400, body: { error: e._tag, issue: e.issue } }),
      ObjectOverloaded: (e) => Effect.succeed({ status: 429, body: { error: e._tag } }),
      StorageError: (e) =>
        Effect.as(
          Effect.logError("storage failed", e), // the detail goes to the log, not to the client
          { status: 503, body: { error: e._tag } }
        )
    }),
    // What is left is a bug or an outage: log it whole, answer without details.
    Effect.catch((e: Errors.DurableObjectError) =>
      Effect.as(Effect.logError(e.message), { status: e._tag === "HandlerDefect" ? 500 : 503, body: { error: e._tag } })
    )
  )
// #endregion handle
