/**
 * Hostile input: what a careless or malicious caller, or someone with a SQL prompt, can hand the runtime.
 * Whatever it is, the answer is a typed error (or success), never a defect, and nothing else is disturbed.
 *
 * - names: prototype names (`constructor`, `__proto__`, `toString`, …) and fuzzed strings as handler names
 *   (`callEncoded`, `call`) and alarm names (`scheduleAlarm`, `cancelAlarm`);
 * - payloads: fuzzed JSON values for every handler through `callEncoded`;
 * - ids: fuzzed strings (any Unicode, lone surrogates, NUL, at and past 1 KiB): a typed `InvalidObjectId`, or an
 *   object whose state survives a restart under exactly that id, on both backends;
 * - rows edited by hand: state that is not JSON or not the schema, alarm rows whose payload or schedule is
 *   garbage: typed errors scoped to that object or alarm, and `delete` removes them;
 * - and the storage-edge checks of `chaos/hostileStorage.ts` that hold today (the rest wait for fixes elsewhere).
 *
 * The fuzzing is seeded (printed on failure) so a failure can be replayed.
 */
import { DurableObject, Errors, SqlStorage, Storage } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { type Backend, sqlBackends, type TestDatabase } from "./backends.ts"
import { hostileStorageSuite, outcome, prototypeNames } from "./chaos/hostileStorage.ts"
import { Counter, makeJournal, Reminders } from "./fixtures.ts"

