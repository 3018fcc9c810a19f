/**
 * Crash safety: a process incrementing counters is SIGKILLed at random moments, again and again, and a new one
 * carries on against the same database. An increment acknowledged to its caller must never be lost, and an
 * increment must never be applied that was not started.
 *
 * The worker (`crash/counterWorker.ts`) prints `start <id>` before each increment and `ack <id> <count>`
 * after it returned, synchronously, so every line the test reads happened in that order. At the end, for every
 * object: the stored count is at least the highest acknowledged count and at least the number of acknowledged
 * increments, at most the number of increments started (the surplus are increments that were in flight at a
 * kill and committed before the process died), and every acknowledged count is distinct.
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { spawn } from "node:child_process"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { type Backend, sqlBackends } from "./backends.ts"
import type { DatabaseSpec } from "./databases.ts"

const worker = join(import.meta.dirname, "crash", "counterWorker.ts")
const cycles = 12
const objects = 50
const concurrency = 20

interface Ledger {
  readonly started: Map<string, number>
  readonly acked: Map<string, Array<number>>
}

interface CycleReport {
  readonly acks: number
  readonly starts: number
  readonly fails: number
  /** Increments started but neither acknowledged nor failed when the process was killed. */
  readonly inFlight: number
  readonly killedAfter: string
}

const randomInt = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1))

/** Runs one worker until it is killed: after a random time, or a random number of acknowledgements. */
const runCycle = (spec: DatabaseSpec, ledger: Ledger, cycle: number): Promise<CycleReport> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [worker, JSON.stringify({ spec, ids: objects, concurrency })], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stderr = ""
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    let acks = 0
    let starts = 0
    let fails = 0
    let killed = false
    let killedAfter = ""
    const byTime = cycle % 2 === 0
    const ackBudget = randomInt(1, 400)
    const kill = (why: string) => {
      if (killed) return
      killed = true
      killedAfter = why
      child.kill("SIGKILL")
    }
    const startedAt = Date.now()
    const deadline = setTimeout(() => kill("the 20 s deadline"), 20_000)
    createInterface({ input: child.stdout }).on("line", (line) => {
      const [kind, id, value] = line.split(" ")
      if (kind === "ready") {
        if (byTime) {
          const delay = randomInt(50, 400)
          setTimeout(() => kill(`${delay} ms`), delay)
        }
      } else if (kind === "start" && id !== undefined) {
        starts++
        ledger.started.set(id, (ledger.started.get(id) ?? 0) + 1)
      } else if (kind === "ack" && id !== undefined && value !== undefined) {
        acks++
        const list = ledger.acked.get(id) ?? []
        list.push(Number(value))
        ledger.acked.set(id, list)
        if (!byTime && acks >= ackBudget) kill(`${ackBudget} acks`)
      } else if (kind === "fail") {
        fails++
      }
    })
    child.on("close", (code, signal) => {
      clearTimeout(deadline)
      if (!killed || signal !== "SIGKILL") {
        reject(new Error(`worker exited by itself (code ${code}, signal ${signal}): ${stderr}`))
      } else if (killedAfter === "the 20 s deadline") {
        reject(new Error(`worker never got going within 20 s (${Date.now() - startedAt} ms): ${stderr}`))
      } else {
        resolve({ acks, starts, fails, inFlight: starts - acks - fails, killedAfter })
      }
    })
  })

const crashSuite = (backend: Backend) =>
  describe(`Crash safety on ${backend.name}`, () => {
    it.live(`no acknowledged increment is lost across ${cycles} SIGKILLs of the writing process`, () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const ledger: Ledger = { started: new Map(), acked: new Map() }
        const reports: Array<CycleReport> = []
        for (let cycle = 0; cycle < cycles; cycle++) {
          reports.push(
            yield* Effect.promise(() =>
              runCycle(db.spec, ledger, cycle)
            )
          )
        }

        const stored = yield* Effect.gen(function*() {
          const storage = yield* Storage.Storage
          const result = new Map<string, { readonly count: number; readonly version: number }>()
          for (let i = 0; i < objects; i++) {
            const id = `obj-${i}`
            const row = yield* storage.load("Counter", id)
            if (row !== undefined) {
              result.set(id, { count: (JSON.parse(row.state) as { count: number }).count, version: row.version })
            }
          }
          if (backend.name === "SQLite") {
            // Twelve kills mid-write later, the file is still a sound database.
            const sql = yield* SqlClient.SqlClient
            const check = yield* sql<{ integrity_check: string }>`PRAGMA integrity_check`
            assert.deepStrictEqual(check.map((row) => row.integrity_check), ["ok"])
          }
          return result
        }).pipe(Effect.provide(SqlStorage.layer(db.options).pipe(Layer.provideMerge(db.client()))))

        const total = (f: (r: CycleReport) => number) => reports.reduce((sum, r) => sum + f(r), 0)
        let storedTotal = 0
        for (let i = 0; i < objects; i++) {
          const id = `obj-${i}`
          const acked = ledger.acked.get(id) ?? []
          const started = ledger.started.get(id) ?? 0
          const { count, version } = stored.get(id) ?? { count: 0, version: 0 }
          storedTotal += count
          const where = `${id}: stored ${count} (version ${version}), ${acked.length} acked (max ${
            Math.max(0, ...acked)
          }), ${started} started`
          assert.strictEqual(new Set(acked).size, acked.length, `${where}: an acknowledged count repeats`)
          assert.isAtLeast(count, Math.max(0, ...acked), `${where}: an acknowledged increment was lost`)
          assert.isAtLeast(count, acked.length, `${where}: an acknowledged increment was lost`)
          assert.isAtMost(count, started, `${where}: more increments stored than were ever started`)
          // Each commit carries at least one increment (the runtime may group several into one write).
          assert.isAtMost(version, count, `${where}: more commits than increments`)
          assert.strictEqual(version === 0, count === 0, `${where}: a count without a commit`)
        }
        const acks = total((r) => r.acks)
        console.log(
          `${backend.name} crash safety: ${reports.length} SIGKILLs, ${acks} acknowledged increments (all kept), ` +
            `${total((r) => r.inFlight)} in flight at the kills (${storedTotal - acks} of them committed), ` +
            `${total((r) => r.fails)} failed; per cycle (acks/in flight, killed after): ${
              reports.map((r) => `${r.acks}/${r.inFlight} (${r.killedAfter})`).join(", ")
            }`
        )
        assert.isAbove(acks, 0)
      }), 90_000)
  })

for (const backend of sqlBackends) crashSuite(backend)
