/**
 * Durable Objects for Effect: persistent, single-instance, schema-typed actors with transactional handlers.
 *
 * @since 0.1.0
 */

/**
 * Durable alarms: the API, the guarantee, retries, and the scheduler.
 *
 * @since 0.1.0
 */
export * as Alarms from "./Alarms.ts"

/**
 * Define durable objects, call them, stop and delete them.
 *
 * @since 0.1.0
 */
export * as DurableObject from "./DurableObject.ts"

/**
 * Cluster mode: objects served by the runners of an `effect/cluster`, one live copy each, calls routed to it.
 *
 * @since 0.2.0
 */
export * as DurableObjectCluster from "./DurableObjectCluster.ts"

/**
 * Durable objects over HTTP, derived from their definitions with `effect/http-api`: handler endpoints, admin
 * endpoints behind a bearer token, OpenAPI and typed clients.
 *
 * @since 0.1.0
 */
export * as DurableObjectHttpApi from "./DurableObjectHttpApi.ts"

/**
 * A web inspector for stored objects and alarms, as an HTTP layer to mount, or standalone on a database.
 *
 * @since 0.1.0
 */
export * as DurableObjectInspector from "./DurableObjectInspector.ts"

/**
 * Test kit: in-memory storage under `TestClock`, reading persisted state, running a handler without a runtime.
 *
 * @since 0.1.0
 */
export * as DurableObjectTest from "./DurableObjectTest.ts"

/**
 * The typed errors.
 *
 * @since 0.1.0
 */
export * as Errors from "./Errors.ts"

/**
 * A time-sliced scheduler that keeps the event loop responsive under many runnable fibers.
 *
 * @since 0.1.0
 */
export * as FairScheduler from "./FairScheduler.ts"

/**
 * `Storage` over any effect/sql `SqlClient` (PostgreSQL, SQLite), with migrations.
 *
 * @since 0.1.0
 */
export * as SqlStorage from "./SqlStorage.ts"

/**
 * The storage service and its in-memory layer.
 *
 * @since 0.1.0
 */
export * as Storage from "./Storage.ts"

/**
 * Span and metric names.
 *
 * @since 0.1.0
 */
export * as Telemetry from "./Telemetry.ts"
