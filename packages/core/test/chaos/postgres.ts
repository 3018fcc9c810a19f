/**
 * A PostgreSQL server of the chaos suite's own (the shared test server must never be stopped under the other
 * suites): made with `scripts/postgres.sh`, then stopped, crashed (every process SIGKILLed) and frozen
 * (SIGSTOP) on demand, and started again on the same port and data.
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const script = join(import.meta.dirname, "..", "..", "..", "..", "scripts", "postgres.sh")

const pgBin = (): string => {
  const versions = readdirSync("/usr/lib/postgresql").toSorted((a, b) => Number(b) - Number(a))
  return join("/usr/lib/postgresql", versions[0] ?? "", "bin")
}

const asOwner = (command: string, args: ReadonlyArray<string>) =>
  process.getuid?.() === 0
    ? execFileSync("runuser", ["-u", "postgres", "--", command, ...args], { stdio: "pipe", encoding: "utf8" })
    : execFileSync(command, args, { stdio: "pipe", encoding: "utf8" })

const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

export class ChaosPostgres {
  readonly dir: string
  readonly url: string
  readonly port: number
  private constructor(dir: string, url: string, port: number) {
    this.dir = dir
    this.url = url
    this.port = port
  }

  /** initdb and start a new server on a free loopback port. */
  static create(): ChaosPostgres {
    const dir = mkdtempSync(join(tmpdir(), "durable-object-chaos-pg-"))
    const url = execFileSync("bash", [script, "start", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
      .trim()
    const port = Number(new URL(url).port)
    return new ChaosPostgres(dir, url, port)
  }

  /** The postmaster's pid (while it runs). */
  postmasterPid(): number {
    return Number(readFileSync(join(this.dir, "data", "postmaster.pid"), "utf8").split("\n")[0])
  }

  /** The postmaster and every process it started. */
  processes(): Array<number> {
    const pid = this.postmasterPid()
    const children = execFileSync("ps", ["-o", "pid=", "--ppid", String(pid)], { encoding: "utf8" })
      .split("\n")
      .map((s) => Number(s.trim()))
      .filter((n) => n > 0)
    return [pid, ...children]
  }

  /** A clean, fast shutdown (`pg_ctl stop -m fast`): open transactions roll back, clients are disconnected. */
  stop(): void {
    asOwner(join(pgBin(), "pg_ctl"), ["-D", join(this.dir, "data"), "-m", "fast", "-w", "stop"])
  }

  /**
   * A crash: the postmaster and every backend SIGKILLed at once (commits in progress die with them); with
   * `postmasterOnly`, the postmaster alone (its backends notice and exit by themselves; a commit already in a
   * backend may still finish).
   */
  crash(postmasterOnly = false): void {
    const all = this.processes()
    const pids = postmasterOnly ? all.slice(0, 1) : all
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // already gone
      }
    }
    // Wait until every one is gone (the restart needs the shared memory released).
    for (let i = 0; i < 400 && all.some(alive); i++) sleepSync(25)
  }

  /** Every process of the server stopped (SIGSTOP): connections stay open, nothing answers. */
  freeze(): Array<number> {
    const pids = this.processes()
    for (const pid of pids) process.kill(pid, "SIGSTOP")
    return pids
  }

  thaw(pids: ReadonlyArray<number>): void {
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGCONT")
      } catch {
        // already gone
      }
    }
  }

  /** Starts the server again on the same port and data (after `stop` or `crash`). */
  start(): void {
    const options =
      `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 -c shared_buffers=128MB`
    let lastError: unknown
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        asOwner(join(pgBin(), "pg_ctl"), [
          "-D",
          join(this.dir, "data"),
          "-l",
          join(this.dir, "server.log"),
          "-w",
          "-t",
          "60",
          "-o",
          options,
          "start"
        ])
        return
      } catch (error) {
        lastError = error
        sleepSync(100)
      }
    }
    throw new Error(`chaos PostgreSQL did not start again: ${String(lastError)}`)
  }

  /** Stops the server (if it runs) and removes its files. */
  destroy(): void {
    execFileSync("bash", [script, "stop", this.dir], { stdio: "ignore" })
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
