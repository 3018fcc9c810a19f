import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { assert, describe, it } from "@effect/vitest"
import {
  Config,
  ConfigProvider,
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Stream,
  String as Str
} from "effect"
import { SqlClient, type SqlError } from "effect/sql"
import { existsSync } from "node:fs"
import { join } from "node:path"
import { tempDatabase, tempDir } from "./utils.ts"

const memory = SqliteClient.layer({ filename: ":memory:" })

const reasonOf = (error: SqlError.SqlError) => error.reason._tag

const roundTrip = (value: unknown) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // A column without a declared type has no affinity: SQLite stores exactly what was bound.
    yield* sql`CREATE TABLE IF NOT EXISTS v (id INTEGER PRIMARY KEY, v)`
    const [row] = yield* sql<{ id: number }>`INSERT INTO v (v) VALUES (${value}) RETURNING id`
    const [back] = yield* sql<{ v: unknown; t: string }>`SELECT v, typeof(v) AS t FROM v WHERE id = ${row!.id}`
    return back!
  })

describe("parameters", () => {
  it.effect("text round-trips, including quotes, backslashes, unicode and the empty string", () =>
    Effect.gen(function*() {
      for (
        const text of [
          "plain",
          `it's "quoted"`,
          "back\\slash",
          "日本語 🦀 ünïcödé",
          "",
          "line\nbreak",
          "'; DROP TABLE v; --"
        ]
      ) {
        const back = yield* roundTrip(text)
        assert.strictEqual(back.v, text)
        assert.strictEqual(back.t, "text")
      }
    }).pipe(Effect.provide(memory)))

  it.effect("integers and reals round-trip as numbers", () =>
    Effect.gen(function*() {
      for (const n of [0, 42, -7, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER]) {
        const back = yield* roundTrip(n)
        assert.strictEqual(back.v, n)
        assert.strictEqual(back.t, "integer")
      }
      for (const x of [1.75, -0.5, 1e300, 2 ** -40]) {
        const back = yield* roundTrip(x)
        assert.strictEqual(back.v, x)
        assert.strictEqual(back.t, "real")
      }
    }).pipe(Effect.provide(memory)))

  it.effect("null and undefined are stored as NULL", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* roundTrip(null), { v: null, t: "null" })
      assert.deepStrictEqual(yield* roundTrip(undefined), { v: null, t: "null" })
    }).pipe(Effect.provide(memory)))

  it.effect("Uint8Array blobs round-trip byte for byte", () =>
    Effect.gen(function*() {
      const bytes = new Uint8Array([0, 1, 2, 127, 128, 255, 0])
      const back = yield* roundTrip(bytes)
      assert.strictEqual(back.t, "blob")
      assert.instanceOf(back.v, Uint8Array)
      assert.deepStrictEqual(Array.from(back.v as Uint8Array), Array.from(bytes))
      const empty = yield* roundTrip(new Uint8Array(0))
      assert.strictEqual(empty.t, "blob")
      assert.strictEqual((empty.v as Uint8Array).length, 0)
    }).pipe(Effect.provide(memory)))

  it.effect("booleans are bound as 1 and 0", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* roundTrip(true), { v: 1, t: "integer" })
      assert.deepStrictEqual(yield* roundTrip(false), { v: 0, t: "integer" })
      const sql = yield* SqlClient.SqlClient
      const rows = yield* sql<{ n: number }>`SELECT count(*) AS n FROM v WHERE v = ${true}`
      assert.strictEqual(rows[0]!.n, 1)
    }).pipe(Effect.provide(memory)))

  it.effect("Dates are stored as ISO 8601 text that SQLite's date functions understand", () =>
    Effect.gen(function*() {
      const date = new Date(Date.UTC(2024, 1, 29, 13, 45, 30, 123))
      assert.deepStrictEqual(yield* roundTrip(date), { v: "2024-02-29T13:45:30.123Z", t: "text" })
      const sql = yield* SqlClient.SqlClient
      const [row] = yield* sql<{ d: string }>`SELECT datetime(${date}) AS d`
      assert.strictEqual(row!.d, "2024-02-29 13:45:30")
    }).pipe(Effect.provide(memory)))

  it.effect("a Date in first position is bound, not taken for named parameters", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const [row] = yield* sql<{ d: string }>`SELECT ${new Date(0)} AS d`
      assert.strictEqual(row!.d, "1970-01-01T00:00:00.000Z")
    }).pipe(Effect.provide(memory)))

  it.effect("bigints are bound exactly; large integers read back as bigint with readBigInts", () =>
    Effect.gen(function*() {
      const big = 2n ** 62n + 1n
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE b (v INTEGER)`
      yield* sql`INSERT INTO b (v) VALUES (${big}), (${42n})`
      const rows = yield* sql<{ v: bigint }>`SELECT v FROM b ORDER BY v DESC`
      assert.deepStrictEqual(rows.map((r) => r.v), [big, 42n])
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:", readBigInts: true }))))

  it.effect("without readBigInts, small integers are numbers and an unsafe one fails instead of losing precision", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE b (v INTEGER)`
      yield* sql`INSERT INTO b (v) VALUES (${42n})`
      assert.deepStrictEqual(yield* sql`SELECT v FROM b`, [{ v: 42 }])
      yield* sql`INSERT INTO b (v) VALUES (${2n ** 62n})`
      const error = yield* Effect.flip(sql`SELECT v FROM b`)
      assert.strictEqual(error._tag, "SqlError")
      assert.match(error.message, /too large/)
      // one query can opt in
      const rows = yield* sql<{ v: bigint }>`SELECT v FROM b ORDER BY v`.pipe(
        Effect.provideService(SqlClient.SafeIntegers, true)
      )
      assert.deepStrictEqual(rows.map((r) => r.v), [42n, 2n ** 62n])
    }).pipe(Effect.provide(memory)))

  it.effect("a value SQLite cannot store fails with an SqlError, not a defect", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const error = yield* Effect.flip(sql`SELECT ${sql.unsafe("?", [{ a: 1 }])} AS x`)
      assert.strictEqual(error._tag, "SqlError")
      assert.match(error.message, /Cannot bind a value of type Object to SQLite parameter 1/)
    }).pipe(Effect.provide(memory)))
})

