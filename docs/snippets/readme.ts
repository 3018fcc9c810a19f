import { DurableObject, SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Schema } from "effect"

export const Counter = DurableObject.defineObject({
  name: "Counter",
  state: Schema.Struct({ count: Schema.Int }),
  initialState: () => ({ count: 0 }),
  handlers: {
    increment: {
      payload: Schema.Struct({ amount: Schema.Int }),
      success: Schema.Int,
      handle: ({ amount }, ctx) => ctx.state.modify((s) => [s.count + amount, { count: s.count + amount }])
    }
  }
})

const Storage = SqlStorage.layer().pipe(Layer.provide(SqliteClient.layer({ filename: "objects.sqlite" })))

Counter.client("user-123").increment({ amount: 5 }).pipe( // the new count, once it is on disk
  Effect.tap((count) => Effect.log(`count: ${count}`)),
  Effect.provide(Counter.layer.pipe(Layer.provide(Storage))),
  NodeRuntime.runMain
)
