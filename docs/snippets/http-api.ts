import { DurableObject, DurableObjectHttpApi, SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer, Schema } from "effect"
import { FetchHttpClient, HttpRouter } from "effect/http"
import { HttpApi, HttpApiBuilder, HttpApiClient, HttpApiScalar } from "effect/http-api"
import { createServer } from "node:http"

// #region define
export class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", { sku: Schema.String }, {
  httpApiStatus: 409 // the HTTP status it answers with (422 without one)
}) {}

export const Stock = DurableObject.defineObject({
  name: "Stock",
  state: Schema.Struct({ units: Schema.Int }),
  initialState: () => ({ units: 0 }),
  handlers: {
    receive: {
      payload: Schema.Struct({ units: Schema.Int }),
      success: Schema.Int,
      handle: ({ units }, ctx) => ctx.state.modify((s) => [s.units + units, { units: s.units + units }])
    },
    take: {
      success: Schema.Int,
      error: OutOfStock,
      handle: (_, ctx) =>
        Effect.flatMap(ctx.state.get, (s) =>
          s.units === 0
            ? Effect.fail(new OutOfStock({ sku: ctx.id }))
            : ctx.state.modify(() => [s.units - 1, { units: s.units - 1 }]))
    }
  }
})

// POST /stock/:id/receive and POST /stock/:id/take, and the admin endpoints under /_admin/Stock
export const Api = HttpApi.make("shop")
  .add(DurableObjectHttpApi.group(Stock, { path: "/stock" }))
  .add(DurableObjectHttpApi.adminGroup(Stock))
// #endregion define

// #region serve
const ApiLive = HttpApiBuilder.layer(Api, { openapiPath: "/openapi.json" }).pipe(
  Layer.provide([DurableObjectHttpApi.layer(Api, Stock), DurableObjectHttpApi.layerAdmin(Api, Stock)]),
  // DURABLE_OBJECT_ADMIN_TOKEN, or DURABLE_OBJECT_ADMIN_AUTH=off for local use; otherwise the server refuses to start
  Layer.provide(DurableObjectHttpApi.layerAdminAuthorizationConfig())
)

export const Server = HttpRouter.serve(Layer.mergeAll(ApiLive, HttpApiScalar.layer(Api, { path: "/docs" }))).pipe(
  Layer.provide(NodeHttpServer.layer(createServer, { port: 3000 })),
  Layer.provide(Stock.layer),
  Layer.provide(SqlStorage.layer().pipe(Layer.provide(SqliteClient.layer({ filename: "shop.sqlite" }))))
)
// #endregion serve

// #region client
export const restock = Effect.gen(function*() {
  const client = yield* HttpApiClient.make(Api, { baseUrl: "http://127.0.0.1:3000" })
  const units = yield* client.Stock.receive({ params: { id: "sku-42" }, payload: { units: 10 } }) // number
  const taken = yield* client.Stock.take({ params: { id: "sku-42" } }).pipe(
    Effect.catchTag("OutOfStock", (e) => Effect.succeed(`none left of ${e.sku}`)) // typed, from the schema
  )
  return { units, taken }
}).pipe(Effect.provide(FetchHttpClient.layer))
// #endregion client
