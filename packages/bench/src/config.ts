/**
 * The sizes of every scenario: the full run, scaled by `--scale`, or the tiny `--smoke` run that only proves
 * the benchmark still works.
 */

export interface Config {
  readonly smoke: boolean
  readonly scale: number
  /** Callers of the throughput scenarios. */
  readonly concurrency: number
  readonly warmupMs: number
  readonly durationMs: number
  /** Objects of the many-objects hot scenario. */
  readonly hotObjects: number
  /** Objects of the durable scenarios. */
  readonly durableObjects: number
  /** Rows per transaction / statement of the batched baselines. */
  readonly batchRows: number
  /** Objects activated cold from SQLite. */
  readonly coldObjects: number
  /** Objects whose heap is measured active and hibernated. */
  readonly memoryObjects: number
  /** `hibernateAfter` of the memory scenario, in milliseconds. */
  readonly hibernateAfterMs: number
  /** Distinct objects touched with a short `shutdownAfter`. */
  readonly churnObjects: number
  readonly churnShutdownAfterMs: number
  /** Alarms due at once. */
  readonly dueAlarms: number
  /** Alarms at random times, and the window they fall in. */
  readonly nearAlarms: number
  readonly nearAlarmWindowMs: number
  /** How long after scheduling starts the window opens (all alarms are scheduled by then). */
  readonly nearAlarmLeadMs: number
  /** Duration of the one-caller latency runs. */
  readonly lowLoadMs: number
}

const scaled = (n: number, scale: number, min: number) => Math.max(min, Math.round(n * scale))

export const make = (options: { readonly smoke: boolean; readonly scale: number }): Config => {
  if (options.smoke) {
    return {
      smoke: true,
      scale: options.scale,
      concurrency: 50,
      // Long enough that a busy machine (a CI run beside the tests) still completes calls inside the window.
      warmupMs: 100,
      durationMs: 400,
      hotObjects: 100,
      durableObjects: 50,
      batchRows: 10,
      coldObjects: 500,
      memoryObjects: 500,
      hibernateAfterMs: 200,
      churnObjects: 2_000,
      churnShutdownAfterMs: 200,
      dueAlarms: 300,
      nearAlarms: 20,
      nearAlarmWindowMs: 300,
      nearAlarmLeadMs: 200,
      lowLoadMs: 150
    }
  }
  const s = options.scale
  return {
    smoke: false,
    scale: s,
    concurrency: 1_000,
    warmupMs: scaled(1_000, s, 100),
    durationMs: scaled(5_000, s, 300),
    hotObjects: scaled(10_000, s, 100),
    durableObjects: scaled(1_000, s, 50),
    batchRows: 100,
    coldObjects: scaled(100_000, s, 1_000),
    memoryObjects: scaled(100_000, s, 1_000),
    hibernateAfterMs: 1_000,
    churnObjects: scaled(1_000_000, s, 10_000),
    churnShutdownAfterMs: 1_000,
    dueAlarms: scaled(100_000, s, 1_000),
    nearAlarms: scaled(1_000, s, 50),
    nearAlarmWindowMs: 5_000,
    nearAlarmLeadMs: 3_000,
    lowLoadMs: scaled(3_000, s, 300)
  }
}
