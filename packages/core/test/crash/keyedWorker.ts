/**
 * The keyed crash worker: a plain Node process that makes the increments it is given, each with its own
 * idempotency key, until it is killed or done. `KeyedCrash.test.ts` SIGKILLs it and sends the unacknowledged
 * keys again to the next one.
 *
 * Usage: node keyedWorker.ts '<json: { spec, ops: [[objectId, key], …], concurrency }>'
 *
 * Protocol on stdout, one line each, written synchronously (so a line is in the pipe before the next step runs):
 * `ready`; `ack <key> <count>` after the increment with that key returned `<count>`; `fail <key> <tag>` after
 * it failed; `done` once every op was answered.
 */
import { Effect } from "effect"
import type { DatabaseSpec } from "../databases.ts"
import { Counter } from "../fixtures.ts"
import { counterRuntime, line } from "./worker.ts"

interface Config {
  readonly spec: DatabaseSpec
  readonly ops: ReadonlyArray<readonly [objectId: string, key: string]>
  readonly concurrency: number
}

const config = JSON.parse(process.argv[2] ?? "") as Config
const runtime = counterRuntime(config.spec)

const main = Effect.gen(function*() {
  line("ready")
  yield* Effect.forEach(
    config.ops,
    ([id, key]) =>
      Counter.client(id, { idempotencyKey: key }).increment({ amount: 1 }).pipe(
        Effect.match({
          onSuccess: (count) => line(`ack ${key} ${count}`),
          onFailure: (error) => line(`fail ${key} ${error._tag}`)
        })
      ),
    { concurrency: config.concurrency, discard: true }
  )
  line("done")
}).pipe(Effect.provide(runtime))

Effect.runPromise(main).then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`keyedWorker failed: ${String(error)}\n`)
    process.exit(1)
  }
)
