/**
 * Running user code (handlers, hooks, alarm handlers): the context it sees (its caller's, the services its
 * definition declared, and the call chain), the reentrancy rule, and how its failures reach the caller.
 *
 * @internal
 */
import { Cause, Context, Effect, Exit } from "effect"
import { HandlerDefect, ReentrantCall } from "../Errors.ts"

/** The chain of objects whose handlers are running further up the current call, as `type/id`. */
export const CallChain = Context.Reference<ReadonlyArray<string>>("@durable-object/core/CallChain", {
  defaultValue: () => []
})

/** Who user code runs as: an object's id and its place in call chains. */
export interface Identity {
  readonly id: string
  /** `type/id`. */
  readonly chainKey: string
  /** The call chain of a handler of this object called from outside any handler. */
  readonly selfChain: ReadonlyArray<string>
}

/** How an object type runs its user code. */
export interface UserCode {
  /** The context user code of `object` runs with: its caller's, the declared services, and the call chain. */
  readonly context: (
    caller: Context.Context<never>,
    object: Identity,
    chain: ReadonlyArray<string>
  ) => Context.Context<never>
  /** A failure of user code as the caller sees it: defects become `HandlerDefect`; the rest passes. */
  readonly failure: <E>(objectId: string, handler: string, cause: Cause.Cause<E>) => Exit.Exit<never, E | HandlerDefect>
  /** Runs `effect` as user code of `object` on the current fiber (interruptions pass through untouched). */
  readonly run: <A, E>(
    object: Identity,
    handler: string,
    chain: ReadonlyArray<string>,
    effect: Effect.Effect<A, E, unknown>
  ) => Effect.Effect<A, E | HandlerDefect>
  /** `ReentrantCall` when a call to `chainKey` from `chain` would wait for itself, else `undefined`. */
  readonly reentrant: (
    chain: ReadonlyArray<string>,
    chainKey: string,
    objectId: string,
    handler: string
  ) => ReentrantCall | undefined
}

/** The user code runner of one object type, whose definition declared `services` (taken from `context`). */
export const make = (
  objectType: string,
  services: ReadonlyArray<Context.Key<any, any>>,
  context: Context.Context<never>
): UserCode => {
  const declared: Context.Context<never> | undefined = services.length === 0
    ? undefined
    : Context.pick(...services)(context) as Context.Context<never>
  // Merging the declared services copies the whole context; callers mostly share one, so each caller's merge
  // is kept for as long as that caller's context lives (weakly: a finished request's context is not retained).
  const merged = new WeakMap<Context.Context<never>, Context.Context<never>>()
  const withServices = (caller: Context.Context<never>): Context.Context<never> => {
    if (declared === undefined) return caller
    let found = merged.get(caller)
    if (found === undefined) {
      found = Context.merge(caller, declared)
      merged.set(caller, found)
    }
    return found
  }

  const userContext: UserCode["context"] = (caller, object, chain) =>
    Context.add(withServices(caller), CallChain, chain.length === 0 ? object.selfChain : [...chain, object.chainKey])

  const failure: UserCode["failure"] = (objectId, handler, cause) =>
    Cause.hasDies(cause) && !Cause.hasInterruptsOnly(cause)
      ? Exit.fail(
        new HandlerDefect({ objectType, objectId, handler, defect: Cause.squash(cause), pretty: Cause.pretty(cause) })
      )
      : Exit.failCause(cause)

  return {
    context: userContext,
    failure,
    run: (object, handler, chain, effect) =>
      Effect.catchCause(
        Effect.updateContext(effect as Effect.Effect<any, any>, (caller: Context.Context<never>) =>
          userContext(caller, object, chain)),
        (cause) =>
          failure(object.id, handler, cause)
      ),
    reentrant: (chain, chainKey, objectId, handler) =>
      chain.length > 0 && chain.includes(chainKey)
        ? new ReentrantCall({ objectType, objectId, handler, chain: [...chain] })
        : undefined
  }
}
