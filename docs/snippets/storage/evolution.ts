import { Effect, Schema } from "effect"

// v1 of the state schema
export const ProfileStateV1 = Schema.Struct({ visits: Schema.Number })

// v2, under the same definition name: rows written by v1 have no `theme` and decode with "light"
export const ProfileStateV2 = Schema.Struct({
  visits: Schema.Number,
  theme: Schema.Literals(["light", "dark"]).pipe(Schema.withDecodingDefaultKey(Effect.succeed("light" as const)))
})
