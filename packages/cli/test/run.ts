/**
 * Runs the real `durable-object` executable (src/bin.ts on the Node the tests run on, with the workspace's
 * source condition from vitest.shared.ts) as a subprocess, as a user's shell would.
 */
import { spawn, spawnSync } from "node:child_process"
import { join } from "node:path"

export const bin = join(import.meta.dirname, "..", "src", "bin.ts")
export const testOutput = join(import.meta.dirname, "..", "test-output")

/** The test process's environment without `DATABASE_URL` (the CLI's fallback for `--database`). */
const baseEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: "1" }
  delete env.DATABASE_URL
  return env
}

export interface Result {
  readonly status: number | null
  readonly stdout: string
  readonly stderr: string
}

/** `durable-object ...args` in `cwd`, to completion. */
export const cli = (
  args: ReadonlyArray<string>,
  options?: { readonly cwd?: string; readonly env?: NodeJS.ProcessEnv }
): Result => {
  const result = spawnSync(process.execPath, [bin, ...args], {
    cwd: options?.cwd ?? process.cwd(),
    env: { ...baseEnv(), ...options?.env },
    encoding: "utf8",
    timeout: 60_000
  })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

/** `durable-object ...args` in the background, for long-running commands (`inspect`). */
export const cliBackground = (args: ReadonlyArray<string>, options?: { readonly cwd?: string }) =>
  spawn(process.execPath, [bin, ...args], {
    cwd: options?.cwd ?? process.cwd(),
    env: baseEnv(),
    stdio: ["ignore", "pipe", "pipe"]
  })

/** The whole result, for assertion messages. */
export const show = (r: Result) => `exit ${r.status}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`
