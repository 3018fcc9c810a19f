/**
 * Fault injection for effect/sql: a layer wrapping a real `SqlClient` layer so that, on demand, the n-th SQL
 * statement about one object fails with a genuine `SqlError` from the database.
 *
 * The hook is effect/sql's `Statement.CurrentTransformer`: every statement of every client consults it just
 * before it takes a connection (inside transactions too), and may swap itself for another statement. The layer
 * provides it next to the client, so it reaches every fiber built on the layer: the caller's, and any the
 * runtime or the storage fork. To fail a statement we swap it for one that reads a table that does not exist,
 * so the database itself reports the error, exactly as for any other failing statement (on PostgreSQL it also
 * aborts the enclosing transaction).
 *
 * Only statements that bind the targeted object id as a parameter count, so background work about other
 * objects (the alarm scheduler's polls) is never hit by mistake, whichever fiber runs it.
 *
 * Two kinds of fault:
 * - `"before"`: the statement never runs. Storage must be left as it was.
 * - `"after"`: the statement runs (and, outside a transaction, commits), then the caller still gets an error:
 *   an acknowledgement lost on the way back. The caller cannot know the outcome and must reload.
 */
import { Context, Effect, Exit, Layer } from "effect"
import { type SqlClient, Statement } from "effect/sql"

/** The table the injected statement reads; it never exists, which is what makes the statement fail. */
export const faultTable = "durable_object_injected_fault"

export type FaultKind = "before" | "after"

/** How an effect run under a fault ended. */
export interface FaultReport<A, E> {
  readonly exit: Exit.Exit<A, E>
  /** Whether the fault fired (false when fewer than `at` statements about the object ran). */
  readonly fired: boolean
  /** The SQL of the statements about the object that ran, up to and including the failed one. */
  readonly statements: ReadonlyArray<string>
}

/** Runs effects under a fault. */
export class FaultInjector extends Context.Service<FaultInjector, {
  /**
   * Runs `effect`, failing the `at`-th SQL statement (1 = the first) that binds `objectId` as a parameter,
   * run by any fiber while `effect` runs, and reports how it ended.
   */
  readonly run: <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    fault: { readonly at: number; readonly objectId: string; readonly kind?: FaultKind | undefined }
  ) => Effect.Effect<FaultReport<A, E>, never, R>
}>()("test/FaultInjector") {}

interface Armed {
  readonly at: number
  readonly objectId: string
  readonly kind: FaultKind
  readonly statements: Array<string>
  fired: boolean
}

/** Wraps a `SqlClient` layer: the same client (statements are only ever intercepted), plus a {@link FaultInjector}. */
export const layer = <ROut, E, RIn>(
  client: Layer.Layer<ROut | SqlClient.SqlClient, E, RIn>
): Layer.Layer<ROut | SqlClient.SqlClient | FaultInjector, E, RIn> => {
  let armed: Armed | undefined

  const transformer: Statement.Transformer = (statement, sql) =>
    Effect.suspend(() => {
      const fault = armed
      if (fault === undefined || fault.fired) return Effect.succeed(statement)
      const [text, params] = statement.compile()
      if (!params.includes(fault.objectId)) return Effect.succeed(statement)
      fault.statements.push(text)
      if (fault.statements.length < fault.at) return Effect.succeed(statement)
      fault.fired = true
      const failing = sql`SELECT * FROM ${sql(faultTable)}` as Statement.Statement<unknown>
      if (fault.kind === "before") return Effect.succeed(failing)
      // Run the real statement (without this transformer), whatever its outcome, then fail anyway.
      return statement.pipe(
        Effect.provideService(Statement.CurrentTransformer, undefined),
        Effect.exit,
        Effect.as(failing)
      )
    })

  const injector = FaultInjector.of({
    run: (effect, { at, kind = "before", objectId }) =>
      Effect.suspend(() => {
        if (!(Number.isInteger(at) && at >= 1)) return Effect.die(new RangeError(`fault: at must be >= 1, got ${at}`))
        if (armed !== undefined) return Effect.die(new Error("fault: one fault at a time"))
        const fault: Armed = { at, objectId, kind, statements: [], fired: false }
        armed = fault
        return effect.pipe(
          Effect.exit,
          Effect.map((exit) => ({ exit, fired: fault.fired, statements: [...fault.statements] })),
          Effect.ensuring(Effect.sync(() => {
            armed = undefined
          }))
        )
      })
  })

  return Layer.mergeAll(
    client,
    Layer.succeed(FaultInjector, injector),
    Layer.succeed(Statement.CurrentTransformer, transformer)
  )
}
