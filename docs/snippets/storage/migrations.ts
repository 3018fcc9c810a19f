import { SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { Effect, Layer } from "effect"

const options = { tablePrefix: "app_" }
const SqlLive = SqliteClient.layer({ filename: "data/objects.sqlite" })

// The runtimes' storage leaves the schema alone...
export const StorageLive = SqlStorage.layer({ ...options, migrate: false }).pipe(Layer.provide(SqlLive))

// ...and a deploy step applies the pending migrations: the ids it applied, [] when up to date.
export const deploy = SqlStorage.migrate(options).pipe(
  Effect.tap((applied) => Effect.log(`applied ${applied.length} migrations, now at ${SqlStorage.latestMigration}`)),
  Effect.provide(SqlLive)
)

// Reverts the migrations newer than `to`, newest first, in one transaction. `to: 0` (the default) reverts
// everything: it DROPS the tables and their data.
export const dropEverything = SqlStorage.migrateDown({ ...options, to: 0 }).pipe(Effect.provide(SqlLive))
