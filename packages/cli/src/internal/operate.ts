/**
 * The operator's commands on a database: `objects list|show`, `alarms list|failed|retry|cancel` and `inspect`.
 * They read through `DurableObjectInspector.databaseView` (the web inspector's own functions), so the terminal
 * and the browser show the same things; alarm fixes are fenced commits, like any commit.
 */
import { DurableObjectInspector } from "@durable-object/core"
import { NodeHttpServer } from "@effect/platform-node"
import { Console, Effect, Layer, Option, Redacted } from "effect"
import { Argument, Command, Flag } from "effect/cli"
import { HttpRouter, HttpServer } from "effect/http"
import { randomBytes } from "node:crypto"
import { createServer } from "node:http"
import * as Database from "./database.ts"
import { failWith } from "./failure.ts"
import { short, table, time } from "./table.ts"

const json = Flag.Boolean("json").pipe(Flag.withDescription("print JSON instead of a table"), Flag.withDefault(false))
const typeArg = Argument.String("type").pipe(Argument.withDescription("the object type (its definition's name)"))
const idArg = Argument.String("id").pipe(Argument.withDescription("the object's id"))
const nameArg = Argument.String("alarm").pipe(Argument.withDescription("the alarm's name"))

/** Runs `f` on the database's view, after checking that the database holds the tables. */
const withView = <A, E>(
  flags: Database.DatabaseFlags,
  what: string,
  f: (view: DurableObjectInspector.View) => Effect.Effect<A, E>
) =>
  Effect.gen(function*() {
    yield* Database.requireTables(flags)
    return yield* f(yield* DurableObjectInspector.databaseView(Database.storageOptions(flags)))
  }).pipe(Effect.provide(Database.client(flags)), failWith(`${what} on ${Database.displayName(flags.database)}`))

/** A count that stopped at its cap shows a `+`. */
const count = (n: number, more: boolean) => `${n}${more ? "+" : ""}`

const print = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

const alarmState = (a: DurableObjectInspector.AlarmRow) =>
  a.failedAt !== null ? `failed ${time(a.failedAt)}` : a.claimedUntil !== null ? "claimed" : "due"

const alarmTable = (alarms: ReadonlyArray<DurableObjectInspector.AlarmRow>) =>
  table(
    ["NAME", "DUE", "ATTEMPTS", "STATE", "LAST ERROR", "PAYLOAD"],
    alarms.map((a) => [
      a.name,
      time(a.fireAt),
      String(a.attempts),
      alarmState(a),
      short(a.lastError ?? "-", 50),
      short(a.payload, 40)
    ]),
    "(no alarms)"
  )

const objectsList = Command.make("list", {
  ...Database.databaseFlags,
  type: Flag.String("type").pipe(
    Flag.withDescription("list the objects of this type (else: the types)"),
    Flag.optional
  ),
  prefix: Flag.String("prefix").pipe(Flag.withDescription("only ids that start with this"), Flag.optional),
  after: Flag.String("after").pipe(Flag.withDescription("the page after this id (keyset paging)"), Flag.optional),
  limit: Flag.Int("limit").pipe(Flag.withDescription("objects per page, 1…1000"), Flag.withDefault(50)),
  json
}, (flags) =>
  withView(flags, "objects list", (view) =>
    Effect.gen(function*() {
      if (Option.isNone(flags.type)) {
        const types = yield* view.types
        if (flags.json) return yield* print({ types })
        return yield* Console.log(table(
          ["TYPE", "OBJECTS", "FAILED ALARMS"],
          types.map((t) => [t.type, count(t.objects, t.moreObjects), count(t.failedAlarms, t.moreFailed)]),
          "(no objects stored)"
        ))
      }
      if (!Number.isInteger(flags.limit) || flags.limit < 1 || flags.limit > 1000) {
        return yield* Effect.fail(new Error(`--limit must be 1…1000, not ${flags.limit}`))
      }
      const page = yield* view.list(flags.type.value, {
        after: Option.getOrUndefined(flags.after),
        prefix: Option.getOrUndefined(flags.prefix),
        limit: flags.limit
      })
      if (flags.json) return yield* print(page)
      yield* Console.log(table(
        ["ID", "VERSION", "CREATED", "UPDATED"],
        page.objects.map((o) => [o.id, String(o.version), time(o.createdAt), time(o.updatedAt)]),
        "(no objects)"
      ))
      if (page.next !== undefined) yield* Console.log(`\nmore: --after ${JSON.stringify(page.next)}`)
    }))).pipe(Command.withDescription("List the stored object types with their counts, or the objects of one type"))

