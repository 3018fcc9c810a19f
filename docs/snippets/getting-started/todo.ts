import { DurableObject } from "@durable-object/core"
import { Effect, Schema } from "effect"

export class TodoNotFound extends Schema.TaggedError<TodoNotFound>()("TodoNotFound", { id: Schema.Int }) {
  override get message(): string {
    return `There is no to-do #${this.id}`
  }
}

const Todo = Schema.Struct({ id: Schema.Int, title: Schema.NonEmptyString, done: Schema.Boolean })

/** One to-do list per id (per user, say). */
export const TodoList = DurableObject.defineObject({
  name: "TodoList",
  state: Schema.Struct({ nextId: Schema.Int, todos: Schema.Array(Todo) }),
  initialState: () => ({ nextId: 1, todos: [] }),
  handlers: {
    add: {
      payload: Schema.Struct({ title: Schema.NonEmptyString }),
      success: Todo,
      handle: ({ title }, ctx) =>
        ctx.state.modify((s) => {
          const todo = { id: s.nextId, title, done: false }
          return [todo, { nextId: s.nextId + 1, todos: [...s.todos, todo] }]
        })
    },
    complete: {
      payload: Schema.Struct({ id: Schema.Int }),
      error: TodoNotFound,
      handle: ({ id }, ctx) =>
        Effect.gen(function*() {
          const s = yield* ctx.state.get
          if (!s.todos.some((t) => t.id === id)) return yield* new TodoNotFound({ id })
          yield* ctx.state.set({ ...s, todos: s.todos.map((t) => (t.id === id ? { ...t, done: true } : t)) })
        })
    },
    list: { success: Schema.Array(Todo), handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.todos) }
  }
})
