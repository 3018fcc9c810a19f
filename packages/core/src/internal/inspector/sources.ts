/**
 * The inspector's two sources of data: the object runtimes of the application that mounts it (decoded states,
 * statuses, retries through the runtime), and a bare database (`durable-object inspect`: every type stored,
 * states as stored, fixes committed fenced like any commit).
 *
 * @internal
 */
import { Clock, type Context, DateTime, Effect } from "effect"
import type { SqlClient } from "effect/sql"
import * as Alarms from "../../Alarms.ts"
import * as DurableObject from "../../DurableObject.ts"
import { AlarmNotFound, ObjectNotFound, StorageError } from "../../Errors.ts"
import type { Tables } from "../../SqlStorage.ts"
import type { AlarmRecord, StorageService } from "../records.ts"
import { type AlarmRow, InspectorFailure, type Source, toFailure, type TypeSummary } from "./server.ts"

/** Objects and failed alarms are counted up to this many per type; beyond it the page shows "1000+". */
export const countCap = 1000

const unknownType = (type: string) =>
  new InspectorFailure({ status: 404, error: "UnknownType", message: `no object type ${JSON.stringify(type)} here` })

const millis = (time: DateTime.DateTime) => DateTime.toEpochMillis(time)
const millisOrNull = (time: DateTime.DateTime | undefined) => (time === undefined ? null : millis(time))

/** The source of a mounted inspector: the given definitions, through their runtimes in `context`. */
export const fromDefinitions = (
  definitions: ReadonlyArray<DurableObject.AnyDefinition>,
  context: Context.Context<never>
): Source => {
  const byName = new Map(definitions.map((d) => [d.name as string, d]))
  const withDef = <A>(
    type: string,
    f: (def: DurableObject.AnyDefinition) => Effect.Effect<A, unknown, any>
  ): Effect.Effect<A, InspectorFailure> => {
    const def = byName.get(type)
    if (def === undefined) return Effect.fail(unknownType(type))
    return (f(def) as Effect.Effect<A, unknown>).pipe(Effect.provideContext(context), Effect.mapError(toFailure))
  }
  return {
    live: true,
    types: Effect.forEach(
      definitions,
      (def) =>
        withDef(
          def.name,
          (d) =>
            Effect.all([DurableObject.list(d, { limit: countCap }), Alarms.listFailed(d, { limit: countCap })]).pipe(
              Effect.map(([objects, failed]): TypeSummary => ({
                type: d.name,
                objects: objects.objects.length,
                moreObjects: objects.next !== undefined,
                failedAlarms: failed.alarms.length,
                moreFailed: failed.next !== undefined
              }))
            )
        )
    ),
    list: (type, options) =>
      withDef(type, (def) =>
        Effect.map(DurableObject.list(def, options), (page) => ({
          objects: page.objects.map((o) => ({
            id: o.id,
            version: o.version,
            createdAt: millis(o.createdAt),
            updatedAt: millis(o.updatedAt),
            status: o.status
          })),
          next: page.next
        }))),
    inspect: (type, id) =>
      withDef(type, (def) =>
        Effect.map(DurableObject.inspect(def, id), (o) => ({
          type,
          id: o.id,
          version: o.version,
          createdAt: millis(o.createdAt),
          updatedAt: millis(o.updatedAt),
          status: o.status,
          stateJson: o.stateJson,
          decoded: true,
          decodeError: o.decodeError?.issue ?? o.invalid,
          alarms: o.alarms.map((a): AlarmRow => ({
            name: a.name,
            fireAt: millis(a.fireAt),
            attempts: a.attempts,
            cron: a.cron ?? null,
            failedAt: millisOrNull(a.failed?.at),
            lastError: a.lastError ?? a.failed?.error ?? a.invalid ?? null,
            claimedUntil: millisOrNull(a.claimedUntil),
            payload: a.payloadJson
          }))
        }))),
    failed: (type, options) =>
      withDef(type, (def) =>
        Effect.map(Alarms.listFailed(def, { limit: options.limit }), (page) => ({
          alarms: page.alarms.map((a) => ({
            id: a.id,
            name: a.name,
            failedAt: millisOrNull(a.failed?.at),
            attempts: a.attempts,
            lastError: a.lastError ?? a.failed?.error ?? null,
            payload: a.payloadJson
          })),
          more: page.next !== undefined
        }))),
    retry: (type, id, name) => withDef(type, (def) => Alarms.retry(def, id, name)),
    cancel: (type, id, name) => withDef(type, (def) => Alarms.cancel(def, id, name))
  }
}

/**
 * The object types stored in the objects table, each read with one index seek (a loose index scan over the
 * primary key), so listing them costs the number of types, not of objects.
 */
const storedTypes = (sql: SqlClient.SqlClient, tables: Tables) =>
  sql<{ readonly object_type: string }>`
    WITH RECURSIVE types(object_type) AS (
      SELECT min(object_type) FROM ${sql(tables.objects)}
      UNION ALL
      SELECT (SELECT min(o.object_type) FROM ${sql(tables.objects)} o WHERE o.object_type > types.object_type)
      FROM types WHERE types.object_type IS NOT NULL
    )
    SELECT object_type FROM types WHERE object_type IS NOT NULL`.pipe(
    Effect.map((rows) => rows.map((r) => r.object_type)),
    Effect.mapError((cause) =>
      new StorageError({ operation: "listTypes", outcome: "not-applied", detail: cause.message, cause })
    )
  )

