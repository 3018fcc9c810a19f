/**
 * Effect's `SqlClient` over Node's built-in `node:sqlite` (`DatabaseSync`).
 *
 * One connection per client. Statements from all fibers are serialized on it, transactions hold it from `BEGIN`
 * to `COMMIT`/`ROLLBACK`, and nested transactions use savepoints. Because `node:sqlite` is synchronous, the client
 * also keeps the event loop fair: a long queue of statements yields to it every `yieldBudget` of wall time.
 *
 * Parameters: strings, numbers (safe integers bind as INTEGER, others as REAL), bigints (INTEGER), `null` and
 * `undefined` (NULL), booleans (1/0), `Uint8Array` and other typed arrays (BLOB), and Dates (ISO 8601 text in UTC,
 * e.g. `2024-02-29T13:45:30.123Z`, which SQLite's date functions read). Anything else fails with an `SqlError`.
 * Every failure of SQLite is an `SqlError` whose reason says what kind it is (`UniqueViolation`,
 * `ConstraintError`, `LockTimeoutError`, `SqlSyntaxError`, `ConnectionError`, otherwise `UnknownError`) and whose
 * message ends with SQLite's extended result code; {@link sqliteErrorCode} reads the code.
 *
 * @since 0.1.0
 */
import { Config, Context, Duration, Effect, Layer, Option, type Scope, Semaphore } from "effect"
import { Reactivity } from "effect/reactivity"
import { SqlClient, SqlError, Statement } from "effect/sql"
import { DatabaseSync } from "node:sqlite"
import * as Connection from "./internal/connection.ts"
import * as Fairness from "./internal/fairness.ts"
import { errcodeOf, toSqlError } from "./internal/sqliteError.ts"

/**
 * SQLite's `synchronous` setting: how hard a commit waits for the disk.
 *
 * - `"FULL"` (the default): a commit that returned survives a crash of the process and of the machine
 *   (power loss).
 * - `"NORMAL"`: in WAL mode, a commit that returned survives a crash of the process, but the last transactions may
 *   be lost on power loss or an OS crash (the database stays consistent). Faster: no fsync per commit.
 * - `"EXTRA"`: like `FULL`, and also syncs the directory after a rollback-journal commit.
 * - `"OFF"`: no syncing at all; an OS crash or power loss may corrupt the database.
 *
 * @since 0.1.0
 */
export type Synchronous = "OFF" | "NORMAL" | "FULL" | "EXTRA"

/**
 * How a top-level transaction begins (`BEGIN DEFERRED | IMMEDIATE | EXCLUSIVE`).
 *
 * @since 0.1.0
 */
export type TransactionMode = "DEFERRED" | "IMMEDIATE" | "EXCLUSIVE"

/**
 * Options of a client. Only `filename` is required.
 *
 * @since 0.1.0
 */
