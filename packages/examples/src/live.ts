/**
 * Live state over HTTP: `GET /counter/:id/changes` streams a counter's committed states to the browser as
 * Server-Sent Events (`text/event-stream`), one `state` event per commit, starting with the current state:
 *
 * ```js
 * new EventSource("/counter/alice/changes").addEventListener("state", (e) => render(JSON.parse(e.data)))
 * ```
 *
 * Each event's `id` is the state's version. The state is sent in its encoded (JSON) form. A comment line goes
 * out every 15 seconds so proxies keep an idle stream open; the stream ends when the client disconnects.
 */
import { DurableObject } from "@durable-object/core"
import { Effect, Schema, Stream } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { Counter } from "./objects.ts"

const encodeState = Schema.encodeUnknownEffect(Schema.toCodecJson(Counter.state))

/** One SSE event. */
const event = (name: string, data: unknown, id?: number) =>
  `${id === undefined ? "" : `id: ${id}\n`}event: ${name}\ndata: ${JSON.stringify(data)}\n\n`

/** Keeps idle connections open through proxies (a comment line is ignored by `EventSource`). */
const heartbeat = Stream.tick("15 seconds").pipe(Stream.map(() => ": keep-alive\n\n"))

const counterChanges = Effect.gen(function*() {
  const { id = "" } = yield* HttpRouter.params
  // Streams start after the response's headers are sent, so a stream that cannot start reports why in an
  // `error` event rather than in the status.
  const states = Counter.client(id).changes.pipe(
    Stream.mapEffect((snapshot: DurableObject.Snapshot<typeof Counter.state.Type>) =>
      Effect.map(encodeState(snapshot.state), (state) => event("state", state, snapshot.version))
    ),
    Stream.catch((error) => Stream.succeed(event("error", { error: error._tag, message: error.message })))
  )
  const context = yield* Effect.context<DurableObject.Runtime<typeof Counter.name>>()
  const body = Stream.merge(states, heartbeat, { haltStrategy: "left" }).pipe(
    Stream.encodeText,
    Stream.provideContext(context)
  )
  return HttpServerResponse.stream(body, {
    contentType: "text/event-stream",
    headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
  })
})

/** The live-state routes (registered in `http.ts`). */
export const liveRoutes = [HttpRouter.route("GET", "/counter/:id/changes", counterChanges)] as const
