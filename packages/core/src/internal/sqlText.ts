/**
 * SQL text without a database: a `SqlClient` whose connection records the statements it is asked to run
 * (answering each with no rows), so the migrations' own code can be printed as DDL for a dialect.
 */
import { Effect, Stream } from "effect"
import { Reactivity } from "effect/reactivity"
import { SqlClient, type SqlConnection, Statement } from "effect/sql"

/** The SQL dialects the storage supports. */
export type Dialect = "pg" | "sqlite"

/** PostgreSQL's compiler as `@effect/sql-pg` builds it, for the statements migrations use (no parameters). */
const pgCompiler = (): Statement.Compiler =>
  Statement.makeCompiler({
    dialect: "pg",
    placeholder: (i) => `$${i}`,
    onIdentifier: Statement.defaultEscape("\""),
    onRecordUpdate: () => ["", []],
    onCustom: () => ["", []]
  })

/**
 * Runs `f` with a recording client of the dialect and returns the statements it ran, in order. A statement
 * with bound parameters is a bug here (DDL names and literals only), so it dies.
 */
export const record = <E>(
  dialect: Dialect,
  f: (sql: SqlClient.SqlClient) => Effect.Effect<unknown, E>
): Effect.Effect<ReadonlyArray<string>, E> =>
  Effect.gen(function*() {
    const statements: Array<string> = []
    const run = (text: string, params: ReadonlyArray<unknown>) =>
      params.length > 0
        ? Effect.die(new Error(`a migration statement with parameters cannot be printed: ${text}`))
        : Effect.sync(() => {
          statements.push(text)
          return [] as ReadonlyArray<any>
        })
    const connection: SqlConnection.Connection = {
      execute: run,
      executeRaw: run,
      executeUnprepared: run,
      executeValues: run,
      executeValuesUnprepared: run,
      executeStream: (text, params) => Stream.fromEffect(run(text, params)).pipe(Stream.flatMap(Stream.fromIterable))
    }
    const sql = yield* SqlClient.make({
      acquirer: Effect.succeed(connection),
      compiler: dialect === "pg" ? pgCompiler() : Statement.makeCompilerSqlite(),
      driver: "durable-object-sql-text",
      spanAttributes: []
    }).pipe(Effect.provideServiceEffect(Reactivity.Reactivity, Reactivity.make))
    yield* f(sql)
    return statements
  })
