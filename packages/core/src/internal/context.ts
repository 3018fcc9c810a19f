/**
 * The context a handler or hook runs with: its object's identity and a private cell of working state.
 *
 * @internal
 */
import { Effect } from "effect"
import type { ObjectContext } from "../DurableObject.ts"

/** The working state of one handler run; committed only if the handler succeeds. */
export interface Cell {
  state: unknown
}

export const makeContext = (objectType: string, id: string, cell: Cell): ObjectContext<unknown> => ({
  objectType,
  id,
  state: {
    get: Effect.sync(() => cell.state),
    set: (state) =>
      Effect.sync(() => {
        cell.state = state
      }),
    update: (f) =>
      Effect.sync(() => {
        cell.state = f(cell.state)
      }),
    modify: (f) =>
      Effect.sync(() => {
        const [a, state] = f(cell.state)
        cell.state = state
        return a
      })
  }
})
