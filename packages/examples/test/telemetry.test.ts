/**
 * The demo's telemetry reaches real collectors: Prometheus scrapes `/metrics` and finds the call, commit and
 * alarm series with their labels; with an OTLP URL, a request's trace (HTTP request → call → commit → SQL
 * statement) arrives at an OTLP/HTTP receiver.
 */
import { Telemetry } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import * as Http from "node:http"
import type { ServerOptions } from "../src/server.ts"
import { startDemo } from "./demoServer.ts"

/** The demo, with carts that expire after 200 ms; returns its URL. */
const startServer = (otlp?: ServerOptions["otlp"]) =>
  startDemo({ settings: { rateLimitWindow: Duration.minutes(1), cartTtl: Duration.millis(200) }, otlp })

const request = (url: string, init?: RequestInit) =>
  Effect.promise(() => fetch(url, init).then(async (r) => ({ status: r.status, text: await r.text() })))

const post = (url: string, body = "{}") =>
  request(url, { method: "POST", body, headers: { "content-type": "application/json" } })

/** Prometheus text: each sample as its metric name, labels and value. */
const samples = (text: string) =>
  text.split("\n").filter((line) => line !== "" && !line.startsWith("#")).map((line) => {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    assert.isNotNull(match, `a sample line: ${line}`)
    const labels: Record<string, string> = {}
    for (const pair of (match![2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!
    }
    return { name: match![1]!, labels, value: Number(match![3]) }
  })

const find = (all: ReturnType<typeof samples>, name: string, labels: Record<string, string>) =>
  all.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))

describe("demo telemetry", () => {
  it.live("Prometheus scrapes /metrics: call, commit and alarm series with their labels", () =>
    Effect.gen(function*() {
      const base = yield* startServer()
      for (let i = 0; i < 3; i++) yield* post(`${base}/counter/scraped/increment`, `{"amount": 1}`)
      yield* post(`${base}/cart/scraped/add`, `{"sku": "apple", "quantity": 1}`)
      // The cart's expiry alarm fires 200 ms later and empties it.
      for (let i = 0; i < 100; i++) {
        const view = JSON.parse((yield* post(`${base}/cart/scraped/view`)).text)
        if (view.expirations === 1) break
        yield* Effect.sleep("50 millis")
      }
      const scrape = yield* request(`${base}/metrics`)
      assert.strictEqual(scrape.status, 200)
      const all = samples(scrape.text)

      const calls = find(all, "durable_object_calls_total", {
        object_type: "Counter",
        handler: "increment",
        outcome: "success"
      })
      assert.isAtLeast(calls?.value ?? 0, 3, "the calls, by type, handler and outcome")
      const duration = find(all, "durable_object_call_duration_ms_count", {
        object_type: "Counter",
        handler: "increment"
      })
      assert.isAtLeast(duration?.value ?? 0, 3)
      const commits = find(all, "durable_object_storage_duration_ms_count", { operation: "save", outcome: "success" })
      assert.isAtLeast(commits?.value ?? 0, 4, "the commits (storage saves), by outcome")
      const fired = find(all, "durable_object_alarms_total", {
        object_type: "ShoppingCart",
        alarm: "expire",
        outcome: "fired"
      })
      assert.isAtLeast(fired?.value ?? 0, 1, "the alarm firings, by type, alarm and outcome")
      assert.isDefined(find(all, "durable_object_alarm_lateness_ms_count", { object_type: "ShoppingCart" }))
      assert.isDefined(find(all, "durable_object_active_objects", { object_type: "Counter" }))
    }))

  it.live("with an OTLP URL, a request's trace arrives: HTTP request → call → commit → SQL statement", () =>
    Effect.gen(function*() {
      const received: Array<any> = []
      const collector = yield* Effect.acquireRelease(
        Effect.callback<Http.Server>((resume) => {
          const server = Http.createServer((req, res) => {
            let body = ""
            req.on("data", (chunk: Buffer) => {
              body += chunk.toString()
            })
            req.on("end", () => {
              if (req.url === "/v1/traces") received.push(JSON.parse(body))
              res.writeHead(200, { "content-type": "application/json" }).end("{}")
            })
          })
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) =>
          Effect.callback<void>((resume) => {
            server.close(() => resume(Effect.void))
          })
      )
      const port = (collector.address() as { port: number }).port
      yield* Effect.scoped(Effect.gen(function*() {
        const base = yield* startServer({ url: `http://127.0.0.1:${port}`, serviceName: "demo-under-test" })
        assert.strictEqual((yield* post(`${base}/counter/traced/increment`, `{"amount": 2}`)).text, "2")
      }))
      // Closing the server's layer flushed the exporter.
      const spans: Array<any> = received.flatMap((body) =>
        body.resourceSpans.flatMap((r: any) => r.scopeSpans.flatMap((s: any) => s.spans))
      )
      const call = spans.find((s) =>
        s.name === Telemetry.spanCall &&
        s.attributes.some((a: any) => a.key === Telemetry.attributes.objectId && a.value.stringValue === "traced")
      )
      assert.isDefined(call, `spans: ${spans.map((s) => s.name).join(", ")}`)
      const parent = spans.find((s) => s.spanId === call.parentSpanId)
      assert.isDefined(parent, "the call's parent is the HTTP request's span")
      assert.match(parent.name, /POST|http/i)
      const commit = spans.find((s) => s.parentSpanId === call.spanId && s.name === Telemetry.spanStorage.save)
      assert.isDefined(commit)
      const statement = spans.find((s) => s.parentSpanId === commit.spanId)
      assert.isDefined(statement, "the commit's SQL statement")
      assert.isTrue(new Set([parent, call, commit, statement].map((s) => s.traceId)).size === 1, "one trace")
    }))
})