const objectsShow = Command.make(
  "show",
  { ...Database.databaseFlags, type: typeArg, id: idArg, json },
  (flags) =>
    withView(flags, "objects show", (view) =>
      Effect.gen(function*() {
        const o = yield* view.inspect(flags.type, flags.id)
        if (flags.json) return yield* print(o)
        let pretty = o.stateJson
        // A state that is not JSON is shown as stored.
        if (pretty !== "") {
          pretty = yield* Effect.orElseSucceed(Effect.try(() => JSON.stringify(JSON.parse(pretty), null, 2)), () =>
            pretty)
        }
        yield* Console.log([
          `${o.type}/${o.id}`,
          `version  ${o.version}`,
          `created  ${time(o.createdAt)}`,
          `updated  ${time(o.updatedAt)}`,
          ...(o.decodeError === undefined ? [] : [`UNUSABLE  ${o.decodeError}`]),
          "",
          "state (as stored):",
          pretty === "" ? "(unreadable row)" : pretty,
          "",
          "alarms:",
          alarmTable(o.alarms)
        ].join("\n"))
      }))
).pipe(Command.withDescription("Show one stored object: its state, version, times and alarms"))

/** `durable-object objects …`. */
export const objects = Command.make("objects").pipe(
  Command.withDescription("The stored objects of a database"),
  Command.withSubcommands([objectsList, objectsShow])
)

const alarmsList = Command.make(
  "list",
  { ...Database.databaseFlags, type: typeArg, id: idArg, json },
  (flags) =>
    withView(flags, "alarms list", (view) =>
      Effect.gen(function*() {
        const o = yield* view.inspect(flags.type, flags.id)
        yield* flags.json ? print({ alarms: o.alarms }) : Console.log(alarmTable(o.alarms))
      }))
).pipe(Command.withDescription("List one object's alarms: due, claimed and failed ones"))

const alarmsFailed = Command.make("failed", {
  ...Database.databaseFlags,
  type: Flag.String("type").pipe(Flag.withDescription("only this object type (else: every type)"), Flag.optional),
  limit: Flag.Int("limit").pipe(Flag.withDescription("at most this many per type, 1…1000"), Flag.withDefault(100)),
  json
}, (flags) =>
  withView(flags, "alarms failed", (view) =>
    Effect.gen(function*() {
      if (!Number.isInteger(flags.limit) || flags.limit < 1 || flags.limit > 1000) {
        return yield* Effect.fail(new Error(`--limit must be 1…1000, not ${flags.limit}`))
      }
      const types = Option.isSome(flags.type) ? [flags.type.value] : (yield* view.types).map((t) => t.type)
      const pages = yield* Effect.forEach(
        types,
        (type) => Effect.map(view.failed(type, { limit: flags.limit }), (page) => ({ type, ...page }))
      )
      if (flags.json) {
        return yield* print({
          alarms: pages.flatMap((p) => p.alarms.map((a) => ({ type: p.type, ...a }))),
          more: pages.filter((p) => p.more).map((p) => p.type)
        })
      }
      yield* Console.log(table(
        ["TYPE", "ID", "ALARM", "FAILED AT", "ATTEMPTS", "LAST ERROR"],
        pages.flatMap((p) =>
          p.alarms.map((
            a
          ) => [p.type, a.id, a.name, time(a.failedAt), String(a.attempts), short(a.lastError ?? "-", 70)])
        ),
        "(no failed alarms)"
      ))
      for (const p of pages) if (p.more) yield* Console.log(`\n${p.type}: more than ${flags.limit} failed alarms`)
    }))).pipe(
    Command.withDescription("List failed alarms (those that gave up after their last retry) with their last error")
  )

