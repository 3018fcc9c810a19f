/**
 * SQLite on a full disk: the database lives on a 2 MiB tmpfs (mounted for the test; as root that works here and
 * in CI), and every increment makes the object's state 512 bytes larger, so the file system fills within
 * seconds under load. Then the tmpfs is grown (remount) and the load goes on.
 *
 * What must hold: while the disk is full, callers get the typed `StorageError` (no defect, no hang); no
 * acknowledged increment is lost (the history checks out against the file, which passes `integrity_check`);
 * once there is space again, increments succeed without a restart.
 *
 * Where mounting is not allowed (not root), the same test caps the database instead with SQLite's
 * `max_page_count` on the runtime's connection (the engine then fails writes with SQLITE_FULL, as on a full
 * disk), and says so in its output (`DURABLE_OBJECT_CHAOS_NO_MOUNT=1` forces that path).
 */
import { DurableObject, SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Schema } from "effect"
import { SqlClient } from "effect/sql"
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { checkAgainstStorage } from "./chaos/check.ts"
import { summarize } from "./chaos/history.ts"
import { describeLoad, firstAckAfter, startLoad } from "./chaos/load.ts"

/** A counter whose state grows by 512 bytes with every increment (same type name and `count` as `Counter`). */
const GrowingCounter = DurableObject.defineObject({
  name: "Counter",
  state: Schema.Struct({ count: Schema.Number, padding: Schema.Array(Schema.String) }),
  initialState: () => ({ count: 0, padding: [] }),
  handlers: {
    increment: {
      success: Schema.Number,
      handle: (_, ctx) =>
        ctx.state.modify((s) => [s.count + 1, {
          count: s.count + 1,
          padding: [...s.padding, Math.random().toString(36).repeat(40).slice(0, 512)]
        }])
    }
  },
  options: { callTimeout: "5 seconds" }
})

const objects = 10
const ids = Array.from({ length: objects }, (_, i) => `obj-${i}`)

/** A 2 MiB tmpfs for the current scope, or undefined when mounting is not allowed here. */
const smallDisk = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = mkdtempSync(join(tmpdir(), "durable-object-full-disk-"))
    try {
      if (process.env.DURABLE_OBJECT_CHAOS_NO_MOUNT === "1") throw new Error("mounting disabled")
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=2m", "tmpfs", dir], { stdio: "pipe" })
      return { dir, mounted: true }
    } catch {
      return { dir, mounted: false }
    }
  }),
  ({ dir, mounted }) =>
    Effect.sync(() => {
      if (mounted) execFileSync("umount", ["-l", dir], { stdio: "ignore" })
      rmSync(dir, { recursive: true, force: true })
    })
)

describe("Chaos: SQLite on a full disk", () => {
  it.live(
    "typed StorageErrors while full, nothing acknowledged lost, recovery when space returns",
    () =>
      Effect.gen(function*() {
        const disk = yield* smallDisk
        const filename = join(disk.dir, "objects.sqlite")
        const spec = { backend: "SQLite" as const, filename }
        const client = () => SqliteClient.layer({ filename, synchronous: "FULL" })
        const db = { spec, options: {}, client }
        const { recoveryMs, stats } = yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(
            GrowingCounter.layer.pipe(Layer.provideMerge(SqlStorage.layer({})), Layer.provideMerge(client()))
          )
          const sql = Context.get(context, SqlClient.SqlClient)
          if (!disk.mounted) {
            // No tmpfs here: cap the database at its current size plus 2 MiB instead.
            const rows = yield* sql<{ page_count: number }>`PRAGMA page_count`
            yield* sql.unsafe(`PRAGMA max_page_count = ${(rows[0]?.page_count ?? 0) + 512}`)
          }
          const load = yield* startLoad(
            (id) => GrowingCounter.client(id).increment().pipe(Effect.provideContext(context)),
            { objects, fibers: 8 }
          )
          // Until the disk is full and the failures keep coming.
          for (let waited = 0; waited < 30_000 && (load.stats.errors.get("StorageError") ?? 0) < 50; waited += 50) {
            yield* Effect.sleep(50)
          }
          // Space returns.
          const releasedAt = performance.now()
          if (disk.mounted) {
            execFileSync("mount", ["-o", "remount,size=256m", disk.dir], { stdio: "pipe" })
          } else {
            yield* sql.unsafe(`PRAGMA max_page_count = 1073741823`)
          }
          let recovered: number | undefined
          for (let waited = 0; waited < 10_000 && recovered === undefined; waited += 20) {
            yield* Effect.sleep(20)
            recovered = firstAckAfter(load.stats, releasedAt)
          }
          yield* Effect.sleep(300)
          yield* load.stop
          return { stats: load.stats, recoveryMs: recovered === undefined ? undefined : recovered - releasedAt }
        }))
        const how = disk.mounted ? "2 MiB tmpfs" : "max_page_count cap (mounting not allowed here)"
        assert.isAtLeast(stats.errors.get("StorageError") ?? 0, 50, `the disk never filled (${how})`)
        assert.deepStrictEqual(stats.untyped, [], "a caller saw a failure that is not a typed error")
        assert.deepStrictEqual(
          [...stats.errors.keys()].filter((tag) => tag !== "StorageError"),
          [],
          "only StorageError while the disk is full"
        )
        assert.isDefined(recoveryMs, "no increment succeeded within 10 s of space returning")
        const result = yield* checkAgainstStorage(db, stats.history, ids, "SQLite full disk")
        console.log(
          `${summarize(`SQLite full disk (${how})`, result)}; ${describeLoad(stats)}; recovered ${
            Math.round(recoveryMs ?? -1)
          } ms after space returned`
        )
      }),
    90_000
  )
})
