/**
 * Size limits on what the runtime stores: the encoded state of an object and the encoded payload of an alarm,
 * both as JSON. They are checked when a run's changes are staged, before anything is written, so a value no
 * backend could read back (PostgreSQL's driver reads messages of at most 16 MiB) is refused with
 * `ValueTooLarge` instead of poisoning every later load or claim that would include it.
 *
 * @internal
 */
import { ValueTooLarge } from "../Errors.ts"
import type { AlarmPut, StorageLimits } from "./records.ts"

/**
 * The limits a storage applies unless configured otherwise: 4 MiB of state (PostgreSQL returns `jsonb` as text
 * with a space after every `,` and `:`, so a state of 4 MiB reads back as at most about 6 MiB, well inside the
 * driver's 16 MiB) and 256 KiB per alarm payload (a claim reads up to 256 alarms at once).
 */
export const defaultLimits: StorageLimits = {
  maxStateBytes: 4 * 1024 * 1024,
  maxAlarmPayloadBytes: 256 * 1024
}

/** The length of `text` in UTF-8 bytes, counted without encoding it. */
export const utf8Bytes = (text: string): number => {
  let bytes = text.length
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    // Each UTF-16 unit is one byte so far: two-byte characters add one, three-byte ones two, and a surrogate
    // pair (four bytes) one per unit.
    if (code >= 0x80) bytes += code < 0x800 || (code >= 0xd800 && code <= 0xdfff) ? 1 : 2
  }
  return bytes
}

/** The UTF-8 size of `text` when it is over `limit` (else `undefined`); short texts are not even counted. */
const over = (text: string, limit: number): number | undefined => {
  if (text.length * 3 <= limit) return undefined
  const bytes = utf8Bytes(text)
  return bytes > limit ? bytes : undefined
}

/**
 * Why the changes of a run may not be stored: its new state (`state`, when it changed) or an alarm payload it
 * schedules is over its limit. `undefined` when everything fits.
 */
export const check = (
  limits: StorageLimits,
  where: { readonly objectType: string; readonly objectId: string; readonly handler: string },
  state: string | undefined,
  puts: Iterable<AlarmPut>
): ValueTooLarge | undefined => {
  if (state !== undefined) {
    const bytes = over(state, limits.maxStateBytes)
    if (bytes !== undefined) {
      return new ValueTooLarge({ ...where, what: "state", name: where.handler, bytes, limit: limits.maxStateBytes })
    }
  }
  for (const put of puts) {
    const bytes = over(put.payload, limits.maxAlarmPayloadBytes)
    if (bytes !== undefined) {
      return new ValueTooLarge({
        objectType: where.objectType,
        objectId: where.objectId,
        what: "alarm payload",
        name: put.name,
        bytes,
        limit: limits.maxAlarmPayloadBytes
      })
    }
  }
  return undefined
}