describe("statements", () => {
  it.effect("sql.insert, sql.in, sql.update, RETURNING and onDialectOrElse work with the SQLite compiler", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, age INTEGER)`
      const inserted = yield* sql<{ id: number }>`INSERT INTO people ${
        sql.insert([{ name: "ada", age: 36 }, { name: "grace", age: 45 }, { name: "alan", age: 41 }])
      } RETURNING id`
      assert.deepStrictEqual(inserted.map((r) => r.id), [1, 2, 3])
      const some = yield* sql<{ name: string }>`SELECT name FROM people WHERE ${sql.in("id", [1, 3])} ORDER BY id`
      assert.deepStrictEqual(some.map((r) => r.name), ["ada", "alan"])
      yield* sql`UPDATE people SET ${sql.update({ name: "Ada", age: 37 })} WHERE id = ${1}`
      assert.deepStrictEqual(yield* sql`SELECT name, age FROM people WHERE id = 1`, [{ name: "Ada", age: 37 }])
      const dialect = yield* sql.onDialectOrElse({
        sqlite: () => Effect.succeed("sqlite"),
        orElse: () => Effect.succeed("other")
      })
      assert.strictEqual(dialect, "sqlite")
      assert.strictEqual(sql.driver, "sqlite-node")
    }).pipe(Effect.provide(memory)))

  it.effect("values returns rows as arrays, raw returns what SQLite reports about a write", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)`
      const raw = yield* sql`INSERT INTO t (x) VALUES ('a'), ('b')`.raw
      assert.deepStrictEqual(raw, { changes: 2, lastInsertRowid: 2 })
      assert.deepStrictEqual(yield* sql`SELECT id, x FROM t ORDER BY id`.values, [[1, "a"], [2, "b"]])
      // the same statement as objects again: the cached statement is switched back
      assert.deepStrictEqual(yield* sql`SELECT id, x FROM t ORDER BY id`, [{ id: 1, x: "a" }, { id: 2, x: "b" }])
      assert.deepStrictEqual(yield* sql`SELECT x FROM t WHERE id = ${2}`.unprepared, [{ x: "b" }])
    }).pipe(Effect.provide(memory)))

  it.effect("query and result names are transformed when configured", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE user_accounts (user_id INTEGER, display_name TEXT)`
      yield* sql`INSERT INTO ${sql("userAccounts")} ${sql.insert({ userId: 1, displayName: "Ada" })}`
      assert.deepStrictEqual(yield* sql`SELECT * FROM user_accounts`, [{ userId: 1, displayName: "Ada" }])
    }).pipe(Effect.provide(SqliteClient.layer({
      filename: ":memory:",
      transformQueryNames: Str.camelToSnake,
      transformResultNames: Str.snakeToCamel
    }))))

  it.effect("streams rows in order, and a stream stopped early leaves the connection usable", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE s (n INTEGER)`
      yield* sql`WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000) INSERT INTO s SELECT n FROM c`
      const all = yield* Stream.runCollect(sql<{ n: number }>`SELECT n FROM s ORDER BY n`.stream)
      assert.strictEqual(all.length, 1000)
      assert.deepStrictEqual(all.map((r) => r.n), Array.from({ length: 1000 }, (_, i) => i + 1))
      const first = yield* Stream.runCollect(Stream.take(sql<{ n: number }>`SELECT n FROM s ORDER BY n`.stream, 3))
      assert.deepStrictEqual(first, [{ n: 1 }, { n: 2 }, { n: 3 }])
      assert.deepStrictEqual(yield* sql`SELECT count(*) AS c FROM s`, [{ c: 1000 }])
      assert.deepStrictEqual(yield* Stream.runCollect(sql`SELECT n FROM s WHERE n > 5000`.stream), [])
    }).pipe(Effect.provide(memory)))

  it.effect("withDatabase runs on the held connection, also inside a transaction", () =>
    Effect.gen(function*() {
      const client = yield* SqliteClient.SqliteClient
      yield* client.withDatabase((db) =>
        db.exec("CREATE TABLE w (x); INSERT INTO w VALUES (1); INSERT INTO w VALUES (2);")
      )
      const inTransaction = yield* client.withTransaction(client.withDatabase((db) => db.isTransaction))
      assert.isTrue(inTransaction)
      assert.deepStrictEqual(yield* client`SELECT count(*) AS c FROM w`, [{ c: 2 }])
      const error = yield* Effect.flip(client.withDatabase((db) => db.exec("NOT SQL")))
      assert.strictEqual(reasonOf(error), "SqlSyntaxError")
    }).pipe(Effect.provide(memory)))
})

