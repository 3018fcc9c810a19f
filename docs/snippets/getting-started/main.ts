import { SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
import { TodoList } from "./todo.ts"

const program = Effect.gen(function*() {
  const list = TodoList.client("alice")
  const todo = yield* list.add({ title: `written at ${new Date().toISOString()}` })
  yield* list.complete({ id: todo.id })
  const error = yield* Effect.flip(list.complete({ id: 999 })) // TodoNotFound, typed
  yield* Console.log(error.message)
  yield* Console.log(yield* list.list()) // one more item every run: the list is in todos.sqlite
})

// Storage: effect/sql's SqlClient over Node's built-in SQLite, migrated when the layer starts.
const StorageLive = SqlStorage.layer().pipe(Layer.provide(SqliteClient.layer({ filename: "todos.sqlite" })))

program.pipe(Effect.provide(TodoList.layer.pipe(Layer.provide(StorageLive))), NodeRuntime.runMain)
