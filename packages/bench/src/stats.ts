/**
 * Measuring and reporting: a latency histogram, the event-loop delay monitor, the closed-loop load driver,
 * the result rows every scenario returns, and their rendering as a text table, a markdown table and JSON.
 */
import { Effect } from "effect"
import { monitorEventLoopDelay } from "node:perf_hooks"

// ---------------------------------------------------------------------------------------------------------
// Latency histogram
// ---------------------------------------------------------------------------------------------------------

/** Log buckets of 1% from 1 µs: values in milliseconds are recorded in O(1) and kept in 16 KiB. */
const bucketFactor = Math.log(1.01)
const bucketCount = 2100 // 1 µs · 1.01^2100 ≈ 1.2 · 10^6 s

export interface Histogram {
  readonly record: (millis: number) => void
  readonly count: () => number
  /** The value below which `p` percent of the recordings fall, in milliseconds (0 when empty). */
  readonly percentile: (p: number) => number
  readonly max: () => number
  readonly mean: () => number
}

export const makeHistogram = (): Histogram => {
  const buckets = new Float64Array(bucketCount)
  let count = 0
  let sum = 0
  let max = 0
  return {
    record: (millis) => {
      const micros = millis * 1000
      const index = micros <= 1 ? 0 : Math.min(bucketCount - 1, Math.ceil(Math.log(micros) / bucketFactor))
      buckets[index]! += 1
      count++
      sum += millis
      if (millis > max) max = millis
    },
    count: () => count,
    percentile: (p) => {
      if (count === 0) return 0
      const rank = Math.ceil((p / 100) * count)
      let seen = 0
      for (let i = 0; i < bucketCount; i++) {
        seen += buckets[i]!
        if (seen >= rank) return Math.min(max, Math.exp(i * bucketFactor) / 1000)
      }
      return max
    },
    max: () => max,
    mean: () => (count === 0 ? 0 : sum / count)
  }
}

