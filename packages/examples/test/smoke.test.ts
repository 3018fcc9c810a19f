/**
 * Runs `npm run demo -- --smoke` the way a user would: the demo entry on this Node (24, the pinned one), in its
 * own process, on the embedded SQLite default and on PostgreSQL (the test run's throwaway server).
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { describe, expect, inject, it } from "vitest"

const entry = fileURLToPath(new URL("../src/main.ts", import.meta.url))

const runSmoke = (env: Record<string, string | undefined>) => {
  const { DATABASE_URL: _ignored, ...inherited } = process.env
  const result = spawnSync(process.execPath, [entry, "--smoke"], {
    env: { ...inherited, ...env },
    encoding: "utf8",
    timeout: 50_000
  })
  const output = `${result.stdout}${result.stderr}`
  expect(result.error, output).toBeUndefined()
  expect(result.status, output).toBe(0)
  expect(output).toContain("smoke: every check passed")
  return output
}

describe("npm run demo -- --smoke", () => {
  it("passes on the embedded SQLite default", () => {
    const output = runSmoke({})
    expect(output).toContain("smoke: SQLite")
    expect(output).toContain("the counter's state survived the restart")
    expect(output).toContain("the cart's expiry alarm fired")
  })

  it("passes on PostgreSQL with DATABASE_URL", () => {
    const url = inject("postgresUrl") ?? process.env.DURABLE_OBJECT_TEST_POSTGRES_URL
    expect(url, "the vitest global setup provides PostgreSQL").toBeTruthy()
    const output = runSmoke({ DATABASE_URL: url })
    expect(output).toContain("smoke: PostgreSQL")
  })
})
