/**
 * What users rely on from SQL storage, on every backend (PostgreSQL and SQLite): committed state survives
 * restarts, failures never leave half-written or phantom state, two runtimes sharing a database never lose an
 * update, telemetry reports storage work, and odd data (undecodable rows, odd ids, evolved schemas) is handled.
 */
import { DurableObject, DurableObjectTest, Errors, SqlStorage, Storage, Telemetry } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Metric, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { type Backend, counterRuntime, counterRuntimeOn, sqlBackends, type TestDatabase } from "./backends.ts"
import * as FaultInjection from "./faultInjection.ts"
import { Counter } from "./fixtures.ts"

/** The count an object has committed, read from storage (0 when nothing is stored). */
const storedCount = (id: string) =>
  Effect.flatMap(Storage.Storage, (storage) =>
    Effect.map(
      storage.load(Counter.name, id),
      (stored) => (stored === undefined ? 0 : (JSON.parse(stored.state) as { count: number }).count)
    ))

const loadStored = (id: string) => Effect.flatMap(Storage.Storage, (storage) => storage.load(Counter.name, id))

/** The raw row of an object, read with plain SQL (to check that nothing touched it). */
const rawRow = (db: TestDatabase, objectType: string, id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = yield* SqlStorage.tables(db.options)
    const state = sql.onDialectOrElse({ pg: () => sql.literal("state::text"), orElse: () => sql.literal("state") })
    const rows = yield* sql<
      { state: string; version: number | string; created_at: number | string; updated_at: number | string }
    >`
      SELECT ${state} AS state, version, created_at, updated_at FROM ${sql(t.objects)}
      WHERE object_type = ${objectType} AND object_id = ${id}`
    return rows.map((row) => ({
      state: row.state,
      version: Number(row.version),
      createdAt: Number(row.created_at),
      updatedAt: Number(row.updated_at)
    }))
  })

/** Writes a row directly with SQL, bypassing the runtime (as a bad deploy or a manual edit would). */
const writeRawRow = (db: TestDatabase, objectType: string, id: string, state: string, version: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = yield* SqlStorage.tables(db.options)
    const json = sql.onDialectOrElse({ pg: () => sql`${state}::jsonb`, orElse: () => sql`${state}` })
    yield* sql`INSERT INTO ${sql(t.objects)} (object_type, object_id, state, version, created_at, updated_at)
      VALUES (${objectType}, ${id}, ${json}, ${version}, 1, 1)`
  })

/** Whether an error, or anything in its chain of causes, mentions `text` (drivers differ in where they put it). */
const mentions = (error: unknown, text: string, depth = 0): boolean => {
  if (depth > 8 || error === null || error === undefined) return false
  if (typeof error === "string") return error.includes(text)
  if (typeof error !== "object") return false
  const e = error as { readonly message?: unknown; readonly cause?: unknown; readonly reason?: unknown }
  return mentions(e.message, text, depth + 1) || mentions(e.reason, text, depth + 1) ||
    mentions(e.cause, text, depth + 1)
}

/** How many of these calls were acknowledged. */
const acksOf = (exits: ReadonlyArray<Exit.Exit<number, unknown>>) => exits.filter(Exit.isSuccess).length

/** How many storage operations the duration histogram recorded with these attributes. */
const recorded = (operation: string, outcome: string) =>
  Effect.map(
    Metric.value(Metric.withAttributes(Telemetry.storageDuration, { operation, outcome })),
    (state) => state.count
  )

/** The typed error an exit failed with (a defect fails the test). */
const failure = <E>(exit: Exit.Exit<unknown, E>): E => {
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const reason = exit.cause.reasons.find((r) => r._tag === "Fail")
  if (reason === undefined) throw new Error(`expected a typed failure, got ${String(exit.cause)}`)
  return reason.error
}

const failureTag = (exit: Exit.Exit<unknown, unknown>): string | undefined => {
  if (Exit.isSuccess(exit)) return undefined
  const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")
  return error === undefined ? "defect" : (error.error as { readonly _tag: string })._tag
}

