/**
 * What the crash workers share: their protocol's output, and the `Counter` runtime the counter workers run.
 */
import { SqlStorage } from "@durable-object/core"
import { Layer } from "effect"
import { writeSync } from "node:fs"
import { clientFor, type DatabaseSpec, optionsFor } from "../databases.ts"
import { Counter, makeJournal } from "../fixtures.ts"

/**
 * Writes one protocol line to stdout synchronously, so it is in the pipe before the next step runs and
 * survives a SIGKILL right after.
 */
export const line = (text: string): void => {
  writeSync(1, `${text}\n`)
}

/** The `Counter` runtime on the database of `spec`, with connections of its own. */
export const counterRuntime = (spec: DatabaseSpec) =>
  Counter.layer.pipe(
    Layer.provide(makeJournal()),
    Layer.provide(SqlStorage.layer(optionsFor(spec))),
    Layer.provide(clientFor(spec, { maxConnections: 8 }))
  )
