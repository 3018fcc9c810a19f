/**
 * A test kit for durable objects: run definitions on in-memory storage (which works under `TestClock`),
 * read what an object persisted, and run one handler against a given state without any runtime.
 *
 * ```ts
 * import { it } from "@effect/vitest"
 * import { Effect } from "effect"
 * import { DurableObjectTest } from "@durable-object/core"
 *
 * it.effect("increments", () =>
 *   Effect.gen(function*() {
 *     yield* Counter.client("a").increment({ amount: 2 })
 *     const stored = yield* DurableObjectTest.persistedState(Counter, "a")
 *   }).pipe(Effect.provide(DurableObjectTest.layer(Counter))))
 * ```
 *
 * @since 0.1.0
 */
import { Effect, Exit, Layer, Schema } from "effect"
import type { AnyDefinition, Definition, ObjectContext, Runtime, TypeOf } from "./DurableObject.ts"
import { InvalidObjectId, StateDecodeError, type StorageError } from "./Errors.ts"
import { makeContext } from "./internal/context.ts"
import { layerMemory, Storage } from "./Storage.ts"

type RuntimeOf<D> = D extends Definition<infer Name, any, any, any, any, any> ? Runtime<Name> : never
type ServicesOf<D> = D extends Definition<any, any, any, any, any, infer R> ? R : never

/**
 * The runtimes of the given definitions on a fresh in-memory `Storage` (also provided, so tests can inspect
 * it). Each use of the layer gets its own empty storage.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <const Defs extends ReadonlyArray<AnyDefinition>>(
  ...definitions: Defs
): Layer.Layer<RuntimeOf<Defs[number]> | Storage, never, ServicesOf<Defs[number]>> =>
  Layer.mergeAll(...(definitions.map((d) => d.layer) as [Layer.Layer<any, never, any>])).pipe(
    Layer.provideMerge(layerMemory)
  ) as any

/**
 * What an object has persisted, decoded with its state schema; `undefined` when nothing is stored.
 *
 * @since 0.1.0
 * @category inspection
 */
export const persistedState = <D extends AnyDefinition>(
  definition: D,
  id: string
): Effect.Effect<D["state"]["Type"] | undefined, StorageError | StateDecodeError, Storage> =>
  Effect.gen(function*() {
    const storage = yield* Storage
    const stored = yield* storage.load(definition.name, id)
    if (stored === undefined) return undefined
    const decoded = Schema.decodeUnknownExit(
      Schema.fromJsonString(Schema.toCodecJson(definition.state)) as unknown as Schema.Decoder<unknown>
    )(stored.state)
    if (Exit.isFailure(decoded)) {
      return yield* new StateDecodeError({ objectType: definition.name, objectId: id, issue: String(decoded.cause) })
    }
    return decoded.value
  })

/**
 * The stored version of an object (0 when nothing is stored).
 *
 * @since 0.1.0
 * @category inspection
 */
export const persistedVersion = (
  definition: AnyDefinition,
  id: string
): Effect.Effect<number, StorageError, Storage> =>
  Effect.flatMap(Storage, (storage) => Effect.map(storage.load(definition.name, id), (s) => s?.version ?? 0))

/**
 * The outcome of {@link runHandler}: the handler's reply and the state it left (its input state when it
 * changed nothing).
 *
 * @since 0.1.0
 * @category models
 */
export interface HandlerRun<S, A> {
  readonly reply: A
  readonly state: S
}

/**
 * Runs one handler against a given state, with no runtime, storage or mailbox: a pure unit test of the
 * handler's logic. Fails with the handler's own error; dies with its defects.
 *
 * @since 0.1.0
 * @category running
 */
export const runHandler = <D extends AnyDefinition, K extends keyof NonNullable<D["~types"]>["P"] & string>(
  definition: D,
  handler: K,
  options: {
    readonly state: D["state"]["Type"]
    readonly id?: string | undefined
    readonly payload?: TypeOf<NonNullable<D["~types"]>["P"][K], void> | undefined
  }
): Effect.Effect<
  HandlerRun<D["state"]["Type"], TypeOf<NonNullable<D["~types"]>["A"][K], void>>,
  TypeOf<NonNullable<D["~types"]>["E"][K], never> | InvalidObjectId,
  ServicesOf<D>
> =>
  Effect.suspend(() => {
    const id = options.id ?? "test"
    if (id.length === 0) return Effect.fail(new InvalidObjectId({ objectType: definition.name, reason: "empty id" }))
    const cell = { state: options.state as unknown }
    const ctx = makeContext(definition.name, id, cell)
    const spec = definition.handlers[handler] as {
      handle: (p: unknown, c: ObjectContext<unknown>) => Effect.Effect<any, any, any>
    }
    return Effect.map(spec.handle(options.payload, ctx), (reply) => ({ reply, state: cell.state }))
  }) as any