const alarmsRetry = Command.make(
  "retry",
  { ...Database.databaseFlags, type: typeArg, id: idArg, name: nameArg },
  (flags) =>
    withView(flags, "alarms retry", (view) =>
      Effect.gen(function*() {
        yield* view.retry(flags.type, flags.id, flags.name)
        yield* Console.log(
          `${flags.type}/${flags.id}: alarm ${flags.name} is due now, its attempts and failure cleared;` +
            " a runtime serving the type fires it"
        )
      }))
).pipe(Command.withDescription("Make an alarm fire now, afresh (after fixing what made it fail)"))

const alarmsCancel = Command.make(
  "cancel",
  { ...Database.databaseFlags, type: typeArg, id: idArg, name: nameArg },
  (flags) =>
    withView(flags, "alarms cancel", (view) =>
      Effect.gen(function*() {
        yield* view.cancel(flags.type, flags.id, flags.name)
        yield* Console.log(`${flags.type}/${flags.id}: alarm ${flags.name} cancelled`)
      }))
).pipe(Command.withDescription("Cancel an alarm, failed or not"))

/** `durable-object alarms …`. */
export const alarms = Command.make("alarms").pipe(
  Command.withDescription("The alarms stored in a database"),
  Command.withSubcommands([alarmsList, alarmsFailed, alarmsRetry, alarmsCancel])
)

/** `durable-object inspect --database …`: the web inspector on a database, until Ctrl-C. */
export const inspect = Command.make("inspect", {
  ...Database.databaseFlags,
  host: Flag.String("host").pipe(Flag.withDescription("the address to listen on"), Flag.withDefault("127.0.0.1")),
  port: Flag.Int("port").pipe(Flag.withDescription("the port (0: any free one)"), Flag.withDefault(4983)),
  token: Flag.Redacted("token").pipe(
    Flag.withDescription(
      "the bearer token the page must send (default: $DURABLE_OBJECT_ADMIN_TOKEN, else a random one)"
    ),
    Flag.optional
  ),
  insecure: Flag.Boolean("insecure").pipe(
    Flag.withDescription("no token at all: anyone who reaches the port can read and change alarms"),
    Flag.withDefault(false)
  )
}, (flags) =>
  Effect.gen(function*() {
    const fromEnv = process.env[DurableObjectInspector.tokenConfigKey]
    const token = flags.insecure
      ? undefined
      : Option.getOrElse(
        flags.token,
        () => Redacted.make(fromEnv !== undefined && fromEnv !== "" ? fromEnv : randomBytes(18).toString("base64url"))
      )
    const announce = Layer.effectDiscard(HttpServer.addressFormattedWith((url) =>
      Console.log(
        [
          `durable-object inspector on ${Database.displayName(flags.database)}`,
          `open ${url}/${token === undefined ? "" : `#token=${encodeURIComponent(Redacted.value(token))}`}`,
          ...(token === undefined ? ["(no token: --insecure)"] : []),
          "Ctrl-C stops it."
        ].join("\n")
      )
    ))
    yield* Database.requireTables(flags).pipe(
      Effect.provide(Database.client(flags)),
      failWith(`inspect on ${Database.displayName(flags.database)}`)
    )
    const server = announce.pipe(
      Layer.provideMerge(HttpRouter.serve(
        DurableObjectInspector.layerDatabase({
          path: "/",
          storage: Database.storageOptions(flags),
          auth: token === undefined ? { disabled: true } : { token }
        }),
        { disableListenLog: true, disableLogger: true }
      )),
      Layer.provideMerge(NodeHttpServer.layer(createServer, { host: flags.host, port: flags.port })),
      Layer.provide(Database.client(flags))
    )
    return yield* Layer.launch(server).pipe(failWith(`inspect on ${Database.displayName(flags.database)}`))
  })).pipe(Command.withDescription("Serve the web inspector on a database (Ctrl-C stops it)"))