const suite = (backend: Backend) =>
  describe(`SQL storage on ${backend.name}`, () => {
    it.live("committed state survives tearing the runtime and its connections down and starting a new one", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          assert.strictEqual(yield* Counter.client("kept").increment({ amount: 2 }), 2)
          assert.strictEqual(yield* Counter.client("kept").increment({ amount: 3 }), 5)
          assert.strictEqual(yield* Counter.client("deleted").increment({ amount: 7 }), 7)
          yield* DurableObject.delete(Counter, "deleted")
        }).pipe(Effect.provide(counterRuntime(db)))

        // The first runtime, its storage and its SqlClient are released: everything below comes from the database.
        yield* Effect.gen(function*() {
          assert.strictEqual(yield* Counter.client("kept").get(), 5)
          assert.strictEqual(yield* Counter.client("deleted").get(), 0)
          assert.strictEqual(yield* Counter.client("never-written").get(), 0)
          assert.strictEqual((yield* loadStored("kept"))?.version, 2)
          assert.isUndefined(yield* loadStored("deleted"))
          assert.strictEqual(yield* Counter.client("kept").increment({ amount: 1 }), 6)
        }).pipe(Effect.provide(counterRuntime(db)))

        yield* Effect.gen(function*() {
          assert.strictEqual(yield* Counter.client("kept").get(), 6)
          assert.strictEqual((yield* loadStored("kept"))?.version, 3)
        }).pipe(Effect.provide(counterRuntime(db)))
      }))

    it.live("a statement that fails makes the call fail with StorageError, the object reverts to its last committed state, and the next call works", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const faults = yield* FaultInjection.FaultInjector
          const counter = Counter.client("faulty")
          for (let i = 1; i <= 3; i++) assert.strictEqual(yield* counter.increment({ amount: 1 }), i)

          const report = yield* faults.run(counter.increment({ amount: 10 }), { at: 1, objectId: "faulty" })
          assert.isTrue(report.fired)
          assert.isTrue(Exit.isFailure(report.exit))
          const error = failure(report.exit)
          assert.strictEqual(error._tag, "StorageError")
          assert.instanceOf(error, Errors.StorageError)
          assert.isTrue(mentions(error, FaultInjection.faultTable), "the database's own error is the cause")

          const stored = yield* loadStored("faulty")
          assert.strictEqual(stored?.version, 3)
          assert.strictEqual(yield* storedCount("faulty"), 3)
          assert.strictEqual(yield* counter.get(), 3)
          assert.strictEqual(yield* counter.increment({ amount: 1 }), 4)
          assert.strictEqual(yield* storedCount("faulty"), 4)
        }).pipe(Effect.provide(counterRuntimeOn(db, FaultInjection.layer(db.client()))))
      }))

    it.live("whichever statement of a call fails, storage keeps the last committed value and the next call sees exactly what is stored", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const faults = yield* FaultInjection.FaultInjector
          yield* Counter.client("existing").increment({ amount: 5 })
          yield* Counter.client("doomed").increment({ amount: 9 })

          type Case = {
            readonly name: string
            readonly id: (attempt: number) => string
            readonly run: (id: string) => Effect.Effect<unknown, unknown, DurableObject.Runtime<"Counter">>
            /** The count the operation leaves when it succeeds, given the count before. */
            readonly after: (before: number) => number
          }
          const cases: ReadonlyArray<Case> = [
            {
              name: "first increment of a new object",
              id: (attempt) => `new-${attempt}`,
              run: (id) => Counter.client(id).increment({ amount: 1 }),
              after: (before) => before + 1
            },
            {
              name: "increment of a stored object (activation and commit)",
              id: () => "existing",
              run: (id) => Counter.client(id).increment({ amount: 1 }),
              after: (before) => before + 1
            },
            {
              name: "delete of a stored object (one transaction)",
              id: () => "doomed",
              run: (id) => DurableObject.delete(Counter, id),
              after: () => 0
            }
          ]

          const exercised: Array<string> = []
          for (const kind of ["before", "after"] as const) {
            for (const c of cases) {
              let completed = false
              let attempts = 0
              for (let attempt = 1; attempt <= 20 && !completed; attempt++) {
                attempts = attempt
                const id = c.id(attempt)
                // Unload the object so the operation runs its whole statement sequence (load included).
                yield* DurableObject.stop(Counter, id)
                const before = yield* loadStored(id)
                const beforeCount = yield* storedCount(id)
                const { exit, fired, statements } = yield* faults.run(c.run(id), { at: attempt, kind, objectId: id })
                const where = `${c.name}, fault ${kind} statement ${attempt} of [${statements.join(" | ")}]`
                if (!fired) {
                  // The operation ran fewer statements than `attempt`: it completed untouched.
                  assert.isTrue(Exit.isSuccess(exit), where)
                  assert.strictEqual(yield* storedCount(id), c.after(beforeCount), where)
                  completed = true
                  continue
                }
                assert.strictEqual(failureTag(exit), "StorageError", where)
                const stored = yield* loadStored(id)
                if (kind === "before") {
                  assert.deepStrictEqual(stored, before, where)
                } else {
                  // The statement ran and its result was lost: either it was applied (a lone write) or rolled
                  // back with its transaction. Both are fine, as long as nothing in between exists.
                  const count = yield* storedCount(id)
                  assert.include([beforeCount, c.after(beforeCount)], count, where)
                  if (count === beforeCount) assert.deepStrictEqual(stored, before, where)
                }
                // The runtime dropped its copy: the next call sees exactly what is stored, and works.
                assert.strictEqual(yield* Counter.client(id).get(), yield* storedCount(id), where)
                if (c.name.startsWith("delete") && (yield* loadStored(id)) === undefined) {
                  yield* Counter.client(id).increment({ amount: 9 })
                }
              }
              assert.isTrue(completed, `${c.name} (${kind}) never completed within 20 statements`)
              exercised.push(`${c.name} (${kind}): ${attempts - 1} statements failed in turn`)
            }
          }
          console.log(`${backend.name} fault injection:\n  ${exercised.join("\n  ")}`)
          const total = yield* Counter.client("existing").increment({ amount: 1 })
          assert.strictEqual(total, yield* storedCount("existing"))
        }).pipe(Effect.provide(counterRuntimeOn(db, FaultInjection.layer(db.client()))))
      }))

    it.live("a commit whose acknowledgement is lost fails with StorageError, and the next call sees the committed value instead of overwriting it", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const faults = yield* FaultInjection.FaultInjector
          const counter = Counter.client("lost-ack")
          assert.strictEqual(yield* counter.increment({ amount: 1 }), 1)
          const report = yield* faults.run(counter.increment({ amount: 5 }), {
            at: 1,
            kind: "after",
            objectId: "lost-ack"
          })
          assert.isTrue(report.fired)
          assert.strictEqual(failureTag(report.exit), "StorageError")
          // The UPDATE did run: storage has 6 at version 2.
          assert.strictEqual(yield* storedCount("lost-ack"), 6)
          assert.strictEqual((yield* loadStored("lost-ack"))?.version, 2)
          assert.strictEqual(yield* counter.get(), 6)
          assert.strictEqual(yield* counter.increment({ amount: 1 }), 7)
          assert.strictEqual((yield* loadStored("lost-ack"))?.version, 3)
        }).pipe(Effect.provide(counterRuntimeOn(db, FaultInjection.layer(db.client()))))
      }))

    it.live("two runtimes incrementing one object on one database never lose or double-count an acknowledged increment", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        // Built one after the other (both migrate at start), each with its own SqlClient and connections.
        const first = yield* Layer.build(counterRuntime(db))
        const second = yield* Layer.build(counterRuntime(db))
        assert.notStrictEqual(Context.get(first, Counter.runtime), Context.get(second, Counter.runtime))

        const perRuntime = 150
        const hammer = (context: Context.Context<DurableObject.Runtime<"Counter">>) =>
          Effect.forEach(
            Array.from({ length: perRuntime }, (_, i) => i),
            () =>
              // Yield first, so the two runtimes interleave even when the driver never suspends.
              Effect.yieldNow.pipe(
                Effect.andThen(Counter.client("contended").increment({ amount: 1 })),
                Effect.provideContext(context),
                Effect.exit
              ),
            { concurrency: 4 }
          )
        const [a, b] = yield* Effect.all([hammer(first), hammer(second)], { concurrency: 2 })
        const exits = [...a, ...b]
        const acknowledged: Array<number> = exits.flatMap((exit) => (Exit.isSuccess(exit) ? [exit.value] : []))
        const tags = exits.flatMap((exit) => (Exit.isSuccess(exit) ? [] : [failureTag(exit)]))
        const conflicts = tags.filter((tag) => tag === "VersionConflict").length
        console.log(
          `${backend.name}: two runtimes, ${exits.length} increments: ${acknowledged.length} acknowledged ` +
            `(${acksOf(a)} + ${acksOf(b)}), ${conflicts} VersionConflict`
        )
        assert.deepStrictEqual(tags.filter((tag) => tag !== "VersionConflict"), [], "only VersionConflict may fail")
        assert.isAbove(conflicts, 0, "the runtimes did contend")
        // Fencing promises safety, not fairness: under constant contention one runtime may lose every race.
        assert.isAbove(acknowledged.length, 0)
        // Once the contention is over, both runtimes work again: a stale one conflicts once, reloads, and succeeds.
        const increment = Counter.client("contended").increment({ amount: 1 }).pipe(
          Effect.retry({ times: 1, while: (error) => error._tag === "VersionConflict" })
        )
        acknowledged.push(yield* increment.pipe(Effect.provideContext(first)))
        acknowledged.push(yield* increment.pipe(Effect.provideContext(second)))

        // Every acknowledged increment returned a distinct count: none applied twice, none built on a lost one.
        assert.deepStrictEqual(
          acknowledged.toSorted((x, y) => x - y),
          Array.from({ length: acknowledged.length }, (_, i) => i + 1)
        )
        const final = yield* Effect.gen(function*() {
          const stored = yield* loadStored("contended")
          return { count: yield* storedCount("contended"), version: stored?.version }
        }).pipe(Effect.provide(counterRuntime(db)))
        assert.strictEqual(final.count, acknowledged.length)
        // Each commit carries at least one increment (a runtime may group queued ones into one write).
        assert.isAtMost(final.version ?? 0, acknowledged.length)
      }))

    it.live("a call made inside the caller's own SQL transaction never commits in it: the caller's rollback keeps every acknowledged write", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const counter = Counter.client("in-tx")
          assert.strictEqual(yield* counter.increment({ amount: 1 }), 1)
          // A call on the active object, and one that activates another object, both from inside the transaction.
          const replies = yield* sql.withTransaction(
            Effect.all([
              Effect.exit(counter.increment({ amount: 10 })),
              Effect.exit(Counter.client("cold-in-tx").increment({ amount: 5 }))
            ])
          ).pipe(
            Effect.andThen((replies) => Effect.fail({ _tag: "Rollback", replies } as const)),
            Effect.catchTag("Rollback", (rollback) => Effect.succeed(rollback.replies))
          )
          if (backend.name === "PostgreSQL") {
            // Committed on the runtime's own connection: acknowledged, and still there after the rollback.
            assert.deepStrictEqual(replies.map((exit) => Exit.isSuccess(exit) ? exit.value : failureTag(exit)), [11, 5])
            assert.strictEqual(yield* storedCount("in-tx"), 11)
            assert.strictEqual((yield* loadStored("in-tx"))?.version, 2)
            assert.strictEqual(yield* storedCount("cold-in-tx"), 5)
            assert.strictEqual(yield* counter.increment({ amount: 1 }), 12)
          } else {
            // SQLite has one writer, held by the caller's transaction until the call returns: the call is refused
            // at once (waiting would deadlock), and nothing is written.
            assert.deepStrictEqual(replies.map(failureTag), ["StorageError", "StorageError"])
            assert.strictEqual(yield* storedCount("in-tx"), 1)
            assert.isUndefined(yield* loadStored("cold-in-tx"))
            assert.strictEqual(yield* counter.increment({ amount: 1 }), 2)
          }
          assert.strictEqual(yield* counter.get(), yield* storedCount("in-tx"))
        }).pipe(Effect.provide(counterRuntime(db)))
      }))

    it.live("100 calls from inside callers' transactions, while other objects commit, all finish with state and version consistent", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const ids = Array.from({ length: 100 }, (_, i) => i)
          const inTransactions = Effect.forEach(
            ids,
            (i) =>
              sql.withTransaction(Effect.exit(Counter.client(`tx-${i}`).increment({ amount: 1 }))).pipe(
                Effect.tap(() => Effect.fail("rollback")),
                Effect.flip,
                Effect.as(undefined),
                Effect.orElseSucceed(() => undefined)
              ),
            // Each transaction holds one pooled connection while its call loads and commits on another, so a pool
            // must have more connections than callers in transactions at once: the test pool has 4, one of them
            // held by LISTEN for alarms.
            { concurrency: 2 }
          )
          const others = Effect.forEach(ids, (i) => Counter.client(`other-${i}`).increment({ amount: 1 }), {
            concurrency: "unbounded"
          })
          const finished = yield* Effect.all([inTransactions, others], { concurrency: 2 }).pipe(
            Effect.timeoutOption("30 seconds")
          )
          assert.isTrue(finished._tag === "Some", "every call finished")
          for (const i of ids) {
            const stored = yield* loadStored(`tx-${i}`)
            const count = yield* Counter.client(`tx-${i}`).get()
            // Acknowledged (PostgreSQL) means stored at version 1; refused (SQLite) means nothing stored.
            assert.strictEqual(count, backend.name === "PostgreSQL" ? 1 : 0)
            assert.strictEqual(stored?.version, backend.name === "PostgreSQL" ? 1 : undefined)
            assert.strictEqual(yield* storedCount(`other-${i}`), 1)
          }
        }).pipe(Effect.provide(counterRuntime(db)))
      }))

    it.live("storage spans carry the object type and id, and the storage duration histogram records each operation", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const { layer: tracer, spans } = DurableObjectTest.spanRecorder()
        const other = yield* Layer.build(counterRuntime(db))
        yield* Effect.gen(function*() {
          yield* Counter.client("traced").increment({ amount: 1 })
          yield* Counter.client("traced").increment({ amount: 1 })
          // Another runtime moves the object on: our next commit conflicts.
          yield* Counter.client("traced").increment({ amount: 1 }).pipe(Effect.provideContext(other))
          const conflicted = yield* Effect.exit(Counter.client("traced").increment({ amount: 1 }))
          assert.strictEqual(failureTag(conflicted), "VersionConflict")
          yield* DurableObject.delete(Counter, "traced")

          for (const operation of ["load", "save", "delete"] as const) {
            const named = spans.filter((span) => span.name === Telemetry.spanStorage[operation])
            assert.isAbove(named.length, 0, `no ${operation} span`)
            for (const span of named) {
              assert.strictEqual(span.attributes.get(Telemetry.attributes.objectType), "Counter")
              assert.strictEqual(span.attributes.get(Telemetry.attributes.objectId), "traced")
              assert.strictEqual(span.status._tag, "Ended")
            }
          }
          assert.isAtLeast(yield* recorded("load", "success"), 2)
          assert.isAtLeast(yield* recorded("save", "success"), 2)
          assert.strictEqual(yield* recorded("save", "conflict"), 1)
          assert.strictEqual(yield* recorded("delete", "success"), 1)
          const snapshot = (yield* Metric.snapshot).filter((m) => m.id === "durable_object_storage_duration_ms")
          assert.isAbove(snapshot.length, 0)
        }).pipe(
          Effect.provide(counterRuntime(db)),
          Effect.provide(tracer),
          Effect.provideService(Metric.MetricRegistry, new Map())
        )
      }))

    it.live("a stored state that does not decode fails with StateDecodeError and the row is left untouched", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const bad: Array<readonly [id: string, state: string]> = [
            ["wrong-type", JSON.stringify({ count: "seven", lastIncrementedAt: null })],
            ["missing-field", JSON.stringify({ lastIncrementedAt: null })]
          ]
          // PostgreSQL's jsonb refuses text that is not JSON at all; SQLite's text column takes it.
          if (backend.name === "SQLite") bad.push(["not-json", "{\"count\": 1,"])
          for (const [id, state] of bad) {
            yield* writeRawRow(db, "Counter", id, state, 7)
            const before = yield* rawRow(db, "Counter", id)
            assert.strictEqual(before.length, 1)
            for (const attempt of [Counter.client(id).increment({ amount: 1 }), Counter.client(id).get()]) {
              const error = yield* Effect.flip(attempt)
              assert.strictEqual(error._tag, "StateDecodeError", id)
              if (error._tag === "StateDecodeError") {
                assert.strictEqual(error.objectType, "Counter")
                assert.strictEqual(error.objectId, id)
              }
              assert.strictEqual(yield* DurableObject.status(Counter, id), "stopped")
            }
            assert.deepStrictEqual(yield* rawRow(db, "Counter", id), before)
          }
          // Deleting still works on an undecodable object, and it starts afresh.
          yield* DurableObject.delete(Counter, "wrong-type")
          assert.deepStrictEqual(yield* rawRow(db, "Counter", "wrong-type"), [])
          assert.strictEqual(yield* Counter.client("wrong-type").increment({ amount: 1 }), 1)
        }).pipe(Effect.provide(counterRuntime(db)))
      }))

    it.live("ids with quotes, unicode, whitespace and SQL metacharacters round-trip as distinct objects", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const ids = [
          "it's",
          "\"double quoted\"",
          "back\\slash\\",
          "x'); DROP TABLE durable_objects; --",
          "1 OR 1=1",
          "%",
          "_",
          "a%b",
          "a_b",
          "aXb",
          "A_B",
          "?",
          "$1",
          ":name",
          "@p0",
          "ünïcødé ✓ 🚀 日本語",
          "e\u0301",
          "\u00e9",
          " padded ",
          "new\nline\ttab\r",
          "{\"json\": [1]}",
          "é".repeat(512) // exactly 1024 UTF-8 bytes, the longest id allowed
        ]
        assert.strictEqual(new Set(ids).size, ids.length)
        yield* Effect.forEach(
          ids,
          (id, i) => Counter.client(id).increment({ amount: i + 1 }),
          { concurrency: 8, discard: true }
        ).pipe(Effect.provide(counterRuntime(db)))
        yield* Effect.gen(function*() {
          for (const [i, id] of ids.entries()) {
            assert.strictEqual(yield* Counter.client(id).get(), i + 1, JSON.stringify(id))
            assert.strictEqual(yield* storedCount(id), i + 1, JSON.stringify(id))
          }
          const sql = yield* SqlClient.SqlClient
          const t = yield* SqlStorage.tables(db.options)
          const rows = yield* sql<{ object_id: string }>`SELECT object_id FROM ${sql(t.objects)}
            WHERE object_type = 'Counter'`
          assert.deepStrictEqual(rows.map((row) => row.object_id).toSorted(), ids.toSorted())
        }).pipe(Effect.provide(counterRuntime(db)))
      }))

    it.live("an id over 1 KiB of UTF-8, empty, with NUL or a lone surrogate is refused with InvalidObjectId and nothing is stored", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        yield* Effect.gen(function*() {
          const invalid = ["a".repeat(1025), "é".repeat(513), "🚀".repeat(257), "", "nul\u0000byte", "lone\ud800"]
          for (const id of invalid) {
            const error = yield* Effect.flip(Counter.client(id).increment({ amount: 1 }))
            assert.strictEqual(error._tag, "InvalidObjectId", JSON.stringify(id.slice(0, 20)))
          }
          assert.strictEqual(yield* Counter.client("a".repeat(1024)).increment({ amount: 1 }), 1)
          const sql = yield* SqlClient.SqlClient
          const t = yield* SqlStorage.tables(db.options)
          const rows = yield* sql<{ object_id: string }>`SELECT object_id FROM ${sql(t.objects)}`
          assert.deepStrictEqual(rows.map((row) => row.object_id), ["a".repeat(1024)])
        }).pipe(Effect.provide(counterRuntime(db)))
      }))

    it.live(
      backend.name === "PostgreSQL"
        ? "state strings round-trip, except NUL and lone surrogates, which jsonb refuses: StorageError, nothing written"
        : "state strings round-trip, NUL and lone surrogates included",
      () =>
        Effect.gen(function*() {
          const db = yield* backend.database
          const Note = DurableObject.defineObject({
            name: "Note",
            state: Schema.Struct({ text: Schema.String }),
            initialState: () => ({ text: "" }),
            handlers: {
              write: { payload: Schema.String, handle: (text, ctx) => ctx.state.set({ text }) },
              read: { success: Schema.String, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.text) }
            }
          })
          const runtime = () =>
            Note.layer.pipe(Layer.provideMerge(SqlStorage.layer(db.options)), Layer.provideMerge(db.client()))
          const everywhere = [
            "pair \ud83d\ude80",
            "\\u0000 (escaped, not NUL)",
            "\u0001\u001f\u007f",
            "\u2028\u2029",
            "\"'`"
          ]
          const notOnJsonb = ["nul \u0000 inside", "lone high \ud800", "lone low \udc00"]
          const refused = backend.name === "PostgreSQL" ? notOnJsonb : []
          const values = [...everywhere, ...notOnJsonb]
          yield* Effect.gen(function*() {
            for (const [i, value] of values.entries()) {
              const note = Note.client(`note-${i}`)
              yield* note.write("before")
              const exit = yield* Effect.exit(note.write(value))
              if (refused.includes(value)) {
                assert.strictEqual(failureTag(exit), "StorageError", JSON.stringify(value))
                assert.strictEqual(yield* note.read(), "before")
              } else {
                assert.isTrue(Exit.isSuccess(exit), JSON.stringify(value))
              }
            }
          }).pipe(Effect.provide(runtime()))
          yield* Effect.gen(function*() {
            for (const [i, value] of values.entries()) {
              const expected = refused.includes(value) ? "before" : value
              assert.strictEqual(yield* Note.client(`note-${i}`).read(), expected, JSON.stringify(value))
            }
          }).pipe(Effect.provide(runtime()))
        })
    )

    it.live("a state schema that gains a field with a decoding default reads the rows written before", () =>
      Effect.gen(function*() {
        const db = yield* backend.database
        const V1 = DurableObject.defineObject({
          name: "Profile",
          state: Schema.Struct({ visits: Schema.Number }),
          initialState: () => ({ visits: 0 }),
          handlers: {
            visit: {
              success: Schema.Number,
              handle: (_, ctx) => ctx.state.modify((s) => [s.visits + 1, { visits: s.visits + 1 }])
            }
          }
        })
        const V2 = DurableObject.defineObject({
          name: "Profile",
          state: Schema.Struct({
            visits: Schema.Number,
            theme: Schema.Literals(["light", "dark"]).pipe(
              Schema.withDecodingDefaultKey(Effect.succeed("light" as const))
            )
          }),
          initialState: () => ({ visits: 0, theme: "dark" as const }),
          handlers: {
            read: {
              success: Schema.Struct({ visits: Schema.Number, theme: Schema.String }),
              handle: (_, ctx) => ctx.state.get
            },
            setTheme: {
              payload: Schema.Literals(["light", "dark"]),
              handle: (theme, ctx) => ctx.state.update((s) => ({ ...s, theme }))
            }
          }
        })
        const runtime = <L extends Layer.Layer<any, never, any>>(definitionLayer: L) =>
          definitionLayer.pipe(Layer.provideMerge(SqlStorage.layer(db.options)), Layer.provideMerge(db.client()))

        yield* Effect.gen(function*() {
          yield* V1.client("old").visit()
          yield* V1.client("old").visit()
        }).pipe(Effect.provide(runtime(V1.layer)))

        yield* Effect.gen(function*() {
          assert.deepStrictEqual(yield* V2.client("old").read(), { visits: 2, theme: "light" })
          assert.deepStrictEqual(yield* V2.client("fresh").read(), { visits: 0, theme: "dark" })
          yield* V2.client("old").setTheme("dark")
          const stored = yield* Effect.flatMap(Storage.Storage, (s) => s.load("Profile", "old"))
          assert.deepStrictEqual(JSON.parse(stored!.state), { visits: 2, theme: "dark" })
          assert.strictEqual(stored!.version, 3)
        }).pipe(Effect.provide(runtime(V2.layer)))
      }))
  })

for (const backend of sqlBackends) suite(backend)
