/**
 * Runner processes of the cluster demo (`runner.ts`) on this machine: a free loopback port each, started and
 * stopped within a scope. The demo and the cluster benchmark start them; the cluster tests take `freePort`.
 */
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { createServer } from "node:net"
import { join } from "node:path"
import { createInterface } from "node:readline"

/** A loopback port nobody listens on right now (the OS picks it). */
export const freePort: Effect.Effect<number, Error> = Effect.callback<number, Error>((resume) => {
  const server = createServer()
  server.on("error", (error) => resume(Effect.fail(error)))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    server.close(() =>
      resume(
        typeof address === "object" && address !== null
          ? Effect.succeed(address.port)
          : Effect.fail(new Error("the port picked is unknown"))
      )
    )
  })
})

/** A started runner: its process and the port it serves on. */
export interface Runner {
  readonly child: ChildProcess
  readonly port: number
}

/**
 * Starts runner `name` of the demo's `Visits` objects on PostgreSQL `url`; succeeds once it serves, fails if it
 * exits first. Closing the scope stops it (SIGTERM, then SIGKILL after 5 s); a runner already gone is left be.
 */
export const startRunner = (url: string, name: string) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const port = yield* freePort
      const child = spawn(process.execPath, [
        join(import.meta.dirname, "runner.ts"),
        JSON.stringify({ url, port, name })
      ], {
        stdio: ["ignore", "pipe", "inherit"]
      })
      yield* Effect.callback<void, Error>((resume) => {
        createInterface({ input: child.stdout! }).on("line", (line) => line === "ready" && resume(Effect.void))
        child.on("close", (code) => resume(Effect.fail(new Error(`runner ${name} exited (code ${code})`))))
      })
      return { child, port } satisfies Runner
    }),
    ({ child }) =>
      child.exitCode !== null || child.signalCode !== null ? Effect.void : Effect.callback<void>((resume) => {
        child.on("close", () => resume(Effect.void))
        child.kill("SIGTERM")
        setTimeout(() => child.kill("SIGKILL"), 5_000).unref()
      })
  )
