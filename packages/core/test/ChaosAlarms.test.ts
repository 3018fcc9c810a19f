/**
 * SIGKILL cycles with alarms, on both backends, with one worker and with two at once on the same database:
 * each worker process arms objects (16 named alarms each, due within 1.5 s) and fires due alarms until it is
 * SIGKILLed at a random moment (100–1500 ms after it started, so kills land while alarms fire). The next
 * worker takes over the alarms of the killed one once their claims expire. At the end a runtime in the test
 * process fires whatever is left, and every object is checked:
 *
 * - an object whose `arm` was acknowledged has each of its 16 alarms' effects exactly once;
 * - an object whose `arm` was in flight at a kill has all 16 exactly once or none (the arm commits whole);
 * - no alarm row is left (none pending, none failed).
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { type Backend, sqlBackends, type TestDatabase } from "./backends.ts"
import { Alarmed, alarmNames, alarmStorageOptions } from "./chaos/alarmObject.ts"
import { soak, soakTimeout } from "./chaos/soak.ts"
import { randomInt, runWorker } from "./chaos/workers.ts"

interface Ledger {
  readonly started: Set<string>
  readonly armed: Set<string>
}

/** One alarm worker on `ids`, killed 100–1500 ms after it is up. */
const alarmCycle = (db: TestDatabase, ids: ReadonlyArray<string>, ledger: Ledger) =>
  runWorker("alarmWorker.ts", { spec: db.spec, ids }, { afterMs: randomInt(100, 1_500) }, ([kind, id = ""]) => {
    if (kind === "arm") ledger.started.add(id)
    else if (kind === "armed") ledger.armed.add(id)
    return false
  })

/** Fires what is left in the test process until no alarm row remains (at most 30 s); returns rows left. */
const drain = (db: TestDatabase) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(
      Alarmed.layer.pipe(
        Layer.provide(SqlStorage.layer(alarmStorageOptions(db.spec))),
        Layer.provideMerge(db.client())
      )
    )
    const tables = yield* SqlStorage.tables(db.options)
    const sql = Context.get(context, SqlClient.SqlClient)
    const rowsLeft = Effect.map(
      Effect.orDie(sql<{ n: number | string }>`SELECT count(*) AS n FROM ${sql(tables.alarms)}`),
      (rows) => Number(rows[0]?.n ?? 0)
    )
    let left = yield* rowsLeft
    for (let waited = 0; waited < 30_000 && left > 0; waited += 100) {
      yield* Effect.sleep(100)
      left = yield* rowsLeft
    }
    return left
  }))

/** The `fired` list of every object that has a row. */
const firedLists = (db: TestDatabase, ids: Iterable<string>) =>
  Effect.gen(function*() {
    const storage = yield* Storage.Storage
    const result = new Map<string, ReadonlyArray<string>>()
    for (const id of ids) {
      const row = yield* storage.load("Alarmed", id)
      if (row !== undefined) result.set(id, (JSON.parse(row.state) as { fired: ReadonlyArray<string> }).fired)
    }
    return result
  }).pipe(Effect.provide(SqlStorage.layer(db.options).pipe(Layer.provideMerge(db.client()))))

const sorted = alarmNames.toSorted()

const alarmSuite = (backend: Backend) =>
  describe(`Chaos: SIGKILL cycles with alarms on ${backend.name}`, () => {
    for (const workers of [1, 2]) {
      const cycles = (workers === 1 ? 6 : 3) * soak
      it.live(`${workers} worker(s) at once, ${cycles} cycles: every alarm's effect exactly once, no row left`, () =>
        Effect.gen(function*() {
          const db = yield* backend.database
          const ledger: Ledger = { started: new Set(), armed: new Set() }
          const kills: Array<string> = []
          for (let cycle = 0; cycle < cycles; cycle++) {
            const exits = yield* Effect.promise(() =>
              Promise.all(Array.from({ length: workers }, (_, w) =>
                alarmCycle(
                  db,
                  Array.from({ length: 6 }, (_, i) =>
                    `c${cycle}-w${w}-${i}`),
                  ledger
                )))
            )
            kills.push(...exits.map((e) => e.killedAfter))
          }
          const left = yield* drain(db)
          assert.strictEqual(left, 0, "alarm rows left after the drain")
          const fired = yield* firedLists(db, ledger.started)
          let effects = 0
          let inFlightApplied = 0
          for (const id of ledger.started) {
            const list = fired.get(id) ?? []
            effects += list.length
            if (ledger.armed.has(id)) {
              assert.deepStrictEqual(list.toSorted(), sorted, `${id}: armed, but its alarms' effects are ${list}`)
            } else {
              assert.isTrue(
                list.length === 0 || list.toSorted().join() === sorted.join(),
                `${id}: arm in flight at a kill, effects ${list}`
              )
              if (list.length > 0) inFlightApplied++
            }
          }
          assert.isAbove(ledger.armed.size, 0)
          console.log(
            `${backend.name} alarm chaos, ${workers} worker(s): ${kills.length} SIGKILLs (${kills.join(", ")}), ` +
              `${ledger.armed.size} objects armed (${ledger.started.size - ledger.armed.size} arms in flight at a ` +
              `kill, ${inFlightApplied} of them committed), ${effects} alarm effects checked, each exactly once; ` +
              `0 alarm rows left`
          )
        }), soakTimeout(90_000))
    }
  })

for (const backend of sqlBackends) alarmSuite(backend)