/** Percentiles of a small sample held in full. */
export const percentileOf = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return 0
  const sorted = values.toSorted((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!
}

// ---------------------------------------------------------------------------------------------------------
// Event-loop delay
// ---------------------------------------------------------------------------------------------------------

export interface EventLoopDelay {
  /** The longest the event loop was late, in milliseconds. */
  readonly maxMs: number
  readonly p99Ms: number
  readonly meanMs: number
}

const resolutionMs = 10

/** A histogram value (ns) as how late the loop was (ms): the interval minus the resolution. */
const late = (nanos: number) => (Number.isFinite(nanos) ? Math.max(0, nanos / 1e6 - resolutionMs) : 0)

/**
 * Starts `perf_hooks.monitorEventLoopDelay` (a timer every 10 ms). Node records the whole interval between
 * two timer runs, so an idle loop reads ~10 ms; the resolution is subtracted to report how late the loop was.
 *
 * The histogram only records an interval once the loop gets back to its timer, so a stall still in progress
 * when the measurement stops (or one covering the whole window, leaving the histogram empty) would go
 * unseen: a second timer notes when the loop last ran, and the time since then counts as one more sample.
 */
export interface EventLoopMonitor {
  /** Forgets what was recorded so far: the measured window starts now. */
  readonly reset: () => void
  readonly stop: () => EventLoopDelay
}

export const monitorEventLoop = (): EventLoopMonitor => {
  const histogram = monitorEventLoopDelay({ resolution: resolutionMs })
  histogram.enable()
  let lastRan = performance.now()
  const ticker = setInterval(() => {
    lastRan = performance.now()
  }, resolutionMs)
  ticker.unref()
  return {
    reset: () => {
      histogram.reset()
      lastRan = performance.now()
    },
    stop: () => {
      histogram.disable()
      clearInterval(ticker)
      const tail = Math.max(0, performance.now() - lastRan - resolutionMs)
      if (histogram.count === 0) return { maxMs: tail, p99Ms: tail, meanMs: tail }
      return {
        maxMs: Math.max(late(histogram.max), tail),
        p99Ms: late(histogram.percentile(99)),
        meanMs: late(histogram.mean)
      }
    }
  }
}

/** Runs `effect` with the event-loop delay monitored, returning both. */
export const withEventLoop = <A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<readonly [A, EventLoopDelay], E, R> =>
  Effect.suspend(() => {
    const monitor = monitorEventLoop()
    return Effect.map(effect, (a) => [a, monitor.stop()] as const).pipe(
      Effect.onError(() => Effect.sync(() => monitor.stop()))
    )
  })

// ---------------------------------------------------------------------------------------------------------
// Closed-loop load
// ---------------------------------------------------------------------------------------------------------

export interface LoadOptions<E, R> {
  /** Callers, each issuing its next call as soon as the previous one replies. */
  readonly concurrency: number
  /** Calls made before measuring starts (JIT, pools, caches). */
  readonly warmupMs: number
  readonly durationMs: number
  /** One call by caller `worker`; `n` counts that caller's calls. */
  readonly call: (worker: number, n: number) => Effect.Effect<unknown, E, R>
  /** Rows (or objects, alarms…) one call accounts for. Default 1. */
  readonly itemsPerCall?: number | undefined
}

export interface LoadResult {
  /** Calls completed during the measured window. */
  readonly calls: number
  readonly seconds: number
  /** Items per second (calls per second unless `itemsPerCall` is set). */
  readonly throughput: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly maxMs: number
  readonly eventLoop: EventLoopDelay
}

/**
 * Closed-loop load: `concurrency` callers call back to back for `warmupMs + durationMs`. Calls that start and
 * end inside the measured window give the latency; calls completed inside it give the throughput.
 */
export const closedLoop = <E, R>(options: LoadOptions<E, R>): Effect.Effect<LoadResult, E, R> =>
  Effect.suspend(() => {
    const histogram = makeHistogram()
    // Calls that ended in the window whatever their start: the latency when none started and ended in it (a
    // window shorter than a call, as under `--smoke` on a busy machine).
    const ended = makeHistogram()
    const start = performance.now()
    const measureFrom = start + options.warmupMs
    const end = measureFrom + options.durationMs
    let completed = 0
    // Started now and reset by the first call of the measured window: a timer could not start it on time
    // if the loop is held through the warm-up.
    const monitor = monitorEventLoop()
    let measuring = false
    const worker = (id: number) =>
      Effect.gen(function*() {
        let n = 0
        while (true) {
          const t0 = performance.now()
          if (t0 >= end) return
          if (!measuring && t0 >= measureFrom) {
            measuring = true
            monitor.reset()
          }
          yield* options.call(id, n++)
          const t1 = performance.now()
          if (t1 >= measureFrom && t1 <= end) {
            completed++
            ended.record(t1 - t0)
            if (t0 >= measureFrom) histogram.record(t1 - t0)
          }
        }
      })
    const workers = Array.from({ length: options.concurrency }, (_, i) => i)
    return Effect.forEach(workers, worker, { concurrency: "unbounded", discard: true }).pipe(
      Effect.onError(() => Effect.sync(() => monitor.stop())),
      Effect.map((): LoadResult => {
        const eventLoop = monitor.stop()
        const seconds = options.durationMs / 1000
        const latency = histogram.count() > 0 ? histogram : ended
        return {
          calls: completed,
          seconds,
          throughput: (completed * (options.itemsPerCall ?? 1)) / seconds,
          p50Ms: latency.percentile(50),
          p99Ms: latency.percentile(99),
          maxMs: latency.max(),
          eventLoop
        }
      })
    )
  })

/** Runs `effect` once, timing it (with the event loop monitored). */
export const timed = <A, E, R>(
  effect: Effect.Effect<A, E, R>
): Effect.Effect<{ readonly value: A; readonly seconds: number; readonly eventLoop: EventLoopDelay }, E, R> =>
  Effect.suspend(() => {
    const start = performance.now()
    return Effect.map(withEventLoop(effect), ([value, eventLoop]) => ({
      value,
      seconds: (performance.now() - start) / 1000,
      eventLoop
    }))
  })

// ---------------------------------------------------------------------------------------------------------
// Result rows
// ---------------------------------------------------------------------------------------------------------

export interface Target {
  /** What is required, e.g. "≥ 0.5× floor". */
  readonly label: string
  readonly pass: boolean
}

export interface Ratio {
  /** The baseline row's id. */
  readonly baseline: string
  /** Short name shown in the table, e.g. "autocommit". */
  readonly label: string
  readonly ratio: number
}

/** One line of the results: a measurement or a baseline. */
export interface Row {
  readonly id: string
  readonly scenario: string
  readonly label: string
  readonly kind: "measure" | "baseline"
  /** The main number of the row and its unit. */
  readonly value: number
  readonly unit: string
  readonly p50Ms?: number | undefined
  readonly p99Ms?: number | undefined
  readonly ratios: ReadonlyArray<Ratio>
  readonly eventLoop?: EventLoopDelay | undefined
  readonly targets: ReadonlyArray<Target>
  /** Anything else worth keeping in the JSON (and shown in the table's notes). */
  readonly details?: Record<string, number | string | ReadonlyArray<unknown>> | undefined
  readonly note?: string | undefined
}

/** The event-loop target every measurement row carries. */
export const eventLoopMaxTargetMs = 50

export const row = (
  r: Omit<Row, "targets" | "ratios"> & {
    readonly targets?: ReadonlyArray<Target> | undefined
    readonly ratios?: ReadonlyArray<Ratio> | undefined
  }
): Row => {
  const targets = [...(r.targets ?? [])]
  if (r.kind === "measure" && r.eventLoop !== undefined) {
    targets.push({ label: `loop max < ${eventLoopMaxTargetMs} ms`, pass: r.eventLoop.maxMs < eventLoopMaxTargetMs })
  }
  return { ...r, ratios: r.ratios ?? [], targets }
}

/** A ratio of `value` to a baseline row (throughput over throughput). */
export const ratioTo = (value: number, baseline: Row, label: string): Ratio => ({
  baseline: baseline.id,
  label,
  ratio: baseline.value > 0 ? value / baseline.value : 0
})

/** The row of a closed-loop result. */
export const loadRow = (
  base: { readonly id: string; readonly scenario: string; readonly label: string; readonly kind: Row["kind"] },
  result: LoadResult,
  unit: string,
  extra?: {
    readonly ratios?: ReadonlyArray<Ratio> | undefined
    readonly targets?: ReadonlyArray<Target> | undefined
    readonly note?: string | undefined
    readonly details?: Row["details"]
  }
): Row =>
  row({
    ...base,
    value: result.throughput,
    unit,
    p50Ms: result.p50Ms,
    p99Ms: result.p99Ms,
    eventLoop: result.eventLoop,
    ratios: extra?.ratios,
    targets: extra?.targets,
    note: extra?.note,
    details: { calls: result.calls, seconds: result.seconds, maxMs: result.maxMs, ...extra?.details }
  })

// ---------------------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------------------

/** A count with thousands separators, for labels: 100000 → "100,000". */
export const count = (n: number): string => n.toLocaleString("en-US")

const si = (n: number): string => {
  const abs = Math.abs(n)
  if (abs >= 1e6) return `${(n / 1e6).toFixed(abs >= 1e7 ? 1 : 2)}M`
  if (abs >= 1e4) return `${(n / 1e3).toFixed(abs >= 1e5 ? 0 : 1)}k`
  if (abs >= 100) return n.toFixed(0)
  if (abs >= 10) return n.toFixed(1)
  return n.toFixed(2)
}

const ms = (n: number | undefined): string => {
  if (n === undefined) return ""
  if (n >= 100) return n.toFixed(0)
  if (n >= 10) return n.toFixed(1)
  if (n >= 1) return n.toFixed(2)
  return n.toFixed(3)
}

const ratioText = (r: Ratio) => `${r.ratio >= 10 ? r.ratio.toFixed(0) : r.ratio.toFixed(2)}× ${r.label}`

export const columns = [
  "Scenario",
  "Measure",
  "Value",
  "p50 ms",
  "p99 ms",
  "Ratio to baselines",
  "Loop max/p99 ms",
  "Targets",
  "Result"
] as const

export const cells = (r: Row): ReadonlyArray<string> => [
  r.scenario,
  r.kind === "baseline" ? `(baseline) ${r.label}` : r.label,
  `${si(r.value)} ${r.unit}`,
  ms(r.p50Ms),
  ms(r.p99Ms),
  r.ratios.map(ratioText).join(", "),
  r.eventLoop === undefined ? "" : `${ms(r.eventLoop.maxMs)} / ${ms(r.eventLoop.p99Ms)}`,
  r.targets.map((t) => `${t.pass ? "✓" : "✗"} ${t.label}`).join("; "),
  r.targets.length === 0 ? "" : r.targets.every((t) => t.pass) ? "PASS" : "MISS"
]

/** A plain-text table for the terminal. */
export const textTable = (rows: ReadonlyArray<Row>): string => {
  const body = rows.map(cells)
  const widths = columns.map((c, i) => Math.max(c.length, ...body.map((cs) => cs[i]!.length)))
  const line = (cs: ReadonlyArray<string>) =>
    cs.map((c, i) => (i === 2 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd()
  return [line(columns), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n")
}

const escapeCell = (c: string) => c.replace(/\|/g, "\\|")

/** The same table in markdown (for docs/performance.md). */
export const markdownTable = (rows: ReadonlyArray<Row>): string => {
  return [
    `| ${columns.join(" | ")} |`,
    `|${columns.map((_, i) => (i === 2 || i === 3 || i === 4 ? "---:" : "---")).join("|")}|`,
    ...rows.map((r) => `| ${cells(r).map(escapeCell).join(" | ")} |`)
  ].join("\n")
}

/** Rows as "label: value" lines: the details that do not fit the table. */
export const notes = (rows: ReadonlyArray<Row>): string =>
  rows.filter((r) => r.note !== undefined).map((r) => `- ${r.scenario} / ${r.label}: ${r.note}`).join("\n")
