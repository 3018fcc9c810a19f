/**
 * The one error the commands fail with: a message for the person at the terminal. `Command.run` prints it (and
 * nothing else), and the process exits with status 1.
 */
import { Effect, Schema } from "effect"
import { CliError } from "effect/cli"

/** A command could not do what it was asked; `message` says why, and what to do. */
export class CliFailure extends Schema.TaggedError<CliFailure>()("CliFailure", { message: Schema.String }) {
  override get [CliError.userMessage](): string {
    return this.message
  }
}

/** The message of any failure: its own `message`, its reason's, or its tag. */
export const describe = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const reason = (error as { readonly reason?: { readonly message?: unknown } }).reason
    const message = (error as { readonly message?: unknown }).message
    if (typeof message === "string" && message !== "") {
      return typeof reason?.message === "string" && reason.message !== "" && !message.includes(reason.message)
        ? `${message}: ${reason.message}`
        : message
    }
    if (typeof reason?.message === "string") return reason.message
    const tag = (error as { readonly _tag?: unknown })._tag
    if (typeof tag === "string") return tag
  }
  return String(error)
}

/** Turns every failure of `effect` into a `CliFailure` whose message starts with `context`. */
export const failWith = (context: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.mapError(
    effect,
    (error) => error instanceof CliFailure ? error : new CliFailure({ message: `${context}: ${describe(error)}` })
  )