export interface SqliteClientConfig {
  /** The database file, created if missing (its directory must exist); `":memory:"` for a private in-memory database. */
  readonly filename: string
  /** Open read-only: writes fail, and WAL is not switched on. Default `false`. */
  readonly readonly?: boolean | undefined
  /** The `synchronous` pragma (see {@link Synchronous}). Default `"FULL"`. */
  readonly synchronous?: Synchronous | undefined
  /**
   * Switch the database to WAL journaling: readers in other processes don't block the writer and commits are
   * cheaper. Default `true`; ignored for in-memory and read-only databases. WAL is a property of the file and
   * stays on after the client closes.
   */
  readonly wal?: boolean | undefined
  /** How long a statement waits for a lock held by another connection before failing with `LockTimeoutError`. Default 5 seconds. */
  readonly busyTimeout?: Duration.Input | undefined
  /** How many prepared statements are kept, least recently used evicted first; 0 disables the cache. Default 200. */
  readonly prepareCacheSize?: number | undefined
  /**
   * The longest stretch of wall time that queued statements may run without giving the event loop a turn.
   * Once exceeded, the next statement first waits for a `setImmediate` (the connection stays held, so a
   * transaction is never interleaved). A single statement longer than this is not interrupted. Default 4 ms;
   * `Duration.infinity` disables the yields (then a burst of queued statements blocks timers and I/O until it
   * drains).
   */
  readonly yieldBudget?: Duration.Input | undefined
  /**
   * Read INTEGER columns as `bigint` (exact beyond 2^53). Default `false`: integers are numbers, and reading one
   * beyond `Number.MAX_SAFE_INTEGER` fails with an `SqlError`. A single query can opt in with
   * `Effect.provideService(SqlClient.SafeIntegers, true)`.
   */
  readonly readBigInts?: boolean | undefined
  /**
   * How top-level transactions begin. Default `"IMMEDIATE"` (`"DEFERRED"` when read-only): the write lock is taken
   * at `BEGIN`, so a writer in another process makes it wait up to `busyTimeout` instead of failing mid-way when
   * a read has to be upgraded to a write.
   */
  readonly transactionMode?: TransactionMode | undefined
  /** Extra span attributes for every statement. */
  readonly spanAttributes?: Record<string, unknown> | undefined
  /** Renames result columns (e.g. snake_case to camelCase). */
  readonly transformResultNames?: ((str: string) => string) | undefined
  /** Renames identifiers in queries (e.g. camelCase to snake_case). */
  readonly transformQueryNames?: ((str: string) => string) | undefined
}

/**
 * What the {@link SqliteClient} service holds: effect/sql's `SqlClient` plus SQLite specifics.
 *
 * @since 0.1.0
 */
export interface SqliteClientService extends SqlClient.SqlClient {
  /** The options the client was made with. */
  readonly config: SqliteClientConfig
  /**
   * The underlying `DatabaseSync`, for what effect/sql does not cover. Using it directly bypasses the client's
   * serialization, statement cache and event-loop fairness; prefer {@link SqliteClientService.withDatabase}.
   * Closed when the client's scope closes.
   */
  readonly database: DatabaseSync
  /**
   * Runs `f` on the database while holding the connection (inside the current transaction, if any), behind the
   * fairness gate; what `f` throws becomes an `SqlError`. Use it e.g. for multi-statement scripts
   * (`db.exec(script)`), `loadExtension` or `backup`.
   */
  readonly withDatabase: <A>(f: (database: DatabaseSync) => A) => Effect.Effect<A, SqlError.SqlError>
  /** How many prepared statements are cached right now (at most `prepareCacheSize`). */
  readonly cachedStatements: Effect.Effect<number>
}

/**
 * The SQLite client service. The layers provide it together with effect/sql's `SqlClient` (the same object).
 *
 * @since 0.1.0
 */
export class SqliteClient extends Context.Service<SqliteClient, SqliteClientService>()(
  "@durable-object/sql-sqlite-node/SqliteClient"
) {}

const isInMemory = (filename: string) => filename === ":memory:" || filename === ""

const pragma = (db: DatabaseSync, sql: string) =>
  Effect.try({ try: () => db.exec(sql), catch: (cause) => toSqlError(cause, "open") })

/**
 * Opens the database and builds the client. The database is closed when the scope closes. Fails with an
 * `SqlError` (e.g. `ConnectionError` when the file cannot be opened) rather than dying.
 *
 * @since 0.1.0
 */
