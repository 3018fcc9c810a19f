import { DurableObject, DurableObjectInspector, SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { NodeHttpServer } from "@effect/platform-node"
import { Config, Effect, Layer, Schema } from "effect"
import { HttpRouter } from "effect/http"
import { createServer } from "node:http"

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

// #region mount
// The page at /_inspector, its API under /_inspector/api/, behind the token in DURABLE_OBJECT_ADMIN_TOKEN.
const Inspector = DurableObjectInspector.layer({ path: "/_inspector", objects: [Counter] })

export const Server = HttpRouter.serve(Inspector).pipe(
  Layer.provide(Counter.layer),
  Layer.provide(SqlStorage.layer()),
  Layer.provide(SqliteClient.layer({ filename: "objects.sqlite" })),
  Layer.provide(NodeHttpServer.layer(createServer, { port: 3000 }))
)
// #endregion mount

// #region options
// A token of your own, from wherever your secrets live:
export const WithToken = Layer.unwrap(Effect.gen(function*() {
  const token = yield* Config.Redacted("INSPECTOR_TOKEN")
  return DurableObjectInspector.layer({ path: "/ops/objects", objects: [Counter], auth: { token } })
}))

// On a developer's machine only: no token at all.
export const Local = DurableObjectInspector.layer({ objects: [Counter], auth: { disabled: true } })
// #endregion options
