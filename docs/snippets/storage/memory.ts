import { Storage } from "@durable-object/core"
import { Layer } from "effect"
import { TodoList } from "../getting-started/todo.ts"

// A new, empty store per build of the layer: nothing survives the process.
export const TodoListLive = TodoList.layer.pipe(Layer.provide(Storage.layerMemory))
