/**
 * The crash-safety worker: a plain Node process (Node strips the types) that increments `Counter` objects on
 * a database until it is killed. `CrashSafety.test.ts` SIGKILLs it at random moments.
 *
 * Usage: node counterWorker.ts '<json: { spec, ids, concurrency }>'
 *
 * Protocol on stdout, one line each, written synchronously (`writeSync`, so a line is in the pipe before the
 * next step runs and survives the kill). `<op>` numbers the increments of this process; `<t>` is the instant
 * (`process.hrtime.bigint()`, the machine-wide monotonic clock), taken before the increment is issued and
 * after it returned, so the test can order operations of several processes (see `chaos/history.ts`):
 * - `ready` once the runtime is up (migrations done);
 * - `start <op> <id> <t>` before an increment of `<id>` is issued;
 * - `ack <op> <id> <count> <t>` after it returned `<count>`: an acknowledged increment;
 * - `fail <op> <id> <tag> <t>` after it failed (nothing acknowledged; it may or may not have applied).
 *
 * With `objectPrefix` the objects are `<prefix>obj-<n>` (default `obj-<n>`).
 */
import { Effect } from "effect"
import type { DatabaseSpec } from "../databases.ts"
import { Counter } from "../fixtures.ts"
import { counterRuntime, line } from "./worker.ts"

interface Config {
  readonly spec: DatabaseSpec
  readonly ids: number
  readonly concurrency: number
  readonly objectPrefix?: string
}

const config = JSON.parse(process.argv[2] ?? "") as Config
const runtime = counterRuntime(config.spec)

let ops = 0
const incrementForever = Effect.forever(
  Effect.suspend(() => {
    const op = ops++
    const id = `${config.objectPrefix ?? ""}obj-${Math.floor(Math.random() * config.ids)}`
    line(`start ${op} ${id} ${process.hrtime.bigint()}`)
    return Counter.client(id).increment({ amount: 1 }).pipe(
      Effect.match({
        onSuccess: (count) => line(`ack ${op} ${id} ${count} ${process.hrtime.bigint()}`),
        onFailure: (error) => line(`fail ${op} ${id} ${error._tag} ${process.hrtime.bigint()}`)
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
