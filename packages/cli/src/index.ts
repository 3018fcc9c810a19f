/**
 * The `durable-object` command line (`npx durable-object --help`).
 *
 * @since 0.1.0
 */

/**
 * The command tree and its runner.
 *
 * @since 0.1.0
 */
export * as Cli from "./Cli.ts"
