/**
 * The demo's API through a typed `HttpApiClient` built from the same `DemoApi` the server implements: calls
 * reply with their handlers' types, typed errors arrive as the handlers' error classes with their statuses,
 * the Idempotency-Key header makes a call once, and the admin endpoints need the bearer token.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { FetchHttpClient, HttpClient, HttpClientRequest } from "effect/http"
import { HttpApiClient } from "effect/http-api"
import { DemoApi } from "../src/http.ts"
import { startDemo } from "./demoServer.ts"

const token = Redacted.make("api-test-token-0123456789")

const startServer = startDemo({ admin: { token } })

/** A typed client of the demo, optionally sending the admin token or an Idempotency-Key. */
const client = (baseUrl: string, withToken: boolean, idempotencyKey?: string) =>
  HttpApiClient.make(DemoApi, {
    baseUrl,
    transformClient: HttpClient.mapRequest((request) => {
      const authorized = withToken ? HttpClientRequest.bearerToken(request, Redacted.value(token)) : request
      return idempotencyKey === undefined
        ? authorized
        : HttpClientRequest.setHeader(authorized, "idempotency-key", idempotencyKey)
    })
  }).pipe(Effect.provide(FetchHttpClient.layer))

describe("the demo API through a typed HttpApiClient", { timeout: 30_000 }, () => {
  it.live("handlers reply with their types; typed errors arrive as their classes", () =>
    Effect.gen(function*() {
      const api = yield* client(yield* startServer, false)
      assert.strictEqual(yield* api.Counter.increment({ params: { id: "c" }, payload: { amount: 2 } }), 2)
      assert.strictEqual(yield* api.Counter.increment({ params: { id: "c" }, payload: {} }), 3)
      assert.strictEqual(yield* api.Counter.get({ params: { id: "c" } }), 3)

      const cart = yield* api.ShoppingCart.add({ params: { id: "k" }, payload: { sku: "apple", quantity: 2 } })
      assert.deepStrictEqual(cart.lines, [{ sku: "apple", quantity: 2 }])
      assert.isNotNull(cart.expiresAt, "a DateTime.Utc, decoded from its JSON string")

      const empty = yield* Effect.flip(api.ShoppingCart.checkout({ params: { id: "empty" } }))
      assert.strictEqual(empty._tag, "EmptyCart")
      const missing = yield* Effect.flip(api.ShoppingCart.remove({ params: { id: "k" }, payload: { sku: "pear" } }))
      assert.deepStrictEqual(missing._tag === "NotInCart" ? missing.sku : missing._tag, "pear")

      yield* api.RateLimiter.check({ params: { id: "r" }, payload: { limit: 1 } })
      const limited = yield* Effect.flip(api.RateLimiter.check({ params: { id: "r" }, payload: { limit: 1 } }))
      assert.strictEqual(limited._tag, "RateLimited")

      const badId = yield* Effect.flip(api.Counter.get({ params: { id: "x".repeat(1025) } }))
      assert.strictEqual(badId._tag, "InvalidObjectId")
    }))

  it.live("an Idempotency-Key makes a checkout happen once", () =>
    Effect.gen(function*() {
      const base = yield* startServer
      const api = yield* client(base, false)
      const keyed = yield* client(base, false, "order-1")
      yield* api.ShoppingCart.add({ params: { id: "o" }, payload: { sku: "pear", quantity: 1 } })
      const first = yield* keyed.ShoppingCart.checkout({ params: { id: "o" } })
      const again = yield* keyed.ShoppingCart.checkout({ params: { id: "o" } })
      assert.deepStrictEqual(again, first)
      const other = yield* Effect.flip(api.ShoppingCart.checkout({ params: { id: "o" } }))
      assert.strictEqual(other._tag, "EmptyCart", "without the key it runs again, on the now empty cart")
    }))

  it.live("admin endpoints: 401 without the token; with it list, inspect and delete", () =>
    Effect.gen(function*() {
      const base = yield* startServer
      const anonymous = yield* client(base, false)
      const admin = yield* client(base, true)
      for (const id of ["a", "b", "c"]) yield* anonymous.Counter.increment({ params: { id }, payload: {} })

      const refused = yield* Effect.flip(anonymous.CounterAdmin.list({ query: {} }))
      assert.strictEqual(refused._tag, "Unauthorized")

      const page = yield* admin.CounterAdmin.list({ query: { limit: 2 } })
      assert.deepStrictEqual(page.objects.map((o) => [o.id, o.version, o.status]), [["a", 1, "active"], [
        "b",
        1,
        "active"
      ]])
      assert.strictEqual(page.next, "b")
      const rest = yield* admin.CounterAdmin.list({ query: { after: "b" } })
      assert.deepStrictEqual(rest.objects.map((o) => o.id), ["c"])

      const seen = yield* admin.CounterAdmin.inspect({ params: { id: "a" } })
      assert.strictEqual(seen.state?.count, 1, "the state, decoded with the definition's schema")
      assert.isDefined(seen.state?.lastIncrementedAt)

      const notFound = yield* Effect.flip(admin.CounterAdmin.inspect({ params: { id: "nobody" } }))
      assert.strictEqual(notFound._tag, "ObjectNotFound")
      const badLimit = yield* Effect.flip(admin.CounterAdmin.list({ query: { limit: 0 } }))
      assert.strictEqual(badLimit._tag, "InvalidListOptions")

      yield* admin.CounterAdmin.delete({ params: { id: "a" } })
      assert.deepStrictEqual((yield* admin.CounterAdmin.list({ query: {} })).objects.map((o) => o.id), ["b", "c"])
      assert.deepStrictEqual((yield* admin.CounterAdmin.failedAlarms({ query: {} })).alarms, [])

      const cart = yield* anonymous.ShoppingCart.add({ params: { id: "k" }, payload: { sku: "fig", quantity: 1 } })
      assert.isNotNull(cart.expiresAt)
      const withAlarm = yield* admin.ShoppingCartAdmin.inspect({ params: { id: "k" } })
      assert.deepStrictEqual(withAlarm.alarms.map((a) => [a.name, a.attempts, a.payload]), [["expire", 0, null]])
      yield* admin.ShoppingCartAdmin.cancelAlarm({ params: { id: "k", name: "expire" } })
      assert.deepStrictEqual((yield* admin.ShoppingCartAdmin.inspect({ params: { id: "k" } })).alarms, [])
      const noAlarm = yield* Effect.flip(admin.ShoppingCartAdmin.retryAlarm({ params: { id: "k", name: "expire" } }))
      assert.strictEqual(noAlarm._tag, "AlarmNotFound")
    }))

  it.live("the OpenAPI document and its Scalar page are served", () =>
    Effect.gen(function*() {
      const base = yield* startServer
      const spec = yield* Effect.promise(() => fetch(`${base}/openapi.json`).then((r) => r.json() as any))
      assert.isDefined(spec.paths["/counter/{id}/increment"].post)
      assert.isDefined(spec.paths["/_admin/Counter/{id}"].get)
      assert.deepStrictEqual(spec.paths["/_admin/Counter/{id}"].get.security, [{ bearer: [] }])
      assert.deepStrictEqual(Object.keys(spec.paths["/cart/{id}/checkout"].post.responses).toSorted(), [
        "200",
        "400",
        "409",
        "422",
        "429",
        "500",
        "503",
        "507"
      ])
      const docs = yield* Effect.promise(() => fetch(`${base}/docs`).then((r) => r.text()))
      assert.include(docs, "openapi")
    }))
})
