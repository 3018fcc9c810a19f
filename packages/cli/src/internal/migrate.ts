/** `migrate` and `migrations sql`: apply the library's tables, or print their DDL. */
import { SqlStorage } from "@durable-object/core"
import { Console, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import * as Database from "./database.ts"
import { CliFailure, describe, failWith } from "./failure.ts"

/** `durable-object migrate --database <url|file>`. */
export const migrate = Command.make("migrate", Database.databaseFlags, (flags) =>
  Effect.gen(function*() {
    const name = Database.displayName(flags.database)
    const applied = yield* SqlStorage.migrate(Database.storageOptions(flags)).pipe(
      Effect.provide(Database.client(flags, { create: true })),
      failWith(`migrating ${name} failed`)
    )
    yield* Console.log(
      applied.length === 0
        ? `${name} is up to date (migration ${SqlStorage.latestMigration})`
        : `${name}: applied migration${applied.length === 1 ? "" : "s"} ${applied.join(", ")}` +
          ` (now at ${SqlStorage.latestMigration})`
    )
  })).pipe(
    Command.withDescription(
      "Create or update the durable-object tables in a database (the migrations SqlStorage.layer runs at start)"
    )
  )

/** The DDL as one SQL script, a comment before each migration. */
export const script = (
  migrations: ReadonlyArray<SqlStorage.MigrationStatements>,
  dialect: "pg" | "sqlite",
  direction: "up" | "down"
): string =>
  [
    `-- durable-object tables, ${dialect === "pg" ? "PostgreSQL" : "SQLite"}, ${direction}` +
    ` (migrations ${migrations.map((m) => m.id).join(", ")}). Every statement is idempotent.`,
    ...(direction === "up"
      ? ["-- Applied with your own tool: build SqlStorage.layer({ migrate: false }) so it does not run them again."]
      : []),
    ...migrations.flatMap((m) => ["", `-- ${m.id}_${m.name}`, ...m.statements.map((s) => `${s};`)])
  ].join("\n")

const sql = Command.make("sql", {
  dialect: Flag.Literals("dialect", ["pg", "sqlite"]).pipe(Flag.withDescription("the SQL dialect")),
  down: Flag.Boolean("down").pipe(
    Flag.withDescription("print the statements that remove the tables instead"),
    Flag.withDefault(false)
  ),
  tablePrefix: Database.databaseFlags.tablePrefix,
  schema: Database.databaseFlags.schema
}, (flags) =>
  Effect.gen(function*() {
    if (flags.dialect === "sqlite" && Option.isSome(flags.schema)) {
      return yield* new CliFailure({ message: "--schema is for PostgreSQL only (SQLite has no schemas)" })
    }
    const direction = flags.down ? "down" : "up"
    const migrations = yield* SqlStorage.migrationStatements({
      dialect: flags.dialect,
      direction,
      tablePrefix: Option.getOrUndefined(flags.tablePrefix),
      schema: Option.getOrUndefined(flags.schema)
    }).pipe(Effect.mapError((e) => new CliFailure({ message: describe(e) })))
    yield* Console.log(script(migrations, flags.dialect, direction))
  })).pipe(
    Command.withDescription(
      "Print the DDL of the durable-object tables, for teams that run migrations with their own tool"
    )
  )

/** `durable-object migrations sql --dialect pg|sqlite`. */
export const migrations = Command.make("migrations").pipe(
  Command.withDescription("The library's migrations as SQL"),
  Command.withSubcommands([sql])
)
