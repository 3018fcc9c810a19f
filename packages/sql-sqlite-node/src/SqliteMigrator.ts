/**
 * Runs effect/sql migrations (`Migrator.fromRecord`, `Migrator.fromGlob`, ...) on SQLite. Unlike
 * `@effect/sql-pg`'s `PgMigrator`, it dumps no schema, so it needs nothing but a `SqlClient`.
 *
 * @since 0.1.0
 */
import { Effect, Layer } from "effect"
import { Migrator, type SqlClient, type SqlError } from "effect/sql"

/**
 * Applies the migrations newer than the latest one recorded in `options.table` (default
 * `"effect_sql_migrations"`), in one transaction with their bookkeeping, and returns the ones applied: none when
 * the database is up to date.
 *
 * @since 0.1.0
 */
export const run: <R = never>(
  options: Migrator.MigratorOptions<R>
) => Effect.Effect<
  ReadonlyArray<readonly [id: number, name: string]>,
  Migrator.MigrationError | SqlError.SqlError,
  SqlClient.SqlClient | R
> = Migrator.make({})

/**
 * A layer that runs {@link run} when built; building fails if a migration fails.
 *
 * @since 0.1.0
 */
export const layer = <R = never>(
  options: Migrator.MigratorOptions<R>
): Layer.Layer<never, Migrator.MigrationError | SqlError.SqlError, SqlClient.SqlClient | R> =>
  Layer.effectDiscard(run(options))
