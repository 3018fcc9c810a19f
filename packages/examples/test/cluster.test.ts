/**
 * Runs `npm run demo -- --cluster` the way a user would, on the test run's PostgreSQL: three runner processes,
 * one killed with `kill -9`, a fourth joining, and every acknowledged visit stored exactly once.
 */
import { spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { expect, inject, it } from "vitest"

const entry = fileURLToPath(new URL("../src/main.ts", import.meta.url))

it("npm run demo -- --cluster survives a kill -9 and a rebalance without losing a visit", () => {
  const url = inject("postgresUrl") ?? process.env.DURABLE_OBJECT_TEST_POSTGRES_URL
  expect(url, "the vitest global setup provides PostgreSQL").toBeTruthy()
  const result = spawnSync(process.execPath, [entry, "--cluster"], {
    env: { ...process.env, DATABASE_URL: url, DEMO_CLUSTER_SECONDS: "12" },
    encoding: "utf8",
    timeout: 55_000
  })
  const output = `${result.stdout}${result.stderr}`
  expect(result.status, output).toBe(0)
  expect(output).toContain("kill -9 r2")
  expect(output).toContain("+ r4 serves")
  expect(output).toContain("every acknowledged visit is stored exactly once")
}, 60_000)
