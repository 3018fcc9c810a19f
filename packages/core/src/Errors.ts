/**
 * The typed errors of durable-object.
 *
 * Every failure the runtime itself can produce is one of these `Schema` tagged error classes, so callers can
 * `Effect.catchTag` them, encode them across process boundaries, and match on `DurableObjectError`. Errors a
 * handler declares with its `error` schema travel next to these, unchanged. `docs/errors.md` says when each one
 * happens and what to do about it.
 *
 * @since 0.1.0
 */
import { Effect, Schema } from "effect"

/**
 * A handler's payload did not match its `payload` schema. The object was not activated and nothing changed.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidPayload extends Schema.TaggedError<InvalidPayload>()("InvalidPayload", {
  objectType: Schema.String,
  handler: Schema.String,
  /** The schema's own description of what is wrong. */
  issue: Schema.String
}) {
  override get message(): string {
    return `Invalid payload for ${this.objectType}.${this.handler}: ${this.issue}`
  }
}

/**
 * A call named a handler the definition does not have (only reachable through the untyped, generic API).
 *
 * @since 0.1.0
 * @category errors
 */
export class UnknownHandler extends Schema.TaggedError<UnknownHandler>()("UnknownHandler", {
  objectType: Schema.String,
  handler: Schema.String,
  known: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `${this.objectType} has no handler "${this.handler}" (it has: ${this.known.join(", ")})`
  }
}

/**
 * An object id was empty, too long, or not a string. Ids are opaque text of 1 to
 * {@link maxObjectIdLength} UTF-8 bytes.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidObjectId extends Schema.TaggedError<InvalidObjectId>()("InvalidObjectId", {
  objectType: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `Invalid ${this.objectType} id: ${this.reason}`
  }
}

/**
 * The longest object id accepted, in UTF-8 bytes.
 *
 * @since 0.1.0
 * @category constants
 */
export const maxObjectIdLength = 1024

/**
 * The stored state of an object does not decode with the definition's `state` schema (for example after an
 * incompatible schema change). The object stays inactive and the stored row is left untouched, so a fixed
 * schema (or a migration) can still read it.
 *
 * @since 0.1.0
 * @category errors
 */
export class StateDecodeError extends Schema.TaggedError<StateDecodeError>()("StateDecodeError", {
  objectType: Schema.String,
  objectId: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `Stored state of ${this.objectType}/${this.objectId} does not decode: ${this.issue}`
  }
}

/**
 * A handler (or hook) died with a defect: a thrown exception or `Effect.die`. The object was reset to its last
 * committed state, nothing was written, and no other object was touched.
 *
 * @since 0.1.0
 * @category errors
 */
export class HandlerDefect extends Schema.TaggedError<HandlerDefect>()("HandlerDefect", {
  objectType: Schema.String,
  objectId: Schema.String,
  handler: Schema.String,
  /** The defect itself (the thrown value). */
  defect: Schema.Defect(),
  /** The whole cause, rendered. */
  pretty: Schema.String
}) {
  override get message(): string {
    // Short on purpose: `pretty` holds the stack, which callers should not pass on to clients.
    const defect = this.defect
    const what = defect instanceof Error ? defect.message : typeof defect === "string" ? defect : "a defect"
    return `${this.objectType}/${this.objectId}.${this.handler} died: ${what}`
  }
}

/**
 * More than `mailboxCapacity` calls were already waiting for the object. The call was not queued and changed
 * nothing; back off and retry.
 *
 * @since 0.1.0
 * @category errors
 */
export class ObjectOverloaded extends Schema.TaggedError<ObjectOverloaded>()("ObjectOverloaded", {
  objectType: Schema.String,
  objectId: Schema.String,
  mailboxCapacity: Schema.Number
}) {
  override get message(): string {
    return `${this.objectType}/${this.objectId} is overloaded: ${this.mailboxCapacity} calls already waiting`
  }
}

/**
 * The call did not finish within `callTimeout` (waiting in the mailbox plus running). Its handler was
 * interrupted and nothing it did was written.
 *
 * @since 0.1.0
 * @category errors
 */
export class CallTimeout extends Schema.TaggedError<CallTimeout>()("CallTimeout", {
  objectType: Schema.String,
  objectId: Schema.String,
  handler: Schema.String,
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `${this.objectType}/${this.objectId}.${this.handler} timed out after ${this.timeoutMillis} ms`
  }
}

/**
 * A handler called an object that is already running a handler further up the same call chain (itself, or
 * A → B → A). Waiting would deadlock, so the inner call fails at once.
 *
 * @since 0.1.0
 * @category errors
 */
