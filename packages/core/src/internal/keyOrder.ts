/**
 * The order stored objects are listed in, the same on every backend: Unicode code point order, which is the
 * byte order of UTF-8 (SQLite's `BINARY` collation, PostgreSQL's `"C"`). JavaScript compares strings by UTF-16
 * code units instead, which puts U+E000…U+FFFF after the supplementary planes; the memory backend compares
 * with {@link compareCodePoints} to agree with the databases.
 *
 * @internal
 */

/** A UTF-16 code unit mapped so that comparing mapped units compares code points. */
const weight = (unit: number): number => unit >= 0xd800 ? (unit >= 0xe000 ? unit - 0x800 : unit + 0x2000) : unit

/** Compares two strings in Unicode code point order (negative, zero or positive). */
export const compareCodePoints = (a: string, b: string): number => {
  if (a === b) return 0
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x !== y) return weight(x) - weight(y)
  }
  return a.length - b.length
}

/**
 * The least string greater than every string starting with `prefix`, in code point order, or `undefined` when
 * there is none (an empty prefix, or one of only U+10FFFF): `[prefix, prefixEnd(prefix))` is the range of ids
 * that start with `prefix`, which an index on the id reads directly.
 */
export const prefixEnd = (prefix: string): string | undefined => {
  const points = Array.from(prefix, (c) => c.codePointAt(0)!)
  while (points.length > 0) {
    let last = points.pop()!
    if (last === 0x10ffff) continue
    last++
    // Surrogate code points are not characters (ids are well-formed): the next one is U+E000.
    if (last >= 0xd800 && last < 0xe000) last = 0xe000
    points.push(last)
    return String.fromCodePoint(...points)
  }
  return undefined
}
