/**
 * Spawning the chaos workers (plain Node processes in `test/crash/`) and SIGKILLing them: after a random time,
 * or after a number of events. Every worker speaks lines on stdout; the first is `ready`.
 */
import { spawn } from "node:child_process"
import { join } from "node:path"
import { createInterface } from "node:readline"
import type { DatabaseSpec } from "../databases.ts"
import type { HistoryRecorder } from "./history.ts"

export const crashDir = join(import.meta.dirname, "..", "crash")

export const randomInt = (min: number, max: number) => min + Math.floor(Math.random() * (max - min + 1))

/** When to kill: `ms` after `ready`, or after `events` counted events, whichever comes first. */
export interface KillPolicy {
  readonly afterMs?: number | undefined
  readonly afterEvents?: number | undefined
}

/** A random policy for cycle `cycle`: even cycles by time (50–400 ms), odd ones by event count (1–400). */
export const randomKill = (cycle: number): KillPolicy =>
  cycle % 2 === 0 ? { afterMs: randomInt(50, 400) } : { afterEvents: randomInt(1, 400) }

export interface WorkerExit {
  readonly killedAfter: string
  readonly stderr: string
}

/**
 * Runs `script` with one JSON argument until it is killed by the policy. `onLine` sees every line and returns
 * true for an event that counts toward `afterEvents`. Rejects when the worker exits by itself, or never gets
 * going within `deadlineMs`.
 */
export const runWorker = (
  script: string,
  config: unknown,
  policy: KillPolicy,
  onLine: (fields: ReadonlyArray<string>) => boolean,
  deadlineMs = 20_000
): Promise<WorkerExit> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(crashDir, script), JSON.stringify(config)], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stderr = ""
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    let killed = false
    let killedAfter = ""
    let events = 0
    const kill = (why: string) => {
      if (killed) return
      killed = true
      killedAfter = why
      child.kill("SIGKILL")
    }
    const deadline = setTimeout(() => kill("deadline"), deadlineMs)
    // Every line counts, those read after the kill was sent too: they were written before the process died.
    createInterface({ input: child.stdout }).on("line", (line) => {
      const fields = line.split(" ")
      if (fields[0] === "ready") {
        if (policy.afterMs !== undefined && !killed) {
          const ms = policy.afterMs
          setTimeout(() => kill(`${ms} ms`), ms)
        }
        return
      }
      if (onLine(fields)) {
        events++
        if (policy.afterEvents !== undefined && events >= policy.afterEvents) kill(`${events} events`)
      }
    })
    child.on("close", (code, signal) => {
      clearTimeout(deadline)
      if (!killed || signal !== "SIGKILL") {
        reject(new Error(`${script} exited by itself (code ${code}, signal ${signal}): ${stderr}`))
      } else if (killedAfter === "deadline") {
        reject(new Error(`${script} did not finish its work within ${deadlineMs} ms: ${stderr}`))
      } else {
        resolve({ killedAfter, stderr })
      }
    })
  })

export interface CounterCycle {
  readonly acks: number
  readonly starts: number
  readonly fails: number
  /** Increments started but neither acknowledged nor failed when the process was killed. */
  readonly inFlight: number
  readonly killedAfter: string
}

/**
 * One `counterWorker.ts` process on `spec`, incrementing `ids` objects with `concurrency` fibers, until the
 * policy kills it (events are acknowledgements). Every increment goes into `history`.
 */
export const runCounterCycle = (
  spec: DatabaseSpec,
  history: HistoryRecorder,
  options: {
    readonly ids: number
    readonly concurrency: number
    readonly policy: KillPolicy
    readonly objectPrefix?: string
  }
): Promise<CounterCycle> => {
  const open = new Map<string, number>()
  let acks = 0
  let starts = 0
  let fails = 0
  return runWorker(
    "counterWorker.ts",
    {
      spec,
      ids: options.ids,
      concurrency: options.concurrency,
      ...(options.objectPrefix === undefined ? {} : { objectPrefix: options.objectPrefix })
    },
    options.policy,
    ([kind, op = "", id = "", a = "", b = ""]) => {
      if (kind === "start") {
        starts++
        open.set(op, history.invoke(id, BigInt(a)))
      } else if (kind === "ack") {
        acks++
        history.ok(open.get(op)!, Number(a), BigInt(b))
        open.delete(op)
        return true
      } else if (kind === "fail") {
        fails++
        history.fail(open.get(op)!, a, BigInt(b))
        open.delete(op)
      }
      return false
    }
  ).then(({ killedAfter }) => {
    for (const handle of open.values()) history.fail(handle, "killed", undefined)
    return { acks, starts, fails, inFlight: open.size, killedAfter }
  })
}