/** A small seeded PRNG (mulberry32). */
const prng = (seed: number) => {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const fuzzString = (random: () => number, maxLength: number) => {
  const length = Math.floor(random() * maxLength)
  let s = ""
  for (let i = 0; i < length; i++) {
    const r = random()
    s += r < 0.5
      ? String.fromCharCode(32 + Math.floor(random() * 95))
      : r < 0.7
      ? String.fromCharCode(Math.floor(random() * 0x10000)) // any BMP unit, lone surrogates included
      : r < 0.8
      ? String.fromCodePoint(0x10000 + Math.floor(random() * 0xfffff))
      : r < 0.85
      ? "\u0000"
      : ["/", "%", "'", "\"", "\\", ";", "--", "{", "}", ".", ":"][Math.floor(random() * 11)]!
  }
  return s
}

const fuzzJson = (random: () => number, depth = 0): unknown => {
  const r = random()
  if (depth > 3 || r < 0.3) {
    const leaf = random()
    return leaf < 0.2
      ? null
      : leaf < 0.4
      ? random() < 0.5
      : leaf < 0.6
      ? [0, -0, 1, -1, 1e308, -1e308, 2 ** 53, 0.1, 999_999_999][Math.floor(random() * 9)]
      : leaf < 0.8
      ? fuzzString(random, 20)
      : Math.floor(random() * 2_000_000) - 1_000_000
  }
  if (r < 0.6) return Array.from({ length: Math.floor(random() * 4) }, () => fuzzJson(random, depth + 1))
  const keys = ["amount", "text", "inMillis", "at", "cron", "millis", ...prototypeNames, fuzzString(random, 8)]
  const object: Record<string, unknown> = {}
  for (let i = 0; i < Math.floor(random() * 4); i++) {
    Object.defineProperty(object, keys[Math.floor(random() * keys.length)]!, {
      value: fuzzJson(random, depth + 1),
      enumerable: true,
      configurable: true,
      writable: true
    })
  }
  return object
}

const typedOnly = (label: string, outcomes: ReadonlyArray<string>) => {
  const untyped = outcomes.filter((o) => o.startsWith("defect") || o.startsWith("untagged"))
  assert.deepStrictEqual(untyped.slice(0, 3), [], `${label}: ${untyped.length} untyped outcomes`)
}

/** Counter and Reminders on a database, with `Storage` and the `SqlClient` exposed. */
const runtimes = (db: TestDatabase) =>
  Layer.mergeAll(Counter.layer, Reminders.layer).pipe(
    Layer.provide(makeJournal()),
    Layer.provideMerge(SqlStorage.layer(db.options)),
    Layer.provideMerge(db.client())
  )

const memoryRuntimes = Layer.mergeAll(Counter.layer, Reminders.layer).pipe(
  Layer.provide(makeJournal()),
  Layer.provideMerge(Storage.layerMemory)
)

describe("Chaos: hostile names", () => {
  it.effect("prototype names are unknown handlers: callEncoded and call fail with UnknownHandler", () =>
    Effect.gen(function*() {
      for (const name of prototypeNames) {
        const encoded = yield* Effect.exit(DurableObject.callEncoded(Counter, "proto", name, {}))
        assert.strictEqual(outcome(encoded), "UnknownHandler", `callEncoded ${name}`)
        const typed = yield* Effect.exit(DurableObject.call(Counter, "proto", name as "get"))
        assert.strictEqual(outcome(typed), "UnknownHandler", `call ${name}`)
      }
      // The object is untouched and still works.
      assert.strictEqual(yield* Counter.client("proto").increment({ amount: 1 }), 1)
    }).pipe(Effect.provide(memoryRuntimes)))

  it.effect("fuzzed handler names: UnknownHandler, or the handler itself when the name is one", () =>
    Effect.gen(function*() {
      const seed = Math.floor(Math.random() * 2 ** 31)
      const random = prng(seed)
      const known = new Set(Object.keys(Counter.handlers))
      for (let i = 0; i < 300; i++) {
        const name = random() < 0.1 ? [...known][Math.floor(random() * known.size)]! : fuzzString(random, 40)
        const exit = yield* Effect.exit(DurableObject.callEncoded(Counter, "fuzz", name, { amount: 1 }))
        const o = outcome(exit)
        if (known.has(name)) assert.notStrictEqual(o, "UnknownHandler", `seed ${seed}: ${JSON.stringify(name)}`)
        else assert.strictEqual(o, "UnknownHandler", `seed ${seed}: ${JSON.stringify(name)}`)
      }
    }).pipe(Effect.provide(memoryRuntimes)))

  it.effect("fuzzed payloads for every handler: success or a typed error, and the object keeps working", () =>
    Effect.gen(function*() {
      const seed = Math.floor(Math.random() * 2 ** 31)
      const random = prng(seed)
      const outcomes: Array<string> = []
      // Not the ones that die or sleep on purpose (their outcomes are their own tests').
      const handlers = Object.keys(Counter.handlers).filter((h) =>
        h !== "incrementThenDie" && h !== "callSelf" && h !== "incrementThenSleep"
      )
      for (let i = 0; i < 400; i++) {
        const handler = handlers[Math.floor(random() * handlers.length)]!
        const payload = fuzzJson(random)
        outcomes.push(outcome(yield* Effect.exit(DurableObject.callEncoded(Counter, "payloads", handler, payload))))
      }
      typedOnly(`seed ${seed}`, outcomes)
      assert.include(outcomes, "InvalidPayload")
      // The state still reads back and still increments.
      const before = yield* Counter.client("payloads").get()
      assert.strictEqual(yield* Counter.client("payloads").increment({ amount: 1 }), before + 1)
    }).pipe(Effect.provide(memoryRuntimes)))
})

/** A proxy trap that throws, for a payload that fails on every kind of inspection. */
const trap = () => {
  throw new Error("proxy")
}

describe("Chaos: hostile values", () => {
  it.effect("values JSON cannot hold, cycles, throwing getters and proxies, deep nesting: typed, never a defect", () =>
    Effect.gen(function*() {
      let deep: unknown = 1
      for (let i = 0; i < 100_000; i++) deep = { amount: deep }
      let deepArray: unknown = 1
      for (let i = 0; i < 100_000; i++) deepArray = [deepArray]
      const cyclic: Record<string, unknown> = { amount: "1" }
      cyclic.self = cyclic
      const throwing = {
        get amount(): number {
          throw new Error("getter")
        }
      }
      const proxy = new Proxy({}, { get: trap, has: trap, ownKeys: trap, getOwnPropertyDescriptor: trap })
      const payloads: ReadonlyArray<readonly [string, unknown]> = [
        ["NaN", { amount: Number.NaN }],
        ["Infinity", { amount: Number.POSITIVE_INFINITY }],
        ["bigint", { amount: 10n }],
        ["symbol", { amount: Symbol("x") }],
        ["function", { amount: () => 1 }],
        ["undefined", undefined],
        ["cyclic", cyclic],
        ["throwing getter", throwing],
        ["proxy", proxy],
        ["100,000 nested objects", deep],
        ["100,000 nested arrays", deepArray]
      ]
      for (const [label, payload] of payloads) {
        const o = outcome(yield* Effect.exit(DurableObject.callEncoded(Counter, "values", "increment", payload)))
        assert.strictEqual(o, "InvalidPayload", label)
      }
      // A 50 MB string where a string is expected is just a string (no size limit on payloads in memory).
      const big = yield* Effect.exit(DurableObject.callEncoded(Counter, "values", "log", "x".repeat(50_000_000)))
      assert.strictEqual(outcome(big), "ok")
      assert.strictEqual(yield* Counter.client("values").increment({ amount: 1 }), 1)
    }).pipe(Effect.provide(memoryRuntimes)))
})

const sqlSuite = (backend: Backend) =>
  describe(`Chaos: hostile input on ${backend.name}`, () => {
    it.live("fuzzed ids: InvalidObjectId, or an object that survives a restart under exactly that id", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const seed = Math.floor(Math.random() * 2 ** 31)
        const random = prng(seed)
        const ids = [
          ...prototypeNames,
          "a".repeat(Errors.maxObjectIdLength),
          "a".repeat(Errors.maxObjectIdLength + 1),
          "€".repeat(341) + "x",
          "€".repeat(342),
          "\uD800",
          "x\u0000y",
          "",
          " ",
          "'; DROP TABLE durable_objects; --",
          ...Array.from({ length: 80 }, () =>
            fuzzString(random, random() < 0.1 ? 600 : 30))
        ]
        const accepted = new Map<string, number>()
        const outcomes: Array<string> = []
        yield* Effect.gen(function*() {
          for (const id of ids) {
            const exit = yield* Effect.exit(Counter.client(id).increment({ amount: 1 }))
            const o = outcome(exit)
            outcomes.push(o)
            if (Exit.isSuccess(exit)) accepted.set(id, (accepted.get(id) ?? 0) + 1)
            else assert.strictEqual(o, "InvalidObjectId", `seed ${seed}: id ${JSON.stringify(id)}: ${o}`)
          }
        }).pipe(Effect.provide(runtimes(db)))
        typedOnly(`seed ${seed}`, outcomes)
        assert.isTrue(accepted.has("a".repeat(Errors.maxObjectIdLength)))
        assert.isTrue(accepted.has("€".repeat(341) + "x"))
        assert.isFalse(accepted.has("a".repeat(Errors.maxObjectIdLength + 1)))
        assert.isFalse(accepted.has("\uD800"))
        // A new runtime (a restart) reads every accepted object back under its exact id.
        yield* Effect.gen(function*() {
          for (const [id, count] of accepted) {
            assert.strictEqual(yield* Counter.client(id).get(), count, `seed ${seed}: id ${JSON.stringify(id)}`)
          }
        }).pipe(Effect.provide(runtimes(db)))
      }), 60_000)

    it.live("prototype alarm names: scheduleAlarm fails with UnknownHandler and writes nothing", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const storage = yield* Storage.Storage
          for (const name of prototypeNames) {
            const id = `alarm-${name}`
            const scheduled = yield* Effect.exit(
              DurableObject.scheduleAlarm(Reminders, id, name as "ping", { in: 1000 })
            )
            assert.strictEqual(outcome(scheduled), "UnknownHandler", `scheduleAlarm ${name}`)
            assert.deepStrictEqual(yield* DurableObject.listAlarms(Reminders, id), [])
            assert.isUndefined(yield* storage.load("Reminders", id), `${name}: a row was written`)
          }
        }).pipe(Effect.provide(runtimes(db)))
      }), 60_000)

    it.live("a state row edited into garbage: StateDecodeError for that object alone, and delete removes it", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const tables = yield* SqlStorage.tables(db.options)
        const garbage = [`not json`, `{"count": "seven"}`, `[]`, `null`, `{"count": 1}`]
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(runtimes(db))
          const sql = Context.get(context, SqlClient.SqlClient)
          const run = <A, E>(effect: Effect.Effect<A, E, any>) =>
            Effect.provideContext(effect, context)
          for (let i = 0; i < garbage.length; i++) {
            yield* run(Counter.client(`edited-${i}`).increment({ amount: 1 }))
            yield* run(Counter.client(`healthy-${i}`).increment({ amount: 1 }))
            yield* run(DurableObject.stop(Counter, `edited-${i}`))
          }
          for (let i = 0; i < garbage.length; i++) {
            // PostgreSQL stores jsonb: text that is not JSON cannot even be written there.
            if (backend.name === "PostgreSQL" && i === 0) {
              continue
            }
            yield* sql`UPDATE ${sql(tables.objects)} SET state = ${garbage[i]!} WHERE object_id = ${`edited-${i}`}`
          }
          for (let i = 0; i < garbage.length; i++) {
            if (backend.name === "PostgreSQL" && i === 0) {
              continue
            }
            const exit = yield* Effect.exit(run(Counter.client(`edited-${i}`).increment({ amount: 1 })))
            assert.strictEqual(outcome(exit), "StateDecodeError", `state ${garbage[i]}`)
            // Its neighbours are untouched.
            assert.strictEqual(yield* run(Counter.client(`healthy-${i}`).increment({ amount: 1 })), 2)
            // delete removes it, and the object starts afresh.
            yield* run(DurableObject.delete(Counter, `edited-${i}`))
            assert.strictEqual(yield* run(Counter.client(`edited-${i}`).increment({ amount: 1 })), 1)
          }
        }))
      }), 60_000)
  })

for (const backend of sqlBackends) {
  sqlSuite(backend)
  hostileStorageSuite(backend)
}
