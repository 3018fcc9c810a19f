/**
 * Keeps the benchmark from rotting: runs `npm run bench -- --smoke` (every scenario, tiny sizes, each in its
 * own process as in a real run) on the test run's PostgreSQL, and checks that it produced sane output. It
 * never judges performance: the numbers only have to exist and be positive.
 */
import { spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, describe, expect, inject, it } from "vitest"
import type { Row } from "../src/stats.ts"

const entry = fileURLToPath(new URL("../src/main.ts", import.meta.url))
const dir = mkdtempSync(join(tmpdir(), "durable-object-bench-smoke-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

interface Results {
  readonly environment: Record<string, unknown>
  readonly rows: ReadonlyArray<Row>
  readonly failures: ReadonlyArray<{ readonly scenario: string; readonly error: string }>
  readonly markdown: string
}

describe("npm run bench -- --smoke", () => {
  it("runs every scenario and writes sane results", () => {
    const url = inject("postgresUrl") ?? process.env.DURABLE_OBJECT_TEST_POSTGRES_URL
    expect(url, "the vitest global setup provides PostgreSQL").toBeTruthy()
    const json = join(dir, "results.json")
    const result = spawnSync(
      process.execPath,
      ["--expose-gc", entry, "--smoke", "--json", json, "--postgres-url", url!, "--markdown"],
      { encoding: "utf8", timeout: 110_000 }
    )
    const output = `${result.stdout}${result.stderr}`
    expect(result.error, output).toBeUndefined()
    expect(result.status, output).toBe(0)
    expect(output).toContain("Ratio to baselines")

    const results = JSON.parse(readFileSync(json, "utf8")) as Results
    expect(results.failures).toEqual([])
    expect(results.environment.node).toBe(process.version)
    expect(results.markdown).toContain("| Scenario |")
    const scenarios = new Set(results.rows.map((r) => r.scenario.split(" ")[0]))
    expect([...scenarios].toSorted()).toEqual(["1", "2", "3", "4", "5", "6", "7", "8", "9"])

    for (const row of results.rows) {
      const what = `${row.scenario} / ${row.label}`
      expect(Number.isFinite(row.value) && row.value > 0, `${what}: value ${row.value}`).toBe(true)
      if (row.p50Ms !== undefined) {
        expect(row.p50Ms > 0 && row.p99Ms! >= row.p50Ms, `${what}: p50 ${row.p50Ms}, p99 ${row.p99Ms}`).toBe(true)
      }
      for (const ratio of row.ratios) expect(ratio.ratio > 0, `${what}: ratio to ${ratio.baseline}`).toBe(true)
      if (row.kind === "measure") expect(row.targets.length, `${what}: targets`).toBeGreaterThan(0)
      if (row.eventLoop !== undefined) expect(row.eventLoop.maxMs >= 0, `${what}: event loop`).toBe(true)
    }
    const ids = new Set(results.rows.map((r) => r.id))
    for (
      const id of [
        "hot.floor",
        "sqlite.autocommit",
        "pg.perCall",
        "cluster.entity",
        "memory.hibernated",
        "live.hot.subscribed"
      ]
    ) {
      expect(ids.has(id), id).toBe(true)
    }
  })
})
