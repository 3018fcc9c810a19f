/**
 * Scenario 9, cluster mode: durable calls through `DurableObjectCluster` on three runner processes (this process
 * is a client-only node), against the same calls in one process, on the same PostgreSQL, as a ratio; then the
 * time the objects of a `kill -9`ed runner take to answer again; then the heap one resident object costs in
 * cluster mode (effect/cluster's in-memory test runner, so only the objects differ), against one process.
 *
 * The runners are the cluster tests' own (`packages/core/test/cluster/runner.ts`, the tests' fast failure
 * profile: shard locks expire after 5 s).
 */
import { DurableObjectCluster, SqlStorage, Storage } from "@durable-object/core"
import { Effect, Layer, References } from "effect"
import { TestRunner } from "effect/cluster"
import { type ChildProcess, spawn } from "node:child_process"
import { createServer } from "node:net"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { RunnerName, Tally } from "../../core/test/cluster/objects.ts"
import { clusterLayer, fastProfile } from "../../examples/src/cluster/transport.ts"
import { pgLayer, postgresDatabase } from "./backends.ts"
import type { Config } from "./config.ts"
import { closedLoop, loadRow, ratioTo, type Row, row } from "./stats.ts"
import { objectIds, pick } from "./workloads.ts"

const scenario = "9 cluster mode (PostgreSQL)"
const runnerScript = join(import.meta.dirname, "..", "..", "core", "test", "cluster", "runner.ts")

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => typeof address === "object" && address !== null ? resolve(address.port) : reject())
    })
  })

/** A runner process, killed when the scope closes. */
const runner = (config: { url: string; tablePrefix: string; clusterPrefix: string; name: string }) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const child = spawn(process.execPath, [runnerScript, JSON.stringify({ ...config, port: await freePort() })], {
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stderr = ""
      child.stderr!.on("data", (chunk: Buffer) => {
        stderr += chunk.toString()
      })
      await new Promise<void>((resolve, reject) => {
        createInterface({ input: child.stdout! }).on("line", (line) => line === "ready" && resolve())
        child.on("close", () => reject(new Error(`runner ${config.name} exited: ${stderr}`)))
      })
      return child
    }),
    (child: ChildProcess) =>
      Effect.promise(() =>
        child.exitCode !== null || child.signalCode !== null
          ? Promise.resolve()
          : new Promise<void>((resolve) => {
            child.on("close", () => resolve())
            child.kill("SIGKILL")
          })
      )
  )

const heapUsed = () => {
  globalThis.gc?.()
  globalThis.gc?.()
  return process.memoryUsage().heapUsed
}

/**
 * Heap per loaded object: `n` more objects called once through `layer`, after `n` others (so what is paid once,
 * like cluster mode's entity per shard, is paid before measuring).
 */
const heapPerObject = (n: number, layer: Layer.Layer<any, never, never>) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(layer)
    const call = (id: string) => Tally.client(id).increment().pipe(Effect.provide(context))
    yield* Effect.forEach(objectIds("warm", n), call, { concurrency: 64, discard: true })
    const before = heapUsed()
    yield* Effect.forEach(objectIds("heap", n), call, { concurrency: 64, discard: true })
    return (heapUsed() - before) / n
  }))

export const run = (config: Config): Effect.Effect<ReadonlyArray<Row>, unknown> =>
  Effect.scoped(Effect.gen(function*() {
    const url = yield* postgresDatabase
    const ids = objectIds("tally", config.durableObjects)
    const name = Layer.succeed(RunnerName, "bench")
    const load = <E, R>(call: (id: string) => Effect.Effect<unknown, E, R>) =>
      Effect.gen(function*() {
        yield* Effect.forEach(ids, call, { concurrency: config.concurrency, discard: true })
        return yield* closedLoop({
          concurrency: config.concurrency,
          warmupMs: config.warmupMs,
          durationMs: config.durationMs,
          call: () => call(pick(ids))
        })
      })

    // One process: the same object type on the same server.
    const local = yield* load((id) => Tally.client(id).increment()).pipe(
      Effect.provide(Tally.layer.pipe(
        Layer.provide(name),
        Layer.provide(SqlStorage.layer({ tablePrefix: "local_" })),
        Layer.provide(pgLayer(url))
      ))
    )
    const localRow = loadRow(
      { id: "clusterMode.local", scenario, label: "durable calls in one process", kind: "baseline" },
      local,
      "calls/s"
    )

    // Three runner processes; this process calls through the cluster as a client-only node.
    const base = { url, tablePrefix: "c_", clusterPrefix: "c_cluster" }
    const runners = yield* Effect.forEach(
      ["r1", "r2", "r3"],
      (name) => runner({ ...base, name }),
      { concurrency: "unbounded" }
    )
    const clusterClient = DurableObjectCluster.layerClient(Tally).pipe(
      Layer.provide(clusterLayer({ prefix: base.clusterPrefix })),
      Layer.provide(pgLayer(url, 4))
    )
    const rows = yield* Effect.scoped(Effect.gen(function*() {
      const context = yield* Layer.build(clusterClient)
      const routed = yield* load((id) => Tally.client(id).increment().pipe(Effect.provide(context)))
      const routedRow = loadRow(
        { id: "clusterMode.routed", scenario, label: "durable calls through the cluster, 3 runners", kind: "measure" },
        routed,
        "calls/s",
        { ratios: [ratioTo(routed.throughput, localRow, "one process")] }
      )

      // kill -9 the runner serving the first object; time until its objects answer again.
      const owners = new Map<string, string>()
      for (const id of ids.slice(0, 60)) {
        owners.set(id, (yield* Tally.client(id).get().pipe(Effect.provide(context))).runner)
      }
      const victimName = owners.get(ids[0]!)!
      const victimIds = Array.from(owners).filter(([, runner]) => runner === victimName).map(([id]) => id)
      runners[Number(victimName.slice(1)) - 1]!.kill("SIGKILL")
      const killedAt = performance.now()
      const rehome = yield* Effect.forEach(
        victimIds,
        (id) =>
          Effect.map(Tally.client(id).increment().pipe(Effect.provide(context)), () => performance.now() - killedAt),
        { concurrency: "unbounded" }
      )
      const rehomeRow = row({
        id: "clusterMode.rehome",
        scenario,
        label: `re-home after kill -9 (lock expiry ${fastProfile.shardLockExpiration})`,
        kind: "measure",
        value: Math.max(...rehome),
        unit: "ms",
        details: { objects: rehome.length, minMs: Math.round(Math.min(...rehome)) }
      })
      return [routedRow, rehomeRow]
    }))

    // Heap per resident object: effect/cluster's in-memory runner with the cluster layer, against one process.
    const n = config.memoryObjects
    const plain = yield* heapPerObject(n, Tally.layer.pipe(Layer.provide([name, Storage.layerMemory])))
    const clustered = yield* heapPerObject(
      n,
      DurableObjectCluster.layer(Tally).pipe(
        Layer.provide([name, Storage.layerMemory]),
        Layer.provideMerge(TestRunner.layer)
      )
    ).pipe(Effect.provideService(References.MinimumLogLevel, "Error"))
    const heapRow = row({
      id: "clusterMode.heap",
      scenario,
      label: `heap per resident object in cluster mode (${n.toLocaleString("en-US")} objects)`,
      kind: "measure",
      value: clustered,
      unit: "B/object",
      targets: [{ label: "< 2 KiB", pass: clustered < 2048 }],
      details: { oneProcessBytes: Math.round(plain) }
    })
    return [localRow, ...rows, heapRow]
  }))
