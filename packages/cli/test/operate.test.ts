/**
 * `objects`, `alarms` and `inspect`, run as the real executable against databases a real runtime filled: a
 * SQLite file and the test run's PostgreSQL (a table prefix of its own). What an operator sees, and that an alarm
 * retried from the command line fires in the application afterwards.
 */
import { DurableObject } from "@durable-object/core"
import { afterAll, beforeAll, describe, expect, inject, it } from "@effect/vitest"
import { Effect } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Db, dbFlags, eventually, Job, seed, withJobs } from "./fixtures.ts"
import { cli, cliBackground, show } from "./run.ts"

const dir = mkdtempSync(join(tmpdir(), "durable-object-cli-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const postgresUrl = () => {
  const url = inject("postgresUrl") ?? process.env.DURABLE_OBJECT_TEST_POSTGRES_URL
  if (url === undefined || url === "") throw new Error("no PostgreSQL: the vitest global setup must run")
  return url
}

const databases: ReadonlyArray<{ readonly name: string; readonly db: () => Db }> = [
  { name: "SQLite", db: () => ({ kind: "sqlite", file: join(dir, "jobs.sqlite") }) },
  { name: "PostgreSQL", db: () => ({ kind: "pg", url: postgresUrl(), prefix: `cli${process.pid}_` }) }
]

const json = (args: ReadonlyArray<string>) => {
  const r = cli([...args, "--json"])
  expect(r.status, show(r)).toBe(0)
  return JSON.parse(r.stdout)
}

for (const { db: makeDb, name } of databases) {
  describe(`objects and alarms on ${name}`, () => {
    let db: Db
    beforeAll(async () => {
      db = makeDb()
      const migrate = cli(["migrate", ...dbFlags(db)])
      expect(migrate.status, show(migrate)).toBe(0)
      expect(migrate.stdout).toContain("applied migrations")
      await Effect.runPromise(seed(db))
    }, 60_000)

    it("objects list shows the types with their counts, and pages a type's objects by id", () => {
      const types = cli(["objects", "list", ...dbFlags(db)])
      expect(types.status, show(types)).toBe(0)
      expect(types.stdout).toMatch(/^TYPE +OBJECTS +FAILED ALARMS$/m)
      expect(types.stdout).toMatch(/^Job +14 +2$/m)

      const first = json(["objects", "list", ...dbFlags(db), "--type", "Job", "--limit", "5"])
      expect(first.objects.map((o: { id: string }) => o.id)).toEqual([
        "broken-a",
        "broken-b",
        "job-01",
        "job-02",
        "job-03"
      ])
      expect(first.next).toBe("job-03")
      const second = json(["objects", "list", ...dbFlags(db), "--type", "Job", "--limit", "5", "--after", "job-03"])
      expect(second.objects.map((o: { id: string }) => o.id)).toEqual([
        "job-04",
        "job-05",
        "job-06",
        "job-07",
        "job-08"
      ])
      const prefixed = json(["objects", "list", ...dbFlags(db), "--type", "Job", "--prefix", "broken-"])
      expect(prefixed.objects.map((o: { id: string }) => o.id)).toEqual(["broken-a", "broken-b"])
      expect(prefixed.next).toBeUndefined()

      const table = cli(["objects", "list", ...dbFlags(db), "--type", "Job", "--limit", "2"])
      expect(table.stdout).toMatch(/^ID +VERSION +CREATED +UPDATED$/m)
      expect(table.stdout).toContain(`more: --after "broken-b"`)
    })

    it("objects show prints the stored state, version and alarms, the failed one with its last error", () => {
      const r = cli(["objects", "show", ...dbFlags(db), "Job", "broken-a"])
      expect(r.status, show(r)).toBe(0)
      expect(r.stdout).toContain("Job/broken-a")
      expect(r.stdout).toMatch(/"broken": true/)
      expect(r.stdout).toMatch(/^work +\S+ +1 +failed \S+ +.*cannot run task of broken-a/m)
      const o = json(["objects", "show", ...dbFlags(db), "Job", "job-01"])
      expect(JSON.parse(o.stateJson)).toEqual({ runs: 0, broken: false })
      expect(o.version).toBe(1)
      expect(o.alarms.map((a: { name: string; failedAt: unknown }) => [a.name, a.failedAt])).toEqual([["work", null]])
    })

    it("alarms failed lists every failed alarm with its last error", () => {
      const failed = json(["alarms", "failed", ...dbFlags(db)])
      expect(failed.alarms.map((a: { type: string; id: string; name: string }) => [a.type, a.id, a.name])).toEqual([
        ["Job", "broken-a", "work"],
        ["Job", "broken-b", "work"]
      ])
      expect(failed.alarms[0].lastError).toContain("cannot run task of broken-a")
      const table = cli(["alarms", "failed", ...dbFlags(db), "--type", "Job"])
      expect(table.stdout).toMatch(/^Job +broken-b +work +\S+ +1 +.*cannot run task of broken-b/m)
    })

    it("a failed alarm retried from the command line fires in the application; cancel removes one", async () => {
      // The application repairs what made the job fail; the operator retries its alarm from the command line.
      await Effect.runPromise(withJobs(db, Job.client("broken-a").repair()))
      const retry = cli(["alarms", "retry", ...dbFlags(db), "Job", "broken-a", "work"])
      expect(retry.status, show(retry)).toBe(0)
      expect(retry.stdout).toContain("alarm work is due now")
      const listed = json(["alarms", "list", ...dbFlags(db), "Job", "broken-a"])
      expect(listed.alarms.map((a: { attempts: number; failedAt: unknown }) => [a.attempts, a.failedAt])).toEqual([[
        0,
        null
      ]])
      // The application's runtime fires it: the job ran, and its alarm is gone.
      await Effect.runPromise(withJobs(
        db,
        eventually(
          Effect.map(DurableObject.inspect(Job, "broken-a"), (o) => o.state?.runs === 1 && o.alarms.length === 0)
        )
      ))

      const cancel = cli(["alarms", "cancel", ...dbFlags(db), "Job", "broken-b", "work"])
      expect(cancel.status, show(cancel)).toBe(0)
      expect(json(["alarms", "list", ...dbFlags(db), "Job", "broken-b"]).alarms).toEqual([])
      expect(json(["alarms", "failed", ...dbFlags(db)]).alarms).toEqual([])
    })

    it("says plainly what is missing: an object, an alarm", () => {
      const object = cli(["objects", "show", ...dbFlags(db), "Job", "nobody"])
      expect(object.status, show(object)).toBe(1)
      expect(object.stderr).toContain("Job/nobody is not stored")
      const alarm = cli(["alarms", "retry", ...dbFlags(db), "Job", "job-01", "nosuch"])
      expect(alarm.status, show(alarm)).toBe(1)
      expect(alarm.stderr).toContain(`Job/job-01 has no alarm "nosuch"`)
    })
  })
}

describe("the database the commands are given", () => {
  it("a missing SQLite file is an error, not a new empty database", () => {
    const file = join(dir, "typo.sqlite")
    const r = cli(["objects", "list", "--database", file])
    expect(r.status, show(r)).toBe(1)
    expect(r.stderr).toContain(`no such SQLite file: ${file}`)
    const again = cli(["objects", "list", "--database", file])
    expect(again.stderr).toContain("no such SQLite file")
  })

  it("a database without the tables says to migrate (or to give the prefix)", () => {
    const file = join(dir, "empty.sqlite")
    writeFileSync(file, "")
    const r = cli(["alarms", "failed", "--database", file])
    expect(r.status, show(r)).toBe(1)
    expect(r.stderr).toContain("has no durable_objects table: run `durable-object migrate`")
  })

  it("--database falls back to DATABASE_URL, and an unreachable server is one sentence without the password", () => {
    const r = cli(["objects", "list"], { env: { DATABASE_URL: "postgres://app:hunter2@127.0.0.1:1/app" } })
    expect(r.status, show(r)).toBe(1)
    expect(r.stderr).toContain("postgres://app:***@127.0.0.1:1/app")
    expect(r.stderr).not.toContain("hunter2")
  })
})

describe("inspect", () => {
  it("serves the inspector on a database behind a token, until stopped", async () => {
    const db: Db = { kind: "sqlite", file: join(dir, "inspect.sqlite") }
    expect(cli(["migrate", ...dbFlags(db)]).status).toBe(0)
    await Effect.runPromise(seed(db))
    const child = cliBackground(["inspect", ...dbFlags(db), "--port", "0", "--token", "s3cret"])
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = ""
        child.stdout.on("data", (chunk) => {
          out += chunk
          const m = /open (http:\/\/\S+?)\/#token=s3cret/.exec(out)
          if (m !== null) resolve(m[1]!)
        })
        child.stderr.on("data", (chunk) => (out += chunk))
        child.on("exit", (code) => reject(new Error(`inspect exited with ${code}:\n${out}`)))
      })
      const page = await fetch(`${url}/`)
      expect(page.status).toBe(200)
      expect(await page.text()).toContain("<title>durable-object inspector</title>")
      expect((await fetch(`${url}/api/types`)).status).toBe(401)
      const wrong = await fetch(`${url}/api/types`, { headers: { authorization: "Bearer nope" } })
      expect(wrong.status).toBe(401)
      const auth = { authorization: "Bearer s3cret" }
      const types = await (await fetch(`${url}/api/types`, { headers: auth })).json()
      expect(types).toEqual({
        types: [{ type: "Job", objects: 14, moreObjects: false, failedAlarms: 2, moreFailed: false }]
      })
      const object: any = await (await fetch(`${url}/api/object?type=Job&id=broken-a`, { headers: auth })).json()
      expect(object.decoded).toBe(false)
      expect(object.alarms[0].lastError).toContain("cannot run task of broken-a")
      const missing = await fetch(`${url}/api/object?type=Job&id=nobody`, { headers: auth })
      expect(missing.status).toBe(404)
      expect(((await (await fetch(`${url}/api/metrics`, { headers: auth })).json()) as any).live).toBe(false)
    } finally {
      child.kill("SIGINT")
    }
  })
})
