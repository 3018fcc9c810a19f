/**
 * Scenario 5b, memory (in-memory storage, so only the runtime's own heap is measured):
 * - heap per active object and per hibernated object: 100,000 objects with stored state are activated (a
 *   read call each), then left idle past a short `hibernateAfter` until `DurableObject.status` reports every
 *   one hibernated; heap is measured after forced GCs (`--expose-gc`) against the heap before activation;
 * - churn: 1,000,000 distinct objects touched once each with `shutdownAfter` of 1 s; the heap is sampled as
 *   it runs and measured again once every object has shut down, to show memory stays bounded.
 */
import { DurableObject, Storage } from "@durable-object/core"
import { Effect, Layer } from "effect"
import type { Config } from "./config.ts"
import { makeCounter } from "./objects.ts"
import { count, type EventLoopDelay, monitorEventLoop, type Row, row } from "./stats.ts"

const scenario = "5 memory (memory storage)"

const gcHeap = Effect.sync(() => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error("the memory scenario needs node --expose-gc")
  gc()
  gc()
  return process.memoryUsage().heapUsed
})

const mb = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10

/** Calls `get` on `n` objects named `prefix-i`, `concurrency` at a time; each id string is made at its call. */
const touchAll = <E, R>(
  get: (id: string) => Effect.Effect<unknown, E, R>,
  prefix: string,
  n: number,
  concurrency: number,
  onCall?: () => void
): Effect.Effect<void, E, R> =>
  Effect.suspend(() => {
    let next = 0
    const worker = Effect.gen(function*() {
      while (next < n) {
        const i = next++
        yield* get(`${prefix}-${i}`)
        onCall?.()
      }
    })
    return Effect.all(Array.from({ length: concurrency }, () => worker), { concurrency: "unbounded", discard: true })
  })

/** Waits until `count()` reaches `target` (polling every `everyMs`), or `timeoutMs` passed. */
const waitUntil = <E, R>(count: Effect.Effect<number, E, R>, target: number, everyMs: number, timeoutMs: number) =>
  Effect.gen(function*() {
    const start = performance.now()
    while (performance.now() - start < timeoutMs) {
      if ((yield* count) >= target) return true
      yield* Effect.sleep(everyMs)
    }
    return false
  })

const perObject = (config: Config): Effect.Effect<ReadonlyArray<Row>, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const n = config.memoryObjects
    const def = makeCounter("BenchMemory", { hibernateAfter: config.hibernateAfterMs, shutdownAfter: "1 hour" })
    const storage = yield* Storage.makeMemory
    yield* Effect.forEach(
      Array.from({ length: n }, (_, i) => i),
      (i) =>
        storage.commit({
          objectType: def.name,
          objectId: `mem-${i}`,
          expectedVersion: 0,
          state: JSON.stringify({ count: i })
        }),
      { discard: true }
    )
    const context = yield* Layer.build(
      def.layer.pipe(Layer.provide(Storage.layerWithScheduler(Effect.succeed(storage))))
    )
    const before = yield* gcHeap

    const monitor = monitorEventLoop()
    const start = performance.now()
    yield* touchAll((id) => def.client(id).get(), "mem", n, config.concurrency).pipe(Effect.provideContext(context))
    const activationSeconds = (performance.now() - start) / 1000
    const activeEventLoop = monitor.stop()
    const active = yield* gcHeap

    const hibernatedCount = Effect.gen(function*() {
      let hibernated = 0
      for (let i = 0; i < n; i++) {
        if ((yield* DurableObject.status(def, `mem-${i}`)) === "hibernated") hibernated++
      }
      return hibernated
    }).pipe(Effect.provideContext(context))
    const allHibernated = yield* waitUntil(hibernatedCount, n, 250, config.hibernateAfterMs + 30_000)
    if (!allHibernated) return yield* Effect.die(new Error("objects did not all hibernate within 30 s"))
    const hibernated = yield* gcHeap

    const perActive = (active - before) / n
    const perHibernated = (hibernated - before) / n
    return [
      row({
        id: "memory.active",
        scenario,
        label: `heap per active object (${count(n)})`,
        kind: "measure",
        value: perActive,
        unit: "B/object",
        eventLoop: activeEventLoop,
        note: `${n} activations from memory storage in ${activationSeconds.toFixed(2)} s (${
          Math.round(n / activationSeconds)
        }/s); heap ${mb(before)} → ${mb(active)} MB`,
        details: { objects: n, heapBefore: before, heapActive: active, activationSeconds }
      }),
      row({
        id: "memory.hibernated",
        scenario,
        label: `heap per hibernated object (${count(n)})`,
        kind: "measure",
        value: perHibernated,
        unit: "B/object",
        targets: [{ label: "< 1 KiB", pass: perHibernated < 1024 }],
        note: `heap ${mb(before)} → ${mb(hibernated)} MB with every object hibernated`,
        details: { objects: n, heapBefore: before, heapHibernated: hibernated }
      })
    ]
  }))

