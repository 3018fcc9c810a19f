/**
 * `Storage` over any effect/sql `SqlClient`: PostgreSQL (`@effect/sql-pg`) in production, SQLite
 * (`@durable-object/sql-sqlite-node`) embedded.
 *
 * - Two tables, `durable_objects` and `durable_object_alarms` (names take an optional validated prefix, and
 *   a schema on PostgreSQL), created by versioned, idempotent migrations kept in their own migrations table.
 * - State is the state schema's encoded form as JSON: `jsonb` on PostgreSQL, `text` on SQLite.
 * - Every commit is fenced: it applies only if the stored version is the one the change was made against.
 *   A lone commit without alarm changes is a single statement; one with alarm changes is one transaction.
 * - Commits and loads of different objects that queue up behind a running one go out together (coalescing):
 *   state-only writes as multi-row fenced statements, loads as one multi-row `SELECT`; each caller still gets
 *   its own outcome.
 * - `SqlError`s become `StorageError`s carrying the cause; nothing is half-written.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Context, Effect, Exit, Layer, Metric, Option, Queue, Schedule, type Scope } from "effect"
import { Migrator, SqlClient, type SqlError } from "effect/sql"
import { AlarmClaimLost, StorageError, type StorageOutcome, VersionConflict } from "./Errors.ts"
import * as Batcher from "./internal/batcher.ts"
import * as CommitNotifier from "./internal/commitNotifier.ts"
import { prefixEnd } from "./internal/keyOrder.ts"
import { defaultLimits } from "./internal/limits.ts"
import { type SchedulerOptions, withCommitUnsafe } from "./internal/records.ts"
import { span, tracing } from "./internal/span.ts"
import * as SqlText from "./internal/sqlText.ts"
import {
  type AlarmChanges,
  type AlarmPut,
  type AlarmRecord,
  type AlarmRelease,
  type ClaimedAlarm,
  type ClaimRequest,
  type FailedAlarmRecord,
  layerWithScheduler,
  type ListFailedAlarmsRequest,
  type ListObjectsRequest,
  type ReplyPut,
  type Scheduler,
  Storage,
  type StorageLimits,
  type StoredObject,
  type StoredObjectDetails,
  type StoredObjectInfo,
  type StoredReply,
  type WriteSet
} from "./Storage.ts"
import * as Telemetry from "./Telemetry.ts"

/**
 * Options of the SQL storage.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Prepended to every table name (`<prefix>durable_objects`, …). Letters, digits and `_`, starting with a
   * letter or `_`, at most 32 characters. Default: none.
   */
  readonly tablePrefix?: string | undefined
  /** PostgreSQL only: the schema holding the tables (it must exist). Same rules as `tablePrefix`. */
  readonly schema?: string | undefined
  /** Run the migrations when the layer is built. Default `true`. */
  readonly migrate?: boolean | undefined
  /** Options of the alarm scheduler the layer starts. */
  readonly alarms?: SchedulerOptions | undefined
  /**
   * The most write sets one transaction carries when commits queue up behind each other (write
   * coalescing), and the most loads one batch reads when loads queue up. Default 256 (1,024 for commits on
   * SQLite, whose batch costs one fsync however many rows it carries); 1 turns coalescing off.
   */
  readonly maxBatch?: number | undefined
  /**
   * PostgreSQL only: how many coalesced commits may be in flight at once, each on its own connection (objects
   * are spread over that many queues by a hash of their id; one object's commits always share a queue, in
   * order). A whole number from 1 to 64 (anything else fails the layer with `StorageError`); default 4; 1
   * sends one batch at a time. SQLite has one writer: its commits go one batch at a time whatever this says.
   */
  readonly commitConcurrency?: number | undefined
  /**
   * The largest encoded state of one object, in UTF-8 bytes of JSON; a call that would store more fails with
   * `ValueTooLarge` and writes nothing. Default 4 MiB (`Storage.defaultLimits`). On PostgreSQL keep it well
   * below the driver's `maxMessageSize` (16 MiB by default): `jsonb` reads back as text up to about 1.5 times
   * longer.
   */
  readonly maxStateBytes?: number | undefined
  /** The largest encoded payload of one alarm, in UTF-8 bytes of JSON. Default 256 KiB. */
  readonly maxAlarmPayloadBytes?: number | undefined
  /**
   * PostgreSQL only: announce every commit to the other processes on the database (NOTIFY, many commits per
   * notification) and follow theirs (LISTEN), so live-state subscribers (`client(id).changes`) see commits
   * made by any runtime. Enable it on every runtime sharing the database. Default `false`: subscribers see
   * only their own runtime's commits, and commits pay nothing for it.
   */
  readonly notifyCommits?: boolean | undefined
}

/**
 * The table names the storage uses for given options (validated).
 *
 * @since 0.1.0
 * @category models
 */
export interface Tables {
  readonly objects: string
  readonly alarms: string
  readonly replies: string
  readonly migrations: string
}

const isPgDialect = (sql: SqlClient.SqlClient) => sql.onDialectOrElse({ pg: () => true, orElse: () => false })

const identifierPattern = /^[A-Za-z_][A-Za-z0-9_]{0,31}$/

/**
 * Validates the options and returns the table names. Fails with `StorageError` for a prefix or schema that
 * is not a plain identifier, so no SQL is ever built from unvalidated text.
 *
 * @since 0.1.0
 * @category models
 */
export const tables = (options?: Options): Effect.Effect<Tables, StorageError> =>
  Effect.suspend(() => {
    const prefix = options?.tablePrefix ?? ""
    if (prefix !== "" && !identifierPattern.test(prefix)) {
      return Effect.fail(
        new StorageError({
          operation: "configure",
          outcome: "not-applied",
          detail: `invalid tablePrefix ${JSON.stringify(prefix)}: letters, digits and _, at most 32 characters`
        })
      )
    }
    const schema = options?.schema
    if (schema !== undefined && !identifierPattern.test(schema)) {
      return Effect.fail(
        new StorageError({
          operation: "configure",
          outcome: "not-applied",
          detail: `invalid schema ${JSON.stringify(schema)}: letters, digits and _, at most 32 characters`
        })
      )
    }
    const qualify = (name: string) => (schema === undefined ? `${prefix}${name}` : `${schema}.${prefix}${name}`)
    return Effect.succeed({
      objects: qualify("durable_objects"),
      alarms: qualify("durable_object_alarms"),
      replies: qualify("durable_object_replies"),
      migrations: qualify("durable_object_migrations")
    })
  })

/** The name of the replies table's expiry index. */
const repliesIndex = (t: Tables) => `${t.replies.replace(/^.*\./, "")}_expires_idx`

/** The name of one of the alarm table's indexes (PostgreSQL creates it in the table's schema). */
const alarmIndex = (t: Tables, suffix: string) => `${t.alarms.replace(/^.*\./, "")}_${suffix}`
const indexName = (t: Tables) => alarmIndex(t, "fire_at_idx")
/** The name of one of the object table's indexes. */
const objectIndex = (t: Tables, suffix: string) => `${t.objects.replace(/^.*\./, "")}_${suffix}`
/** An index name as `DROP INDEX` needs it: in the alarm table's schema, when it has one. */
const qualifiedIndex = (t: Tables, name: string) => {
  const dot = t.alarms.lastIndexOf(".")
  return dot < 0 ? name : `${t.alarms.slice(0, dot)}.${name}`
}

type Migration = {
  readonly up: (sql: SqlClient.SqlClient, t: Tables) => Effect.Effect<unknown, SqlError.SqlError>
  readonly down: (sql: SqlClient.SqlClient, t: Tables) => Effect.Effect<unknown, SqlError.SqlError>
}

/**
 * The migrations, by id. Each is idempotent. Times are epoch milliseconds (`bigint`), so they are exact and
 * `TestClock`-friendly; state and alarm payloads are JSON (`jsonb` on PostgreSQL).
 */
const migrationList: ReadonlyArray<readonly [id: number, name: string, migration: Migration]> = [
  [1, "durable_objects", {
    up: (sql, t) =>
      Effect.gen(function*() {
        const json = sql.onDialectOrElse({ pg: () => sql.literal("jsonb"), orElse: () => sql.literal("text") })
        yield* sql`CREATE TABLE IF NOT EXISTS ${sql(t.objects)} (
          object_type TEXT NOT NULL,
          object_id TEXT NOT NULL,
          state ${json} NOT NULL,
          version BIGINT NOT NULL,
          created_at BIGINT NOT NULL,
          updated_at BIGINT NOT NULL,
          PRIMARY KEY (object_type, object_id)
        )`
        yield* sql`CREATE TABLE IF NOT EXISTS ${sql(t.alarms)} (
          object_type TEXT NOT NULL,
          object_id TEXT NOT NULL,
          name TEXT NOT NULL,
          fire_at BIGINT NOT NULL,
          payload ${json} NOT NULL,
          cron TEXT,
          attempts INTEGER NOT NULL DEFAULT 0,
          claim_owner TEXT,
          claim_expires_at BIGINT,
          failed_at BIGINT,
          last_error TEXT,
          created_at BIGINT NOT NULL,
          PRIMARY KEY (object_type, object_id, name)
        )`
        yield* sql`CREATE INDEX IF NOT EXISTS ${sql(indexName(t))} ON ${sql(t.alarms)} (fire_at)`
      }),
    down: (sql, t) =>
      Effect.gen(function*() {
        yield* sql`DROP TABLE IF EXISTS ${sql(t.alarms)}`
        yield* sql`DROP TABLE IF EXISTS ${sql(t.objects)}`
      })
  }],
  // Claims and the next-alarm query read one object type's due alarms in fire order: with only the index on
  // fire_at, SQLite scanned and sorted every alarm of the type per claim (30-60 ms at 100,000 alarms). Both
  // indexes are partial, so failed alarms and unclaimed ones cost them nothing.
  [2, "durable_object_alarm_indexes", {
    up: (sql, t) =>
      Effect.gen(function*() {
        yield* sql`CREATE INDEX IF NOT EXISTS ${sql(alarmIndex(t, "due_idx"))}
          ON ${sql(t.alarms)} (object_type, fire_at) WHERE failed_at IS NULL`
        yield* sql`CREATE INDEX IF NOT EXISTS ${sql(alarmIndex(t, "lease_idx"))}
          ON ${sql(t.alarms)} (object_type, claim_expires_at) WHERE claim_owner IS NOT NULL`
        yield* sql`DROP INDEX IF EXISTS ${sql(qualifiedIndex(t, indexName(t)))}`
      }),
    down: (sql, t) =>
      Effect.gen(function*() {
        yield* sql`CREATE INDEX IF NOT EXISTS ${sql(indexName(t))} ON ${sql(t.alarms)} (fire_at)`
        yield* sql`DROP INDEX IF EXISTS ${sql(qualifiedIndex(t, alarmIndex(t, "lease_idx")))}`
        yield* sql`DROP INDEX IF EXISTS ${sql(qualifiedIndex(t, alarmIndex(t, "due_idx")))}`
      })
  }],
  // The stored replies of calls made with idempotency keys, committed with the state they produced. The
  // purge of expired replies walks the expiry index, never the whole table.
  [3, "durable_object_replies", {
    up: (sql, t) =>
      Effect.gen(function*() {
        yield* sql`CREATE TABLE IF NOT EXISTS ${sql(t.replies)} (
          object_type TEXT NOT NULL,
          object_id TEXT NOT NULL,
          idempotency_key TEXT NOT NULL,
          payload_hash TEXT NOT NULL,
          reply TEXT NOT NULL,
          expires_at BIGINT NOT NULL,
          created_at BIGINT NOT NULL,
          PRIMARY KEY (object_type, object_id, idempotency_key)
        )`
        yield* sql`CREATE INDEX IF NOT EXISTS ${sql(repliesIndex(t))} ON ${sql(t.replies)} (expires_at)`
      }),
    down: (sql, t) => sql`DROP TABLE IF EXISTS ${sql(t.replies)}`
  }],
  // Listing for operators (`DurableObject.list`, `Alarms.listFailed`), by id in code point order on every
  // backend. SQLite's primary key already is in that order (BINARY); PostgreSQL's follows the database's
  // collation, in which a range of ids by prefix is not a range of the index, so it gets a "C" one. Failed
  // alarms get a partial index of their own, which holds nothing while no alarm has failed.
  [4, "durable_object_listing_indexes", {
    up: (sql, t) =>
      Effect.gen(function*() {
        if (isPgDialect(sql)) {
          yield* sql`CREATE INDEX IF NOT EXISTS ${sql(objectIndex(t, "list_idx"))}
            ON ${sql(t.objects)} (object_type, object_id COLLATE "C")`
        }
        const collate = sql.literal(isPgDialect(sql) ? `COLLATE "C"` : "")
        yield* sql`CREATE INDEX IF NOT EXISTS ${sql(alarmIndex(t, "failed_idx"))}
          ON ${sql(t.alarms)} (object_type, object_id ${collate}, name ${collate}) WHERE failed_at IS NOT NULL`
      }),
    down: (sql, t) =>
      Effect.gen(function*() {
        yield* sql`DROP INDEX IF EXISTS ${sql(qualifiedIndex(t, alarmIndex(t, "failed_idx")))}`
        yield* sql`DROP INDEX IF EXISTS ${sql(qualifiedIndex(t, objectIndex(t, "list_idx")))}`
      })
  }]
]

