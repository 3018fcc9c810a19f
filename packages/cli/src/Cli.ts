/**
 * The `durable-object` command line, as an `effect/cli` command: `init`, `migrate`, `migrations sql`,
 * `gen object`, and the operator's commands on a database.
 *
 * @since 0.1.0
 */
import { NodeServices } from "@effect/platform-node"
import { Effect } from "effect"
import { Command } from "effect/cli"
import * as Migrate from "./internal/migrate.ts"
import * as Operate from "./internal/operate.ts"
import * as Scaffold from "./internal/scaffold.ts"

/**
 * The root command with every subcommand.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make("durable-object").pipe(
  Command.withDescription("Durable Objects for Effect: set a project up, migrate, inspect stored objects and alarms"),
  Command.withSubcommands([
    Scaffold.init,
    Migrate.migrate,
    Migrate.migrations,
    Scaffold.gen,
    Operate.objects,
    Operate.alarms,
    Operate.inspect
  ])
)

/**
 * Runs the CLI on the process's arguments with Node's services; prints help, errors and output to the terminal.
 *
 * @since 0.1.0
 * @category running
 */
export const run = (version: string) => Command.run(command, { version }).pipe(Effect.provide(NodeServices.layer))
