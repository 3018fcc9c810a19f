/**
 * The one `SqlConnection.Connection` over a `DatabaseSync`: a bounded statement cache, parameter conversion,
 * row streaming, error mapping, and the fairness gate in front of every statement. Callers serialize access
 * (`SqlClient.makeSqliteAcquirers`); nothing here is safe to run concurrently on its own.
 */
import { Effect, Option, Stream } from "effect"
import { SqlClient, type SqlConnection, type SqlError } from "effect/sql"
import type { DatabaseSync, SQLInputValue, StatementSync } from "node:sqlite"
import type * as Fairness from "./fairness.ts"
import { toSqlError } from "./sqliteError.ts"

/** Rows fetched per pull when streaming: enough to amortize a pull, small enough to stay within a time slice. */
const STREAM_CHUNK_SIZE = 128

interface Prepared {
  readonly statement: StatementSync
  arrays: boolean
  bigInts: boolean
}

/** The connection plus what the client needs besides `SqlConnection`. */
export interface Connection extends SqlConnection.Connection {
  /** How many prepared statements the cache holds. */
  readonly cachedStatements: () => number
  /** Runs `f` on the database behind the fairness gate, mapping what it throws to `SqlError`. */
  readonly run: <A>(operation: string, f: () => A) => Effect.Effect<A, SqlError.SqlError>
}

export interface Options {
  readonly cacheSize: number
  readonly readBigInts: boolean
  readonly gate: Fairness.Gate
}

/**
 * Converts a parameter to what `node:sqlite` binds: integers as INTEGER, other numbers as REAL, booleans as 1/0,
 * Dates as ISO 8601 text, `undefined` as NULL. Booleans and Dates are not bindable as they are, and an object in
 * first position would be taken for a record of named parameters (a Date silently binds nothing there), so every
 * value is converted or refused.
 */
const toSqliteValue = (value: unknown, index: number): SQLInputValue => {
  switch (typeof value) {
    case "string":
    case "bigint":
      return value
    case "number":
      // node:sqlite binds every number as REAL: 2 would be stored as 2.0 in an untyped column, `7 / ?` would be a
      // real division and `typeof(?)` 'real'. A bigint binds as INTEGER. (-0 stays REAL to keep its sign.)
      return Number.isSafeInteger(value) && !Object.is(value, -0) ? BigInt(value) : value
    case "boolean":
      return value ? 1n : 0n
    case "undefined":
      return null
    case "object":
      if (value === null) return null
      // isView narrows to the global ArrayBufferView, a supertype of the typed arrays and DataView it accepts.
      if (ArrayBuffer.isView(value)) return value as NodeJS.ArrayBufferView
      // ISO 8601 in UTC: sorts as text and is understood by SQLite's date and time functions.
      if (value instanceof Date) return value.toISOString()
  }
  throw new TypeError(`Cannot bind a value of type ${describe(value)} to SQLite parameter ${index + 1}`)
}

const describe = (value: unknown): string =>
  typeof value === "object" && value !== null ? value.constructor?.name ?? "object" : typeof value

const toSqliteValues = (params: ReadonlyArray<unknown>): Array<SQLInputValue> => {
  const out: Array<SQLInputValue> = []
  for (let i = 0; i < params.length; i++) out.push(toSqliteValue(params[i], i))
  return out
}