const alarmRow = (a: AlarmRecord, now: number): AlarmRow => ({
  name: a.name,
  fireAt: a.fireAt,
  attempts: a.attempts,
  cron: a.cron,
  failedAt: a.failedAt,
  lastError: a.lastError ?? a.invalid ?? null,
  claimedUntil: a.claimExpiresAt !== undefined && a.claimExpiresAt !== null && a.claimExpiresAt > now
    ? a.claimExpiresAt
    : null,
  payload: a.payload
})

/** Any failure of `effect` as an `InspectorFailure`. */
const run = <A>(effect: Effect.Effect<A, unknown>) => Effect.mapError(effect, toFailure)

/**
 * The source of a standalone inspector on a database: every stored type, states as stored (no schemas here),
 * and alarm fixes as fenced commits of the stored state with the alarm rescheduled or removed. A runtime that
 * holds the object meanwhile sees the new version, reloads and goes on.
 */
export const fromStorage = (storage: StorageService, sql: SqlClient.SqlClient, tables: Tables): Source => {
  /** Commits the object's stored state unchanged, with `change` applied to its alarms, fenced on its version. */
  const fix = (
    type: string,
    id: string,
    name: string,
    change: (alarm: AlarmRecord, now: number) => {
      readonly remove: ReadonlyArray<string>
      readonly put: ReadonlyArray<{ name: string; fireAt: number; payload: string; cron: string | null }>
    }
  ) =>
    run(Effect.gen(function*() {
      const stored = yield* storage.inspectObject(type, id)
      if (stored === undefined) return yield* new ObjectNotFound({ objectType: type, objectId: id })
      const alarm = (yield* storage.listAlarms(type, id)).find((a) => a.name === name)
      if (alarm === undefined) return yield* new AlarmNotFound({ objectType: type, objectId: id, name })
      if (stored.invalid !== undefined || alarm.invalid !== undefined) {
        return yield* new InspectorFailure({
          status: 409,
          error: "UnusableRow",
          message: `${type}/${id}: ${stored.invalid ?? alarm.invalid}; fix it through the application`
        })
      }
      const now = yield* Clock.currentTimeMillis
      yield* storage.commit({
        objectType: type,
        objectId: id,
        expectedVersion: stored.version,
        state: stored.state,
        alarms: { removeAll: false, ...change(alarm, now) }
      })
    }))
  return {
    live: false,
    types: run(Effect.gen(function*() {
      const types = yield* storedTypes(sql, tables)
      return yield* Effect.forEach(types, (type) =>
        Effect.all([
          storage.listObjects(type, { limit: countCap + 1 }),
          storage.listFailedAlarms(type, { limit: countCap + 1 })
        ]).pipe(Effect.map(([objects, failed]): TypeSummary => ({
          type,
          objects: Math.min(objects.length, countCap),
          moreObjects: objects.length > countCap,
          failedAlarms: Math.min(failed.length, countCap),
          moreFailed: failed.length > countCap
        }))))
    })),
    list: (type, options) =>
      run(Effect.map(
        storage.listObjects(type, { after: options.after, prefix: options.prefix, limit: options.limit + 1 }),
        (rows) => {
          const page = rows.slice(0, options.limit)
          return {
            objects: page.map((o) => ({
              id: o.objectId,
              version: o.version,
              createdAt: o.createdAt,
              updatedAt: o.updatedAt
            })),
            next: rows.length > options.limit ? page[page.length - 1]!.objectId : undefined
          }
        }
      )),
    inspect: (type, id) =>
      run(Effect.gen(function*() {
        const stored = yield* storage.inspectObject(type, id)
        if (stored === undefined) return yield* new ObjectNotFound({ objectType: type, objectId: id })
        const alarms = yield* storage.listAlarms(type, id)
        const now = yield* Clock.currentTimeMillis
        return {
          type,
          id,
          version: stored.version,
          createdAt: stored.createdAt,
          updatedAt: stored.updatedAt,
          stateJson: stored.state,
          decoded: false,
          decodeError: stored.invalid,
          alarms: alarms.map((a) => alarmRow(a, now))
        }
      })),
    failed: (type, options) =>
      run(Effect.map(storage.listFailedAlarms(type, { limit: options.limit + 1 }), (rows) => ({
        alarms: rows.slice(0, options.limit).map((a) => ({
          id: a.objectId,
          name: a.name,
          failedAt: a.failedAt,
          attempts: a.attempts,
          lastError: a.lastError,
          payload: a.payload
        })),
        more: rows.length > options.limit
      }))),
    retry: (type, id, name) =>
      fix(type, id, name, (alarm, now) => ({
        remove: [],
        put: [{ name, fireAt: now, payload: alarm.payload, cron: alarm.cron }]
      })),
    cancel: (type, id, name) => fix(type, id, name, () => ({ remove: [name], put: [] }))
  }
}