describe("transactions", () => {
  const setup = Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE t (x TEXT)`
    return sql
  })
  const contents = Effect.flatMap(SqlClient.SqlClient, (sql) => sql<{ x: string }>`SELECT x FROM t ORDER BY rowid`)
    .pipe(Effect.map((rows) => rows.map((r) => r.x)))

  it.effect("a transaction that succeeds is committed", () =>
    Effect.gen(function*() {
      const sql = yield* setup
      yield* sql.withTransaction(Effect.andThen(sql`INSERT INTO t VALUES ('a')`, sql`INSERT INTO t VALUES ('b')`))
      assert.deepStrictEqual(yield* contents, ["a", "b"])
    }).pipe(Effect.provide(memory)))

  it.effect("a transaction that fails is rolled back and its error is returned", () =>
    Effect.gen(function*() {
      const sql = yield* setup
      const error = yield* Effect.flip(sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO t VALUES ('a')`
        return yield* Effect.fail("boom" as const)
      })))
      assert.strictEqual(error, "boom")
      assert.deepStrictEqual(yield* contents, [])
      const client = yield* SqliteClient.SqliteClient
      assert.isFalse(client.database.isTransaction)
    }).pipe(Effect.provide(memory)))

  it.effect("a nested transaction that fails rolls back its savepoint only; the outer one commits", () =>
    Effect.gen(function*() {
      const sql = yield* setup
      yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO t VALUES ('outer-before')`
        const inner = yield* Effect.exit(sql.withTransaction(Effect.gen(function*() {
          yield* sql`INSERT INTO t VALUES ('inner')`
          return yield* Effect.fail("inner failed")
        })))
        assert.isTrue(Exit.isFailure(inner))
        yield* sql.withTransaction(sql`INSERT INTO t VALUES ('inner-ok')`)
        yield* sql`INSERT INTO t VALUES ('outer-after')`
      }))
      assert.deepStrictEqual(yield* contents, ["outer-before", "inner-ok", "outer-after"])
    }).pipe(Effect.provide(memory)))

  it.effect("a failing statement inside a transaction rolls the whole transaction back", () =>
    Effect.gen(function*() {
      const sql = yield* setup
      yield* sql`CREATE UNIQUE INDEX t_x ON t (x)`
      const error = yield* Effect.flip(
        sql.withTransaction(Effect.andThen(sql`INSERT INTO t VALUES ('a')`, sql`INSERT INTO t VALUES ('a')`))
      )
      assert.strictEqual(reasonOf(error), "UniqueViolation")
      assert.deepStrictEqual(yield* contents, [])
    }).pipe(Effect.provide(memory)))

  it.effect("interrupting a fiber inside a transaction rolls it back and frees the connection", () =>
    Effect.gen(function*() {
      const sql = yield* setup
      const inside = yield* Deferred.make<void>()
      const fiber = yield* Effect.forkChild(sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO t VALUES ('lost')`
        yield* Deferred.succeed(inside, undefined)
        return yield* Effect.never
      })))
      yield* Deferred.await(inside)
      yield* Fiber.interrupt(fiber)
      assert.deepStrictEqual(yield* contents, [])
      yield* sql`INSERT INTO t VALUES ('after')`
      assert.deepStrictEqual(yield* contents, ["after"])
    }).pipe(Effect.provide(memory)))

  it.live("interrupting a transaction while it waits for the event loop rolls it back as a whole", () =>
    Effect.gen(function*() {
      const sql = yield* setup
      const client = yield* SqliteClient.SqliteClient
      // with a zero budget, every statement after the first waits for a setImmediate: interrupt during one
      const fiber = yield* Effect.forkChild(sql.withTransaction(
        Effect.forEach(Array.from({ length: 1000 }, (_, i) => i), (i) => sql`INSERT INTO t VALUES (${String(i)})`, {
          discard: true
        })
      ))
      yield* Effect.sleep("5 millis")
      yield* Fiber.interrupt(fiber)
      assert.isTrue(Exit.isFailure(yield* Fiber.await(fiber)), "interrupted before it could finish")
      assert.isFalse(client.database.isTransaction)
      assert.deepStrictEqual(yield* contents, [])
      yield* sql`INSERT INTO t VALUES ('after')`
      assert.deepStrictEqual(yield* contents, ["after"])
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:", yieldBudget: Duration.zero }))))

  it.effect("top-level transactions begin IMMEDIATE by default, DEFERRED when configured", () =>
    Effect.gen(function*() {
      const file = yield* tempDatabase
      const holdsWriteLock = (mode: SqliteClient.TransactionMode | undefined) =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          yield* sql`CREATE TABLE IF NOT EXISTS t (x)`
          // BEGIN alone takes no lock in DEFERRED mode; IMMEDIATE takes the write lock, so a second
          // connection cannot write meanwhile.
          return yield* sql.withTransaction(Effect.gen(function*() {
            const other = yield* Effect.exit(Effect.scoped(Effect.gen(function*() {
              const context = yield* Layer.build(SqliteClient.layer({ filename: file, busyTimeout: 0 }))
              const other = Context.get(context, SqlClient.SqlClient)
              yield* other`INSERT INTO t VALUES (1)`
            })))
            return Exit.isFailure(other)
          }))
        }).pipe(Effect.provide(SqliteClient.layer({ filename: file, transactionMode: mode })))
      assert.isTrue(yield* holdsWriteLock(undefined))
      assert.isFalse(yield* holdsWriteLock("DEFERRED"))
    }))
})

