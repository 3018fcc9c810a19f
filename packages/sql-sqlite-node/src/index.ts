/**
 * `@durable-object/sql-sqlite-node`: Effect 4's `SqlClient` over Node's built-in `node:sqlite`, fair to the event
 * loop.
 *
 * @since 0.1.0
 */

/**
 * The client: `SqliteClient.layer({ filename })` provides `SqliteClient` and effect/sql's `SqlClient`.
 *
 * @since 0.1.0
 */
export * as SqliteClient from "./SqliteClient.ts"

/**
 * effect/sql migrations on SQLite: `SqliteMigrator.layer({ loader, table })`.
 *
 * @since 0.1.0
 */
export * as SqliteMigrator from "./SqliteMigrator.ts"
