/** Test helpers: throwaway directories for database files. */
import { Effect } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** A fresh directory under the OS temp dir, removed with everything in it when the scope closes. */
export const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "sql-sqlite-node-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

/** The path of a database file in a fresh temp directory (see {@link tempDir}). */
export const tempDatabase = Effect.map(tempDir, (dir) => join(dir, "test.sqlite"))
