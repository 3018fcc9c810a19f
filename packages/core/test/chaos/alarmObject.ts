/**
 * The object of the alarm chaos tests (shared by the test and `crash/alarmWorker.ts`, so no vitest here): `arm`
 * schedules its 16 named alarms at once, each due within `withinMillis`; each alarm, when it fires, appends its
 * name to the object's `fired` list. An armed object must end with every name in `fired` exactly once and no
 * alarm row left; an object whose `arm` never committed, with nothing.
 */
import { DurableObject, SqlStorage } from "@durable-object/core"
import { Effect, Schema } from "effect"
import type { DatabaseSpec } from "../databases.ts"
import { optionsFor } from "../databases.ts"

export const alarmNames = Array.from({ length: 16 }, (_, i) => `alarm${i}`)

const alarms = Object.fromEntries(alarmNames.map((name) => [name, {
  handle: (_: void, ctx: any) =>
    ctx.state.update((s: { fired: ReadonlyArray<string> }) => ({ fired: [...s.fired, name] }))
}]))

export const Alarmed = DurableObject.defineObject({
  name: "Alarmed",
  state: Schema.Struct({ fired: Schema.Array(Schema.String) }),
  initialState: () => ({ fired: [] as ReadonlyArray<string> }),
  handlers: {
    arm: {
      payload: Schema.Struct({ withinMillis: Schema.Number }),
      success: Schema.Void,
      handle: ({ withinMillis }, ctx) =>
        Effect.forEach(
          alarmNames,
          (name) =>
            (ctx.alarms.schedule as (name: string, when: { in: number }) => Effect.Effect<void>)(
              name,
              { in: Math.floor(Math.random() * withinMillis) }
            ),
          { discard: true }
        )
    }
  },
  alarms: alarms as Record<string, { readonly handle: (payload: void, ctx: any) => Effect.Effect<void> }>,
  // Kills count as attempts (the claim of a killed process expires); never give up within the test.
  options: { alarmRetry: { maxRetries: 1000, initialDelay: "50 millis", factor: 1 } }
})

/** Storage options for the alarm tests: a fast poll and a short lease, so a killed claim is taken over soon. */
export const alarmStorageOptions = (spec: DatabaseSpec): SqlStorage.Options => ({
  ...optionsFor(spec),
  alarms: { pollInterval: "100 millis", leaseDuration: "1 second" }
})
