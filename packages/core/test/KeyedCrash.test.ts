/**
 * Exactly once across crashes: a process making keyed increments is SIGKILLed again and again, and after each
 * kill the caller sends every increment it has no acknowledgement for again, with the same key, to a new
 * process. In the end every object's count equals exactly its number of distinct keys: none applied twice
 * (a retried key whose first attempt committed gets the stored reply), none lost, and the acknowledged counts
 * of each object are exactly 1…n.
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { spawn } from "node:child_process"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { type Backend, sqlBackends } from "./backends.ts"
import type { DatabaseSpec } from "./databases.ts"

const worker = join(import.meta.dirname, "crash", "keyedWorker.ts")
const kills = 8
const objects = 20
const keysPerObject = 60
const concurrency = 20

type Op = readonly [objectId: string, key: string]

interface Attempt {
  readonly acks: Map<string, number>
  readonly fails: number
  readonly done: boolean
}

const total = (counts: Map<string, number>) => Array.from(counts.values()).reduce((a, b) => a + b, 0)

const randomInt = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1))

/** One worker on `ops`: killed after a random time or number of acks when `kill`, else run until `done`. */
const attempt = (spec: DatabaseSpec, ops: ReadonlyArray<Op>, kill: boolean): Promise<Attempt> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [worker, JSON.stringify({ spec, ops, concurrency })], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stderr = ""
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    const acks = new Map<string, number>()
    let fails = 0
    let done = false
    let killed = false
    const stop = () => {
      if (killed) return
      killed = true
      child.kill("SIGKILL")
    }
    const ackBudget = randomInt(1, Math.max(1, Math.floor(ops.length / 2)))
    const deadline = setTimeout(() => {
      stop()
      reject(new Error(`worker took over 30 s: ${stderr}`))
    }, 30_000)
    createInterface({ input: child.stdout }).on("line", (text) => {
      const [kind, key, value] = text.split(" ")
      if (kind === "ready" && kill && Math.random() < 0.5) {
        const delay = randomInt(30, 300)
        setTimeout(stop, delay)
      } else if (kind === "ack" && key !== undefined && value !== undefined) {
        acks.set(key, Number(value))
        if (kill && acks.size >= ackBudget) stop()
      } else if (kind === "fail") {
        fails++
      } else if (kind === "done") {
        done = true
      }
    })
    child.on("close", (code, signal) => {
      clearTimeout(deadline)
      if (killed ? signal !== "SIGKILL" : code !== 0) {
        reject(new Error(`worker ended unexpectedly (code ${code}, signal ${signal}): ${stderr}`))
      } else {
        resolve({ acks, fails, done })
      }
    })
  })

const suite = (backend: Backend) =>
  describe(`Keyed calls across crashes on ${backend.name}`, () => {
    it.live(
      `${kills} SIGKILLs with every unacknowledged call retried under its key: each key applied exactly once`,
      () =>
        Effect.gen(function*() {
          const db = yield* backend.database
          const all: Array<Op> = []
          for (let i = 0; i < objects; i++) {
            for (let k = 0; k < keysPerObject; k++) all.push([`obj-${i}`, `obj-${i}:key-${k}`])
          }
          // Shuffled, so kills land in the middle of every object's history.
          all.sort(() => Math.random() - 0.5)
          const storage = yield* Layer.build(SqlStorage.layer(db.options).pipe(Layer.provideMerge(db.client())))
          const storedCounts = Effect.gen(function*() {
            const store = yield* Storage.Storage
            const counts = new Map<string, number>()
            for (let i = 0; i < objects; i++) {
              const row = yield* store.load("Counter", `obj-${i}`)
              counts.set(`obj-${i}`, row === undefined ? 0 : (JSON.parse(row.state) as { count: number }).count)
            }
            return counts
          }).pipe(Effect.provideContext(storage))

          const acked = new Map<string, number>()
          let pending: ReadonlyArray<Op> = all
          let attempts = 0
          let fails = 0
          // Keys whose increment committed but whose reply never reached the caller (in flight at a kill): their
          // retry must get the stored reply instead of applying again.
          let committedUnacked = 0
          for (let run = 0; pending.length > 0; run++) {
            assert.isBelow(run, kills + 5, "the calls never all got through")
            if (run > 0) committedUnacked += total(yield* storedCounts) - acked.size
            const result = yield* Effect.promise(() => attempt(db.spec, pending, run < kills))
            attempts++
            fails += result.fails
            for (const [key, count] of result.acks) acked.set(key, count)
            pending = pending.filter(([, key]) => !acked.has(key))
          }

          const stored = yield* storedCounts

          for (let i = 0; i < objects; i++) {
            const id = `obj-${i}`
            assert.strictEqual(stored.get(id), keysPerObject, `${id}: every key applied exactly once`)
            const counts = all.filter(([object]) => object === id).map(([, key]) => acked.get(key)!)
            assert.deepStrictEqual(
              counts.toSorted((a, b) => a - b),
              Array.from({ length: keysPerObject }, (_, k) => k + 1),
              `${id}: the acknowledged counts are exactly 1…${keysPerObject}`
            )
          }
          console.log(
            `${backend.name} keyed crash: ${all.length} keys over ${objects} objects, ${attempts} processes ` +
              `(${
                Math.min(attempts, kills)
              } SIGKILLed), ${committedUnacked} retried keys had committed unacknowledged ` +
              `(answered from their stored reply), ${fails} failed attempts retried; every key applied exactly once`
          )
        }),
      120_000
    )
  })

for (const backend of sqlBackends) suite(backend)
