/**
 * Crash safety: a process incrementing counters is SIGKILLed at random moments, again and again, and a new one
 * carries on against the same database; then the same with two processes at once on one database, each killed
 * on its own. An increment acknowledged to its caller must never be lost, and an increment must never be
 * applied that was not started.
 *
 * The worker (`crash/counterWorker.ts`) reports every increment with machine-wide monotonic timestamps; the
 * whole history goes through the counter-history checker (`chaos/history.ts`): acknowledged counts distinct,
 * real-time order respected, no count from nowhere, final count = acknowledged + indeterminate that applied.
 */
import { describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type Backend, sqlBackends } from "./backends.ts"
import { checkAgainstStorage } from "./chaos/check.ts"
import { HistoryRecorder, summarize } from "./chaos/history.ts"
import { soak, soakTimeout } from "./chaos/soak.ts"
import { type CounterCycle, randomKill, runCounterCycle } from "./chaos/workers.ts"

const cycles = 12 * soak
const objects = 50
const concurrency = 20

const describeCycles = (reports: ReadonlyArray<CounterCycle>) =>
  reports.map((r) => `${r.acks}/${r.inFlight} (${r.killedAfter})`).join(", ")

const crashSuite = (backend: Backend) =>
  describe(`Crash safety on ${backend.name}`, () => {
    it.live(`no acknowledged increment is lost across ${cycles} SIGKILLs of the writing process`, () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const history = new HistoryRecorder()
        const reports: Array<CounterCycle> = []
        for (let cycle = 0; cycle < cycles; cycle++) {
          reports.push(
            yield* Effect.promise(() =>
              runCounterCycle(db.spec, history, { ids: objects, concurrency, policy: randomKill(cycle) })
            )
          )
        }
        const ids = Array.from({ length: objects }, (_, i) =>
          `obj-${i}`)
        const result = yield* checkAgainstStorage(db, history, ids, `${backend.name} crash safety`)
        console.log(
          `${summarize(`${backend.name} crash safety, ${reports.length} SIGKILLs`, result)}; ` +
            `${reports.reduce((n, r) => n + r.fails, 0)} failed; per cycle (acks/in flight, killed after): ${
              describeCycles(reports)
            }`
        )
      }), soakTimeout(90_000))

    it.live(`two processes on one database, each SIGKILLed on its own, ${cycles / 2} times`, () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const history = new HistoryRecorder()
        const reports: Array<CounterCycle> = []
        for (let cycle = 0; cycle < cycles / 2; cycle++) {
          // Both work on the same objects, so each object's history interleaves two processes.
          const pair = yield* Effect.promise(() =>
            Promise.all([0, 1].map((w) =>
              runCounterCycle(db.spec, history, {
                ids: objects / 5,
                concurrency: concurrency / 2,
                policy: randomKill(cycle + w)
              })
            ))
          )
          reports.push(...pair)
        }
        const ids = Array.from({ length: objects / 5 }, (_, i) =>
          `obj-${i}`)
        const result = yield* checkAgainstStorage(db, history, ids, `${backend.name} two processes`)
        console.log(
          `${summarize(`${backend.name} two processes, ${reports.length} SIGKILLs`, result)}; ` +
            `failures by tag: ${
              JSON.stringify(
                history.operations.reduce<Record<string, number>>((m, op) => {
                  if (op.indeterminate !== undefined) {
                    m[op.indeterminate] = (m[op.indeterminate] ?? 0) + 1
                  }
                  return m
                }, {})
              )
            }; per cycle: ${describeCycles(reports)}`
        )
      }), soakTimeout(90_000))
  })

for (const backend of sqlBackends) crashSuite(backend)
