/**
 * The crash-safety worker: a plain Node process (Node strips the types) that increments `Counter` objects on
 * a database until it is killed. `CrashSafety.test.ts` SIGKILLs it at random moments.
 *
 * Usage: node counterWorker.ts '<json: { spec, ids, concurrency }>'
 *
 * Protocol on stdout, one line each, written synchronously (`writeSync`, so a line is in the pipe before the
 * next step runs and survives the kill):
 * - `ready` once the runtime is up (migrations done);
 * - `start <id>` before an increment of `<id>` is issued;
 * - `ack <id> <count>` after it returned `<count>`: an acknowledged increment;
 * - `fail <id> <tag>` after it failed (nothing acknowledged).
 */
import { SqlStorage } from "@durable-object/core"
import { Effect, Layer } from "effect"
import { writeSync } from "node:fs"
import { clientFor, type DatabaseSpec, optionsFor } from "../databases.ts"
import { Counter, makeJournal } from "../fixtures.ts"

interface Config {
  readonly spec: DatabaseSpec
  readonly ids: number
  readonly concurrency: number
}

const config = JSON.parse(process.argv[2] ?? "") as Config
const line = (text: string) => {
  writeSync(1, `${text}\n`)
}

const runtime = Counter.layer.pipe(
  Layer.provide(makeJournal()),
  Layer.provide(SqlStorage.layer(optionsFor(config.spec))),
  Layer.provide(clientFor(config.spec, { maxConnections: 8 }))
)

const incrementForever = Effect.forever(
  Effect.suspend(() => {
    const id = `obj-${Math.floor(Math.random() * config.ids)}`
    line(`start ${id}`)
    return Counter.client(id).increment({ amount: 1 }).pipe(
      Effect.match({
        onSuccess: (count) => line(`ack ${id} ${count}`),
        onFailure: (error) => line(`fail ${id} ${error._tag}`)
      })
    )
  })
)

const main = Effect.gen(function*() {
  line("ready")
  yield* Effect.all(Array.from({ length: config.concurrency }, () => incrementForever), {
    concurrency: "unbounded",
    discard: true
  })
}).pipe(Effect.provide(runtime))

Effect.runPromise(main).catch((error: unknown) => {
  process.stderr.write(`counterWorker failed: ${String(error)}\n`)
  process.exit(1)
})