export class ReentrantCall extends Schema.TaggedError<ReentrantCall>()("ReentrantCall", {
  objectType: Schema.String,
  objectId: Schema.String,
  handler: Schema.String,
  /** The call chain, outermost first, as `type/id` entries. */
  chain: Schema.Array(Schema.String)
}) {
  override get message(): string {
    return `Reentrant call to ${this.objectType}/${this.objectId}.${this.handler} would deadlock (chain: ${
      this.chain.join(" -> ")
    })`
  }
}

/**
 * Whether the write behind a {@link StorageError} may have been stored: `"not-applied"` when it certainly was
 * not (the database refused it and rolled it back, or it never reached the database, or the operation wrote
 * nothing), so any call can be retried; `"unknown"` when it may have been (the connection failed mid-commit,
 * the answer was lost), so only an idempotent call is safe to retry.
 *
 * @since 0.1.0
 * @category models
 */
export type StorageOutcome = "not-applied" | "unknown"

/**
 * The storage backend failed (database down, disk full, constraint broken by someone else). The call was not
 * acknowledged and the object dropped its in-memory copy, so the next call reloads what storage holds.
 * `outcome` says whether the write may nevertheless be stored: `"unknown"` when the failure hit a commit whose
 * answer was lost on the way back (retrying an idempotent handler is safe; a non-idempotent one may apply
 * twice), `"not-applied"` when nothing was written and any call can be retried.
 *
 * @since 0.1.0
 * @category errors
 */
export class StorageError extends Schema.TaggedError<StorageError>()("StorageError", {
  operation: Schema.String,
  detail: Schema.String,
  /**
   * Whether the write may have been stored (see {@link StorageOutcome}). `"unknown"` unless the storage knows
   * better, and when decoding an error encoded without it.
   */
  outcome: Schema.Literals(["not-applied", "unknown"]).pipe(
    Schema.withConstructorDefault(Effect.succeed("unknown" as const)),
    Schema.withDecodingDefaultKey(Effect.succeed("unknown" as const))
  ),
  cause: Schema.optional(Schema.Defect())
}) {
  override get message(): string {
    return `Storage ${this.operation} failed: ${this.detail}`
  }
}

/**
 * A run's changes were not stored because a value is over the storage's size limit: the object's new state
 * (`what: "state"`, over `maxStateBytes`) or the payload of an alarm it scheduled (`what: "alarm payload"`,
 * over `maxAlarmPayloadBytes`), both measured as UTF-8 bytes of their JSON. Nothing was written and the object
 * keeps its last state; retrying the same call fails the same way.
 *
 * @since 0.1.0
 * @category errors
 */
export class ValueTooLarge extends Schema.TaggedError<ValueTooLarge>()("ValueTooLarge", {
  objectType: Schema.String,
  objectId: Schema.String,
  what: Schema.Literals(["state", "alarm payload"]),
  /** The handler (or hook) whose new state it was, or the alarm's name. */
  name: Schema.String,
  /** The encoded size, in UTF-8 bytes of JSON. */
  bytes: Schema.Number,
  /** The limit it is over. */
  limit: Schema.Number
}) {
  override get message(): string {
    const what = this.what === "state" ? `the state left by ${this.name}` : `the payload of alarm ${this.name}`
    return `${this.objectType}/${this.objectId}: ${what} is ${this.bytes} bytes, over the limit of ${this.limit}`
  }
}

/**
 * The object's stored version was not the one this runtime read: another runtime wrote it in between. Nothing
 * was written; the runtime dropped its copy and the next call reloads the newer state. Safe to retry.
 *
 * @since 0.1.0
 * @category errors
 */
export class VersionConflict extends Schema.TaggedError<VersionConflict>()("VersionConflict", {
  objectType: Schema.String,
  objectId: Schema.String,
  expectedVersion: Schema.Number,
  actualVersion: Schema.Number
}) {
  override get message(): string {
    return `${this.objectType}/${this.objectId} was written elsewhere: expected version ${this.expectedVersion}, found ${this.actualVersion}`
  }
}

/**
 * The alarm whose handler produced a write set is no longer claimed by this scheduler (its lease expired
 * and another scheduler took it, or it was re-scheduled). The write set was not applied, so the alarm's
 * effect is applied once, by the current claim holder. Schedulers handle this error; callers never see it.
 *
 * @since 0.1.0
 * @category errors
 */
export class AlarmClaimLost extends Schema.TaggedError<AlarmClaimLost>()("AlarmClaimLost", {
  objectType: Schema.String,
  objectId: Schema.String,
  name: Schema.String
}) {
  override get message(): string {
    return `The claim on alarm ${this.name} of ${this.objectType}/${this.objectId} was lost`
  }
}

/**
 * The object's runtime is shutting down (its layer's scope is closing) and takes no new calls.
 *
 * @since 0.1.0
 * @category errors
 */
