import { DurableObjectTest, Telemetry } from "@durable-object/core"
import { assert, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import { AccountLive, program } from "./defining-objects.ts"

// #region test
it.effect("calls are traced and counted", () => {
  const { layer: RecordingTracer, spans } = DurableObjectTest.spanRecorder()
  return Effect.gen(function*() {
    yield* program // deposits, is refused a withdrawal, reads the balance, …
    const deposit = spans.find((s) =>
      s.name === Telemetry.spanCall && s.attributes.get(Telemetry.attributes.handler) === "deposit"
    )
    assert.strictEqual(deposit?.attributes.get(Telemetry.attributes.objectType), "Account")
    assert.strictEqual(deposit?.attributes.get(Telemetry.attributes.objectId), "alice")

    // Every series is a metric with attributes: read one with the same attributes.
    const refused = yield* Metric.value(
      Metric.withAttributes(Telemetry.calls, { object_type: "Account", handler: "withdraw", outcome: "failure" })
    )
    assert.strictEqual(refused.count, 1)
    const activations = yield* Metric.value(Metric.withAttributes(Telemetry.activations, { object_type: "Account" }))
    assert.strictEqual(activations.count, 1)
  }).pipe(
    Effect.provide(AccountLive),
    Effect.provide(RecordingTracer),
    Effect.provideService(Metric.MetricRegistry, new Map()) // a registry of its own, so tests do not share counts
  )
})
// #endregion test