/**
 * The id of the newest migration this version ships.
 *
 * @since 0.1.0
 * @category migrations
 */
export const latestMigration: number = migrationList[migrationList.length - 1]![0]

/**
 * Runs the pending migrations (in one transaction, under a lock on PostgreSQL, so concurrent starts are
 * safe) and returns the ids it applied. Running it again applies nothing.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrate = (options?: Options): Effect.Effect<
  ReadonlyArray<number>,
  StorageError | Migrator.MigrationError | SqlError.SqlError,
  SqlClient.SqlClient
> =>
  Effect.gen(function*() {
    const t = yield* tables(options)
    const sql = yield* SqlClient.SqlClient
    const applied = yield* Migrator.make({})({
      table: t.migrations,
      loader: Effect.succeed(
        migrationList.map(([id, name, m]) => [id, name, Effect.succeed(m.up(sql, t))] as const)
      )
    })
    return applied.map(([id]) => id)
  })

/**
 * Reverts applied migrations newer than `to` (default 0: everything, dropping the tables and their data),
 * newest first, in one transaction. Returns the ids it reverted.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrateDown = (options?: Options & { readonly to?: number | undefined }): Effect.Effect<
  ReadonlyArray<number>,
  StorageError | SqlError.SqlError,
  SqlClient.SqlClient
> =>
  Effect.gen(function*() {
    const t = yield* tables(options)
    const sql = yield* SqlClient.SqlClient
    const to = options?.to ?? 0
    return yield* sql.withTransaction(Effect.gen(function*() {
      const exists = yield* sql.onDialectOrElse({
        pg: () => sql<{ found: number }>`SELECT 1 AS found WHERE to_regclass(${t.migrations}) IS NOT NULL`,
        orElse: () =>
          sql<{ found: number }>`SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = ${t.migrations}`
      })
      if (exists.length === 0) return []
      const rows = yield* sql<{ migration_id: number }>`SELECT migration_id FROM ${
        sql(t.migrations)
      } WHERE migration_id > ${to} ORDER BY migration_id DESC`
      const reverted: Array<number> = []
      for (const row of rows) {
        const id = Number(row.migration_id)
        const entry = migrationList.find(([mid]) => mid === id)
        if (entry !== undefined) yield* entry[2].down(sql, t)
        yield* sql`DELETE FROM ${sql(t.migrations)} WHERE migration_id = ${id}`
        reverted.push(id)
      }
      return reverted
    }))
  })

/**
 * One migration as SQL text (see {@link migrationStatements}).
 *
 * @since 0.1.0
 * @category migrations
 */
export interface MigrationStatements {
  readonly id: number
  readonly name: string
  /** The statements, in the order the migration runs them, without trailing semicolons. */
  readonly statements: ReadonlyArray<string>
}

/** A statement as written in a migration, re-indented: its first line flush, the others by two spaces. */
const dedent = (statement: string) =>
  statement.trim().split("\n").map((line, i) => (i === 0 || line.trim() === ")" ? "" : "  ") + line.trim()).join("\n")

/**
 * The library's DDL as text, for teams that apply migrations with their own tool: what {@link migrate}
 * (`direction: "up"`, the default, oldest first) or {@link migrateDown} (`"down"`, newest first) runs, compiled
 * for the dialect from the migrations themselves, without a database. Every statement is idempotent
 * (`IF NOT EXISTS` / `IF EXISTS`). Tables applied this way are not recorded in the migrations table, so build the
 * storage with `migrate: false`, or let it run `migrate` once, which then applies nothing new. Fails with
 * `StorageError` for an invalid `tablePrefix` or `schema`.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrationStatements = (
  options: Options & {
    readonly dialect: SqlText.Dialect
    readonly direction?: "up" | "down" | undefined
  }
): Effect.Effect<ReadonlyArray<MigrationStatements>, StorageError> =>
  Effect.gen(function*() {
    const t = yield* tables(options)
    const down = options.direction === "down"
    const ordered = down ? migrationList.toReversed() : migrationList
    const out: Array<MigrationStatements> = []
    for (const [id, name, migration] of ordered) {
      const statements = yield* SqlText.record(options.dialect, (sql) => (down ? migration.down : migration.up)(sql, t))
        .pipe(Effect.orDie)
      out.push({ id, name, statements: statements.map(dedent) })
    }
    return out
  })

/** The operations that only read: whatever fails, nothing was written. */
const readOnly: ReadonlySet<string> = new Set([
  "load",
  "listAlarms",
  "nextAlarmAt",
  "listObjects",
  "inspectObject",
  "listFailedAlarms"
])

/**
 * The failures after which the database certainly did not apply the statement: it refused it and rolled its
 * transaction back (a deadlock victim, a serialization failure, a lock timeout, a constraint it breaks). Any
 * other failure, a broken connection above all, may have hit after the commit.
 */
const refusedReasons: ReadonlySet<string> = new Set([
  "DeadlockError",
  "SerializationError",
  "LockTimeoutError",
  "UniqueViolation",
  "ConstraintError",
  "AuthorizationError",
  "AuthenticationError"
])

/** Whether a failed write may have been stored (see `StorageError.outcome`). */
const outcomeOf = (operation: string, error: SqlError.SqlError): StorageOutcome =>
  readOnly.has(operation) || refusedReasons.has(error.reason._tag) ? "not-applied" : "unknown"

/**
 * Failures the database resolves by rolling one transaction back (deadlock victim, serialization failure): the
 * attempt applied nothing and the same writes may well succeed a moment later.
 */
const isTransient = (error: { readonly _tag: string }): boolean =>
  error._tag === "SqlError" &&
  ((error as SqlError.SqlError).reason._tag === "DeadlockError" ||
    (error as SqlError.SqlError).reason._tag === "SerializationError")

/** How often a batch that deadlocked or failed to serialize is retried, and how long between attempts. */
const transientRetries = 8
const transientBackoff = Schedule.exponential("5 millis").pipe(Schedule.jittered)

/** Orders writes by object key (type, then id): the order batches take their row locks in. */
const compareKeys = (a: WriteSet, b: WriteSet): number =>
  a.objectType !== b.objectType
    ? (a.objectType < b.objectType ? -1 : 1)
    : a.objectId === b.objectId
    ? 0
    : a.objectId < b.objectId
    ? -1
    : 1

/** Turns SQL failures into `StorageError`s, letting the storage's own typed errors through. */
const toStorageError =
  (operation: string) =>
  <E extends SqlError.SqlError | StorageError | VersionConflict | AlarmClaimLost>(
    error: E
  ): Exclude<E, SqlError.SqlError> | StorageError =>
    error._tag === "SqlError"
      ? new StorageError({
        operation,
        detail: sqlDetail(error as SqlError.SqlError),
        outcome: outcomeOf(operation, error as SqlError.SqlError),
        cause: error
      })
      : error as Exclude<E, SqlError.SqlError>

const toSaveError = toStorageError("save")

/**
 * What went wrong, in the database's own words: drivers wrap the server's message (PostgreSQL's driver
 * reports only "Query failed" at the top), so the innermost cause's message is appended.
 */
const sqlDetail = (error: SqlError.SqlError): string => {
  let inner: unknown = error.reason.cause
  let message: string | undefined
  for (let depth = 0; depth < 5 && typeof inner === "object" && inner !== null; depth++) {
    const candidate = (inner as { readonly message?: unknown }).message
    if (typeof candidate === "string" && candidate !== "") message = candidate
    inner = (inner as { readonly cause?: unknown }).cause
  }
  return message === undefined || error.message.includes(message) ? error.message : `${error.message}: ${message}`
}

/**
 * The part of `@effect/sql-pg`'s `PgClient` used for LISTEN/NOTIFY, looked up by its service key so this
 * module does not depend on the PostgreSQL driver.
 */
const PgNotifications = Context.Service<{
  readonly listen: (
    channel: string
  ) => Effect.Effect<Queue.Dequeue<{ readonly payload: string }, unknown>, unknown, Scope.Scope>
}>("@effect/sql-pg/PgClient")