describe("errors", () => {
  const schema = Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE parent (id INTEGER PRIMARY KEY)`
    yield* sql`CREATE TABLE t (
      id INTEGER PRIMARY KEY,
      email TEXT UNIQUE,
      name TEXT NOT NULL,
      n INTEGER CHECK (n > 0),
      parent INTEGER REFERENCES parent (id)
    )`
    yield* sql`INSERT INTO t (id, email, name, n) VALUES (1, 'a@x', 'a', 1)`
    return sql
  })

  it.effect("UNIQUE and PRIMARY KEY violations are UniqueViolation, with the SQLite code", () =>
    Effect.gen(function*() {
      const sql = yield* schema
      const unique = yield* Effect.flip(sql`INSERT INTO t (id, email, name, n) VALUES (2, 'a@x', 'b', 1)`)
      assert.strictEqual(reasonOf(unique), "UniqueViolation")
      assert.strictEqual(SqliteClient.sqliteErrorCode(unique), 2067)
      assert.match(unique.message, /UNIQUE constraint failed: t\.email \[SQLite 2067\]/)
      assert.strictEqual((unique.reason as SqlError.UniqueViolation).constraint, "t.email")
      const primary = yield* Effect.flip(sql`INSERT INTO t (id, email, name, n) VALUES (1, 'b@x', 'b', 1)`)
      assert.strictEqual(reasonOf(primary), "UniqueViolation")
      assert.strictEqual(SqliteClient.sqliteErrorCode(primary), 1555)
    }).pipe(Effect.provide(memory)))

  it.effect("NOT NULL, CHECK and FOREIGN KEY violations are ConstraintError, with the SQLite code", () =>
    Effect.gen(function*() {
      const sql = yield* schema
      const cases = [
        [sql`INSERT INTO t (id, name, n) VALUES (2, NULL, 1)`, 1299],
        [sql`INSERT INTO t (id, name, n) VALUES (2, 'b', 0)`, 275],
        [sql`INSERT INTO t (id, name, n, parent) VALUES (2, 'b', 1, 99)`, 787]
      ] as const
      for (const [statement, code] of cases) {
        const error = yield* Effect.flip(statement)
        assert.strictEqual(reasonOf(error), "ConstraintError")
        assert.strictEqual(SqliteClient.sqliteErrorCode(error), code)
      }
    }).pipe(Effect.provide(memory)))

  it.effect("a syntax error is SqlSyntaxError; other SQL errors keep SQLite's message and code", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const syntax = yield* Effect.flip(sql`SELEC 1`)
      assert.strictEqual(reasonOf(syntax), "SqlSyntaxError")
      assert.strictEqual(SqliteClient.sqliteErrorCode(syntax), 1)
      const missing = yield* Effect.flip(sql`SELECT * FROM nowhere`)
      assert.strictEqual(reasonOf(missing), "UnknownError")
      assert.match(missing.message, /no such table: nowhere \[SQLite 1\]/)
    }).pipe(Effect.provide(memory)))

  it.effect("a write blocked by another connection's lock past busyTimeout is LockTimeoutError", () =>
    Effect.gen(function*() {
      const filename = yield* tempDatabase
      const holder = yield* Layer.build(SqliteClient.layer({ filename }))
      const blocked = yield* Layer.build(SqliteClient.layer({ filename, busyTimeout: Duration.millis(20) }))
      const sqlA = SqliteClient.SqliteClient.pipe(Effect.provide(holder))
      const sqlB = SqliteClient.SqliteClient.pipe(Effect.provide(blocked))
      const a = yield* sqlA
      const b = yield* sqlB
      yield* a`CREATE TABLE t (x)`
      const error = yield* a.withTransaction(
        Effect.andThen(a`INSERT INTO t VALUES (1)`, Effect.flip(b`INSERT INTO t VALUES (2)`))
      )
      assert.strictEqual(reasonOf(error), "LockTimeoutError")
      assert.strictEqual(SqliteClient.sqliteErrorCode(error), 5)
      assert.isTrue(error.isRetryable)
    }))

  it.effect("opening a file in a missing directory fails the layer with a ConnectionError, not a defect", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const exit = yield* Effect.exit(Layer.build(SqliteClient.layer({ filename: join(dir, "missing", "db.sqlite") })))
      assert.isTrue(Exit.isFailure(exit))
      const error = yield* Effect.flip(Layer.build(SqliteClient.layer({ filename: join(dir, "missing", "db.sqlite") })))
      assert.strictEqual(error._tag, "SqlError")
      assert.strictEqual(reasonOf(error), "ConnectionError")
      assert.strictEqual(SqliteClient.sqliteErrorCode(error), 14)
    }))

  it.effect("a read-only client refuses writes with an SqlError", () =>
    Effect.gen(function*() {
      const filename = yield* tempDatabase
      yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql`CREATE TABLE t (x)`).pipe(
        Effect.provide(SqliteClient.layer({ filename, wal: false }))
      )
      const sql = yield* Effect.provide(
        SqlClient.SqlClient,
        yield* Layer.build(SqliteClient.layer({ filename, readonly: true }))
      )
      const error = yield* Effect.flip(sql`INSERT INTO t VALUES (1)`)
      assert.strictEqual(SqliteClient.sqliteErrorCode(error), 8)
      assert.deepStrictEqual(yield* sql`PRAGMA journal_mode`, [{ journal_mode: "delete" }])
      assert.deepStrictEqual(yield* sql`SELECT count(*) AS c FROM t`, [{ c: 0 }])
    }))
})

describe("concurrency", () => {
  it.effect("100 concurrent fibers writing without transactions all succeed, one statement at a time", () =>
    Effect.gen(function*() {
      const filename = yield* tempDatabase
      const sql = yield* Effect.provide(SqlClient.SqlClient, yield* Layer.build(SqliteClient.layer({ filename })))
      yield* sql`CREATE TABLE t (fiber INTEGER, n INTEGER)`
      yield* sql`CREATE TABLE counter (n INTEGER)`
      yield* sql`INSERT INTO counter VALUES (0)`
      yield* Effect.forEach(Array.from({ length: 100 }, (_, i) => i), (i) =>
        Effect.gen(function*() {
          yield* sql`INSERT INTO t ${sql.insert({ fiber: i, n: 1 })}`
          yield* Effect.yieldNow
          yield* sql`UPDATE counter SET n = n + 1`
          yield* sql`INSERT INTO t ${sql.insert({ fiber: i, n: 2 })}`
        }), { concurrency: "unbounded", discard: true })
      assert.deepStrictEqual(yield* sql`SELECT count(*) AS c, count(DISTINCT fiber) AS f FROM t`, [{ c: 200, f: 100 }])
      assert.deepStrictEqual(yield* sql`SELECT n FROM counter`, [{ n: 100 }])
    }))

  it.effect("100 concurrent read-modify-write transactions serialize: no update is lost", () =>
    Effect.gen(function*() {
      const filename = yield* tempDatabase
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE counter (n INTEGER)`
        yield* sql`INSERT INTO counter VALUES (0)`
        const increment = sql.withTransaction(Effect.gen(function*() {
          const [row] = yield* sql<{ n: number }>`SELECT n FROM counter`
          // another fiber would interleave here if the transaction did not hold the connection
          yield* Effect.yieldNow
          yield* sql`UPDATE counter SET n = ${row!.n + 1}`
        }))
        yield* Effect.forEach(Array.from({ length: 100 }), () => increment, { concurrency: "unbounded", discard: true })
        assert.deepStrictEqual(yield* sql`SELECT n FROM counter`, [{ n: 100 }])
      }).pipe(Effect.provide(SqliteClient.layer({ filename })))
    }))

  it.effect("with a zero yield budget every statement yields to the event loop, and TestClock does not stall it", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`CREATE TABLE t (n INTEGER)`
      let timerRan = false
      const timer = setTimeout(() => {
        timerRan = true
      }, 0)
      let timerRanBeforeEnd = false
      yield* Effect.forEach(
        Array.from({ length: 200 }, (_, i) => i),
        (n) =>
          Effect.andThen(
            sql`INSERT INTO t VALUES (${n})`,
            Effect.sync(() => {
              if (n === 199) timerRanBeforeEnd = timerRan
            })
          ),
        { concurrency: "unbounded", discard: true }
      )
      clearTimeout(timer)
      assert.isTrue(timerRanBeforeEnd)
      assert.deepStrictEqual(yield* sql`SELECT count(*) AS c FROM t`, [{ c: 200 }])
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:", yieldBudget: Duration.zero }))))
})

