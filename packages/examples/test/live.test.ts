/**
 * The demo's Server-Sent Events route, read over real HTTP: `GET /counter/:id/changes` sends the counter's
 * current state, then one `state` event per commit, as the browser's `EventSource` would receive them.
 */
import { assert, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer } from "effect"
import { HttpServer } from "effect/http"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { serverLayer } from "../src/server.ts"

interface SseEvent {
  readonly id: string | undefined
  readonly event: string
  readonly data: unknown
}

/** Reads SSE events off a response body as they arrive (comment lines skipped). */
const sseReader = (body: ReadableStream<Uint8Array>) => {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buffer = ""
  const next = (): Promise<SseEvent> => {
    const end = buffer.indexOf("\n\n")
    if (end >= 0) {
      const block = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      const fields = new Map<string, string>()
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue
        const colon = line.indexOf(": ")
        fields.set(line.slice(0, colon), line.slice(colon + 2))
      }
      if (!fields.has("event")) return next()
      return Promise.resolve({
        id: fields.get("id"),
        event: fields.get("event")!,
        data: JSON.parse(fields.get("data")!)
      })
    }
    return reader.read().then(({ done, value }) => {
      if (done) throw new Error(`the event stream ended after ${JSON.stringify(buffer)}`)
      buffer += decoder.decode(value, { stream: true })
      return next()
    })
  }
  return { next: () => Effect.promise(next).pipe(Effect.timeout(Duration.seconds(10))), cancel: () => reader.cancel() }
}

it.live(
  "GET /counter/:id/changes streams the counter's committed states as Server-Sent Events",
  () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "durable-object-sse-"))),
        (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
      )
      const context = yield* Layer.build(serverLayer({
        host: "127.0.0.1",
        port: 0,
        database: { _tag: "SQLite", filename: join(dir, "demo.sqlite") },
        settings: { rateLimitWindow: Duration.minutes(1), cartTtl: Duration.minutes(30) },
        admin: { disabled: true }
      }))
      const base = HttpServer.formatAddress(Context.get(context, HttpServer.HttpServer).address)
      const increment = (amount: number) =>
        Effect.promise(() =>
          fetch(`${base}/counter/sse/increment`, { method: "POST", body: JSON.stringify({ amount }) }).then((r) =>
            r.json()
          )
        )
      yield* increment(2)

      const controller = new AbortController()
      yield* Effect.addFinalizer(() => Effect.sync(() => controller.abort()))
      const response = yield* Effect.promise(() => fetch(`${base}/counter/sse/changes`, { signal: controller.signal }))
      assert.strictEqual(response.status, 200)
      assert.strictEqual(response.headers.get("content-type"), "text/event-stream")
      const events = sseReader(response.body!)

      const first = yield* events.next()
      assert.strictEqual(first.event, "state")
      assert.strictEqual(first.id, "1")
      assert.strictEqual((first.data as { count: number }).count, 2)

      for (const amount of [3, 4]) yield* increment(amount)
      const counts: Array<number> = []
      const versions: Array<string | undefined> = []
      while (counts.at(-1) !== 9) {
        const next = yield* events.next()
        assert.strictEqual(next.event, "state")
        counts.push((next.data as { count: number }).count)
        versions.push(next.id)
      }
      assert.deepStrictEqual(counts, [5, 9])
      assert.deepStrictEqual(versions, ["2", "3"])

      // An id no object can have (it holds NUL): the stream reports it in an error event.
      const bad = yield* Effect.promise(() => fetch(`${base}/counter/a%00b/changes`))
      const badEvents = sseReader(bad.body!)
      const error = yield* badEvents.next()
      assert.strictEqual(error.event, "error")
      assert.strictEqual((error.data as { error: string }).error, "InvalidObjectId")
      yield* Effect.promise(() => badEvents.cancel())
    }),
  30_000
)
