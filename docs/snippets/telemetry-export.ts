import { DurableObject, SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { Layer, Schema } from "effect"
import { FetchHttpClient, HttpRouter, HttpServerResponse } from "effect/http"
import { Otlp, PrometheusMetrics } from "effect/observability"

export const Visits = DurableObject.defineObject({
  name: "Visits",
  state: Schema.Struct({ n: Schema.Int }),
  initialState: () => ({ n: 0 }),
  handlers: { hit: { success: Schema.Int, handle: (_, ctx) => ctx.state.modify((s) => [s.n + 1, { n: s.n + 1 }]) } }
})

// #region otlp
// Traces, metrics and logs over OTLP/HTTP as JSON: no OpenTelemetry SDK, only effect and an HttpClient.
export const Telemetry = Otlp.layerJson({
  baseUrl: "http://127.0.0.1:4318", // the collector's OTLP/HTTP endpoint (/v1/traces, /v1/metrics, /v1/logs)
  resource: { serviceName: "shop", serviceVersion: "1.4.0" }
}).pipe(Layer.provide(FetchHttpClient.layer))

// Provided *below* the runtimes, so the runtimes, the alarm scheduler and the storage are built with it: their
// spans and metrics, and those of every call made through them, are exported.
export const App = Visits.layer.pipe(
  Layer.provideMerge(SqlStorage.layer()),
  Layer.provide(SqliteClient.layer({ filename: "shop.sqlite" })),
  Layer.provide(Telemetry)
)
// #endregion otlp

// #region prometheus
// GET /metrics on your HttpRouter: every metric of the process, the runtime's included, in Prometheus' format.
export const MetricsRoute = PrometheusMetrics.layerHttp({ path: "/metrics" })
export const Routes = Layer.mergeAll(MetricsRoute, HttpRouter.add("GET", "/health", HttpServerResponse.text("ok")))
// #endregion prometheus
