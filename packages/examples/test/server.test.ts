/**
 * The demo server at its edges: ids up to the library's limit route, request bodies over the limit are refused
 * (413) before they are read whole, and a graceful stop under keep-alive load stops accepting, lets the calls in
 * flight finish and reply, and completes in about a second.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer } from "effect"
import { HttpServer } from "effect/http"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import * as Http from "node:http"
import * as Net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { DatabaseSync } from "node:sqlite"
import { fileURLToPath } from "node:url"
import { serverLayer } from "../src/server.ts"

const entry = fileURLToPath(new URL("../src/main.ts", import.meta.url))
const settings = { rateLimitWindow: Duration.minutes(1), cartTtl: Duration.minutes(30) }

const tempDir = Effect.acquireRelease(
  Effect.sync(() => mkdtempSync(join(tmpdir(), "durable-object-demo-"))),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

/** The demo server on a fresh SQLite file and a free port, for the current scope; returns its base URL. */
const startServer = (maxBodyBytes?: number) =>
  Effect.gen(function*() {
    const dir = yield* tempDir
    const context = yield* Layer.build(serverLayer({
      host: "127.0.0.1",
      port: 0,
      database: { _tag: "SQLite", filename: join(dir, "demo.sqlite") },
      settings,
      admin: { disabled: true },
      ...(maxBodyBytes === undefined ? {} : { maxBodyBytes })
    }))
    const address = Context.get(context, HttpServer.HttpServer).address
    assert.isTrue("port" in address)
    return "port" in address ? address.port : 0
  })

const post = (port: number, path: string, body: string) =>
  Effect.promise(async () => {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, { method: "POST", body })
    const text = await response.text()
    return { status: response.status, body: text === "" ? undefined : JSON.parse(text) as any }
  })

/**
 * Sends a request head announcing `declared` body bytes (or chunked when undefined), then `sent` bytes of body,
 * and waits for the status line without ever sending the rest. Resolves with the status, or "timeout".
 */
const statusBeforeBodyEnds = (port: number, declared: number | undefined, sent: number) =>
  Effect.promise(() =>
    new Promise<number | "timeout" | "closed">((resolve) => {
      const socket = Net.connect(port, "127.0.0.1")
      let received = ""
      const done = (result: number | "timeout" | "closed") => {
        clearTimeout(timer)
        socket.destroy()
        resolve(result)
      }
      const timer = setTimeout(() => done("timeout"), 5_000)
      socket.on("data", (chunk: Buffer) => {
        received += chunk.toString("latin1")
        const match = /^HTTP\/1\.1 (\d{3})/.exec(received)
        if (match?.[1] !== undefined) done(Number(match[1]))
      })
      socket.on("error", () => done("closed"))
      socket.on("close", () => done("closed"))
      socket.on("connect", () => {
        const length = declared === undefined ? "transfer-encoding: chunked" : `content-length: ${declared}`
        socket.write(
          `POST /counter/big/increment HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n${length}\r\n\r\n`
        )
        const body = Buffer.alloc(sent, 0x20)
        if (declared === undefined) {
          for (let offset = 0; offset < sent; offset += 64 * 1024) {
            const chunk = body.subarray(offset, Math.min(sent, offset + 64 * 1024))
            socket.write(`${chunk.length.toString(16)}\r\n`)
            socket.write(chunk)
            socket.write("\r\n")
          }
        } else {
          socket.write(body)
        }
      })
    })
  )

