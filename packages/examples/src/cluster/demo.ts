/**
 * `npm run demo -- --cluster`: the cluster demo. Starts three runner processes (`runner.ts`) on PostgreSQL
 * (`DATABASE_URL`, or a throwaway server started with `scripts/postgres.sh`), then, as a client-only node, visits
 * six objects twice a second and prints which runner served each. After a few seconds it kills one runner with
 * `kill -9`: its objects stall until its shard locks expire, then answer from the survivors; later a fourth runner
 * joins and shards rebalance onto it. At the end it checks every object's stored count against the visits it
 * acknowledged.
 *
 * Environment: `DATABASE_URL` (PostgreSQL; default: a throwaway server), `DEMO_CLUSTER_SECONDS` (default 24).
 */
import { DurableObjectCluster } from "@durable-object/core"
import { PgClient } from "@effect/sql-pg"
import { Clock, Config, Console, Duration, Effect, Layer, Option, Redacted } from "effect"
import { type ChildProcess, execFileSync } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Visits } from "./objects.ts"
import { startRunner } from "./runners.ts"
import { clusterLayer, fastProfile } from "./transport.ts"

const root = join(import.meta.dirname, "..", "..", "..", "..")
const objects = ["alice", "bob", "carol", "dave", "erin", "frank"]

/** A throwaway PostgreSQL for the life of the scope, unless `DATABASE_URL` names one. */
const database = Effect.gen(function*() {
  const given = yield* Config.option(Config.String("DATABASE_URL"))
  if (Option.isSome(given) && given.value !== "") return given.value
  const dir = mkdtempSync(join(tmpdir(), "durable-object-cluster-demo-"))
  const postgres = join(root, "scripts", "postgres.sh")
  yield* Console.log("starting a throwaway PostgreSQL (scripts/postgres.sh; set DATABASE_URL to use yours)…")
  return yield* Effect.acquireRelease(
    Effect.sync(() =>
      execFileSync("bash", [postgres, "start", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim()
        .split("\n").at(-1)!
    ),
    () => Effect.sync(() => execFileSync("bash", [postgres, "stop", dir], { stdio: "ignore" }))
  )
})

/** A runner, announced once it serves. */
const announcedRunner = (url: string, name: string) =>
  Effect.tap(
    startRunner(url, name),
    ({ child, port }) => Console.log(`+ ${name} serves on 127.0.0.1:${port} (pid ${child.pid})`)
  )

export const clusterDemo = Effect.scoped(Effect.gen(function*() {
  const seconds = yield* Config.Int("DEMO_CLUSTER_SECONDS").pipe(Config.withDefault(24))
  const url = yield* database
  const runners = new Map<string, ChildProcess>()
  for (const name of ["r1", "r2", "r3"]) runners.set(name, (yield* announcedRunner(url, name)).child)

  const client = yield* Layer.build(
    DurableObjectCluster.layerClient(Visits).pipe(
      Layer.provide(clusterLayer({ prefix: "demo_cluster" })),
      Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 4 }))
    )
  )
  // Counts left by earlier runs on the same database are where this run starts from.
  const initial = yield* Effect.forEach(objects, (id) => Visits.client(id).get()).pipe(Effect.provide(client))
  const acknowledged = new Map<string, number>()
  const start = yield* Clock.currentTimeMillis
  const since = Effect.map(Clock.currentTimeMillis, (now) => now - start)
  let killed = false
  let joined = false
  yield* Console.log(`\nvisiting ${objects.join(", ")} twice a second; each cell is runner #count (call ms)\n`)
  while ((yield* since) < seconds * 1000) {
    const round = yield* Effect.forEach(objects, (id) =>
      Effect.gen(function*() {
        const [took, reply] = yield* Effect.timed(Visits.client(id).visit())
        acknowledged.set(id, (acknowledged.get(id) ?? 0) + 1)
        return `${id} ${reply.runner} #${reply.count} (${Math.round(Duration.toMillis(took))})`
      }), { concurrency: "unbounded" }).pipe(Effect.provide(client))
    const elapsed = yield* since
    yield* Console.log(`${(elapsed / 1000).toFixed(1).padStart(5)}s  ${round.join(" | ")}`)
    if (!killed && elapsed > seconds * 250) {
      killed = true
      runners.get("r2")!.kill("SIGKILL")
      yield* Console.log(
        `\n✗ kill -9 r2: its objects stall until its shard locks expire (${fastProfile.shardLockExpiration}), then move\n`
      )
    }
    if (!joined && elapsed > seconds * 600) {
      joined = true
      runners.set("r4", (yield* announcedRunner(url, "r4")).child)
      yield* Console.log("  shards rebalance onto r4: the objects it takes over stop on their old runner first\n")
    }
    yield* Effect.sleep("500 millis")
  }
  const stored = yield* Effect.forEach(objects, (id) => Visits.client(id).get()).pipe(Effect.provide(client))
  yield* Console.log("\nobject   acknowledged visits   stored count (this run)")
  let lost = 0
  for (const [i, id] of objects.entries()) {
    const acked = acknowledged.get(id) ?? 0
    const added = stored[i]! - initial[i]!
    if (added !== acked) lost++
    yield* Console.log(`${id.padEnd(8)} ${String(acked).padStart(20)}   ${String(added).padStart(23)}`)
  }
  yield* Console.log(
    lost === 0
      ? "\nevery acknowledged visit is stored exactly once, across a kill -9 and a rebalance"
      : `\n${lost} objects disagree with their acknowledged visits`
  )
  if (lost > 0) return yield* Effect.die(new Error("the cluster demo lost or doubled a visit"))
}))
