// Runs once per `vitest run`: prints the Node version the tests run on and gives every test project a real,
// throwaway PostgreSQL server (scripts/postgres.sh), stopped and removed when the run ends, pass or fail.
import { execFileSync } from "node:child_process"
import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { TestProject } from "vitest/node"

declare module "vitest" {
  export interface ProvidedContext {
    readonly postgresUrl: string
  }
}

const script = join(import.meta.dirname, "postgres.sh")

export default function setup(project: TestProject) {
  console.log(`durable-object tests: Node ${process.version} (${process.execPath})`)
  const dir = mkdtempSync(join(tmpdir(), "durable-object-pg-"))
  const url = execFileSync("bash", [script, "start", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })
    .trim()
  console.log(`durable-object tests: PostgreSQL at ${url}`)
  process.env.DURABLE_OBJECT_TEST_POSTGRES_URL = url
  project.provide("postgresUrl", url)
  return () => {
    execFileSync("bash", [script, "stop", dir], { stdio: "inherit" })
  }
}