/** Whether a write failed only because its fence or alarm claim did not hold (nothing was written). */
const isLogicalFailure = (cause: Cause.Cause<unknown>): boolean => {
  const error = Cause.findError(cause)
  if (error._tag !== "Success") return false
  return error.success instanceof VersionConflict || error.success instanceof AlarmClaimLost
}

const hasAlarmChanges = (write: WriteSet): boolean => {
  const changes = write.alarms
  return changes !== undefined &&
    (changes.fired !== undefined || changes.removeAll || changes.remove.length > 0 || changes.put.length > 0)
}

const hasReplies = (write: WriteSet): boolean => write.replies !== undefined && write.replies.length > 0

/** Whether a write changes rows besides its object's (alarms, stored replies): then it needs a transaction. */
const hasOtherRows = (write: WriteSet): boolean => hasAlarmChanges(write) || hasReplies(write)

type Operation = "load" | "save" | "delete"
type Outcome = "success" | "conflict" | "error"

/**
 * A write set that fires an alarm (the usual alarm commit): it writes the state of an existing object, and
 * may cancel or schedule alarms by name, but not cancel them all.
 */
type FiredWrite = WriteSet & {
  readonly state: string
  readonly alarms: AlarmChanges & { readonly fired: NonNullable<AlarmChanges["fired"]> }
}

const isFiredOnly = (write: WriteSet): write is FiredWrite => {
  const changes = write.alarms
  return write.state !== null && write.expectedVersion > 0 && changes !== undefined &&
    changes.fired !== undefined && !changes.removeAll && !hasReplies(write)
}

const durationOf = (operation: Operation, outcome: Outcome) =>
  Metric.withAttributes(Telemetry.storageDuration, { operation, outcome })

/**
 * The duration histogram of each operation and outcome, made once: a metric with attributes made per update
 * computes its series key (a sorted JSON encoding) every time, a cost comparable to the rest of a write.
 */
const durations: Record<Operation, Record<Outcome, ReturnType<typeof durationOf>>> = {
  load: {
    success: durationOf("load", "success"),
    conflict: durationOf("load", "conflict"),
    error: durationOf("load", "error")
  },
  save: {
    success: durationOf("save", "success"),
    conflict: durationOf("save", "conflict"),
    error: durationOf("save", "error")
  },
  delete: {
    success: durationOf("delete", "success"),
    conflict: durationOf("delete", "conflict"),
    error: durationOf("delete", "error")
  }
}

/** How a failed operation is recorded: typed failures by kind; interruptions and defects are not recorded. */
const failureOutcome = (cause: Cause.Cause<{ readonly _tag: string }>): Outcome | undefined => {
  const error = Cause.findError(cause)
  if (error._tag !== "Success") return undefined
  return error.success instanceof VersionConflict ? "conflict" : "error"
}

/**
 * A storage span around `effect`, and its duration in the histogram. This wraps every load and write, so it
 * reads the clock and records the metric synchronously on the fiber, and makes the span only when a tracing
 * backend is installed: with Effect's built-in tracer nobody can see it, and it would cost about as much as
 * the rest of a coalesced write.
 */
const instrument = <A, E extends { readonly _tag: string }>(
  operation: Operation,
  write: { readonly objectType: string; readonly objectId: string },
  effect: Effect.Effect<A, E>
): Effect.Effect<A, E> =>
  Effect.withFiber((fiber) => {
    const clock = fiber.getRef(Clock.Clock)
    const start = clock.currentTimeMillisUnsafe()
    const traced = !tracing(fiber) ? effect : span(
      Telemetry.spanStorage[operation],
      { [Telemetry.attributes.objectType]: write.objectType, [Telemetry.attributes.objectId]: write.objectId }
    )(effect)
    return Effect.onExitPrimitive(
      traced,
      (exit) => {
        const outcome = Exit.isSuccess(exit) ? "success" : failureOutcome(exit.cause)
        if (outcome !== undefined) {
          durations[operation][outcome].updateUnsafe(clock.currentTimeMillisUnsafe() - start, fiber.context)
        }
        return undefined
      }
    )
  })

type VersionRow = { readonly object_type: string; readonly object_id: string; readonly version: number | string }

/**
 * The largest version the storage uses: one more is still exact in a JavaScript number (and in `node:sqlite`,
 * which refuses to read integers past 2^53 at all).
 */
const maxVersion = Number.MAX_SAFE_INTEGER - 1

/**
 * A stored version read as text (so a hand-edited one past 2^53, or not a number at all, cannot make the
 * driver fail the whole statement), or `undefined` when it is not a whole number from 1 to {@link maxVersion}.
 */
const parseVersion = (text: number | string | bigint): number | undefined => {
  const version = typeof text === "string" && !/^\d{1,16}$/.test(text.trim()) ? NaN : Number(text)
  return Number.isInteger(version) && version >= 1 && version <= maxVersion ? version : undefined
}

/** An object row as loaded: its state, or why it cannot be used (see `StoredObject.invalid`). */
const storedObject = (state: string, versionText: number | string): StoredObject => {
  const version = parseVersion(versionText)
  return version !== undefined ? { state, version } : {
    state: "",
    version: 0,
    invalid: invalidVersion(versionText)
  }
}

/** Why a stored version cannot be used (see `StoredObject.invalid`). */
const invalidVersion = (versionText: number | string): string =>
  `the stored version ${String(versionText)} is not a whole number from 1 to ${maxVersion} ` +
  "(the row was edited by hand); delete the object, or set its version to a valid one"

/** An object row's times, read as text (like versions: a hand edit must not fail the statement). */
type TimeColumns = { readonly created_at: number | string; readonly updated_at: number | string }

const timesOf = (row: TimeColumns) => ({
  createdAt: storedNumber(row.created_at),
  updatedAt: storedNumber(row.updated_at)
})

/** A stored number read back as text: NaN when it is not one (`Number("")` would say 0). */
const storedNumber = (text: number | string): number =>
  typeof text === "string" && text.trim() === "" ? NaN : Number(text)

/** Rows per multi-row write statement: 4 parameters each stays far below SQLite's and PostgreSQL's limits. */
const maxRowsPerStatement = 256

/** The smallest power of two (at least 2) that holds `n` rows. */
const paddedSize = (n: number): number => {
  let size = 2
  while (size < n) size *= 2
  return size
}

/** A write set that only changes state: the kind that multi-row statements carry. */
type StateWrite = WriteSet & { readonly state: string }

const isStateWrite = (write: WriteSet): write is StateWrite => write.state !== null && !hasOtherRows(write)

/**
 * A write set that changes its object's state and maybe stores replies (a keyed call's commit), nothing else: its
 * state goes in the multi-row statements with the state-only ones, its replies in one statement after them.
 */
const isStateAndReplies = (write: WriteSet): write is StateWrite => write.state !== null && !hasAlarmChanges(write)

/** The replies of the writes whose state applied (`applied`: new versions by object key). */
const repliesOfApplied = (writes: ReadonlyArray<WriteSet>, applied: ReadonlyMap<string, number>) => {
  const puts: Array<readonly [WriteSet, ReplyPut]> = []
  for (const write of writes) {
    if (write.replies === undefined || !applied.has(objectKey(write.objectType, write.objectId))) continue
    for (const put of write.replies) puts.push([write, put])
  }
  return puts
}

type MultiRowKind = "write" | "update" | "insert" | "load"

type LoadRequest = { readonly objectType: string; readonly objectId: string }

/** The rows of each multi-row statement (column names and PostgreSQL types), and the parameters before them. */
const multiRowShapes: Record<
  MultiRowKind,
  { readonly columns: ReadonlyArray<readonly [string, string]>; readonly leading: number }
> = {
  write: {
    columns: [["object_type", "text"], ["object_id", "text"], ["state", "jsonb"], ["expected", "bigint"]],
    leading: 1
  },
  update: {
    columns: [["object_type", "text"], ["object_id", "text"], ["state", "jsonb"], ["expected", "bigint"]],
    leading: 1
  },
  insert: { columns: [["object_type", "text"], ["object_id", "text"], ["state", "jsonb"]], leading: 2 },
  load: { columns: [["object_type", "text"], ["object_id", "text"]], leading: 0 }
}

/**
 * On PostgreSQL, batches of at most this many state-only writes go out as single-row statements in parallel
 * instead of one multi-row statement, whose planning costs more than they do.
 */
const pgParallelWrites = 8

/** Commit batches in flight at once on PostgreSQL, by default (`Options.commitConcurrency`). */
const defaultCommitConcurrency = 4

/** The stripe of an object: FNV-1a over its type and id, modulo `stripes`. */
const stripeOf = (objectType: string, objectId: string, stripes: number): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < objectType.length; i++) hash = Math.imul(hash ^ objectType.charCodeAt(i), 0x01000193)
  for (let i = 0; i < objectId.length; i++) hash = Math.imul(hash ^ objectId.charCodeAt(i), 0x01000193)
  return (hash >>> 0) % stripes
}

const objectKey = (objectType: string, objectId: string) => `${objectType}\u0000${objectId}`

const collect = (applied: Map<string, number>, rows: ReadonlyArray<VersionRow>) => {
  for (const row of rows) applied.set(objectKey(row.object_type, row.object_id), Number(row.version))
}

