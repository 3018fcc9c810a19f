import { SqlStorage } from "@durable-object/core"
import { SqliteClient } from "@durable-object/sql-sqlite-node"
import { Layer } from "effect"
import { alarmConformance } from "./alarmConformance.ts"
import { storageConformance } from "./storageConformance.ts"

// A fresh in-memory database per test: `:memory:` opens a new, empty one on every layer build.
storageConformance("SQLite", () => SqlStorage.layer().pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" }))))
alarmConformance("SQLite", () => SqlStorage.layer().pipe(Layer.provide(SqliteClient.layer({ filename: ":memory:" }))))
