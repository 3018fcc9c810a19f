/**
 * A scheduler for servers: runs fibers in time slices so the event loop gets a turn at least every
 * `sliceMillis`, whatever the number of runnable fibers.
 *
 * Effect's default scheduler gives every fiber its own dispatcher, and each dispatcher runs its queued tasks
 * in one `setImmediate` callback. Node runs all the callbacks queued for a turn back to back, so with many
 * runnable fibers (1,000 callers in a closed loop, say) one turn of the event loop runs a slice of every one
 * of them: measured here, a bare `Semaphore` under 1,000 callers held the loop for about half a second at a
 * time. Timers, sockets and alarms wait that long. This scheduler shares one FIFO queue between all fibers
 * and hands the loop back once a slice of wall time has passed; throughput is unchanged (the same benchmark
 * ran as fast, with the loop's longest delay at about 20 ms).
 *
 * Provide it once, at the top of a program, so every fiber runs on it:
 *
 * ```ts
 * program.pipe(Effect.provide(FairScheduler.layer()))
 * ```
 *
 * @since 0.1.0
 */
import { Layer, Scheduler } from "effect"
import type * as Fiber from "effect/Fiber"

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 */
export interface Options {
  /**
   * The longest stretch, in milliseconds, the scheduler runs fibers before it lets the event loop take a
   * turn (default 10). A single task that runs longer than this is not cut short: a fiber yields to the
   * scheduler only every `MaxOpsBeforeYield` operations or when it waits.
   */
  readonly sliceMillis?: number | undefined
}

/** A FIFO queue of tasks that reuses its array instead of shifting it. */
class TaskQueue {
  tasks: Array<(() => void) | undefined> = []
  head = 0
  readonly priority: number
  constructor(priority: number) {
    this.priority = priority
  }
  get size(): number {
    return this.tasks.length - this.head
  }
  push(task: () => void): void {
    this.tasks.push(task)
  }
  shift(): (() => void) | undefined {
    const task = this.tasks[this.head]
    this.tasks[this.head++] = undefined
    if (this.head === this.tasks.length) {
      this.tasks = []
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.tasks.length) {
      // Drop the consumed front once it is most of the array, so a long-lived queue stays small.
      this.tasks = this.tasks.slice(this.head)
      this.head = 0
    }
    return task
  }
}

/**
 * The one dispatcher all fibers share. Tasks run in priority order (lower first), FIFO within a priority.
 */
class SlicedDispatcher implements Scheduler.SchedulerDispatcher {
  /** One queue per priority in use, by ascending priority; almost always just priority 0. */
  private queues: Array<TaskQueue> = []
  private scheduled = false
  private readonly sliceMillis: number
  constructor(sliceMillis: number) {
    this.sliceMillis = sliceMillis
  }

  scheduleTask(task: () => void, priority: number): void {
    this.queueFor(priority).push(task)
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.runSlice)
    }
  }

  flush(): void {
    for (let task = this.next(); task !== undefined; task = this.next()) task()
  }

  private readonly runSlice = (): void => {
    this.scheduled = false
    // Wall time, not `Clock`: the slice is about the real event loop, whatever clock the program runs on.
    const deadline = performance.now() + this.sliceMillis
    for (let task = this.next(); task !== undefined; task = this.next()) {
      task()
      if (performance.now() >= deadline) break
    }
    if (!this.scheduled && this.queues.length > 0) {
      this.scheduled = true
      setImmediate(this.runSlice)
    }
  }

  private queueFor(priority: number): TaskQueue {
    const queues = this.queues
    let index = 0
    for (; index < queues.length; index++) {
      const queue = queues[index]!
      if (queue.priority === priority) return queue
      if (queue.priority > priority) break
    }
    const queue = new TaskQueue(priority)
    queues.splice(index, 0, queue)
    return queue
  }

  private next(): (() => void) | undefined {
    const first = this.queues[0]
    if (first === undefined) return undefined
    const task = first.shift()
    if (first.size === 0) this.queues.shift()
    return task
  }
}

class SlicedScheduler implements Scheduler.Scheduler {
  readonly executionMode = "async" as const
  private readonly dispatcher: SlicedDispatcher
  constructor(sliceMillis: number) {
    this.dispatcher = new SlicedDispatcher(sliceMillis)
  }
  shouldYield(fiber: Fiber.Fiber<unknown, unknown>): boolean {
    return fiber.currentOpCount >= fiber.cache.maxOpsBeforeYield
  }
  makeDispatcher(): Scheduler.SchedulerDispatcher {
    return this.dispatcher
  }
}

/**
 * Makes a time-sliced scheduler: one FIFO queue for every fiber that runs on it, and a turn of the event
 * loop at least every `sliceMillis` (default 10) of running fibers. Fibers keep Effect's usual yield points
 * (`MaxOpsBeforeYield` operations, or waiting), so a single fiber's step is never cut short.
 *
 * @since 0.1.0
 */
export const make = (options?: Options): Scheduler.Scheduler => {
  const sliceMillis = options?.sliceMillis ?? 10
  if (!(sliceMillis > 0) || !Number.isFinite(sliceMillis)) {
    throw new RangeError(`FairScheduler: sliceMillis must be a positive number of milliseconds, got ${sliceMillis}`)
  }
  return new SlicedScheduler(sliceMillis)
}

/**
 * A layer that runs everything it is provided to on a new {@link make} scheduler. Provide it at the top of a
 * program (`Effect.provide(FairScheduler.layer())`) so every fiber shares it.
 *
 * @since 0.1.0
 */
export const layer = (options?: Options): Layer.Layer<never> =>
  Layer.succeed(Scheduler.Scheduler, make(options)) as Layer.Layer<never>