/**
 * Builds the storage over the `SqlClient` in context (migrating first unless `migrate: false`).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options?: Options): Effect.Effect<
  Storage["Service"],
  StorageError,
  SqlClient.SqlClient
> =>
  Effect.gen(function*() {
    const t = yield* tables(options)
    const commitConcurrency = options?.commitConcurrency ?? defaultCommitConcurrency
    if (!Number.isInteger(commitConcurrency) || commitConcurrency < 1 || commitConcurrency > 64) {
      return yield* new StorageError({
        operation: "configure",
        outcome: "not-applied",
        detail: `invalid commitConcurrency ${String(commitConcurrency)}: a whole number from 1 to 64`
      })
    }
    const sql = yield* SqlClient.SqlClient
    if (options?.migrate ?? true) {
      yield* migrate(options).pipe(
        Effect.mapError((error) =>
          error._tag === "StorageError"
            ? error
            : new StorageError({ operation: "migrate", detail: error.message, cause: error })
        )
      )
    }
    const pg = isPgDialect(sql) ? yield* Effect.serviceOption(PgNotifications) : Option.none()
    const channel = t.alarms.replace(/\./g, "_")
    const objects = sql(t.objects)
    const alarms = sql(t.alarms)
    const replies = sql(t.replies)
    const isPg = isPgDialect(sql)
    const stateColumn = isPg ? sql.literal("state::text") : sql.literal("state")
    const timeColumns = sql.literal("CAST(created_at AS TEXT) AS created_at, CAST(updated_at AS TEXT) AS updated_at")
    const limits: StorageLimits = {
      maxStateBytes: options?.maxStateBytes ?? defaultLimits.maxStateBytes,
      maxAlarmPayloadBytes: options?.maxAlarmPayloadBytes ?? defaultLimits.maxAlarmPayloadBytes
    }
    /** A JSON column's size as the database returns it, in bytes (without reading it). */
    const bytesOf = (column: string) => isPg ? `octet_length(${column}::text)` : `length(CAST(${column} AS BLOB))`
    /**
     * The largest alarm payload a claim or a listing reads: more is left unread (the alarm fails alone), since
     * one row the driver cannot read (PostgreSQL's reads at most 16 MiB per row) fails the whole statement,
     * and a claim's UPDATE has committed by then. Twice the limit, for what was stored before it or reads back
     * longer (`jsonb` as text), and never less than 8 MiB.
     */
    const maxPayloadRead = Math.max(8 * 1024 * 1024, 2 * limits.maxAlarmPayloadBytes)
    const jsonParam = (json: string) => (isPg ? sql`${json}::jsonb` : sql`${json}`)
    const objectsName = sql`${objects}`.compile()[0]

    // As text: a hand-edited version past 2^53 must not fail the statement (node:sqlite refuses to read it).
    const currentVersion = (objectType: string, objectId: string) =>
      Effect.map(
        sql<{ version: number | string }>`SELECT CAST(version AS TEXT) AS version FROM ${objects}
          WHERE object_type = ${objectType} AND object_id = ${objectId}`,
        (rows) => (rows.length === 0 ? 0 : storedNumber(rows[0]!.version))
      )

    const conflict = (write: WriteSet) =>
      Effect.flatMap(currentVersion(write.objectType, write.objectId), (actualVersion) =>
        Effect.fail(
          new VersionConflict({
            objectType: write.objectType,
            objectId: write.objectId,
            expectedVersion: write.expectedVersion,
            actualVersion
          })
        ))

    /** Writes the state row under the version fence; fails with VersionConflict when it does not hold. */
    // Every lone write (each write at low load) runs one of these two texts: built once, not compiled from a
    // template per call.
    const insertOneText = isPg
      ? `INSERT INTO ${objectsName} (object_type, object_id, state, version, created_at, updated_at)
          VALUES ($1, $2, $3::jsonb, 1, $4, $4) ON CONFLICT (object_type, object_id) DO NOTHING RETURNING version`
      : `INSERT INTO ${objectsName} (object_type, object_id, state, version, created_at, updated_at)
          VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (object_type, object_id) DO NOTHING RETURNING version`
    const updateOneText = `UPDATE ${objectsName} SET state = ${
      isPg ? "$1::jsonb" : "?"
    }, version = version + 1, updated_at = ${isPg ? "$2" : "?"}
      WHERE object_type = ${isPg ? "$3" : "?"} AND object_id = ${isPg ? "$4" : "?"} AND version = ${
      isPg ? "$5" : "?"
    } RETURNING version`

    /** Writes the state row under the version fence; fails with VersionConflict when it does not hold. */
    const writeState = (write: WriteSet & { readonly state: string }, now: number) =>
      Effect.flatMap(
        write.expectedVersion === 0
          ? sql.unsafe<{ version: number | string }>(
            insertOneText,
            isPg
              ? [write.objectType, write.objectId, write.state, now]
              : [write.objectType, write.objectId, write.state, now, now]
          )
          : sql.unsafe<{ version: number | string }>(updateOneText, [
            write.state,
            now,
            write.objectType,
            write.objectId,
            write.expectedVersion
          ]),
        (rows) => rows.length === 0 ? conflict(write) : Effect.succeed(Number(rows[0]!.version))
      )

    const applyAlarms = (write: WriteSet, changes: AlarmChanges, now: number) =>
      Effect.gen(function*() {
        const where = sql`object_type = ${write.objectType} AND object_id = ${write.objectId}`
        const fired = changes.fired
        if (fired !== undefined) {
          const removed = yield* sql<{ name: string }>`DELETE FROM ${alarms}
            WHERE ${where} AND name = ${fired.name} AND claim_owner = ${fired.claim}
            RETURNING name`
          if (removed.length === 0) {
            return yield* new AlarmClaimLost({
              objectType: write.objectType,
              objectId: write.objectId,
              name: fired.name
            })
          }
        }
        if (changes.removeAll) yield* sql`DELETE FROM ${alarms} WHERE ${where}`
        if (changes.remove.length > 0) {
          yield* sql`DELETE FROM ${alarms} WHERE ${where} AND ${sql.in("name", changes.remove)}`
        }
        if (Option.isSome(pg) && changes.put.length > 0) {
          // Delivered when the transaction commits, so other runtimes never wake for an alarm that is not there.
          let earliest = Infinity
          for (const put of changes.put) if (put.fireAt < earliest) earliest = put.fireAt
          yield* sql`SELECT pg_notify(${channel}, ${String(earliest)})`
        }
        for (const alarm of changes.put) {
          yield* sql`INSERT INTO ${alarms}
              (object_type, object_id, name, fire_at, payload, cron, attempts, claim_owner, claim_expires_at,
               failed_at, last_error, created_at)
            VALUES (${write.objectType}, ${write.objectId}, ${alarm.name}, ${alarm.fireAt},
              ${jsonParam(alarm.payload)}, ${alarm.cron}, 0, NULL, NULL, NULL, NULL, ${now})
            ON CONFLICT (object_type, object_id, name) DO UPDATE SET
              fire_at = excluded.fire_at, payload = excluded.payload, cron = excluded.cron, attempts = 0,
              claim_owner = NULL, claim_expires_at = NULL, failed_at = NULL, last_error = NULL,
              created_at = excluded.created_at`
        }
      })

    const alarmsName = sql`${alarms}`.compile()[0]
    const deleteFiredTexts = new Map<number, string>()
    /**
     * The text removing `size` fired alarms by key and claim. Built once per size, and sizes are padded to a
     * power of two (with rows that match nothing), like the multi-row writes: compiling a template of 4 × 256
     * fragments and preparing a text per batch size cost about as much as the database's own work.
     */
    const deleteFiredText = (size: number): string => {
      let text = deleteFiredTexts.get(size)
      if (text === undefined) {
        let n = 0
        const p = () => (isPg ? `$${++n}::text` : "?")
        const rows = Array.from({ length: size }, () => `(${p()}, ${p()}, ${p()}, ${p()})`).join(", ")
        text = `DELETE FROM ${alarmsName} WHERE (object_type, object_id, name, claim_owner) IN (VALUES ${rows})
          RETURNING object_type, object_id`
        deleteFiredTexts.set(size, text)
      }
      return text
    }

    /**
     * The fired alarms of many write sets that change nothing else about alarms, removed where their claims
     * still hold (one statement per `maxRowsPerStatement`); returns the keys (`objectKey`) of the objects whose
     * alarm was removed.
     */
    const deleteFired = (writes: ReadonlyArray<FiredWrite>) =>
      Effect.gen(function*() {
        const held = new Set<string>()
        for (let start = 0; start < writes.length; start += maxRowsPerStatement) {
          const end = Math.min(writes.length, start + maxRowsPerStatement)
          const size = paddedSize(end - start)
          const params: Array<unknown> = []
          for (let i = start; i < end; i++) {
            const w = writes[i]!
            params.push(w.objectType, w.objectId, w.alarms.fired.name, w.alarms.fired.claim)
          }
          for (let i = end - start; i < size; i++) params.push(null, null, null, null)
          const rows = yield* sql.unsafe<{ object_type: string; object_id: string }>(deleteFiredText(size), params)
          for (const row of rows) held.add(objectKey(row.object_type, row.object_id))
        }
        return held
      })

    /** Removes alarms of many objects by name in one statement. */
    const removeAlarms = (removals: ReadonlyArray<readonly [write: WriteSet, name: string]>) =>
      sql`DELETE FROM ${alarms} WHERE (object_type, object_id, name) IN (VALUES ${
        sql.csv(removals.map(([w, name]) =>
          isPg
            ? sql`(${w.objectType}::text, ${w.objectId}::text, ${name}::text)`
            : sql`(${w.objectType}, ${w.objectId}, ${name})`
        ))
      })`

    /** Schedules (or replaces, by name) alarms of many objects in one statement, exactly as `applyAlarms` does. */
    const putAlarms = (puts: ReadonlyArray<readonly [write: WriteSet, put: AlarmPut]>, now: number) =>
      sql`INSERT INTO ${alarms}
          (object_type, object_id, name, fire_at, payload, cron, attempts, claim_owner, claim_expires_at,
           failed_at, last_error, created_at)
        VALUES ${
        sql.csv(puts.map(([w, put]) =>
          sql`(${w.objectType}, ${w.objectId}, ${put.name}, ${put.fireAt}, ${
            jsonParam(put.payload)
          }, ${put.cron}, 0, NULL, NULL, NULL, NULL, ${now})`
        ))
      }
        ON CONFLICT (object_type, object_id, name) DO UPDATE SET
          fire_at = excluded.fire_at, payload = excluded.payload, cron = excluded.cron, attempts = 0,
          claim_owner = NULL, claim_expires_at = NULL, failed_at = NULL, last_error = NULL,
          created_at = excluded.created_at`

    /** Rows per multi-row alarm statement: far below both databases' limits on bound parameters. */
    const alarmRowsPerStatement = 500

    const inChunks = <A>(
      rows: ReadonlyArray<A>,
      f: (chunk: ReadonlyArray<A>) => Effect.Effect<unknown, SqlError.SqlError>
    ) =>
      Effect.gen(function*() {
        for (let start = 0; start < rows.length; start += alarmRowsPerStatement) {
          yield* f(rows.slice(start, start + alarmRowsPerStatement))
        }
      })

    /**
     * The commits of many fired alarms (the usual alarm commit: state written, the fired alarm removed, maybe
     * alarms cancelled or scheduled, as a recurring alarm re-arming itself does) in a few statements for the
     * whole batch instead of a savepoint and four or more statements each. Each write keeps its own outcome:
     * one whose claim no longer holds fails alone with `AlarmClaimLost` and writes nothing. A version conflict
     * would need the undoing of that write's alarm removal, so it undoes the whole attempt (a savepoint) and
     * returns `undefined`: the caller then commits each write on its own (another process wrote one of the
     * objects, which is rare).
     */
    const commitFired = (writes: ReadonlyArray<FiredWrite>, now: number) =>
      sql.withTransaction(Effect.gen(function*() {
        const held = yield* deleteFired(writes)
        const live = writes.filter((w) => held.has(objectKey(w.objectType, w.objectId)))
        const applied = live.length === 0 ? new Map<string, number>() : yield* writeStates(live, now, true)
        const conflicted = live.find((w) => !applied.has(objectKey(w.objectType, w.objectId)))
        if (conflicted !== undefined) return yield* conflict(conflicted)
        // Only now that every live write applied: their other alarm changes, in `applyAlarms`' order.
        const removals = live.flatMap((w) => w.alarms.remove.map((name) => [w, name] as const))
        if (removals.length > 0) yield* inChunks(removals, removeAlarms)
        const puts = live.flatMap((w) => w.alarms.put.map((put) => [w, put] as const))
        if (puts.length > 0) {
          // Delivered when the transaction commits, so other runtimes never wake for an alarm that is not there.
          if (Option.isSome(pg)) {
            const earliest = puts.reduce((min, [, put]) => Math.min(min, put.fireAt), Infinity)
            yield* sql`SELECT pg_notify(${channel}, ${String(earliest)})`
          }
          yield* inChunks(puts, (chunk) => putAlarms(chunk, now))
        }
        return writes.map((w): Exit.Exit<number, AlarmClaimLost> => {
          const version = applied.get(objectKey(w.objectType, w.objectId))
          return version !== undefined
            ? Exit.succeed(version)
            : Exit.fail(
              new AlarmClaimLost({ objectType: w.objectType, objectId: w.objectId, name: w.alarms.fired.name })
            )
        })
      })).pipe(Effect.catchTag("VersionConflict", () => Effect.succeed(undefined)))

    const deleteObject = (write: WriteSet) =>
      sql.withTransaction(Effect.gen(function*() {
        const fired = write.alarms?.fired
        if (fired !== undefined) {
          const held = yield* sql`SELECT name FROM ${alarms} WHERE object_type = ${write.objectType}
            AND object_id = ${write.objectId} AND name = ${fired.name} AND claim_owner = ${fired.claim}`
          if (held.length === 0) {
            return yield* new AlarmClaimLost({
              objectType: write.objectType,
              objectId: write.objectId,
              name: fired.name
            })
          }
        }
        if (write.expectedVersion === 0) {
          // A row whose version is no valid one loads as version 0 with `invalid` set: deleting at version 0
          // removes it, so a hand-edited row can always be deleted.
          yield* sql`DELETE FROM ${objects} WHERE object_type = ${write.objectType} AND object_id = ${write.objectId}
            AND NOT (version >= 1 AND version <= ${maxVersion})`
          const actual = yield* currentVersion(write.objectType, write.objectId)
          if (actual !== 0) return yield* conflict(write)
        } else {
          const rows = yield* sql<{ version: number | string }>`DELETE FROM ${objects}
            WHERE object_type = ${write.objectType} AND object_id = ${write.objectId}
              AND version = ${write.expectedVersion}
            RETURNING version`
          if (rows.length === 0) return yield* conflict(write)
        }
        yield* sql`DELETE FROM ${alarms} WHERE object_type = ${write.objectType} AND object_id = ${write.objectId}`
        yield* sql`DELETE FROM ${replies} WHERE object_type = ${write.objectType} AND object_id = ${write.objectId}`
        return 0
      }))

    /** Stores the replies of a write (replacing any under the same keys), in its transaction. */
    const putReplies = (write: WriteSet, puts: ReadonlyArray<ReplyPut>, now: number) =>
      putRepliesOf(puts.map((put) => [write, put] as const), now)

    /** Stores the replies of several writes (replacing any under the same keys), in their transaction. */
    const putRepliesOf = (puts: ReadonlyArray<readonly [WriteSet, ReplyPut]>, now: number) => {
      const row = ([write, put]: readonly [WriteSet, ReplyPut]) =>
        sql`(${write.objectType}, ${write.objectId}, ${put.key}, ${put.payloadHash}, ${put.reply}, ${put.expiresAt}, ${now})`
      return inChunks(puts, (chunk) =>
        sql`INSERT INTO ${replies}
            (object_type, object_id, idempotency_key, payload_hash, reply, expires_at, created_at)
          VALUES ${sql.csv(chunk.map(row))}
          ON CONFLICT (object_type, object_id, idempotency_key) DO UPDATE SET
            payload_hash = excluded.payload_hash, reply = excluded.reply, expires_at = excluded.expires_at,
            created_at = excluded.created_at`)
    }

    /** One write set, on its own: a single statement when it only changes state, else one transaction. */
    const commitOne = (write: WriteSet, now: number) => {
      if (write.state === null) return deleteObject(write)
      const state = write.state
      return hasOtherRows(write)
        ? sql.withTransaction(
          Effect.tap(writeState({ ...write, state }, now), () =>
            Effect.andThen(
              hasAlarmChanges(write) ? applyAlarms(write, write.alarms!, now) : Effect.void,
              hasReplies(write) ? putReplies(write, write.replies!, now) : Effect.void
            ))
        )
        : writeState({ ...write, state }, now)
    }

    /**
     * The statements writing many state-only write sets under their fences: per chunk of rows, one on
     * PostgreSQL (updates and inserts in one statement), one per kind on SQLite. Each returns the writes that
     * applied. The row lists are padded to a power of two with rows that match nothing, so a handful of
     * statement texts serve every batch size and stay in the prepared-statement caches.
     */
    const writeStatements = (writes: ReadonlyArray<StateWrite>, now: number) => {
      const statements: Array<Effect.Effect<ReadonlyArray<VersionRow>, SqlError.SqlError>> = []
      const add = (kind: MultiRowKind, rows: ReadonlyArray<StateWrite>) => {
        if (rows.length === 0) return
        const size = paddedSize(rows.length)
        const width = multiRowShapes[kind].columns.length
        const params: Array<unknown> = kind === "insert" ? [now, now] : [now]
        for (const w of rows) {
          params.push(w.objectType, w.objectId, w.state)
          if (width === 4) params.push(w.expectedVersion)
        }
        for (let i = rows.length * width; i < size * width; i++) params.push(null)
        statements.push(sql.unsafe<VersionRow>(multiRowText(kind, size), params))
      }
      for (let start = 0; start < writes.length; start += maxRowsPerStatement) {
        const chunk = writes.slice(start, start + maxRowsPerStatement)
        if (isPg) {
          add("write", chunk)
        } else {
          add("update", chunk.filter((w) => w.expectedVersion > 0))
          add("insert", chunk.filter((w) => w.expectedVersion === 0))
        }
      }
      return statements
    }

    /**
     * Writes state-only write sets; returns the new version of each that applied, by object key (the others
     * met a different stored version). A single statement is atomic on its own, so it runs without an
     * explicit transaction (on PostgreSQL that saves two round trips per batch); several run in one
     * transaction unless the caller already holds one.
     */
    const writeStates = (writes: ReadonlyArray<StateWrite>, now: number, inTransaction: boolean) => {
      const statements = writeStatements(writes, now)
      const run = Effect.map(Effect.all(statements), (results) => {
        const applied = new Map<string, number>()
        for (const rows of results) collect(applied, rows)
        return applied
      })
      return statements.length === 1 || inTransaction ? run : sql.withTransaction(run)
    }

    const statementTexts = new Map<string, string>()
    /**
     * The text of a multi-row statement for `size` rows: `write` on PostgreSQL, `update` and `insert` on
     * SQLite, `load` on both. The rows are a `VALUES` list named `v` (PostgreSQL names and casts its columns;
     * SQLite cannot name them and calls them column1, column2, …); the leading parameters come first.
     */
    const multiRowText = (kind: MultiRowKind, size: number): string => {
      const cacheKey = `${kind}:${size}`
      const cached = statementTexts.get(cacheKey)
      if (cached !== undefined) return cached
      const { columns, leading } = multiRowShapes[kind]
      let n = leading
      const row = () => `(${columns.map(([, type]) => (isPg ? `$${++n}::${type}` : "?")).join(", ")})`
      const rows = Array.from({ length: size }, row).join(", ")
      const c = (i: number) => (isPg ? `v.${columns[i]![0]}` : `v.column${i + 1}`)
      let text: string
      switch (kind) {
        case "write":
          // Updates and creations in one statement (data-modifying CTEs); the padding rows match neither. The
          // rows to update are locked first, in key order (`locked`: a locking clause runs above its sort), and
          // new rows are inserted in key order: whatever join order the planner picks for the update, two
          // processes' statements over the same rows then take their locks in the same order and never
          // deadlock each other.
          text = `WITH v(object_type, object_id, state, expected) AS (VALUES ${rows}), locked AS MATERIALIZED (
              SELECT o.object_type, o.object_id FROM ${objectsName} AS o
              JOIN v ON o.object_type = v.object_type AND o.object_id = v.object_id
              WHERE v.expected > 0 AND o.version = v.expected
              ORDER BY o.object_type, o.object_id
              FOR UPDATE OF o
            ), updated AS (
              UPDATE ${objectsName} AS o SET state = v.state, version = o.version + 1, updated_at = $1::bigint
              FROM v JOIN locked AS l ON l.object_type = v.object_type AND l.object_id = v.object_id
              WHERE v.expected > 0 AND o.object_type = v.object_type AND o.object_id = v.object_id
                AND o.version = v.expected
              RETURNING o.object_type, o.object_id, o.version
            ), inserted AS (
              INSERT INTO ${objectsName} (object_type, object_id, state, version, created_at, updated_at)
              SELECT v.object_type, v.object_id, v.state, 1, $1::bigint, $1::bigint FROM v WHERE v.expected = 0
              ORDER BY v.object_type, v.object_id
              ON CONFLICT (object_type, object_id) DO NOTHING
              RETURNING object_type, object_id, version
            )
            SELECT object_type, object_id, version FROM updated
            UNION ALL SELECT object_type, object_id, version FROM inserted`
          break
        case "update":
          text = `UPDATE ${objectsName} AS o SET state = v.column3, version = o.version + 1, updated_at = ?
            FROM (VALUES ${rows}) AS v
            WHERE o.object_type = v.column1 AND o.object_id = v.column2 AND o.version = v.column4
            RETURNING object_type, object_id, version`
          break
        case "insert":
          text = `INSERT INTO ${objectsName} (object_type, object_id, state, version, created_at, updated_at)
            SELECT v.column1, v.column2, v.column3, 1, ?, ? FROM (VALUES ${rows}) AS v WHERE v.column1 IS NOT NULL
            ON CONFLICT (object_type, object_id) DO NOTHING
            RETURNING object_type, object_id, version`
          break
        case "load":
          text = `SELECT o.object_type, o.object_id, ${
            isPg ? "o.state::text" : "o.state"
          } AS state, CAST(o.version AS TEXT) AS version
            FROM (VALUES ${rows}) AS v${isPg ? "(object_type, object_id)" : ""}
            JOIN ${objectsName} AS o ON o.object_type = ${c(0)} AND o.object_id = ${c(1)}`
          break
      }
      statementTexts.set(cacheKey, text)
      return text
    }

    /**
     * A batch of write sets from different objects, atomically: state-only ones (and those that only add
     * stored replies) in multi-row statements,
     * the others each under a savepoint, all in one transaction (a batch of state-only writes that fits one
     * statement needs none). Each write keeps its own outcome: a version conflict or a lost alarm claim fails
     * that write alone (a savepoint undoes its partial changes); an SQL error fails the whole batch.
     */
    const commitBatchOnce = (writes: ReadonlyArray<WriteSet>) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (writes.length === 1) {
          // A lone write's deadlock fails the attempt, so that `commitBatch` retries it like a batch's.
          return Effect.flatMap(Effect.exit(commitOne(writes[0]!, now)), (exit) => {
            const error = Exit.isFailure(exit) ? Cause.findError(exit.cause) : undefined
            return error !== undefined && error._tag === "Success" && isTransient(error.success)
              ? Effect.fail(error.success)
              : Effect.succeed([exit])
          })
        }
        if (isPg && writes.length <= pgParallelWrites && writes.every(isStateWrite)) {
          // A few writes: one single-row statement each, all at once on the pool. PostgreSQL plans the
          // multi-row statement anew for every batch (about 0.6 ms for 4 rows, against 0.04 ms for a single-row
          // update), which is most of a small batch's cost. Each write is atomic on its own and has its own
          // outcome either way.
          return Effect.forEach(writes, (write) => Effect.exit(writeState(write, now)), { concurrency: "unbounded" })
        }
        if (writes.every(isStateWrite)) {
          return Effect.flatMap(writeStates(writes, now, false), (applied) => {
            // A plain loop: only the writes that met another version (rare) need an effect, to read it.
            const results: Array<Exit.Exit<number, SqlError.SqlError | VersionConflict>> = []
            let conflicted: Array<number> | undefined
            for (let i = 0; i < writes.length; i++) {
              const version = applied.get(objectKey(writes[i]!.objectType, writes[i]!.objectId))
              if (version !== undefined) results.push(Exit.succeed(version))
              else {
                results.push(Exit.void as never)
                ;(conflicted ??= []).push(i)
              }
            }
            if (conflicted === undefined) return Effect.succeed(results)
            return Effect.map(
              Effect.forEach(conflicted, (i) => Effect.exit(conflict(writes[i]!))),
              (exits) => {
                conflicted.forEach((i, j) => results[i] = exits[j]!)
                return results
              }
            )
          })
        }
        if (writes.every(isStateAndReplies)) {
          // Keyed calls' commits: the states in the multi-row statements, then the replies of those that applied
          // in one more, all in one transaction (a savepoint per write would cost four round trips each).
          return sql.withTransaction(Effect.gen(function*() {
            const applied = yield* writeStates(writes, now, true)
            yield* putRepliesOf(repliesOfApplied(writes, applied), now)
            return yield* Effect.forEach(
              writes,
              (write): Effect.Effect<Exit.Exit<number, SqlError.SqlError | VersionConflict>> => {
                const version = applied.get(objectKey(write.objectType, write.objectId))
                return version !== undefined ? Effect.succeed(Exit.succeed(version)) : Effect.exit(conflict(write))
              }
            )
          }))
        }
        return sql.withTransaction(Effect.gen(function*() {
          const results: Array<Exit.Exit<number, SqlError.SqlError | VersionConflict | AlarmClaimLost>> = []
          const simple = writes.filter(isStateAndReplies)
          const applied = simple.length > 1 ? yield* writeStates(simple, now, true) : undefined
          if (applied !== undefined) yield* putRepliesOf(repliesOfApplied(simple, applied), now)
          const fired: Array<number> = []
          writes.forEach((write, i) => {
            if (isFiredOnly(write)) {
              fired.push(i)
            }
          })
          if (fired.length > 1) {
            const outcomes = yield* commitFired(
              fired.map((i) => writes[i] as FiredWrite),
              now
            )
            if (outcomes !== undefined) fired.forEach((i, j) => results[i] = outcomes[j]!)
          }
          for (let i = 0; i < writes.length; i++) {
            if (results[i] !== undefined) continue
            const write = writes[i]!
            if (applied !== undefined && isStateAndReplies(write)) {
              const version = applied.get(objectKey(write.objectType, write.objectId))
              results[i] = version !== undefined ? Exit.succeed(version) : yield* Effect.exit(conflict(write))
              continue
            }
            const exit = yield* Effect.exit(
              isStateWrite(write)
                ? commitOne(write, now)
                : sql.withTransaction(commitOne(write, now))
            )
            // A version conflict or a lost claim is this write's own outcome. An SQL error is not: on
            // PostgreSQL it aborts the whole transaction (whose COMMIT then silently rolls back), so the
            // whole batch must fail, or writes reported as committed would be lost.
            if (Exit.isFailure(exit) && !isLogicalFailure(exit.cause)) return yield* Effect.failCause(exit.cause)
            results[i] = exit
          }
          return results
        }))
      })

    /**
     * A batch, in key order: its writes run in the order of their objects' keys (and PostgreSQL's multi-row
     * statement locks its rows in that order too), so two processes' batches over the same objects wait for
     * each other instead of deadlocking. What can still deadlock (a batch against a lone write that locks an
     * object's alarms before its state row, say) or fail to serialize is retried here: the database rolled
     * the whole attempt back, so nothing applied and every write of the batch is retried as it was.
     */
    const commitBatch = (writes: ReadonlyArray<WriteSet>) => {
      // A lone write (every write at low load) has no order to keep, and neither has SQLite: its writers take
      // the one write lock in turn (`BEGIN IMMEDIATE`), so its batches cannot deadlock whatever their order.
      const order = writes.length === 1 || !isPg
        ? undefined
        : writes.map((_, i) => i).toSorted((i, j) => compareKeys(writes[i]!, writes[j]!))
      const attempt = commitBatchOnce(order === undefined ? writes : order.map((i) => writes[i]!))
      return attempt.pipe(
        // The retry machinery is set up only once an attempt failed that way: the usual attempt pays nothing.
        Effect.catchIf(isTransient, () =>
          attempt.pipe(
            Effect.retry({ while: isTransient, times: transientRetries - 1, schedule: transientBackoff })
          )),
        Effect.map((results) => {
          const inOrder: Array<Exit.Exit<number, StorageError | VersionConflict | AlarmClaimLost>> = []
          // Successes (nearly all) pass as they are: no new exit per write.
          const mapped = (
            exit: (typeof results)[number]
          ): Exit.Exit<number, StorageError | VersionConflict | AlarmClaimLost> =>
            Exit.isSuccess(exit) ? exit as Exit.Exit<number, never> : Exit.mapError(exit, toSaveError)
          if (order === undefined) { for (const exit of results) inOrder.push(mapped(exit)) }
          else order.forEach((i, j) => inOrder[i] = mapped(results[j]!))
          return inOrder
        }),
        Effect.mapError(toSaveError)
      )
    }

    const makeCommitBatcher = () =>
      Batcher.make<WriteSet, number, StorageError | VersionConflict | AlarmClaimLost>({
        key: (write) => objectKey(write.objectType, write.objectId),
        maxBatch: options?.maxBatch ?? (isPg ? 256 : 1024),
        run: commitBatch,
        interrupted: () =>
          new StorageError({ operation: "save", detail: "interrupted while committing; the outcome is unknown" })
      })
    // One batch in flight per batcher: on PostgreSQL the next batch would wait a whole round trip (and the
    // commit's fsync) while the pool has idle connections. Objects are split over `commitConcurrency` batchers by
    // a hash of their key, so batches of different stripes commit at once on different connections, while an
    // object's writes stay in one stripe, in order, never two in flight. Their batches touch disjoint rows, so
    // they cannot deadlock each other. SQLite has one connection and one writer: one batcher.
    const stripes = isPg ? commitConcurrency : 1
    const batchers = Array.from({ length: stripes }, makeCommitBatcher)
    const batcherOf = (write: WriteSet) =>
      batchers.length === 1 ? batchers[0]! : batchers[stripeOf(write.objectType, write.objectId, batchers.length)]!

    const commit = (write: WriteSet): Effect.Effect<number, StorageError | VersionConflict | AlarmClaimLost> =>
      instrument(write.state === null ? "delete" : "save", write, batcherOf(write).submit(write))

    /** `commit` as a callback: the write's duration is recorded as `instrument` does, without a span. */
    const commitUnsafe = (
      write: WriteSet,
      context: Context.Context<never>,
      done: (exit: Exit.Exit<number, StorageError | VersionConflict | AlarmClaimLost>) => void
    ): void => {
      const clock = Context.get(context, Clock.Clock)
      const start = clock.currentTimeMillisUnsafe()
      const durationOf = durations[write.state === null ? "delete" : "save"]
      batcherOf(write).submitUnsafe(write, context, (exit) => {
        const outcome = Exit.isSuccess(exit) ? "success" : failureOutcome(exit.cause)
        if (outcome !== undefined) durationOf[outcome].updateUnsafe(clock.currentTimeMillisUnsafe() - start, context)
        done(exit)
      })
    }

    const loadOne = (request: LoadRequest) =>
      Effect.map(
        sql<{ state: string; version: number | string }>`SELECT ${stateColumn} AS state,
            CAST(version AS TEXT) AS version FROM ${objects}
          WHERE object_type = ${request.objectType} AND object_id = ${request.objectId}`,
        (rows) => rows.length === 0 ? undefined : storedObject(rows[0]!.state, rows[0]!.version)
      )

    /** The size and version of an object's row, without reading its state. */
    const probe = (request: LoadRequest) =>
      Effect.map(
        sql<{ bytes: number | string | null; version: number | string } & TimeColumns>`SELECT ${
          sql.literal(bytesOf("state"))
        } AS bytes, CAST(version AS TEXT) AS version, ${timeColumns} FROM ${objects}
          WHERE object_type = ${request.objectType} AND object_id = ${request.objectId}`,
        (rows) => rows[0]
      )

    /**
     * Why a row whose load failed cannot be read, when its size says so (over `maxStateBytes`: stored before
     * the limit, or by hand); otherwise the failure stands (the database is failing, not the row).
     */
    const unreadable = (request: LoadRequest, error: SqlError.SqlError) =>
      Effect.flatMap(probe(request), (row): Effect.Effect<StoredObject | undefined, SqlError.SqlError> => {
        const bytes = Number(row?.bytes)
        // Only a row over the limit is the row's fault; anything else is the failure it was.
        if (row === undefined || !(bytes > limits.maxStateBytes)) return Effect.fail(error)
        const invalid = `the stored state is ${bytes} bytes as the database returns it, over maxStateBytes ` +
          `(${limits.maxStateBytes}), and could not be read back (${sqlDetail(error)}); delete the object, ` +
          "or raise the limits of the storage and of the driver"
        return Effect.succeed({ state: "", version: parseVersion(row.version) ?? 0, invalid })
      })

    /**
     * One object's load, on its own. A row too large to read back loads as `invalid`, so only its object fails
     * (with `StateDecodeError`) and `delete` still works at its version.
     */
    const loadAlone = (request: LoadRequest): Effect.Effect<StoredObject | undefined, SqlError.SqlError> =>
      loadOne(request).pipe(Effect.catch((error) => unreadable(request, error)))

    /** After this many loads in a row failed on their own, the database is failing, not a row: stop trying. */
    const aloneFailuresToStop = 2

    /**
     * The loads of a batch in one statement per chunk (a lone load is the plain single-row query). When a
     * chunk's statement fails, its loads are retried one by one: a row the driver cannot read (one too large
     * for PostgreSQL's driver) fails the statement of every load beside it, but must fail only its own object.
     * Once loads fail on their own twice in a row, the rest of the chunk fails with them without more tries,
     * so a database that is down costs a few statements per batch, not one per load.
     */
    const loadBatch = (requests: ReadonlyArray<LoadRequest>) =>
      Effect.gen(function*() {
        if (requests.length === 1) {
          return [Exit.mapError(yield* Effect.exit(loadAlone(requests[0]!)), toStorageError("load"))]
        }
        const results: Array<Exit.Exit<StoredObject | undefined, SqlError.SqlError>> = []
        for (let start = 0; start < requests.length; start += maxRowsPerStatement) {
          const chunk = requests.slice(start, start + maxRowsPerStatement)
          const size = paddedSize(chunk.length)
          const params: Array<unknown> = []
          for (const r of chunk) params.push(r.objectType, r.objectId)
          for (let i = chunk.length; i < size; i++) params.push(null, null)
          const read = yield* Effect.exit(
            sql.unsafe<VersionRow & { readonly state: string }>(multiRowText("load", size), params)
          )
          if (Exit.isSuccess(read)) {
            const found = new Map<string, StoredObject>()
            for (const row of read.value) {
              found.set(objectKey(row.object_type, row.object_id), storedObject(row.state, row.version))
            }
            for (const r of chunk) results.push(Exit.succeed(found.get(objectKey(r.objectType, r.objectId))))
            continue
          }
          let failedInARow = 0
          let lastFailure: Exit.Exit<StoredObject | undefined, SqlError.SqlError> = Exit.failCause(read.cause)
          for (const r of chunk) {
            if (failedInARow >= aloneFailuresToStop) {
              results.push(lastFailure)
              continue
            }
            const alone = yield* Effect.exit(loadAlone(r))
            if (Exit.isFailure(alone)) {
              failedInARow++
              lastFailure = alone
            } else {
              failedInARow = 0
            }
            results.push(alone)
          }
        }
        return results.map((exit) => Exit.mapError(exit, toStorageError("load")))
      })

    // Concurrent activations load together: at low load a load goes out at once, under load the loads that
    // queued behind a running one share its next statement.
    const loader = Batcher.make<LoadRequest, StoredObject | undefined, StorageError>({
      key: (request) => objectKey(request.objectType, request.objectId),
      maxBatch: options?.maxBatch ?? 256,
      run: loadBatch,
      interrupted: () => new StorageError({ operation: "load", detail: "interrupted", outcome: "not-applied" }),
      idempotent: true
    })

    const load = (objectType: string, objectId: string): Effect.Effect<StoredObject | undefined, StorageError> =>
      instrument("load", { objectType, objectId }, loader.submit({ objectType, objectId }))

    type AlarmRow = {
      readonly object_type: string
      readonly object_id: string
      readonly name: string
      readonly fire_at: number | string
      readonly payload: string | null
      readonly cron: string | null
      readonly attempts: number | string
      readonly failed_at: number | string | null
      readonly last_error: string | null
    }
    // Numbers as text: a hand-edited one past 2^53 must fail only its alarm, not the statement (node:sqlite
    // refuses to read such integers, after an UPDATE … RETURNING has already committed).
    const payloadText = (p: string) => (isPg ? `${p}payload::text` : `${p}payload`)
    const alarmColumnList = (p: string) =>
      [
        `${p}object_type`,
        `${p}object_id`,
        `${p}name`,
        `CAST(${p}fire_at AS TEXT) AS fire_at`,
        // Past `maxPayloadRead` the payload is left unread (NULL): its alarm fails alone, not the statement.
        `CASE WHEN ${bytesOf(p + "payload")} <= ${maxPayloadRead} THEN ${payloadText(p)} END AS payload`,
        `${p}cron`,
        `CAST(${p}attempts AS TEXT) AS attempts`,
        `CAST(${p}failed_at AS TEXT) AS failed_at`,
        `${p}last_error`
      ].join(", ")
    const alarmColumnsOf = (p: string) => sql.literal(alarmColumnList(p))
    const alarmColumns = alarmColumnsOf("")
    const toAlarm = (row: AlarmRow): AlarmRecord => {
      const fireAt = storedNumber(row.fire_at)
      const attempts = storedNumber(row.attempts)
      const problems: Array<string> = []
      if (Number.isNaN(fireAt)) problems.push(`the stored fire time ${JSON.stringify(row.fire_at)} is not a number`)
      if (row.payload === null) {
        problems.push(
          `the stored payload is over ${maxPayloadRead} bytes as the database returns it, more than the storage ` +
            "reads back (it was stored before the limit, or by hand)"
        )
      }
      if (!Number.isSafeInteger(attempts)) {
        problems.push(`the stored attempts ${JSON.stringify(row.attempts)} is not a whole number`)
      }
      const record: AlarmRecord = {
        name: row.name,
        fireAt,
        payload: row.payload ?? "null",
        cron: row.cron,
        attempts: Number.isSafeInteger(attempts) ? attempts : 0,
        failedAt: row.failed_at === null ? null : storedNumber(row.failed_at),
        lastError: row.last_error
      }
      return problems.length === 0 ? record : { ...record, invalid: problems.join("; ") }
    }

    type ListedAlarmRow = AlarmRow & {
      readonly claim_owner: string | null
      readonly claim_expires_at: string | number | null
      readonly created_at: string | number
    }
    /** The alarm columns of listings: those of claims, and who holds the alarm and since when it exists. */
    const listedAlarmColumns = sql.literal(
      `${alarmColumnList("a.")}, a.claim_owner, CAST(a.claim_expires_at AS TEXT) AS claim_expires_at, ` +
        "CAST(a.created_at AS TEXT) AS created_at"
    )
    const toListedAlarm = (row: ListedAlarmRow): AlarmRecord => ({
      ...toAlarm(row),
      claimExpiresAt: row.claim_owner === null || row.claim_expires_at === null
        ? null
        : storedNumber(row.claim_expires_at),
      createdAt: storedNumber(row.created_at)
    })

    const listAlarms = (
      objectType: string,
      objectId: string
    ): Effect.Effect<ReadonlyArray<AlarmRecord>, StorageError> =>
      // Ordered by the stored columns, not by the text columns of the same names in the result.
      sql<ListedAlarmRow>`SELECT ${listedAlarmColumns} FROM ${alarms} AS a
        WHERE a.object_type = ${objectType} AND a.object_id = ${objectId}
        ORDER BY a.fire_at, a.name`.pipe(
        Effect.map((rows) => rows.map(toListedAlarm)),
        Effect.mapError(toStorageError("listAlarms"))
      )

    // Ids compared and ordered in code point order: SQLite's default (BINARY), PostgreSQL's "C" collation, which
    // its listing indexes (migration 4) are built with, so every condition below is a range of an index.
    const collated = (column: string) => sql.literal(isPg ? `${column} COLLATE "C"` : column)
    const objectIdKey = collated("object_id")

    const listObjects = (
      objectType: string,
      request: ListObjectsRequest
    ): Effect.Effect<ReadonlyArray<StoredObjectInfo>, StorageError> => {
      const conditions = [sql`object_type = ${objectType}`]
      if (request.after !== undefined) conditions.push(sql`${objectIdKey} > ${request.after}`)
      const prefix = request.prefix
      if (prefix !== undefined && prefix !== "") {
        conditions.push(sql`${objectIdKey} >= ${prefix}`)
        const end = prefixEnd(prefix)
        if (end !== undefined) conditions.push(sql`${objectIdKey} < ${end}`)
      }
      return sql<{ object_id: string; version: string | number } & TimeColumns>`SELECT object_id,
          CAST(version AS TEXT) AS version, ${timeColumns} FROM ${objects}
        WHERE ${sql.and(conditions)} ORDER BY ${objectIdKey} LIMIT ${request.limit}`.pipe(
        Effect.map((rows) =>
          rows.map((row): StoredObjectInfo => {
            const version = parseVersion(row.version)
            const info = { objectId: row.object_id, version: version ?? 0, ...timesOf(row) }
            return version !== undefined ? info : { ...info, invalid: invalidVersion(row.version) }
          })
        ),
        Effect.mapError(toStorageError("listObjects"))
      )
    }

    const inspectObject = (
      objectType: string,
      objectId: string
    ): Effect.Effect<StoredObjectDetails | undefined, StorageError> => {
      const request = { objectType, objectId }
      return sql<{ state: string; version: number | string } & TimeColumns>`SELECT ${stateColumn} AS state,
          CAST(version AS TEXT) AS version, ${timeColumns} FROM ${objects}
        WHERE object_type = ${objectType} AND object_id = ${objectId}`.pipe(
        Effect.map((rows) =>
          rows.length === 0 ? undefined : { ...storedObject(rows[0]!.state, rows[0]!.version), ...timesOf(rows[0]!) }
        ),
        // A row too large to read: its times and why, as `load` reports it.
        Effect.catch((error) =>
          Effect.flatMap(
            unreadable(request, error),
            (stored) =>
              Effect.map(
                probe(request),
                (row) => stored === undefined || row === undefined ? undefined : { ...stored, ...timesOf(row) }
              )
          )
        ),
        Effect.mapError(toStorageError("inspectObject"))
      )
    }

    const alarmIdKey = collated("a.object_id")
    const alarmNameKey = collated("a.name")
    const listFailedAlarms = (
      objectType: string,
      request: ListFailedAlarmsRequest
    ): Effect.Effect<ReadonlyArray<FailedAlarmRecord>, StorageError> => {
      const after = request.after
      const conditions = [sql`a.object_type = ${objectType}`, sql`a.failed_at IS NOT NULL`]
      if (after !== undefined) {
        conditions.push(sql`(${alarmIdKey}, ${alarmNameKey}) > (${after.objectId}, ${after.name})`)
      }
      return sql<ListedAlarmRow>`SELECT ${listedAlarmColumns} FROM ${alarms} AS a
        WHERE ${sql.and(conditions)} ORDER BY ${alarmIdKey}, ${alarmNameKey} LIMIT ${request.limit}`.pipe(
        Effect.map((rows) =>
          rows.map((row): FailedAlarmRecord => ({ ...toListedAlarm(row), objectId: row.object_id }))
        ),
        Effect.mapError(toStorageError("listFailedAlarms"))
      )
    }

    const claimDueAlarms = (request: ClaimRequest): Effect.Effect<ReadonlyArray<ClaimedAlarm>, StorageError> => {
      const types = Array.from(new Set(request.objectTypes))
      if (types.length === 0) return Effect.succeed([])
      const now = request.now
      const claimable = sql`fire_at <= ${now} AND failed_at IS NULL
        AND (claim_owner IS NULL OR claim_expires_at <= ${now})`
      // Each type's earliest due alarms come from its own range of the (object_type, fire_at) index, and only
      // those candidates are merged and sorted: a single `object_type IN (…) ORDER BY fire_at` makes both
      // databases sort every due alarm of every type first.
      const set = sql`SET claim_owner = ${request.claim}, claim_expires_at = ${now + request.leaseMillis},
          attempts = attempts + 1`
      const claimed = isPg
        // SKIP LOCKED: concurrent claimers take different alarms instead of waiting. PostgreSQL re-checks the
        // conditions on the row it finally locks, and the UPDATE checks them again, so an alarm is never
        // claimed twice. MATERIALIZED: the candidates are chosen once (a subquery under IN may be rescanned,
        // claiming more than `limit`).
        ? sql<AlarmRow>`WITH due AS MATERIALIZED (
              SELECT d.object_type, d.object_id, d.name
              FROM (VALUES ${sql.csv(types.map((type) => sql`(${type}::text)`))}) AS requested(object_type)
              CROSS JOIN LATERAL (
                SELECT object_type, object_id, name, fire_at FROM ${alarms} AS a
                WHERE a.object_type = requested.object_type AND ${claimable}
                ORDER BY fire_at LIMIT ${request.limit} FOR UPDATE SKIP LOCKED
              ) AS d
              ORDER BY d.fire_at LIMIT ${request.limit}
            )
            UPDATE ${alarms} AS a ${set}
            FROM due
            WHERE a.object_type = due.object_type AND a.object_id = due.object_id AND a.name = due.name
              AND ${claimable}
            RETURNING ${sql.literal(alarmColumnList("a."))}`
        // SQLite runs one writer at a time, so the statement cannot race another claimer. The candidates are
        // picked by rowid: the due index holds it, so each is found without a lookup by key (the index range also
        // holds the alarms still being fired, which every claim of a drain steps over).
        : sql<AlarmRow>`UPDATE ${alarms} ${set}
            WHERE rowid IN (
              SELECT candidate FROM (${
          sql.join(" UNION ALL ", false)(
            types.map((type) =>
              sql`SELECT * FROM (SELECT rowid AS candidate, fire_at FROM ${alarms}
                WHERE object_type = ${type} AND ${claimable} ORDER BY fire_at LIMIT ${request.limit})`
            )
          )
        }) ORDER BY fire_at LIMIT ${request.limit}
            ) AND ${claimable}
            RETURNING ${alarmColumns}`
      return claimed.pipe(
        Effect.map((rows) =>
          rows.map((row): ClaimedAlarm => ({
            ...toAlarm(row),
            objectType: row.object_type,
            objectId: row.object_id,
            claim: request.claim
          }))
        ),
        Effect.mapError(toStorageError("claimDueAlarms"))
      )
    }

    // Per type: the earliest unclaimed alarm (the first of its range of the due index that nobody holds) and
    // the earliest end of a lease on a claimed one (from the small partial index of claimed alarms). A claim
    // always ends after its alarm's fire time, but a row written by hand may not: the CASE keeps the later.
    const nextAlarmAt = (objectTypes: ReadonlyArray<string>): Effect.Effect<number | undefined, StorageError> => {
      const types = Array.from(new Set(objectTypes))
      if (types.length === 0) return Effect.succeed(undefined)
      const candidates = types.flatMap((type) => [
        sql`SELECT (SELECT fire_at FROM ${alarms} WHERE object_type = ${type} AND failed_at IS NULL
            AND claim_owner IS NULL ORDER BY fire_at LIMIT 1) AS next`,
        sql`SELECT (SELECT MIN(CASE WHEN claim_expires_at > fire_at THEN claim_expires_at ELSE fire_at END)
            FROM ${alarms} WHERE object_type = ${type} AND claim_owner IS NOT NULL) AS next`
      ])
      // As text, and NaN read as none: a hand-edited time must never fail the read or make the scheduler spin.
      return sql<{ next: number | string | null }>`SELECT CAST(MIN(next) AS TEXT) AS next FROM (${
        sql.join(" UNION ALL ", false)(candidates)
      }) AS candidates`.pipe(
        Effect.map((rows) => {
          const next = rows[0]?.next
          const at = next === null || next === undefined ? NaN : storedNumber(next)
          return Number.isFinite(at) ? at : undefined
        }),
        Effect.mapError(toStorageError("nextAlarmAt"))
      )
    }

    const releaseAlarm = (release: AlarmRelease): Effect.Effect<boolean, StorageError> =>
      sql<{ name: string }>`UPDATE ${alarms} SET claim_owner = NULL, claim_expires_at = NULL,
          fire_at = ${release.retryAt ?? sql.literal("fire_at")},
          failed_at = ${release.retryAt === null ? release.now : null},
          last_error = ${release.error},
          attempts = attempts - ${release.undelivered === true ? 1 : 0}
        WHERE object_type = ${release.objectType} AND object_id = ${release.objectId}
          AND name = ${release.name} AND claim_owner = ${release.claim}
        RETURNING name`.pipe(
        Effect.map((rows) => rows.length > 0),
        Effect.mapError(toStorageError("releaseAlarm"))
      )

    const watchAlarms = Option.isNone(pg) ? undefined : (onAlarm: (fireAt: number) => void) =>
      Effect.forkScoped(
        Effect.scoped(Effect.gen(function*() {
          const notifications = yield* pg.value.listen(channel)
          while (true) {
            const notification = yield* Queue.take(notifications)
            const fireAt = Number(notification.payload)
            if (Number.isFinite(fireAt)) onAlarm(fireAt)
          }
        })).pipe(
          Effect.tapCause((cause) =>
            Effect.logWarning("durable-object: alarm LISTEN failed; relying on polling until it reconnects").pipe(
              Effect.annotateLogs({ cause: String(cause) })
            )
          ),
          Effect.retry(Schedule.spaced("1 second"))
        )
      ).pipe(Effect.asVoid)

    // SQLite has one connection and one writer: a caller inside a transaction on it holds both until its call
    // returns, so the call's storage work could never run. PostgreSQL commits on another pooled connection.
    const commitChannel = `${t.objects.replace(/\./g, "_")}_commits`
    const notifier = Option.isSome(pg) && options?.notifyCommits === true
      ? yield* CommitNotifier.make({
        notify: (payload) => sql`SELECT pg_notify(${commitChannel}, ${payload})`,
        listen: pg.value.listen(commitChannel)
      })
      : undefined

    const refuseCaller = isPgDialect(sql) ?
      undefined :
      (caller: Context.Context<never>) =>
        Option.isSome(Context.getOption(caller, sql.transactionService))
          ? new StorageError({
            operation: "call",
            outcome: "not-applied",
            detail: "a durable object cannot be called from inside a transaction on its own SQLite database " +
              "(SQLite has one writer, held by that transaction until the call returns); call it before or after"
          })
          : undefined

    const loadReply = (
      objectType: string,
      objectId: string,
      key: string,
      now: number
    ): Effect.Effect<StoredReply | undefined, StorageError> =>
      Effect.map(
        sql<{ payload_hash: string; reply: string; expires_at: number | string }>`
          SELECT payload_hash, reply, expires_at FROM ${replies}
          WHERE object_type = ${objectType} AND object_id = ${objectId} AND idempotency_key = ${key}
            AND expires_at > ${now}`,
        (rows) =>
          rows.length === 0
            ? undefined
            : { payloadHash: rows[0]!.payload_hash, reply: rows[0]!.reply, expiresAt: Number(rows[0]!.expires_at) }
      ).pipe(Effect.mapError(toStorageError("load")))

    const purgeReplies = (now: number, limit: number): Effect.Effect<number, StorageError> =>
      Effect.map(
        sql<{ object_id: string }>`DELETE FROM ${replies}
          WHERE (object_type, object_id, idempotency_key) IN (
            SELECT object_type, object_id, idempotency_key FROM ${replies}
            WHERE expires_at <= ${now} ORDER BY expires_at LIMIT ${limit})
          RETURNING object_id`,
        (rows) => rows.length
      ).pipe(Effect.mapError(toStorageError("purge")))

    const nextReplyExpiry: Effect.Effect<number | undefined, StorageError> = Effect.map(
      sql<{ next: number | string | null }>`SELECT MIN(expires_at) AS next FROM ${replies}`,
      (rows) => rows[0]?.next === null || rows[0]?.next === undefined ? undefined : Number(rows[0].next)
    ).pipe(Effect.mapError(toStorageError("load")))

    return Storage.of({
      listObjects,
      inspectObject,
      listFailedAlarms,
      loadReply,
      purgeReplies,
      nextReplyExpiry,
      load,
      commit: withCommitUnsafe(commit, commitUnsafe),
      listAlarms,
      claimDueAlarms,
      nextAlarmAt,
      releaseAlarm,
      watchAlarms,
      refuseCaller,
      limits,
      announceCommit: notifier?.announce,
      watchCommits: notifier?.watch
    })
  })

/**
 * `Storage` over the `SqlClient` in context, migrating at start unless `migrate: false`, with the alarm
 * scheduler that serves every object type on it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: Options
): Layer.Layer<Storage | Scheduler, StorageError, SqlClient.SqlClient> =>
  layerWithScheduler(make(options), options?.alarms)
