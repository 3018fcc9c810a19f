import { SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { Layer } from "effect"
import { TodoList } from "../getting-started/todo.ts"

// effect/sql's SqlClient over node:sqlite; the storage migrates its tables when the layer starts.
export const StorageLive = SqlStorage.layer().pipe(
  Layer.provide(SqliteClient.layer({ filename: "data/objects.sqlite" }))
)

// Every object type of the process on the same storage (one client per file per process).
export const TodoListLive = TodoList.layer.pipe(Layer.provide(StorageLive))
