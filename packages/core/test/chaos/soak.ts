/**
 * The soak factor: `DURABLE_OBJECT_CHAOS_SOAK=N` runs N times the chaos suite's cycles and faults (default 1, what
 * `npm test` runs). Its numbers from a long run are in `docs/chaos.md`.
 */
const parsed = Number(process.env.DURABLE_OBJECT_CHAOS_SOAK ?? "1")
export const soak = Number.isInteger(parsed) && parsed > 1 ? parsed : 1

/** A test timeout scaled by the soak factor. */
export const soakTimeout = (ms: number) => ms * soak
