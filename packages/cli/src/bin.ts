#!/usr/bin/env node
/**
 * The `durable-object` executable.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { readFileSync } from "node:fs"
import { run } from "./Cli.ts"

const { version } = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
  readonly version: string
}

run(version).pipe(NodeRuntime.runMain)
