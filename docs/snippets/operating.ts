import { Alarms, DurableObject } from "@durable-object/core"
import { Effect } from "effect"
import { Subscription } from "./alarms.ts"

// #region list
/** Every stored subscription whose id starts with `prefix`, a page at a time. */
export const allIds = (prefix: string) =>
  Effect.gen(function*() {
    const ids: Array<string> = []
    let after: string | undefined
    do {
      const page = yield* DurableObject.list(Subscription, { prefix, after, limit: 500 })
      for (const o of page.objects) ids.push(`${o.id} v${o.version} ${o.status}`)
      after = page.next
    } while (after !== undefined)
    return ids
  })
// #endregion list

// #region inspect
/** One subscription as an operator sees it. */
export const show = (id: string) =>
  Effect.gen(function*() {
    const seen = yield* DurableObject.inspect(Subscription, id)
    // `state` is undefined when the stored state no longer decodes: `stateJson` and `decodeError` say what and why.
    yield* Effect.log(seen.decodeError === undefined ? seen.state : seen.decodeError.message, seen.stateJson)
    for (const alarm of seen.alarms) {
      yield* Effect.log(alarm.name, alarm.fireAt, alarm.attempts, alarm.failed?.error ?? alarm.lastError ?? "ok")
    }
  })
// #endregion inspect

// #region failed
/** Retries every failed `trialEnds` alarm (after fixing what made them fail), cancels the other failed ones. */
export const retryFailed = Effect.gen(function*() {
  let page = yield* Alarms.listFailed(Subscription, { limit: 100 })
  while (true) {
    for (const alarm of page.alarms) {
      if (alarm.name === "trialEnds") yield* Alarms.retry(Subscription, alarm.id, alarm.name)
      else yield* Alarms.cancel(Subscription, alarm.id, alarm.name)
    }
    if (page.next === undefined) return
    page = yield* Alarms.listFailed(Subscription, { after: page.next, limit: 100 })
  }
})
// #endregion failed
