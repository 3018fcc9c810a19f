/**
 * Idempotency keys: what identifies a keyed call (its key, and a hash of its handler and encoded payload), and
 * how its reply is stored and read back (encoded with the handler's own `success` and `error` schemas).
 *
 * @internal
 */
import { Cause, Exit, Result } from "effect"
import { InvalidPayload } from "../Errors.ts"
import type { AnyHandler } from "./definition.ts"
import * as StateCodec from "./stateCodec.ts"

/** The longest idempotency key, in UTF-16 code units (keys are opaque text, like request ids). */
export const maxKeyLength = 256

/** `InvalidPayload` when `key` cannot be an idempotency key, else `undefined`. */
export const checkKey = (objectType: string, handler: string, key: unknown): InvalidPayload | undefined => {
  const invalid = (issue: string) => new InvalidPayload({ objectType, handler, issue: `idempotency key: ${issue}` })
  if (typeof key !== "string") return invalid("must be a string")
  if (key.length === 0) return invalid("must not be empty")
  if (key.length > maxKeyLength) return invalid(`must be at most ${maxKeyLength} characters`)
  if (!key.isWellFormed()) return invalid("must be well-formed Unicode")
  return undefined
}

/**
 * A 64-bit FNV-1a hash of `text` as 16 hex digits (two 32-bit lanes). It tells a key reused for another call
 * from a retry of the same one; it guards against mistakes, not against an adversary choosing payloads.
 */
const hash64 = (text: string): string => {
  let h1 = 0x811c9dc5
  let h2 = 0xcbf29ce4
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    h1 = Math.imul(h1 ^ c, 0x01000193)
    h2 = Math.imul(h2 ^ c ^ (h1 >>> 16), 0x01000193)
  }
  return (h1 >>> 0).toString(16).padStart(8, "0") + (h2 >>> 0).toString(16).padStart(8, "0")
}

/** The hash identifying a call: its handler and its payload's JSON form. */
export const callHash = (handler: string, payloadJson: unknown): string =>
  hash64(`${handler}\u0000${JSON.stringify(payloadJson) ?? ""}`)

/** How one handler's replies are stored and read back. */
export interface ReplyCodec {
  /** The payload's JSON form, for the call's hash. */
  readonly payloadJson: (payload: unknown) => Exit.Exit<unknown, unknown>
  /** The stored text of a reply (a success, or a typed failure), or `undefined` when it cannot be stored. */
  readonly encode: (exit: Exit.Exit<unknown, unknown>) => string | undefined
  /** A stored reply read back, or why it no longer decodes. */
  readonly decode: (text: string) => Result.Result<Exit.Exit<unknown, unknown>, string>
}

const fromText = (text: string): Result.Result<{ readonly _tag?: unknown; readonly value?: unknown }, string> => {
  const parsed = Result.try(() => JSON.parse(text) as { readonly _tag?: unknown; readonly value?: unknown } | null)
  return Result.isSuccess(parsed) && typeof parsed.success === "object" && parsed.success !== null
    ? Result.succeed(parsed.success)
    : Result.fail("the stored reply is not JSON of the form {\"_tag\": …, \"value\": …}")
}

/** The reply codec of a handler: its `success` schema (none: `void`) and its `error` schema (none: failures are not stored). */
export const codec = (spec: AnyHandler): ReplyCodec => {
  const payload = spec.payload === undefined ? StateCodec.none : StateCodec.make(spec.payload)
  const success = spec.success === undefined ? StateCodec.none : StateCodec.make(spec.success)
  const error = spec.error === undefined ? undefined : StateCodec.make(spec.error)
  return {
    payloadJson: payload.toJson,
    encode: (exit) => {
      if (Exit.isSuccess(exit)) {
        const value = success.toJson(exit.value)
        return Exit.isSuccess(value) ? JSON.stringify({ _tag: "Success", value: value.value }) : undefined
      }
      const failure = Cause.findError(exit.cause)
      if (error === undefined || failure._tag !== "Success") return undefined
      const value = error.toJson(failure.success)
      return Exit.isSuccess(value) ? JSON.stringify({ _tag: "Failure", value: value.value }) : undefined
    },
    decode: (text) =>
      Result.flatMap(fromText(text), (stored): Result.Result<Exit.Exit<unknown, unknown>, string> => {
        if (stored._tag === "Success") {
          const value = success.fromJson(stored.value)
          return Exit.isSuccess(value)
            ? Result.succeed(Exit.succeed(value.value))
            : Result.fail("the stored reply does not decode with the handler's success schema")
        }
        if (stored._tag === "Failure" && error !== undefined) {
          const value = error.fromJson(stored.value)
          return Exit.isSuccess(value)
            ? Result.succeed(Exit.fail(value.value))
            : Result.fail("the stored reply does not decode with the handler's error schema")
        }
        return Result.fail("the stored reply is neither a success nor a failure of this handler")
      })
  }
}
