import { SqlStorage } from "@durable-object/core"
import { PgClient } from "@effect/sql-pg"
import { Config, Layer, Redacted } from "effect"
import { TodoList } from "../getting-started/todo.ts"

export const StorageLive = SqlStorage.layer().pipe(
  Layer.provide(PgClient.layer({ url: Redacted.make("postgres://user:pass@db:5432/app"), maxConnections: 10 }))
)

// or read the URL from the environment:
export const StorageFromEnv = SqlStorage.layer().pipe(
  Layer.provide(PgClient.layerConfig({ url: Config.Redacted("DATABASE_URL") }))
)

export const TodoListLive = TodoList.layer.pipe(Layer.provide(StorageLive))
