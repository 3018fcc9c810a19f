/**
 * Traces reach a real OTLP/HTTP collector through `effect/observability`'s `Otlp.layerJson` (no OpenTelemetry
 * SDK): a loopback receiver gets a call's span tree, call → commit (`durable_object.storage.save`) → the SQL
 * statement, linked by parent span ids in one trace.
 */
import { DurableObject, SqlStorage, Telemetry } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Schema } from "effect"
import { FetchHttpClient } from "effect/http"
import { Otlp, OtlpExporter } from "effect/observability"
import * as Http from "node:http"

const Tally = DurableObject.defineObject({
  name: "Tally",
  state: Schema.Struct({ n: Schema.Int }),
  initialState: () => ({ n: 0 }),
  handlers: {
    add: {
      payload: Schema.Struct({ by: Schema.Int }),
      success: Schema.Int,
      handle: ({ by }, ctx) => ctx.state.modify((s) => [s.n + by, { n: s.n + by }])
    }
  }
})

interface OtlpSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId?: string
  readonly name: string
  readonly attributes: ReadonlyArray<{ readonly key: string; readonly value: Record<string, unknown> }>
}

/** An OTLP/HTTP receiver on a free loopback port: what it received, by path, for the current scope. */
const receiver = Effect.acquireRelease(
  Effect.callback<{ readonly server: Http.Server; readonly url: string; readonly received: Map<string, Array<any>> }>(
    (resume) => {
      const received = new Map<string, Array<any>>()
      const server = Http.createServer((request, response) => {
        let body = ""
        request.on("data", (chunk: Buffer) => {
          body += chunk.toString()
        })
        request.on("end", () => {
          const list = received.get(request.url ?? "") ?? []
          list.push(JSON.parse(body))
          received.set(request.url ?? "", list)
          response.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
      })
      server.listen(0, "127.0.0.1", () => {
        const address = server.address() as { port: number }
        resume(Effect.succeed({ server, url: `http://127.0.0.1:${address.port}`, received }))
      })
    }
  ),
  ({ server }) =>
    Effect.callback<void>((resume) => {
      server.close(() => resume(Effect.void))
    })
)

const spansOf = (received: Map<string, Array<any>>): Array<OtlpSpan> =>
  (received.get("/v1/traces") ?? []).flatMap((body) =>
    body.resourceSpans.flatMap((r: any) => r.scopeSpans.flatMap((s: any) => s.spans as Array<OtlpSpan>))
  )

const attribute = (span: OtlpSpan, key: string) => span.attributes.find((a) => a.key === key)?.value

describe("OTLP export", () => {
  it.live("a call's span tree arrives at an OTLP/HTTP collector: call → commit → SQL statement", () =>
    Effect.gen(function*() {
      const collector = yield* receiver
      const Otel = Otlp.layerJson({
        baseUrl: collector.url,
        resource: { serviceName: "durable-object-test" },
        tracerExportInterval: "50 millis"
      }).pipe(Layer.provide(FetchHttpClient.layer))
      const App = Tally.layer.pipe(
        Layer.provideMerge(SqlStorage.layer()),
        Layer.provide(SqliteClient.layer({ filename: ":memory:" })),
        Layer.provideMerge(Otel)
      )
      yield* Effect.gen(function*() {
        assert.strictEqual(yield* Tally.client("t1").add({ by: 2 }), 2)
        yield* (yield* OtlpExporter.Flusher).flush
      }).pipe(Effect.provide(App))

      const spans = spansOf(collector.received)
      const resource = collector.received.get("/v1/traces")![0].resourceSpans[0].resource
      assert.deepInclude(resource.attributes, { key: "service.name", value: { stringValue: "durable-object-test" } })
      const call = spans.find((s) => s.name === Telemetry.spanCall)
      assert.isDefined(call, `spans: ${spans.map((s) => s.name).join(", ")}`)
      assert.deepStrictEqual(attribute(call!, Telemetry.attributes.objectType), { stringValue: "Tally" })
      assert.deepStrictEqual(attribute(call!, Telemetry.attributes.objectId), { stringValue: "t1" })
      assert.deepStrictEqual(attribute(call!, Telemetry.attributes.handler), { stringValue: "add" })
      const children = (parent: OtlpSpan) =>
        spans.filter((s) => s.parentSpanId === parent.spanId && s.traceId === parent.traceId)
      const commit = children(call!).find((s) => s.name === Telemetry.spanStorage.save)
      assert.isDefined(commit, `children of the call: ${children(call!).map((s) => s.name).join(", ")}`)
      const statements = children(commit!)
      assert.isAbove(statements.length, 0, "the commit's SQL statement is its child")
      assert.isTrue(statements.every((s) => attribute(s, "db.system.name") !== undefined))
      // The activation's load is in the same trace, under the call too.
      const activate = children(call!).find((s) => s.name === Telemetry.spanActivate)
      assert.isDefined(activate)
      assert.isDefined(children(activate!).find((s) => s.name === Telemetry.spanStorage.load))
    }))
})
