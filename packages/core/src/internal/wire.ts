/**
 * Outcomes as they cross processes in cluster mode: an `Exit` as JSON text, with a handler's success and typed
 * errors encoded by its own schemas and the runtime's errors by theirs, so a remote caller gets the same
 * instances a local one does. Defects (bugs) cross as their rendering only.
 *
 * Encoding an outcome never fails: what cannot be encoded crosses as a defect saying so.
 *
 * @internal
 */
import { Cause, Exit, Result } from "effect"
import { DurableObjectError, isDurableObjectError } from "../Errors.ts"
import type { AnyHandler } from "./definition.ts"
import * as StateCodec from "./stateCodec.ts"

const runtimeErrors = StateCodec.make(DurableObjectError)

/** How the success and typed errors of one operation are written as JSON (missing: none is expected). */
export interface OutcomeCodec {
  readonly success: StateCodec.JsonCodec
  readonly error?: StateCodec.JsonCodec | undefined
}

/** Encoded by the sender: the success (`s`), a runtime error (`r`), a typed error (`e`) or a defect (`d`). */
type WireExit =
  | { readonly s: unknown }
  | { readonly r: unknown }
  | { readonly e: unknown }
  | { readonly d: string }

const defect = (message: string): string => JSON.stringify({ d: message } satisfies WireExit)

/** `exit` as JSON text. */
export const encodeExit = (codec: OutcomeCodec, exit: Exit.Exit<unknown, unknown>): string => {
  if (Exit.isSuccess(exit)) {
    const value = codec.success.toJson(exit.value)
    return Exit.isSuccess(value)
      ? JSON.stringify({ s: value.value } satisfies WireExit)
      : defect("the reply does not encode with the handler's success schema")
  }
  const found = Cause.findError(exit.cause)
  if (found._tag === "Success") {
    const error = found.success
    if (isDurableObjectError(error)) {
      const value = runtimeErrors.toJson(error)
      if (Exit.isSuccess(value)) return JSON.stringify({ r: value.value } satisfies WireExit)
    }
    if (codec.error !== undefined) {
      const value = codec.error.toJson(error)
      if (Exit.isSuccess(value)) return JSON.stringify({ e: value.value } satisfies WireExit)
    }
    return defect(`a typed error that does not encode with the handler's error schema: ${String(error)}`)
  }
  return defect(Cause.pretty(exit.cause))
}

/** JSON text written by `encodeExit`, read back; text that is not such JSON is a defect (a bug or a version skew). */
export const decodeExit = (codec: OutcomeCodec, text: string): Exit.Exit<unknown, unknown> => {
  const parsed = Result.try(() => JSON.parse(text) as Partial<Record<"s" | "r" | "e" | "d", unknown>> | null)
  if (Result.isFailure(parsed) || typeof parsed.success !== "object" || parsed.success === null) {
    return Exit.die(new TypeError("durable-object: a routed reply is not JSON of the expected form"))
  }
  const wire = parsed.success
  if ("s" in wire) {
    const value = codec.success.fromJson(wire.s)
    return Exit.isSuccess(value) ? Exit.succeed(value.value) : Exit.die(value.cause)
  }
  if ("r" in wire) {
    const value = runtimeErrors.fromJson(wire.r)
    return Exit.isSuccess(value) ? Exit.fail(value.value) : Exit.die(value.cause)
  }
  if ("e" in wire && codec.error !== undefined) {
    const value = codec.error.fromJson(wire.e)
    return Exit.isSuccess(value) ? Exit.fail(value.value) : Exit.die(value.cause)
  }
  return Exit.die(new Error(`durable-object: the object's owner died: ${String(wire.d)}`))
}

/** The codec of a handler: its `success` and `error` schemas. */
export const handlerCodec = (spec: AnyHandler): OutcomeCodec => ({
  success: spec.success === undefined ? StateCodec.none : StateCodec.make(spec.success),
  error: spec.error === undefined ? undefined : StateCodec.make(spec.error)
})
