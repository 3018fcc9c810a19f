/**
 * A web inspector for durable objects, served by an HTTP layer the application mounts on its `HttpRouter`:
 * object types and counts, paged and searchable object lists, an object's state (pretty JSON, decode errors shown
 * plainly), version and alarms, failed alarms with their last error and a retry button, and live call, commit
 * and alarm rates from the runtime's metrics. One page of plain HTML and JavaScript, no build step.
 *
 * Every data request needs `Authorization: Bearer <token>` (the page asks for the token, or takes it from
 * `#token=…` in its URL): the same scheme, and by default the same configuration, as `DurableObjectHttpApi`'s
 * admin endpoints (`DURABLE_OBJECT_ADMIN_TOKEN`; `DURABLE_OBJECT_ADMIN_AUTH=off` for local use only).
 *
 * @since 0.1.0
 */
import { Config, Effect, Layer, type Redacted, Schema } from "effect"
import type { HttpRouter } from "effect/http"
import { SqlClient } from "effect/sql"
import type { AnyDefinition, Runtime } from "./DurableObject.ts"
import type { StorageError } from "./Errors.ts"
import { type Access, routes, type Source } from "./internal/inspector/server.ts"
import { fromDefinitions, fromStorage } from "./internal/inspector/sources.ts"
import * as SqlStorage from "./SqlStorage.ts"

export type {
  AlarmRow,
  FailedRow,
  ObjectRow,
  ObjectView,
  Source as View,
  TypeSummary
} from "./internal/inspector/server.ts"

export {
  /**
   * Why an inspector operation failed: the HTTP status the inspector answers with, the failure's tag
   * (`ObjectNotFound`, `AlarmNotFound`, `UnknownType`, `StorageError`, …) and a message for the operator.
   *
   * @since 0.1.0
   * @category errors
   */
  InspectorFailure
} from "./internal/inspector/server.ts"

/**
 * Where the inspector is served and who may use it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The path of the page; its API is under `<path>/api/`. Default `/_inspector`. */
  readonly path?: string | undefined
  /** The page's title. Default "durable-object inspector". */
  readonly title?: string | undefined
  /**
   * Who may use it: requests must carry `Authorization: Bearer <token>`, or, with `{ disabled: true }`, nothing is
   * checked (local development only: anyone who reaches the server can then read every object and retry or cancel
   * alarms). Default: from configuration, as `DurableObjectHttpApi`'s admin endpoints: the token from
   * `DURABLE_OBJECT_ADMIN_TOKEN` (at least 16 characters); without one, building the layer fails, unless
   * `DURABLE_OBJECT_ADMIN_AUTH` is explicitly `off`.
   */
  readonly auth?: { readonly token: Redacted.Redacted<string> } | { readonly disabled: true } | undefined
}

/**
 * The config key of the inspector's default token.
 *
 * @since 0.1.0
 * @category models
 */
export const tokenConfigKey = "DURABLE_OBJECT_ADMIN_TOKEN"

const defaultPath = "/_inspector"

/** The mount path, normalized: leading slash, no trailing slash. */
const basePath = (path: string | undefined) => {
  const p = (path ?? defaultPath).trim()
  const withSlash = p.startsWith("/") ? p : `/${p}`
  return withSlash.replace(/\/+$/, "")
}

/** The config switch that turns the token check off (`off`), as for the admin endpoints. */
const authSwitchKey = "DURABLE_OBJECT_ADMIN_AUTH"

const access = (options: Options): Effect.Effect<Access, Config.ConfigError> =>
  Effect.gen(function*() {
    const auth = options.auth
    if (auth !== undefined) return "disabled" in auth ? { _tag: "Open" } : { _tag: "Token", token: auth.token }
    const mode = yield* Config.Literals(["on", "off"], authSwitchKey).pipe(Config.withDefault("on" as const))
    if (mode === "off") return { _tag: "Open" }
    // A short token is guessable: refused at start-up like a missing one.
    const token = yield* Config.schema(
      Schema.Redacted(Schema.String.check(Schema.isMinLength(16, { message: "at least 16 characters" }))),
      tokenConfigKey
    )
    return { _tag: "Token", token }
  })

/**
 * The inspector for the given object types, through their runtimes (which the application provides): states
 * decoded with their schemas (a state that no longer decodes is shown as stored, with the `StateDecodeError`),
 * statuses in this runtime, and alarm retries and cancels serialized and fenced like any call.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <const Definitions extends ReadonlyArray<AnyDefinition>>(
  options: Options & { readonly objects: Definitions }
): Layer.Layer<never, Config.ConfigError, HttpRouter.HttpRouter | Runtime<Definitions[number]["name"]>> =>
  Layer.unwrap(Effect.gen(function*() {
    const context = yield* Effect.context<Runtime<Definitions[number]["name"]>>()
    return routes({
      base: basePath(options.path),
      title: options.title ?? "durable-object inspector",
      access: yield* access(options),
      source: fromDefinitions(options.objects, context as never)
    })
  }))

/**
 * The inspector on a bare database (the `SqlClient` in context), as `durable-object inspect` serves it: every
 * object type stored there, states as stored (no schemas, so nothing is decoded), no metrics (no runtime runs
 * here), and alarm retries and cancels as fenced commits that a runtime holding the object sees as a new
 * version. Reads the tables the `SqlStorage` options name; never migrates and never fires alarms.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerDatabase = (
  options: Options & { readonly storage?: SqlStorage.Options | undefined }
): Layer.Layer<never, Config.ConfigError | StorageError, HttpRouter.HttpRouter | SqlClient.SqlClient> =>
  Layer.unwrap(Effect.gen(function*() {
    const source = yield* databaseView(options.storage)
    return routes({
      base: basePath(options.path),
      title: options.title ?? "durable-object inspector",
      access: yield* access(options),
      source
    })
  }))

/**
 * What the database inspector reads and does, as functions (the `durable-object` CLI's `objects` and `alarms`
 * commands use them): the stored types with their counts, pages of objects, one object as stored with its
 * alarms, failed alarms, and alarm retries and cancels committed fenced on the object's version. Reads the
 * tables the `SqlStorage` options name; never migrates and never fires alarms.
 *
 * @since 0.1.0
 * @category constructors
 */
export const databaseView = (
  storage?: SqlStorage.Options | undefined
): Effect.Effect<Source, StorageError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const tables = yield* SqlStorage.tables(storage)
    return fromStorage(yield* SqlStorage.make({ ...storage, migrate: false }), sql, tables)
  })