const churn = (config: Config): Effect.Effect<Row, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const n = config.churnObjects
    const idle = config.churnShutdownAfterMs
    // hibernateAfter = shutdownAfter: idle objects shut down without hibernating first.
    const def = makeCounter("BenchChurn", { hibernateAfter: idle, shutdownAfter: idle })
    const context = yield* Layer.build(def.layer.pipe(Layer.provide(Storage.layerMemory)))
    const before = yield* gcHeap

    let touched = 0
    const start = performance.now()
    const samples: Array<{ readonly seconds: number; readonly touched: number; readonly heapMB: number }> = []
    const sample = () =>
      samples.push({
        seconds: Math.round(performance.now() - start) / 1000,
        touched,
        heapMB: mb(process.memoryUsage().heapUsed)
      })
    const sampler = setInterval(sample, n >= 100_000 ? 500 : 50)
    const monitor = monitorEventLoop()
    yield* touchAll((id) => def.client(id).get(), "churn", n, config.concurrency, () => touched++).pipe(
      Effect.provideContext(context),
      Effect.ensuring(Effect.sync(() => clearInterval(sampler)))
    )
    const seconds = (performance.now() - start) / 1000
    const eventLoop: EventLoopDelay = monitor.stop()
    sample()

    let stillLoaded = n
    const loaded = DurableObject.loadedIds(def).pipe(
      Effect.map((ids) => {
        stillLoaded = ids.length
        return -ids.length
      }),
      Effect.provideContext(context)
    )
    // Every object is idle `idle` ms after the last touch; the sweeper gets 20 s more to shut them all down.
    const drained = yield* waitUntil(loaded, 0, 250, idle + 20_000)
    const settledSeconds = (performance.now() - start) / 1000
    const after = yield* gcHeap
    const peak = Math.max(...samples.map((s) => s.heapMB))
    const retained = Math.max(0, after - before)
    return row({
      id: "memory.churn",
      scenario,
      label: `${count(n)} objects touched, shutdownAfter ${idle} ms`,
      kind: "measure",
      value: n / seconds,
      unit: "objects/s",
      eventLoop,
      targets: [
        { label: "all shut down", pass: drained },
        { label: "retained < 16 B/object", pass: retained < 16 * n }
      ],
      note: `heap ${mb(before)} MB before, peak ${peak} MB while touching (${seconds.toFixed(1)} s), ${mb(after)} MB ${
        drained
          ? `after all shut down (at ${settledSeconds.toFixed(1)} s)`
          : `at ${settledSeconds.toFixed(1)} s with ${stillLoaded} objects still loaded`
      }; samples (s: MB) ${
        samples.filter((_, i) => i % Math.max(1, Math.floor(samples.length / 12)) === 0).map((s) =>
          `${s.seconds}: ${s.heapMB}`
        ).join(", ")
      }`,
      details: {
        objects: n,
        heapBefore: before,
        heapAfter: after,
        peakHeapMB: peak,
        settledSeconds,
        stillLoaded,
        samples
      }
    })
  }))

export const run = (config: Config): Effect.Effect<ReadonlyArray<Row>, unknown> =>
  Effect.gen(function*() {
    const rows = yield* perObject(config)
    return [...rows, yield* churn(config)]
  })
