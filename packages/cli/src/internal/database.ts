/**
 * `--database <url|file>`: a PostgreSQL URL (`postgres://…`, `postgresql://…`) or a SQLite file, with the table
 * prefix and schema the application's `SqlStorage` uses. `DATABASE_URL` is the fallback.
 */
import { type Errors, SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Effect, Layer, Option, Redacted } from "effect"
import { Flag } from "effect/cli"
import { SqlClient, type SqlError } from "effect/sql"
import { existsSync } from "node:fs"
import { CliFailure } from "./failure.ts"

/** The flags every command on a database takes. */
export const databaseFlags = {
  database: Flag.String("database").pipe(
    Flag.withAlias("d"),
    Flag.withMetavar("url|file"),
    Flag.withDescription("PostgreSQL URL (postgres://…) or SQLite file; default: $DATABASE_URL"),
    Flag.withFallbackConfig(Config.String("DATABASE_URL"))
  ),
  tablePrefix: Flag.String("table-prefix").pipe(
    Flag.withDescription("the tablePrefix the application's SqlStorage uses"),
    Flag.optional
  ),
  schema: Flag.String("schema").pipe(
    Flag.withDescription("PostgreSQL: the schema holding the tables (SqlStorage's schema option)"),
    Flag.optional
  )
}

/** What the database flags parsed to. */
export interface DatabaseFlags {
  readonly database: string
  readonly tablePrefix: Option.Option<string>
  readonly schema: Option.Option<string>
}

/** Whether `database` names a PostgreSQL server rather than a SQLite file. */
export const isPostgres = (database: string): boolean => /^postgres(ql)?:\/\//i.test(database)

/** The `SqlStorage` options of the flags. */
export const storageOptions = (flags: DatabaseFlags): SqlStorage.Options => ({
  tablePrefix: Option.getOrUndefined(flags.tablePrefix),
  schema: Option.getOrUndefined(flags.schema)
})

/** The URL with its password hidden, for messages. */
export const displayName = (database: string): string =>
  isPostgres(database) ? database.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:***@") : database

/**
 * A `SqlClient` on the database. A SQLite file must exist unless `create` (only `migrate` creates one): a
 * mistyped path is an error, not a new empty database.
 */
export const client = (
  flags: DatabaseFlags,
  options?: { readonly create?: boolean }
): Layer.Layer<SqlClient.SqlClient, CliFailure | SqlError.SqlError> => {
  if (isPostgres(flags.database)) {
    return PgClient.layer({ url: Redacted.make(flags.database), maxConnections: 2 })
  }
  if (options?.create !== true && !existsSync(flags.database)) {
    return Layer.unwrap(Effect.fail(
      new CliFailure({
        message: `no such SQLite file: ${flags.database} (give a PostgreSQL URL as postgres://…, or an existing file)`
      })
    ))
  }
  return SqliteClient.layer({ filename: flags.database })
}

/**
 * Fails unless the database holds the durable-object tables: reading an unmigrated database is a mistake
 * (wrong file, wrong prefix), so say that instead of a SQL error about a missing table.
 */
export const requireTables = (
  flags: DatabaseFlags
): Effect.Effect<SqlStorage.Tables, CliFailure | Errors.StorageError | SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const tables = yield* SqlStorage.tables(storageOptions(flags))
    const sql = yield* SqlClient.SqlClient
    const found = yield* sql.onDialectOrElse({
      pg: () => sql<{ found: number }>`SELECT 1 AS found WHERE to_regclass(${tables.objects}) IS NOT NULL`,
      orElse: () =>
        sql<{ found: number }>`SELECT 1 AS found FROM sqlite_master WHERE type = 'table' AND name = ${tables.objects}`
    })
    if (found.length === 0) {
      return yield* new CliFailure({
        message: `${displayName(flags.database)} has no ${tables.objects} table: run \`durable-object migrate\`` +
          ` first, or give the --table-prefix/--schema the application uses`
      })
    }
    return tables
  })