describe("configuration", () => {
  const pragmas = Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const [journal] = yield* sql<{ journal_mode: string }>`PRAGMA journal_mode`
    const [synchronous] = yield* sql<{ synchronous: number }>`PRAGMA synchronous`
    const [busy] = yield* sql<{ timeout: number }>`PRAGMA busy_timeout`
    return { journal: journal!.journal_mode, synchronous: synchronous!.synchronous, busyTimeout: busy!.timeout }
  })

  it.effect("a file database defaults to WAL, synchronous FULL and a 5 s busy timeout", () =>
    Effect.gen(function*() {
      const filename = yield* tempDatabase
      const applied = yield* pragmas.pipe(Effect.provide(SqliteClient.layer({ filename })))
      assert.deepStrictEqual(applied, { journal: "wal", synchronous: 2, busyTimeout: 5000 })
      assert.isTrue(existsSync(filename))
    }))

  it.effect("synchronous, WAL and the busy timeout are applied as configured", () =>
    Effect.gen(function*() {
      const levels = { OFF: 0, NORMAL: 1, FULL: 2, EXTRA: 3 } as const
      for (const [synchronous, level] of Object.entries(levels)) {
        const filename = yield* tempDatabase
        const applied = yield* pragmas.pipe(Effect.provide(SqliteClient.layer({
          filename,
          synchronous: synchronous as SqliteClient.Synchronous,
          wal: false,
          busyTimeout: "250 millis"
        })))
        assert.deepStrictEqual(applied, { journal: "delete", synchronous: level, busyTimeout: 250 })
      }
      const forever = yield* pragmas.pipe(
        Effect.provide(SqliteClient.layer({ filename: ":memory:", busyTimeout: Duration.infinity }))
      )
      assert.strictEqual(forever.busyTimeout, 2 ** 31 - 1)
    }))

  it.effect(":memory: works, is private to its client, and is not switched to WAL", () =>
    Effect.gen(function*() {
      const write = Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`CREATE TABLE t (x)`
        yield* sql`INSERT INTO t VALUES (1)`
        return (yield* pragmas).journal
      })
      assert.strictEqual(yield* write.pipe(Effect.provide(memory)), "memory")
      // a second client gets its own empty database: creating the table again works
      assert.strictEqual(yield* write.pipe(Effect.provide(memory)), "memory")
    }))

  it.effect("the prepared-statement cache never holds more than prepareCacheSize statements", () =>
    Effect.gen(function*() {
      const client = yield* SqliteClient.SqliteClient
      for (let i = 0; i < 20; i++) yield* client`SELECT ${i} AS n, ${"x"} AS s${client.literal(String(i))}`
      assert.strictEqual(yield* client.cachedStatements, 5)
      for (let i = 0; i < 20; i++) yield* client`SELECT 1 AS n${client.literal(String(i % 3))}`
      assert.strictEqual(yield* client.cachedStatements, 5)
      const rows = yield* client<{ n: number }>`SELECT ${7} AS n`
      assert.deepStrictEqual(rows, [{ n: 7 }])
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:", prepareCacheSize: 5 }))))

  it.effect("a cache size of 0 caches nothing and still runs statements", () =>
    Effect.gen(function*() {
      const client = yield* SqliteClient.SqliteClient
      assert.deepStrictEqual(yield* client`SELECT ${1} AS n`, [{ n: 1 }])
      assert.deepStrictEqual(yield* client.withTransaction(client`SELECT ${2} AS n`), [{ n: 2 }])
      assert.strictEqual(yield* client.cachedStatements, 0)
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:", prepareCacheSize: 0 }))))

  it.effect("the database is closed when the layer's scope closes", () =>
    Effect.gen(function*() {
      const filename = yield* tempDatabase
      const client = yield* SqliteClient.SqliteClient.pipe(Effect.provide(SqliteClient.layer({ filename })))
      assert.isFalse(client.database.isOpen)
      const error = yield* Effect.flip(client`SELECT 1`)
      assert.strictEqual(reasonOf(error), "ConnectionError")
    }))

  it.effect("the client's config and database handle are exposed", () =>
    Effect.gen(function*() {
      const client = yield* SqliteClient.SqliteClient
      const sql = yield* SqlClient.SqlClient
      assert.strictEqual(client.config.filename, ":memory:")
      assert.isTrue(client.database.isOpen)
      assert.strictEqual(client, sql as unknown)
    }).pipe(Effect.provide(memory)))

  it.effect("layerConfig reads its options from effect/Config", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const layer = SqliteClient.layerConfig({
        filename: Config.String("SQLITE_FILE"),
        synchronous: Config.Literals(["OFF", "NORMAL", "FULL", "EXTRA"], "SQLITE_SYNCHRONOUS"),
        busyTimeout: Config.Duration("SQLITE_BUSY_TIMEOUT"),
        prepareCacheSize: Config.succeed(10)
      }).pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord({
        SQLITE_FILE: join(dir, "config.sqlite"),
        SQLITE_SYNCHRONOUS: "NORMAL",
        SQLITE_BUSY_TIMEOUT: "1 second"
      }))))
      const applied = yield* pragmas.pipe(Effect.provide(layer))
      assert.deepStrictEqual(applied, { journal: "wal", synchronous: 1, busyTimeout: 1000 })
      assert.isTrue(existsSync(join(dir, "config.sqlite")))
    }))

  it.effect("layerConfig fails with a ConfigError when a required option is missing", () =>
    Effect.gen(function*() {
      const layer = SqliteClient.layerConfig({ filename: Config.String("SQLITE_FILE") }).pipe(
        Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord({})))
      )
      const error = yield* Effect.flip(Layer.build(layer))
      assert.notStrictEqual(error._tag, "SqlError")
    }))
})