export class RuntimeShutdown extends Schema.TaggedError<RuntimeShutdown>()("RuntimeShutdown", {
  objectType: Schema.String
}) {
  override get message(): string {
    return `The ${this.objectType} runtime is shutting down`
  }
}

/**
 * Every error the durable-object runtime itself can produce.
 *
 * @since 0.1.0
 * @category errors
 */
export type DurableObjectError =
  | InvalidPayload
  | UnknownHandler
  | InvalidObjectId
  | StateDecodeError
  | HandlerDefect
  | ObjectOverloaded
  | CallTimeout
  | ReentrantCall
  | StorageError
  | VersionConflict
  | RuntimeShutdown
  | CommitTimeout
  | IdempotencyKeyMismatch
  | ValueTooLarge

/**
 * The commit a call's reply depends on did not answer within `commitTimeout` (a database that is frozen or
 * unreachable). **Its outcome is unknown** to the caller: the write may still land. The runtime learns it when the
 * database answers (if the commit failed, the object reloads from storage before its next call; if it landed,
 * later calls build on it); retry with an idempotency key to be safe.
 *
 * @since 0.1.0
 * @category errors
 */
export class CommitTimeout extends Schema.TaggedError<CommitTimeout>()("CommitTimeout", {
  objectType: Schema.String,
  objectId: Schema.String,
  handler: Schema.String,
  timeoutMillis: Schema.Number
}) {
  override get message(): string {
    return `${this.objectType}/${this.objectId}.${this.handler}: the commit did not answer within ${this.timeoutMillis} ms; its outcome is unknown`
  }
}

/**
 * A call reused an idempotency key that an earlier call of this object used with another handler or payload.
 * Nothing ran and nothing changed: the key's stored reply belongs to that other call.
 *
 * @since 0.1.0
 * @category errors
 */
export class IdempotencyKeyMismatch extends Schema.TaggedError<IdempotencyKeyMismatch>()("IdempotencyKeyMismatch", {
  objectType: Schema.String,
  objectId: Schema.String,
  handler: Schema.String,
  key: Schema.String
}) {
  override get message(): string {
    return `${this.objectType}/${this.objectId}: idempotency key ${
      JSON.stringify(this.key)
    } was used for another call than ${this.handler} with this payload`
  }
}

/**
 * The schema of {@link DurableObjectError}, to encode or decode runtime errors (for example across HTTP).
 *
 * @since 0.1.0
 * @category schemas
 */
export const DurableObjectError = Schema.Union([
  InvalidPayload,
  UnknownHandler,
  InvalidObjectId,
  StateDecodeError,
  HandlerDefect,
  ObjectOverloaded,
  CallTimeout,
  ReentrantCall,
  StorageError,
  VersionConflict,
  RuntimeShutdown,
  CommitTimeout,
  IdempotencyKeyMismatch,
  ValueTooLarge
])

/**
 * Whether a value is one of the runtime's own errors.
 *
 * @since 0.1.0
 * @category guards
 */
export const isDurableObjectError: (u: unknown) => u is DurableObjectError = Schema.is(DurableObjectError)

/**
 * `DurableObject.inspect` named an object that is not stored (never committed, or deleted). Nothing changed.
 *
 * @since 0.1.0
 * @category errors
 */
export class ObjectNotFound extends Schema.TaggedError<ObjectNotFound>()("ObjectNotFound", {
  objectType: Schema.String,
  objectId: Schema.String
}) {
  override get message(): string {
    return `${this.objectType}/${this.objectId} is not stored`
  }
}

/**
 * `Alarms.retry` named an alarm the object does not have stored. Nothing changed.
 *
 * @since 0.1.0
 * @category errors
 */
export class AlarmNotFound extends Schema.TaggedError<AlarmNotFound>()("AlarmNotFound", {
  objectType: Schema.String,
  objectId: Schema.String,
  name: Schema.String
}) {
  override get message(): string {
    return `${this.objectType}/${this.objectId} has no alarm "${this.name}"`
  }
}

/**
 * The options of a listing (`DurableObject.list`, `Alarms.listFailed`) were out of range: a `limit` that is not
 * a whole number from 1 to {@link maxListLimit}, or an `after` or `prefix` that no id could be or start with.
 * Nothing was read.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidListOptions extends Schema.TaggedError<InvalidListOptions>()("InvalidListOptions", {
  objectType: Schema.String,
  issue: Schema.String
}) {
  override get message(): string {
    return `Invalid listing of ${this.objectType}: ${this.issue}`
  }
}

/**
 * The most objects or alarms one page of a listing holds.
 *
 * @since 0.1.0
 * @category constants
 */
export const maxListLimit = 1000
