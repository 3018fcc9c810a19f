/**
 * The web inspector in a real browser: headless Chromium (Debian's `chromium`, installed by
 * scripts/chromium.sh as the PostgreSQL of the tests is by scripts/postgres.sh) driven with playwright-core
 * through the page the demo (`npm run demo`) serves at /_inspector. The demo's database is seeded first with
 * counters, carts and a failed cart-expiry alarm; the test logs in with the token, lists and pages objects, searches, opens a cart and
 * sees its state and alarms, retries the failed alarm and sees it fire, and leaves screenshots in
 * packages/cli/test-output/.
 */
import { SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Browser, chromium, type Page } from "playwright-core"
import { Counter, DemoSettings, ShoppingCart } from "../../examples/src/objects.ts"
import { testOutput } from "./run.ts"

const repoRoot = join(import.meta.dirname, "..", "..", "..")
const demoEntry = join(repoRoot, "packages", "examples", "src", "main.ts")
const token = "inspector-test-token-0123456789"
const dir = mkdtempSync(join(tmpdir(), "durable-object-inspector-"))
const database = join(dir, "demo.sqlite")

/** The demo's objects, straight on its database file: 30 counters, two carts, and alice's expiry alarm failed. */
const seed = Effect.gen(function*() {
  for (let i = 0; i < 30; i++) yield* Counter.client(`c-${String(i).padStart(2, "0")}`).increment({ amount: i })
  yield* ShoppingCart.client("alice").add({ sku: "apple", quantity: 2 })
  yield* ShoppingCart.client("bob").add({ sku: "pear", quantity: 1 })
}).pipe(
  Effect.andThen(Effect.gen(function*() {
    // What a real failure leaves behind (the demo's handlers do not fail): given up after 7 attempts.
    const sql = yield* SqlClient.SqlClient
    yield* sql`UPDATE durable_object_alarms SET failed_at = ${Date.now()}, attempts = 7,
      last_error = ${"PaymentDeclined: the card was declined\n    at expire (objects.ts:231)"}
      WHERE object_type = 'ShoppingCart' AND object_id = 'alice' AND name = 'expire'`
    // A cart stored by an older version whose state the schema no longer reads.
    yield* sql`INSERT INTO durable_objects (object_type, object_id, state, version, created_at, updated_at)
      VALUES ('ShoppingCart', 'legacy', ${`{"items":["apple"]}`}, 4, ${Date.now()}, ${Date.now()})`
  })),
  Effect.provide(ShoppingCart.layer.pipe(Layer.provideMerge(Counter.layer))),
  Effect.provide(Layer.succeed(DemoSettings, { rateLimitWindow: Duration.minutes(1), cartTtl: Duration.hours(1) })),
  Effect.provide(SqlStorage.layer()),
  Effect.provide(SqliteClient.layer({ filename: database }))
)

let demo: ChildProcess | undefined
let browser: Browser | undefined
let base = ""
let demoOutput = ""