export const make = (db: DatabaseSync, options: Options): Connection => {
  const { cacheSize, gate } = options
  // A Map iterates in insertion order; re-inserting on every hit makes its first key the least recently used.
  const cache = new Map<string, Prepared>()

  // node:sqlite's defaults for a new statement; `configure` changes them when a run needs something else.
  const prepareFresh = (sql: string): Prepared => ({ statement: db.prepare(sql), arrays: false, bigInts: false })

  const prepareCached = (sql: string): Prepared => {
    const hit = cache.get(sql)
    if (hit !== undefined) {
      cache.delete(sql)
      cache.set(sql, hit)
      return hit
    }
    const prepared = prepareFresh(sql)
    if (cacheSize <= 0) return prepared
    if (cache.size >= cacheSize) {
      // An evicted statement is finalized by node:sqlite when it is garbage collected or the database closes.
      const oldest = cache.keys().next()
      if (oldest.done !== true) cache.delete(oldest.value)
    }
    cache.set(sql, prepared)
    return prepared
  }

  const configure = (prepared: Prepared, arrays: boolean, bigInts: boolean): StatementSync => {
    if (prepared.arrays !== arrays) {
      prepared.statement.setReturnArrays(arrays)
      prepared.arrays = arrays
    }
    if (prepared.bigInts !== bigInts) {
      prepared.statement.setReadBigInts(bigInts)
      prepared.bigInts = bigInts
    }
    return prepared.statement
  }

  const run = <A>(operation: string, f: () => A): Effect.Effect<A, SqlError.SqlError> =>
    gate(Effect.try({ try: f, catch: (cause) => toSqlError(cause, operation) }))

  // `SqlClient.SafeIntegers` lets one query opt into bigints without changing the client's default.
  const withBigInts = <A, E, R>(f: (bigInts: boolean) => Effect.Effect<A, E, R>) =>
    Effect.withFiber((fiber) => f(options.readBigInts || fiber.getRef(SqlClient.SafeIntegers)))

  const all = (sql: string, params: ReadonlyArray<unknown>, arrays: boolean, cached: boolean) =>
    withBigInts((bigInts) =>
      run("execute", () => {
        const statement = configure(cached ? prepareCached(sql) : prepareFresh(sql), arrays, bigInts)
        // `all` also runs statements that return no rows, and returns [] for them.
        return statement.all(...toSqliteValues(params)) as ReadonlyArray<any>
      })
    )

  const rows = (cached: boolean) =>
  (
    sql: string,
    params: ReadonlyArray<unknown>,
    transformRows: (<A extends object>(row: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
  ) => {
    const effect = all(sql, params, false, cached)
    return transformRows === undefined ? effect : Effect.map(effect, transformRows)
  }

  const executeStream = (
    sql: string,
    params: ReadonlyArray<unknown>,
    transformRows: (<A extends object>(row: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined
  ): Stream.Stream<any, SqlError.SqlError> =>
    Stream.unwrap(withBigInts((bigInts) =>
      Effect.map(
        Effect.acquireRelease(
          // A statement of its own: a cached one could be reset under the open iterator by a query that the
          // consumer runs on the same connection, inside a transaction, while the stream is open.
          run("executeStream", () => configure(prepareFresh(sql), false, bigInts).iterate(...toSqliteValues(params))),
          // Resets the statement so it holds no read snapshot; nothing to reset once the database is closed.
          (iterator) => Effect.sync(() => db.isOpen && iterator.return?.())
        ),
        (iterator) =>
          Stream.paginate(undefined, () =>
            Effect.map(
              run("executeStream", () => {
                const chunk: Array<any> = []
                for (let i = 0; i < STREAM_CHUNK_SIZE; i++) {
                  const next = iterator.next()
                  if (next.done === true) break
                  chunk.push(next.value)
                }
                return chunk
              }),
              (chunk) =>
                [
                  transformRows === undefined ? chunk : transformRows(chunk),
                  chunk.length < STREAM_CHUNK_SIZE ? Option.none() : Option.some(undefined)
                ] as const
            ))
      )
    ))

  return {
    execute: rows(true),
    executeUnprepared: rows(false),
    executeRaw: (sql, params) =>
      withBigInts((bigInts) =>
        run("executeRaw", () => {
          const statement = configure(prepareCached(sql), false, bigInts)
          // For a statement without result columns, the raw result is what SQLite reports about the write.
          return statement.columns().length > 0
            ? statement.all(...toSqliteValues(params))
            : statement.run(...toSqliteValues(params))
        })
      ),
    executeValues: (sql, params) => all(sql, params, true, true),
    executeValuesUnprepared: (sql, params) => all(sql, params, true, false),
    executeStream,
    cachedStatements: () => cache.size,
    run
  }
}
