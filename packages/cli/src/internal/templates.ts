/**
 * The files `init` and `gen object` write. Each is a complete module a user owns from then on; the CLI's tests
 * type-check them and the consumer test runs their test.
 */

/** How generated files import each other: `.js` (nodenext and bundlers) or `.ts` (allowImportingTsExtensions). */
export type ImportExtension = ".js" | ".ts"

/** The storage a project uses. */
export type StorageKind = "sqlite" | "postgres"

/** `storage.ts`: the durable-object storage layer on SQLite or PostgreSQL. */
export const storage = (kind: StorageKind): string =>
  kind === "sqlite"
    ? `import { SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { Layer } from "effect"

/**
 * Where durable objects live: a SQLite file (created on first use). The tables are created or updated when the
 * layer starts; \`npx durable-object migrations sql --dialect sqlite\` prints them for your own migration tool.
 */
export const StorageLive = SqlStorage.layer().pipe(
  Layer.provide(SqliteClient.layer({ filename: "durable-objects.sqlite" }))
)
`
    : `import { SqlStorage } from "@durable-object/core"
import { PgClient } from "@effect/sql-pg"
import { Config, Layer } from "effect"

/**
 * Where durable objects live: the PostgreSQL database of \`DATABASE_URL\`. The tables are created or updated when
 * the layer starts; \`npx durable-object migrations sql --dialect pg\` prints them for your own migration tool.
 */
export const StorageLive = SqlStorage.layer().pipe(
  Layer.provide(PgClient.layerConfig({ url: Config.Redacted("DATABASE_URL") }))
)
`

/** A lower-camel-case word of a PascalCase name, for ids in examples. */
const camel = (name: string) => name.charAt(0).toLowerCase() + name.slice(1)

/** `<Name>.ts`: a durable object with a counter state, an `increment` and a `get` handler. */
export const object = (name: string): string =>
  `import { DurableObject } from "@durable-object/core"
import { Effect, Schema } from "effect"

/**
 * ${name}: one instance per id, its state stored durably. Handlers run one at a time, and a handler's changes
 * are committed before it replies.
 */
export const ${name} = DurableObject.defineObject({
  name: "${name}",
  state: Schema.Struct({ count: Schema.Int }),
  initialState: () => ({ count: 0 }),
  handlers: {
    /** Adds \`amount\` and returns the new count. */
    increment: {
      payload: Schema.Struct({ amount: Schema.Int }),
      success: Schema.Int,
      handle: ({ amount }, ctx) => ctx.state.modify((s) => [s.count + amount, { count: s.count + amount }])
    },
    /** The current count. */
    get: {
      success: Schema.Int,
      handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.count)
    }
  }
})
`

/** `<Name>.test.ts`: the object's test on the test kit (in-memory storage, \`TestClock\`). */
export const objectTest = (name: string, ext: ImportExtension): string =>
  `import { DurableObjectTest } from "@durable-object/core"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { ${name} } from ${JSON.stringify(`./${name}${ext}`)}

describe("${name}", () => {
  it.effect("adds up increments and stores the count", () =>
    Effect.gen(function*() {
      const ${camel(name)} = ${name}.client("first")
      assert.strictEqual(yield* ${camel(name)}.increment({ amount: 2 }), 2)
      assert.strictEqual(yield* ${camel(name)}.increment({ amount: 3 }), 5)
      assert.strictEqual(yield* ${name}.client("second").get(), 0)
      assert.strictEqual((yield* DurableObjectTest.persistedState(${name}, "first"))?.count, 5)
    }).pipe(Effect.provide(DurableObjectTest.layer(${name}))))
})
`

/** The version ranges `init` adds for the packages this CLI does not itself depend on. */
export const devDependencyRanges: Readonly<Record<string, string>> = {
  "@effect/vitest": "^4.1.5",
  "vitest": "^5.1.1"
}
