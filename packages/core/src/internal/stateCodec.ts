/**
 * The library's one JSON codec: a schema's JSON form as text, both ways, as `Exit`s. Object state and alarm
 * payloads are stored with it, and the test kit reads stored state back with it.
 *
 * The schema's JSON codec and `JSON.stringify` / `JSON.parse` run as separate steps: composed with
 * `Schema.fromJsonString`, the same work costs about five times as much, and state is encoded on every change.
 *
 * @internal
 */
import { Exit, Result, Schema } from "effect"

/** A schema's values to and from JSON text. */
export interface JsonCodec {
  /** Encodes a value; fails when it does not encode with the schema, dies when JSON cannot represent it. */
  readonly encode: (value: unknown) => Exit.Exit<string, Schema.SchemaError>
  /** Decodes JSON text; fails when it does not decode with the schema, dies when it is not JSON at all. */
  readonly decode: (text: string) => Exit.Exit<unknown, Schema.SchemaError>
  /** Encodes a value to its JSON form (a value `JSON.stringify` can write), for nesting in other JSON. */
  readonly toJson: (value: unknown) => Exit.Exit<unknown, Schema.SchemaError>
  /** Decodes a value from its JSON form (as `JSON.parse` read it). */
  readonly fromJson: (json: unknown) => Exit.Exit<unknown, Schema.SchemaError>
}

/** The codec of `schema`'s JSON form. */
export const make = (schema: Schema.Top): JsonCodec => {
  const codec = Schema.toCodecJson(schema) as unknown as Schema.Codec<unknown, unknown>
  const encodeValue = Schema.encodeUnknownExit(codec)
  const decodeValue = Schema.decodeUnknownExit(codec)
  return {
    toJson: encodeValue,
    fromJson: decodeValue,
    encode: (value) => {
      const encoded = encodeValue(value)
      if (Exit.isFailure(encoded)) return Exit.failCause(encoded.cause)
      const json = Result.try(() => JSON.stringify(encoded.value))
      if (Result.isFailure(json)) return Exit.die(json.failure)
      return json.success === undefined
        ? Exit.die(new TypeError("the value cannot be represented as JSON"))
        : Exit.succeed(json.success)
    },
    decode: (text) => {
      const parsed = Result.try(() => JSON.parse(text) as unknown)
      return Result.isFailure(parsed) ? Exit.die(parsed.failure) : decodeValue(parsed.success)
    }
  }
}

/** The codec of a value that has no schema: always stored as `null`, read back as `undefined`. */
export const none: JsonCodec = {
  encode: () => Exit.succeed("null"),
  decode: () => Exit.succeed(undefined),
  toJson: () => Exit.succeed(null),
  fromJson: () => Exit.succeed(undefined)
}
