/**
 * `DurableObjectHttpApi` on a definition of its own, served through a web handler: handler errors without a
 * declared status answer 422, server failures reach the client without their details, and the admin token
 * comes from configuration, off only when explicitly switched off.
 */
import { DurableObject, DurableObjectHttpApi, Storage } from "@durable-object/core"
import { NodeHttpServer } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit, Layer, Schema } from "effect"
import { HttpRouter } from "effect/http"
import { HttpApi, HttpApiBuilder } from "effect/http-api"

class Refused extends Schema.TaggedError<Refused>()("Refused", { why: Schema.String }) {}

const Box = DurableObject.defineObject({
  name: "Box",
  state: Schema.Struct({ items: Schema.Array(Schema.String) }),
  initialState: () => ({ items: [] }),
  handlers: {
    put: {
      payload: Schema.Struct({ item: Schema.String }),
      success: Schema.Number,
      error: Refused,
      handle: ({ item }, ctx) =>
        item === "bomb"
          ? Effect.fail(new Refused({ why: "no bombs" }))
          : ctx.state.modify((s) => [s.items.length + 1, { items: [...s.items, item] }])
    },
    explode: { success: Schema.Void, handle: () => Effect.die(new Error("secret internals at /srv/app.ts:42")) }
  }
})

const Api = HttpApi.make("box").add(DurableObjectHttpApi.group(Box)).add(DurableObjectHttpApi.adminGroup(Box))

/** The API as a web handler, with the given admin configuration; `fetch` sends one request through it. */
const serve = (config: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const app = HttpApiBuilder.layer(Api).pipe(
        Layer.provide([DurableObjectHttpApi.layer(Api, Box), DurableObjectHttpApi.layerAdmin(Api, Box)]),
        Layer.provide(DurableObjectHttpApi.layerAdminAuthorizationConfig()),
        Layer.provide(Box.layer),
        Layer.provide(Storage.layerMemory),
        Layer.provide(NodeHttpServer.layerHttpServices),
        Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(config)))
      )
      return HttpRouter.toWebHandler(app, { disableLogger: true })
    }),
    ({ dispose }) => Effect.promise(dispose)
  ).pipe(Effect.map(({ handler }) => (method: string, path: string, init: RequestInit = {}) =>
    Effect.promise(async () => {
      const response = await handler(new Request(`http://box.test${path}`, { method, ...init }))
      const text = await response.text()
      return { status: response.status, body: text === "" ? undefined : JSON.parse(text) }
    })
  ))

const json = (body: unknown): RequestInit => ({
  body: JSON.stringify(body),
  headers: { "content-type": "application/json" }
})

/** Builds the admin authorization from `config`. */
const build = (config: Record<string, string>) =>
  Effect.exit(Layer.build(
    DurableObjectHttpApi.layerAdminAuthorizationConfig().pipe(
      Layer.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(config)))
    )
  ))

describe("DurableObjectHttpApi", () => {
  it.live("a handler error without a declared status is a 422; a defect is a 500 without its details", () =>
    Effect.gen(function*() {
      const fetch = yield* serve({ DURABLE_OBJECT_ADMIN_AUTH: "off" })
      assert.deepStrictEqual(yield* fetch("POST", "/Box/b/put", json({ item: "pen" })), { status: 200, body: 1 })
      assert.deepStrictEqual(yield* fetch("POST", "/Box/b/put", json({ item: "bomb" })), {
        status: 422,
        body: { _tag: "Refused", why: "no bombs" }
      })
      const defect = yield* fetch("POST", "/Box/b/explode")
      assert.strictEqual(defect.status, 500)
      assert.strictEqual(defect.body._tag, "HandlerDefect")
      assert.notInclude(JSON.stringify(defect.body), "secret internals")
      assert.notInclude(JSON.stringify(defect.body), "    at ")
      const badBody = yield* fetch("POST", "/Box/b/put", json({ item: 42 }))
      assert.strictEqual(badBody.status, 400)
      assert.deepStrictEqual([badBody.body._tag, badBody.body.objectType, badBody.body.handler], [
        "InvalidPayload",
        "Box",
        "put"
      ])
      // Explicitly off: the admin endpoints answer without a token.
      const listed = yield* fetch("GET", "/_admin/Box")
      assert.deepStrictEqual(listed.body.objects.map((o: { id: string }) => o.id), ["b"])
    }))

  it.live("with a configured token the admin endpoints need it; without one the layer does not build", () =>
    Effect.gen(function*() {
      const token = "a-configured-token-of-some-length"
      const fetch = yield* serve({ DURABLE_OBJECT_ADMIN_TOKEN: token })
      assert.strictEqual((yield* fetch("GET", "/_admin/Box")).status, 401)
      assert.strictEqual(
        (yield* fetch("GET", "/_admin/Box", { headers: { authorization: "Bearer wrong" } })).status,
        401
      )
      const ok = yield* fetch("GET", "/_admin/Box", { headers: { authorization: `Bearer ${token}` } })
      assert.deepStrictEqual(ok, { status: 200, body: { objects: [], next: null } })

      assert.isTrue(Exit.isFailure(yield* build({})), "no token, not switched off: refused")
      assert.isTrue(Exit.isFailure(yield* build({ DURABLE_OBJECT_ADMIN_TOKEN: "short" })), "a guessable token")
      assert.isTrue(Exit.isFailure(yield* build({ DURABLE_OBJECT_ADMIN_AUTH: "maybe" })))
      assert.isTrue(Exit.isSuccess(yield* build({ DURABLE_OBJECT_ADMIN_AUTH: "off" })))
    }))
})