describe("demo server", () => {
  it.live("ids up to the library's limit (1 KiB of UTF-8) route; longer ones are a typed 400", () =>
    Effect.gen(function*() {
      const port = yield* startServer()
      const ascii = "a".repeat(1024)
      const ok = yield* post(port, `/counter/${ascii}/increment`, `{"amount": 2}`)
      assert.deepStrictEqual(ok, { status: 200, body: 2 })
      // 341 three-byte characters and one ASCII: 1024 UTF-8 bytes, 3070 characters once percent-encoded.
      const wide = "€".repeat(341) + "x"
      const okWide = yield* post(port, `/counter/${encodeURIComponent(wide)}/increment`, `{}`)
      assert.deepStrictEqual(okWide, { status: 200, body: 1 })
      const inspect = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/_admin/Counter/${encodeURIComponent(wide)}`).then((r) => r.json() as any)
      )
      assert.strictEqual(inspect.id, wide)
      const tooLong = yield* post(port, `/counter/${"b".repeat(1025)}/increment`, `{}`)
      assert.strictEqual(tooLong.status, 400)
      assert.strictEqual(tooLong.body._tag, "InvalidObjectId")
      const tooLongWide = yield* post(port, `/counter/${encodeURIComponent("€".repeat(342))}/increment`, `{}`)
      assert.strictEqual(tooLongWide.status, 400)
      assert.strictEqual(tooLongWide.body._tag, "InvalidObjectId")
    }))

  it.live("a body over the limit gets 413 before it is read whole; one at the limit is read", () =>
    Effect.gen(function*() {
      const port = yield* startServer()
      // Announced as 100 MB, 64 KiB sent: refused on the announcement.
      assert.strictEqual(yield* statusBeforeBodyEnds(port, 100_000_000, 64 * 1024), 413)
      // Chunked, no length: refused once more than 1 MiB arrived, without waiting for the end.
      assert.strictEqual(yield* statusBeforeBodyEnds(port, undefined, 2 * 1024 * 1024), 413)
      // Exactly 1 MiB of JSON is accepted (and the handler sees it).
      const atLimit = `{"amount": 3${" ".repeat(1024 * 1024 - 13)}}`
      assert.strictEqual(Buffer.byteLength(atLimit), 1024 * 1024)
      assert.deepStrictEqual(yield* post(port, "/counter/at-limit/increment", atLimit), { status: 200, body: 3 })
      const over = yield* post(port, "/counter/over/increment", `${atLimit} `)
      assert.strictEqual(over.status, 413)
      assert.strictEqual(over.body._tag, "PayloadTooLarge")
      // The server still answers afterwards.
      assert.deepStrictEqual(yield* post(port, "/counter/at-limit/increment", `{"amount": 1}`), {
        status: 200,
        body: 4
      })
    }))

  it.live("the body limit is an option", () =>
    Effect.gen(function*() {
      const port = yield* startServer(100)
      assert.strictEqual((yield* post(port, "/counter/small/increment", `{"amount": 1}`)).status, 200)
      assert.strictEqual((yield* post(port, "/counter/small/increment", `{"amount": 1${" ".repeat(100)}}`)).status, 413)
    }))

  it.live(
    "Ctrl-C under keep-alive load: stops accepting, in-flight calls reply, done in about a second",
    () =>
      Effect.gen(function*() {
        const dir = yield* tempDir
        const filename = join(dir, "demo.sqlite")
        const result = yield* Effect.promise(() => shutdownUnderLoad(filename))
        console.log(
          `demo shutdown under keep-alive load: exited ${result.exitMs} ms after SIGINT, ${result.ok} replies 200 ` +
            `(${result.okAfterSignal} after the signal), ${result.refused} refused or reset, other: ${
              JSON.stringify(result.other)
            }; stored ${result.stored}`
        )
        assert.isTrue(
          result.exitCode === 0 || result.exitCode === 130 || result.exitSignal === "SIGINT",
          `exit code ${result.exitCode}, signal ${result.exitSignal}\n${result.output}`
        )
        assert.isAtMost(result.exitMs, 2_000, `the stop took ${result.exitMs} ms\n${result.output}`)
        assert.deepStrictEqual(result.other, [], "every request got a 200 reply or never reached a handler")
        assert.isAbove(result.ok, 0)
        // Every acknowledged increment is stored; any surplus came from a request whose connection was cut.
        assert.isAtLeast(result.stored, result.ok)
        assert.isAtMost(result.stored, result.ok + result.refused)
      }),
    30_000
  )
})

interface ShutdownResult {
  readonly exitMs: number
  readonly exitCode: number | null
  readonly exitSignal: NodeJS.Signals | null
  readonly ok: number
  readonly okAfterSignal: number
  readonly refused: number
  readonly other: Array<string>
  readonly stored: number
  readonly output: string
}

/**
 * Starts `npm run demo` on a SQLite file, keeps 64 keep-alive connections busy incrementing one counter,
 * sends SIGINT after 1.5 s, and lets the clients go on until the process is gone.
 */
const shutdownUnderLoad = (filename: string): Promise<ShutdownResult> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [entry], {
      env: { ...process.env, PORT: "0", DATABASE_URL: "", DEMO_SQLITE_FILE: filename },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    let port: number | undefined
    let signalledAt = 0
    const state = { exited: false }
    let ok = 0
    let okAfterSignal = 0
    let refused = 0
    const other: Array<string> = []
    const agent = new Http.Agent({ keepAlive: true, maxSockets: 64 })
    const watchdog = setTimeout(() => child.kill("SIGKILL"), 25_000)
    const onOutput = (chunk: Buffer) => {
      output += chunk.toString()
      const match = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
      if (port === undefined && match?.[1] !== undefined) {
        port = Number(match[1])
        for (let i = 0; i < 64; i++) loop(i)
        setTimeout(() => {
          signalledAt = performance.now()
          child.kill("SIGINT")
        }, 1_500)
      }
    }
    child.stdout.on("data", onOutput)
    child.stderr.on("data", onOutput)
    const once = (i: number) =>
      new Promise<void>((done) => {
        const request = Http.request({
          agent,
          host: "127.0.0.1",
          port,
          method: "POST",
          path: `/counter/load/increment`,
          headers: { "content-type": "application/json" }
        }, (response) => {
          let body = ""
          response.on("data", (chunk: Buffer) => {
            body += chunk.toString()
          })
          response.on("end", () => {
            if (response.statusCode === 200) {
              ok++
              if (signalledAt > 0) okAfterSignal++
            } else {
              other.push(`${response.statusCode} ${body}`)
            }
            done()
          })
          response.on("error", () => {
            refused++
            done()
          })
        })
        request.on("error", () => {
          refused++
          done()
        })
        request.end(`{"amount": 1}`)
        void i
      })
    const loop = async (i: number) => {
      while (!state.exited) {
        await once(i)
        if (signalledAt > 0 && !state.exited) await new Promise((r) => setTimeout(r, 5))
      }
    }
    child.on("error", reject)
    child.on("exit", (exitCode, exitSignal) => {
      const exitMs = Math.round(performance.now() - signalledAt)
      state.exited = true
      clearTimeout(watchdog)
      setTimeout(() => {
        agent.destroy()
        let stored = 0
        try {
          const db = new DatabaseSync(filename, { readOnly: true })
          const row = db.prepare(
            `SELECT state FROM durable_objects WHERE object_type = 'Counter' AND object_id = 'load'`
          )
            .get() as { state: string } | undefined
          db.close()
          stored = row === undefined ? 0 : (JSON.parse(row.state) as { count: number }).count
        } catch (error) {
          output += `\nreading the database failed: ${String(error)}`
        }
        resolve({ exitMs, exitCode, exitSignal, ok, okAfterSignal, refused, other, stored, output })
      }, 200)
    })
  })
