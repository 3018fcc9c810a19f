/**
 * `DurableObjectInspector.layer` mounted in an application (in-memory storage, a real HTTP server on a free
 * port): its JSON API decodes states with the definition's schema and shows one that no longer decodes as stored
 * with the reason, retries a failed alarm through the runtime, answers typed failures with their statuses, and
 * takes its token as the admin endpoints do (from `DURABLE_OBJECT_ADMIN_TOKEN`, at least 16 characters; open
 * only with `DURABLE_OBJECT_ADMIN_AUTH=off`).
 */
import { Alarms, DurableObject, DurableObjectInspector, Storage } from "@durable-object/core"
import { NodeHttpServer } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer, Redacted } from "effect"
import { HttpClient, HttpClientRequest, HttpRouter } from "effect/http"
import { eventually, Job } from "./fixtures.ts"

const token = "a-token-of-twenty-chars"

const serve = (inspector: Layer.Layer<never, unknown, HttpRouter.HttpRouter | DurableObject.Runtime<"Job">>) =>
  HttpRouter.serve(inspector, { disableListenLog: true, disableLogger: true }).pipe(
    Layer.provideMerge(NodeHttpServer.layerTest),
    Layer.provideMerge(Job.layer),
    Layer.provideMerge(Storage.layerMemory)
  )

const Mounted = serve(DurableObjectInspector.layer({
  path: "/ops/inspector",
  objects: [Job],
  auth: { token: Redacted.make(token) }
}))

/** A GET with the token, another one, or none (`null`). */
const get = (path: string, bearer: string | null = token) =>
  Effect.flatMap(HttpClient.HttpClient, (client) =>
    client.execute(
      bearer === null
        ? HttpClientRequest.get(path)
        : HttpClientRequest.get(path).pipe(HttpClientRequest.bearerToken(bearer))
    ))

const json = (path: string) => Effect.flatMap(get(path), (response) => response.json as Effect.Effect<any, unknown>)

describe("the mounted inspector", () => {
  it.live("serves the page without the token, and the data only with it", () =>
    Effect.gen(function*() {
      const page = yield* get("/ops/inspector", null)
      assert.strictEqual(page.status, 200)
      assert.include(yield* page.text, `data-base="/ops/inspector"`)
      assert.strictEqual((yield* get("/ops/inspector/api/types", null)).status, 401)
      assert.strictEqual((yield* get("/ops/inspector/api/types", "a-wrong-token-of-twenty")).status, 401)
      assert.strictEqual((yield* get("/ops/inspector/api/types")).status, 200)
    }).pipe(Effect.provide(Mounted)))

  it.live("lists and decodes through the runtime, and shows a state that no longer decodes as stored", () =>
    Effect.gen(function*() {
      yield* Job.client("fine").schedule({ broken: false, inMillis: 3_600_000 })
      const storage = yield* Storage.Storage
      yield* storage.commit({ objectType: "Job", objectId: "old", expectedVersion: 0, state: `{"runs":"many"}` })

      assert.deepStrictEqual(yield* json("/ops/inspector/api/types"), {
        types: [{ type: "Job", objects: 2, moreObjects: false, failedAlarms: 0, moreFailed: false }]
      })
      const page = yield* json("/ops/inspector/api/objects?type=Job&limit=1")
      assert.deepStrictEqual(page.objects.map((o: any) => [o.id, o.status]), [["fine", "active"]])
      assert.strictEqual(page.next, "fine")

      const old = yield* json("/ops/inspector/api/object?type=Job&id=old")
      assert.strictEqual(old.decoded, true)
      assert.deepStrictEqual(JSON.parse(old.stateJson), { runs: "many" })
      assert.include(old.decodeError, "Expected")
      const fine = yield* json("/ops/inspector/api/object?type=Job&id=fine")
      assert.isUndefined(fine.decodeError)
      assert.deepStrictEqual(fine.alarms.map((a: any) => [a.name, a.failedAt, JSON.parse(a.payload)]), [[
        "work",
        null,
        { task: "task of fine" }
      ]])
    }).pipe(Effect.provide(Mounted)))

  it.live("retries a failed alarm through the runtime, and answers missing things with 404 and bad input with 400", () =>
    Effect.gen(function*() {
      yield* Job.client("b").schedule({ broken: true, inMillis: 1 })
      yield* eventually(Effect.map(Alarms.listFailed(Job), (page) => page.alarms.length === 1))
      const failed = yield* json("/ops/inspector/api/failed?type=Job")
      assert.deepStrictEqual(failed.alarms.map((a: any) => [a.id, a.name, a.attempts]), [["b", "work", 1]])
      assert.include(failed.alarms[0].lastError, "cannot run task of b")

      yield* Job.client("b").repair()
      const client = yield* HttpClient.HttpClient
      const post = (path: string, body: unknown) =>
        client.execute(
          HttpClientRequest.post(path).pipe(
            HttpClientRequest.bearerToken(token),
            HttpClientRequest.bodyJsonUnsafe(body)
          )
        )
      const retried = yield* post("/ops/inspector/api/retry", { type: "Job", id: "b", name: "work" })
      assert.strictEqual(retried.status, 200)
      yield* eventually(
        Effect.map(DurableObject.inspect(Job, "b"), (o) => o.state?.runs === 1 && o.alarms.length === 0)
      )

      const missing = yield* post("/ops/inspector/api/retry", { type: "Job", id: "b", name: "work" })
      assert.strictEqual(missing.status, 404)
      assert.strictEqual(((yield* missing.json) as any).error, "AlarmNotFound")
      assert.strictEqual((yield* get("/ops/inspector/api/object?type=Nope&id=x")).status, 404)
      assert.strictEqual((yield* get("/ops/inspector/api/object?type=Job&id=nobody")).status, 404)
      assert.strictEqual((yield* get("/ops/inspector/api/objects?type=Job&limit=0")).status, 400)
      assert.strictEqual((yield* post("/ops/inspector/api/cancel", { type: "Job" })).status, 400)
    }).pipe(Effect.provide(Mounted)))
})

/** Builds the mounted inspector with only `env` as configuration. */
const build = (env: Record<string, string>) =>
  Layer.build(serve(DurableObjectInspector.layer({ objects: [Job] }))).pipe(
    Effect.scoped,
    Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))
  )

describe("the inspector's token from configuration", () => {
  it.live("needs DURABLE_OBJECT_ADMIN_TOKEN of at least 16 characters, unless DURABLE_OBJECT_ADMIN_AUTH=off", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(build({}))
      assert.include(String(missing), "DURABLE_OBJECT_ADMIN_TOKEN")
      const short = yield* Effect.flip(build({ DURABLE_OBJECT_ADMIN_TOKEN: "short" }))
      assert.include(String(short), "at least 16 characters")
      yield* build({ DURABLE_OBJECT_ADMIN_TOKEN: token })
      yield* build({ DURABLE_OBJECT_ADMIN_AUTH: "off" })
    }))
})