beforeAll(async () => {
  // Installs Debian's chromium when it is missing (as root), else fails with what to install: never a skip.
  const executablePath = execFileSync("bash", [join(repoRoot, "scripts", "chromium.sh"), "ensure-path"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"]
  }).trim()
  mkdirSync(testOutput, { recursive: true })
  await Effect.runPromise(seed)
  const { DATABASE_URL: _ignored, ...env } = process.env
  demo = spawn(process.execPath, [demoEntry], {
    env: {
      ...env,
      PORT: "0",
      DEMO_SQLITE_FILE: database,
      CART_TTL: "1 hour",
      DURABLE_OBJECT_ADMIN_TOKEN: token
    },
    stdio: ["ignore", "pipe", "pipe"]
  })
  base = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the demo did not start:\n${demoOutput}`)), 30_000)
    const onData = (chunk: Buffer) => {
      demoOutput += chunk.toString()
      const m = /listening on (http:\/\/\S+)/.exec(demoOutput)
      if (m !== null) {
        clearTimeout(timer)
        resolve(m[1]!)
      }
    }
    demo!.stdout!.on("data", onData)
    demo!.stderr!.on("data", onData)
    demo!.on("exit", (code) => reject(new Error(`the demo exited with ${code}:\n${demoOutput}`)))
  })
  browser = await chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-dev-shm-usage"] })
}, 120_000)

afterAll(async () => {
  await browser?.close()
  demo?.kill("SIGINT")
  rmSync(dir, { recursive: true, force: true })
})

/** Texts of the cells of a table's body rows, row by row. */
const rows = (page: Page, selector: string) =>
  page.locator(`${selector} tbody tr`).evaluateAll((trs) =>
    trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent ?? ""))
  )

describe("the inspector in headless Chromium, on the demo", () => {
  it(
    "asks for the token, lists and pages objects, shows a cart's state and alarms, and retries its failed alarm",
    async () => {
      const page = await browser!.newPage({ viewport: { width: 1500, height: 950 } })
      const problems: Array<string> = []
      page.on("pageerror", (error) => problems.push(String(error)))

      // Without the token the page holds nothing and asks for it.
      await page.goto(`${base}/_inspector`)
      await page.locator("#login").waitFor({ state: "visible" })
      await page.fill("#token", token)
      await page.click("#login-form button")

      // Types with their counts; the cart type carries a failed alarm.
      const counter = page.locator(`#types li[data-type="Counter"]`)
      await counter.waitFor()
      expect(await counter.textContent()).toContain("30")
      expect(await page.locator(`#types li[data-type="ShoppingCart"]`).textContent()).toMatch(/3\s*⚠ 1/)

      // Paging and searching the counters.
      await counter.click()
      await page.waitForFunction(`document.querySelectorAll("#objects tbody tr").length === 25`)
      expect((await rows(page, "#objects"))[0]![0]).toBe("c-00")
      await page.click("#next")
      await page.waitForFunction(`document.querySelector("#objects tbody tr td")?.textContent === "c-25"`)
      expect((await rows(page, "#objects")).map((r) => r[0])).toEqual(["c-25", "c-26", "c-27", "c-28", "c-29"])
      await page.fill("#search", "c-1")
      await page.waitForFunction(`document.querySelectorAll("#objects tbody tr").length === 10`)
      expect((await rows(page, "#objects")).map((r) => r[0])).toEqual(
        Array.from({ length: 10 }, (_, i) => `c-1${i}`)
      )

      // The carts: the failed alarm with its last error, then alice's state and alarms.
      await page.click(`#types li[data-type="ShoppingCart"]`)
      await page.waitForFunction(`document.querySelectorAll("#objects tbody tr").length === 3`)

      // A state that no longer decodes is shown as stored, with the reason in plain words.
      await page.click(`#objects tr[data-id="legacy"]`)
      await page.locator("#decode-error").waitFor()
      expect(await page.locator("#decode-error").textContent()).toMatch(/^The stored state does not decode: .*lines/s)
      expect(JSON.parse((await page.locator("#state").textContent())!)).toEqual({ items: ["apple"] })
      expect(await page.locator("#version").textContent()).toBe("4")
      await page.screenshot({ path: join(testOutput, "inspector-decode-error.png"), fullPage: true })
      await page.locator("#failed tbody tr").waitFor()
      const failed = await rows(page, "#failed")
      expect(failed.map((r) => [r[0], r[1], r[3]])).toEqual([["alice", "expire", "7"]])
      expect(failed[0]![4]).toContain("PaymentDeclined: the card was declined")
      await page.click(`#objects tr[data-id="alice"]`)
      // The previous object's detail stays on screen until alice's arrives.
      await page.waitForFunction(`document.querySelector("#detail h2")?.textContent === "ShoppingCart / alice"`)
      const state = JSON.parse((await page.locator("#state").textContent())!)
      expect(state.lines).toEqual([{ sku: "apple", quantity: 2 }])
      expect(state.expirations).toBe(0)
      expect(await page.locator("#version").textContent()).toBe("1")
      const alarm = page.locator(`#alarms tr[data-alarm="expire"]`)
      expect(await alarm.textContent()).toContain("failed")
      expect(await alarm.textContent()).toContain("PaymentDeclined")

      // Live rates from the demo's metrics (sampled every 2 s): calls through the demo's API show up as calls/s.
      for (let i = 0; i < 40; i++) {
        const call = await fetch(`${base}/counter/c-0${i % 10}/increment`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ amount: 1 })
        })
        expect(call.status).toBe(200)
      }
      await page.waitForFunction(`Number(document.getElementById("rate-calls")?.textContent) > 0`, { timeout: 10_000 })

      mkdirSync(testOutput, { recursive: true })
      await page.screenshot({ path: join(testOutput, "inspector.png"), fullPage: true })

      // Retry: the runtime fires the alarm at once; the cart expires (its lines cleared, expirations 1).
      await alarm.locator("button.retry").click()
      await page.waitForFunction(`document.getElementById("status")?.textContent?.startsWith("Retried expire")`)
      const deadline = Date.now() + 15_000
      let after: { expirations: number; lines: Array<unknown> } | undefined
      while (Date.now() < deadline) {
        await page.click("#refresh")
        await page.waitForTimeout(300)
        after = JSON.parse((await page.locator("#state").textContent())!)
        if (after!.expirations === 1) break
      }
      expect(after).toMatchObject({ expirations: 1, lines: [] })
      await page.waitForFunction(`document.querySelector("#failed p")?.textContent === "None."`)
      expect(await page.locator(`#types li[data-type="ShoppingCart"]`).textContent()).not.toContain("⚠")
      // The firing shows in the rates' counters: the alarm fired and its effect committed.
      const metrics =
        await (await fetch(`${base}/_inspector/api/metrics`, { headers: { authorization: `Bearer ${token}` } }))
          .json() as { live: boolean; alarms: number; commits: number }
      expect(metrics.live).toBe(true)
      expect(metrics.alarms).toBeGreaterThanOrEqual(1)
      expect(metrics.commits).toBeGreaterThanOrEqual(1)
      await page.waitForFunction(`!/totals 0 \\/ 0 \\/ 0/.test(document.getElementById("rates")?.textContent ?? "")`)
      await page.screenshot({ path: join(testOutput, "inspector-after-retry.png"), fullPage: true })

      expect(problems, "errors in the page").toEqual([])
      await page.close()
    },
    90_000
  )

  it("refuses the API without the token, or with a wrong one", async () => {
    expect((await fetch(`${base}/_inspector/api/types`)).status).toBe(401)
    const wrong = await fetch(`${base}/_inspector/api/types`, { headers: { authorization: "Bearer wrong" } })
    expect(wrong.status).toBe(401)
    const right = await fetch(`${base}/_inspector/api/types`, { headers: { authorization: `Bearer ${token}` } })
    expect(right.status).toBe(200)
  })
})
