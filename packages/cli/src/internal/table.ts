/** Human output: aligned text tables and readable times. */
import { DateTime } from "effect"

/** Rows as an aligned table under a header; an empty list says so instead. */
export const table = (
  header: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<string>>,
  empty = "(none)"
): string => {
  if (rows.length === 0) return empty
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd()
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n")
}

/** Epoch milliseconds as an ISO time (UTC), or `-`. */
export const time = (millis: number | null | undefined): string =>
  millis === null || millis === undefined ? "-" : DateTime.formatIso(DateTime.makeUnsafe(millis))

/** A value on one line (whitespace runs, newlines included, become one space), cut to `max` characters. */
export const short = (value: unknown, max = 60): string => {
  const text = (typeof value === "string" ? value : JSON.stringify(value) ?? String(value)).replace(/\s+/g, " ")
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`
}
