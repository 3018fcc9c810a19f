/**
 * Checking a counter history against what storage holds at the end (see `history.ts`).
 */
import { SqlStorage, Storage } from "@durable-object/core"
import { assert } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import type { TestDatabase } from "../backends.ts"
import { checkCounterHistory, type HistoryRecorder, summarize } from "./history.ts"

/** The stored count and version of every `Counter` among `ids`, and (SQLite) the file's integrity check. */
export const storedCounters = (db: Pick<TestDatabase, "spec" | "options" | "client">, ids: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const storage = yield* Storage.Storage
    const result = new Map<string, { readonly count: number; readonly version: number }>()
    for (const id of ids) {
      const row = yield* storage.load("Counter", id)
      if (row !== undefined) {
        result.set(id, { count: (JSON.parse(row.state) as { count: number }).count, version: row.version })
      }
    }
    if (db.spec.backend === "SQLite") {
      // Kills mid-write later, the file is still a sound database.
      const sql = yield* SqlClient.SqlClient
      const check = yield* sql<{ integrity_check: string }>`PRAGMA integrity_check`
      assert.deepStrictEqual(check.map((row) => row.integrity_check), ["ok"])
    }
    return result
  }).pipe(Effect.provide(SqlStorage.layer(db.options).pipe(Layer.provideMerge(db.client()))))

/** Checks the history against what is stored; returns the checker's summary line. */
export const checkAgainstStorage = (
  db: Pick<TestDatabase, "spec" | "options" | "client">,
  history: HistoryRecorder,
  ids: ReadonlyArray<string>,
  label: string
) =>
  Effect.gen(function*() {
    const stored = yield* storedCounters(db, ids)
    for (const [id, { count, version }] of stored) {
      // Each commit carries at least one increment (the runtime may group several into one write).
      assert.isAtMost(version, count, `${id}: more commits (${version}) than increments (${count})`)
      assert.strictEqual(version === 0, count === 0, `${id}: a count without a commit`)
    }
    const result = checkCounterHistory(
      history.operations,
      new Map([...stored].map(([id, { count }]) => [id, count]))
    )
    if (result.violations.length > 0) {
      const kinds = new Map<string, number>()
      for (const v of result.violations) kinds.set(v.kind, (kinds.get(v.kind) ?? 0) + 1)
      assert.fail(
        `${summarize(label, result)}: ${JSON.stringify(Object.fromEntries(kinds))}; first: ${
          result.violations.slice(0, 5).map((v) => `${v.object}: ${v.kind}: ${v.detail}`).join("; ")
        }`
      )
    }
    assert.isAbove(result.acknowledged, 0)
    return result
  })