export const make = (
  options: SqliteClientConfig
): Effect.Effect<SqliteClientService, SqlError.SqlError, Scope.Scope | Reactivity.Reactivity> =>
  Effect.gen(function*() {
    const readonly = options.readonly ?? false
    const db = yield* Effect.acquireRelease(
      Effect.try({
        try: () => new DatabaseSync(options.filename, { readOnly: readonly }),
        catch: (cause) => toSqlError(cause, "open")
      }),
      (db) => Effect.sync(() => db.close())
    )
    // A pragma rather than the `timeout` option of DatabaseSync, which older Node versions ignore. Set first: the
    // switch to WAL below may itself have to wait for another connection.
    const busyTimeout = Duration.toMillis(options.busyTimeout ?? Duration.seconds(5))
    yield* pragma(db, `PRAGMA busy_timeout = ${Math.min(Math.round(busyTimeout), 2 ** 31 - 1)}`)
    if ((options.wal ?? true) && !readonly && !isInMemory(options.filename)) {
      yield* pragma(db, "PRAGMA journal_mode = WAL")
    }
    yield* pragma(db, `PRAGMA synchronous = ${synchronousPragma(options.synchronous ?? "FULL")}`)

    const connection = Connection.make(db, {
      cacheSize: options.prepareCacheSize ?? 200,
      readBigInts: options.readBigInts ?? false,
      gate: Fairness.make(Duration.toMillis(options.yieldBudget ?? Duration.millis(4)))
    })
    const acquirers = SqlClient.makeSqliteAcquirers({
      connection: Effect.succeed(connection),
      semaphore: yield* Semaphore.make(1),
      isTransaction: () => db.isTransaction
    })
    const client = yield* SqlClient.make({
      ...acquirers,
      compiler: Statement.makeCompilerSqlite(options.transformQueryNames),
      transformRows: options.transformResultNames === undefined
        ? undefined
        : Statement.defaultTransforms(options.transformResultNames).array,
      driver: "sqlite-node",
      spanAttributes: [
        ...(options.spanAttributes === undefined ? [] : Object.entries(options.spanAttributes)),
        ["db.system.name", "sqlite"]
      ],
      // SQLite prepares BEGIN, COMMIT, ROLLBACK and savepoints like any statement, so they stay in the cache.
      prepareTransactionControls: true,
      beginTransaction: `BEGIN ${options.transactionMode ?? (readonly ? "DEFERRED" : "IMMEDIATE")}`,
      releaseSavepoint: (name) => `RELEASE SAVEPOINT ${name}`
    })

    const withDatabase = <A>(f: (database: DatabaseSync) => A): Effect.Effect<A, SqlError.SqlError> => {
      const run = connection.run("withDatabase", () => f(db))
      // Inside a transaction this fiber already holds the connection; waiting for it again would deadlock.
      return Effect.flatMap(
        Effect.serviceOption(client.transactionService),
        Option.match({ onNone: () => acquirers.borrower(() => run), onSome: () => run })
      )
    }

    return Object.assign(client, {
      config: options,
      database: db,
      withDatabase,
      cachedStatements: Effect.sync(connection.cachedStatements)
    })
  })

const synchronousPragma = (value: Synchronous): Synchronous => {
  switch (value) {
    case "OFF":
    case "NORMAL":
    case "FULL":
    case "EXTRA":
      return value
  }
}

/**
 * A layer providing {@link SqliteClient} and `SqlClient`, with `Reactivity` built in. The database is open while
 * the layer is, and closed when its scope closes.
 *
 * @since 0.1.0
 */
export const layer = (
  config: SqliteClientConfig
): Layer.Layer<SqliteClient | SqlClient.SqlClient, SqlError.SqlError> =>
  Layer.effectContext(
    Effect.map(make(config), (client) =>
      Context.make(SqliteClient, client).pipe(Context.add(SqlClient.SqlClient, client)))
  ).pipe(Layer.provide(Reactivity.layer))

/**
 * Like {@link layer}, with options read from `effect/Config`: each option is a `Config` (`Config.succeed(value)` for a constant)
 * (e.g. `{ filename: Config.String("DATABASE_FILE") }`), or the whole record may be one `Config`.
 *
 * @since 0.1.0
 */
export const layerConfig = (
  config: Config.Wrap<SqliteClientConfig>
): Layer.Layer<SqliteClient | SqlClient.SqlClient, Config.ConfigError | SqlError.SqlError> =>
  Layer.unwrap(Effect.gen(function*() {
    return layer(yield* Config.unwrap(config))
  }))

/**
 * The extended SQLite result code of an `SqlError` from this client (e.g. 2067 for a UNIQUE violation, 5 for
 * `SQLITE_BUSY`), or `undefined` when the failure did not come from SQLite itself.
 *
 * @since 0.1.0
 */
export const sqliteErrorCode = (error: SqlError.SqlError): number | undefined => errcodeOf(error.reason.cause)
