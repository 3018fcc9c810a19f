/**
 * Maps what `node:sqlite` throws to effect/sql's `SqlError`.
 *
 * `node:sqlite` puts the extended result code in `errcode` and SQLite's generic text in `errstr`, while
 * `SqlError.classifySqliteError` looks at `code`/`errno` (and `code` is always `"ERR_SQLITE_ERROR"` here), so the
 * classification is done here from `errcode`.
 */
import { SqlError } from "effect/sql"

const SQLITE_ERROR = 1
const SQLITE_PERM = 3
const SQLITE_BUSY = 5
const SQLITE_LOCKED = 6
const SQLITE_CANTOPEN = 14
const SQLITE_CONSTRAINT = 19
const SQLITE_AUTH = 23
const SQLITE_CONSTRAINT_PRIMARYKEY = 1555
const SQLITE_CONSTRAINT_UNIQUE = 2067

/** The extended SQLite result code of an error thrown by `node:sqlite`, if it carries one. */
export const errcodeOf = (cause: unknown): number | undefined => {
  if (typeof cause !== "object" || cause === null || !("errcode" in cause)) return undefined
  return typeof cause.errcode === "number" ? cause.errcode : undefined
}

const messageOf = (cause: unknown, fallback: string): string =>
  cause instanceof Error && cause.message.length > 0 ? cause.message : fallback

// "UNIQUE constraint failed: t.a, t.b" names the columns; that is the closest thing to a constraint name SQLite
// reports.
const constraintOf = (message: string): string => {
  const match = /constraint failed: (.+)$/.exec(message)
  return match?.[1] ?? message
}

/**
 * An `SqlError` for anything thrown while talking to SQLite. The message carries SQLite's own message and, when
 * there is one, the extended result code (`... [SQLite 2067]`); the reason's `cause` is the original error.
 */
export const toSqlError = (cause: unknown, operation: string): SqlError.SqlError => {
  const errcode = errcodeOf(cause)
  const detail = messageOf(cause, `SQLite ${operation} failed`)
  const message = errcode === undefined ? detail : `${detail} [SQLite ${errcode}]`
  const props = { cause, message, operation }
  return new SqlError.SqlError({ reason: classify(errcode, detail, cause, props) })
}

type Props = { readonly cause: unknown; readonly message: string; readonly operation: string }

const classify = (
  errcode: number | undefined,
  detail: string,
  cause: unknown,
  props: Props
): SqlError.SqlErrorReason => {
  if (errcode === undefined) {
    // Errors of node:sqlite itself, not of SQLite: a statement on a closed database is a lost connection.
    if (hasCode(cause, "ERR_INVALID_STATE") && /not open/i.test(detail)) return new SqlError.ConnectionError(props)
    return new SqlError.UnknownError(props)
  }
  if (errcode === SQLITE_CONSTRAINT_UNIQUE || errcode === SQLITE_CONSTRAINT_PRIMARYKEY) {
    return new SqlError.UniqueViolation({ ...props, constraint: constraintOf(detail) })
  }
  switch (errcode & 0xff) {
    case SQLITE_CONSTRAINT:
      return new SqlError.ConstraintError(props)
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return new SqlError.LockTimeoutError(props)
    case SQLITE_CANTOPEN:
      return new SqlError.ConnectionError(props)
    case SQLITE_AUTH:
      return new SqlError.AuthenticationError(props)
    case SQLITE_PERM:
      return new SqlError.AuthorizationError(props)
    case SQLITE_ERROR:
      return /syntax error|incomplete input|unrecognized token/i.test(detail)
        ? new SqlError.SqlSyntaxError(props)
        : new SqlError.UnknownError(props)
    default:
      return new SqlError.UnknownError(props)
  }
}

const hasCode = (cause: unknown, code: string): boolean =>
  typeof cause === "object" && cause !== null && "code" in cause && cause.code === code
