/**
 * The alarm chaos worker: a plain Node process that arms `Alarmed` objects (16 named alarms each, due within
 * 1.5 s) and fires whatever alarms are due on the database, until it is killed.
 *
 * Usage: node alarmWorker.ts '<json: { spec, ids: string[] }>'
 *
 * Protocol on stdout (written synchronously, like `counterWorker.ts`): `ready`; `arm <id>` before an object
 * is armed; `armed <id>` once the arm committed; `failed <id> <tag>` when it failed.
 */
import { SqlStorage } from "@durable-object/core"
import { Effect, Layer } from "effect"
import { Alarmed, alarmStorageOptions } from "../chaos/alarmObject.ts"
import { clientFor, type DatabaseSpec } from "../databases.ts"
import { line } from "./worker.ts"

interface Config {
  readonly spec: DatabaseSpec
  readonly ids: ReadonlyArray<string>
}

const config = JSON.parse(process.argv[2] ?? "") as Config

const runtime = Alarmed.layer.pipe(
  Layer.provide(SqlStorage.layer(alarmStorageOptions(config.spec))),
  Layer.provide(clientFor(config.spec, { maxConnections: 8 }))
)

const main = Effect.gen(function*() {
  line("ready")
  yield* Effect.forEach(config.ids, (id) =>
    Effect.suspend(() => {
      line(`arm ${id}`)
      return Alarmed.client(id).arm({ withinMillis: 1_500 }).pipe(
        Effect.match({
          onSuccess: () => line(`armed ${id}`),
          onFailure: (error) => line(`failed ${id} ${error._tag}`)
        })
      )
    }), { concurrency: 4, discard: true })
  // Stay up, firing alarms, until killed.
  yield* Effect.never
}).pipe(Effect.provide(runtime))

Effect.runPromise(main).catch((error: unknown) => {
  process.stderr.write(`alarmWorker failed: ${String(error)}\n`)
  process.exit(1)
})
