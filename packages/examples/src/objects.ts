/**
 * The demo's durable objects: the Elixir original's `Counter` and `RateLimiter`, and a `ShoppingCart` that
 * expires on an alarm when it is left alone.
 */
import { DurableObject } from "@durable-object/core"
import { Context, DateTime, type Duration, Effect, Schema } from "effect"

/** Timings the objects read at run time, so the smoke run can use a one-second window and expiry. */
export class DemoSettings extends Context.Service<DemoSettings, {
  /** How long a rate-limiter window lasts. */
  readonly rateLimitWindow: Duration.Duration
  /** How long a cart lives after its last change. */
  readonly cartTtl: Duration.Duration
}>()("@durable-object/examples/DemoSettings") {}

// -----------------------------------------------------------------------------------------------------------
// Counter: the original's first example
// -----------------------------------------------------------------------------------------------------------

export const Counter = DurableObject.defineObject({
  name: "Counter",
  state: Schema.Struct({ count: Schema.Int, lastIncrementedAt: Schema.NullOr(Schema.DateTimeUtc) }),
  initialState: () => ({ count: 0, lastIncrementedAt: null }),
  handlers: {
    /** Adds `amount` (default 1) and returns the new count. */
    increment: {
      payload: Schema.Struct({ amount: Schema.optionalKey(Schema.Int) }),
      success: Schema.Int,
      handle: ({ amount = 1 }, ctx) =>
        Effect.flatMap(DateTime.now, (now) =>
          ctx.state.modify((s) => {
            const count = s.count + amount
            return [count, { count, lastIncrementedAt: now }]
          }))
    },
    get: { success: Schema.Int, handle: (_, ctx) => Effect.map(ctx.state.get, (s) => s.count) },
    reset: { handle: (_, ctx) => ctx.state.update((s) => ({ ...s, count: 0 })) }
  },
  options: { hibernateAfter: "5 minutes", shutdownAfter: "1 hour" }
})

// -----------------------------------------------------------------------------------------------------------
// RateLimiter: the original's alarm example
// -----------------------------------------------------------------------------------------------------------

/** A request over the limit of the current window (HTTP 429). */
export class RateLimited extends Schema.TaggedError<RateLimited>()("RateLimited", {
  limit: Schema.Int,
  windowStart: Schema.DateTimeUtc
}, { httpApiStatus: 429 }) {
  override get message(): string {
    return `More than ${this.limit} requests in this window; try again when it resets`
  }
}

/**
 * A fixed-window rate limiter. The first `check` opens a window and schedules the `resetWindow` alarm; the
 * alarm resets the count and opens the next window. (The original opens the window in `after_load` and
 * re-arms forever; here a window that saw no requests closes instead, so an idle limiter stops waking up.)
 */
export const RateLimiter = DurableObject.defineObject({
  name: "RateLimiter",
  state: Schema.Struct({ requests: Schema.Int, windowStart: Schema.NullOr(Schema.DateTimeUtc) }),
  initialState: () => ({ requests: 0, windowStart: null }),
  services: [DemoSettings],
  handlers: {
    /** Counts a request against `limit` per window: `"allowed"`, or fails with `RateLimited`. */
    check: {
      payload: Schema.Struct({ limit: Schema.Int.check(Schema.isGreaterThan(0)) }),
      success: Schema.Literal("allowed"),
      error: RateLimited,
      handle: ({ limit }, ctx) =>
        Effect.gen(function*() {
          const state = yield* ctx.state.get
          if (state.windowStart === null) {
            const { rateLimitWindow } = yield* DemoSettings
            yield* ctx.state.set({ requests: 0, windowStart: yield* DateTime.now })
            yield* ctx.alarms.schedule("resetWindow", { in: rateLimitWindow })
          }
          const current = yield* ctx.state.get
          if (current.requests >= limit) {
            return yield* new RateLimited({ limit, windowStart: current.windowStart ?? (yield* DateTime.now) })
          }
          yield* ctx.state.set({ ...current, requests: current.requests + 1 })
          return "allowed" as const
        })
    }
  },
  alarms: {
    resetWindow: {
      handle: (_, ctx) =>
        Effect.gen(function*() {
          const { requests } = yield* ctx.state.get
          if (requests === 0) return yield* ctx.state.set({ requests: 0, windowStart: null })
          const { rateLimitWindow } = yield* DemoSettings
          yield* ctx.state.set({ requests: 0, windowStart: yield* DateTime.now })
          yield* ctx.alarms.schedule("resetWindow", { in: rateLimitWindow })
        })
    }
  }
})

// -----------------------------------------------------------------------------------------------------------
// ShoppingCart: state, typed errors, an expiry alarm, and a call to another object
// -----------------------------------------------------------------------------------------------------------

const Sku = Schema.NonEmptyString.check(Schema.isMaxLength(64))
const Quantity = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 99 }))
const Line = Schema.Struct({ sku: Sku, quantity: Quantity })
const maxLines = 20

// Each error says which HTTP status it answers with (`DurableObjectHttpApi`; 422 without one).

export class EmptyCart extends Schema.TaggedError<EmptyCart>()("EmptyCart", {}, { httpApiStatus: 409 }) {
  override get message(): string {
    return "The cart is empty: add something before checking out"
  }
}

export class NotInCart extends Schema.TaggedError<NotInCart>()("NotInCart", { sku: Schema.String }, {
  httpApiStatus: 404
}) {
  override get message(): string {
    return `The cart holds no ${JSON.stringify(this.sku)}`
  }
}

export class CartFull extends Schema.TaggedError<CartFull>()("CartFull", { maxLines: Schema.Int }, {
  httpApiStatus: 409
}) {
  override get message(): string {
    return `A cart holds at most ${this.maxLines} different items`
  }
}

export class OrderNumberUnavailable extends Schema.TaggedError<OrderNumberUnavailable>()("OrderNumberUnavailable", {
  reason: Schema.String
}, { httpApiStatus: 503 }) {
  override get message(): string {
    return `No order number could be taken (${this.reason}); the cart is unchanged, try again`
  }
}

const CartState = Schema.Struct({
  lines: Schema.Array(Line),
  /** When the cart empties itself unless it changes before (null while empty). */
  expiresAt: Schema.NullOr(Schema.DateTimeUtc),
  /** How many times the cart expired. */
  expirations: Schema.Int,
  orders: Schema.Array(Schema.Struct({ orderNumber: Schema.Int, lines: Schema.Array(Line), at: Schema.DateTimeUtc }))
})
type CartState = typeof CartState.Type

const CartView = Schema.Struct({
  lines: Schema.Array(Line),
  expiresAt: Schema.NullOr(Schema.DateTimeUtc),
  expirations: Schema.Int,
  orders: Schema.Int
})

const view = (s: CartState): typeof CartView.Type => ({
  lines: s.lines,
  expiresAt: s.expiresAt,
  expirations: s.expirations,
  orders: s.orders.length
})

/** Order numbers come from one `Counter`, so they are unique across carts (a failed checkout leaves a gap). */
export const orderNumbers = "order-numbers"

/**
 * A shopping cart per customer. Every change pushes its expiry back by `cartTtl` (one alarm, re-scheduled by
 * name); when the alarm fires the cart empties itself. Checking out takes an order number from a `Counter`,
 * records the order and cancels the expiry.
 */
export const ShoppingCart = DurableObject.defineObject({
  name: "ShoppingCart",
  state: CartState,
  initialState: (): CartState => ({ lines: [], expiresAt: null, expirations: 0, orders: [] }),
  services: [DemoSettings, Counter.runtime],
  handlers: {
    /** Adds `quantity` of `sku` (at most 99 of one item). */
    add: {
      payload: Line,
      success: CartView,
      error: CartFull,
      handle: ({ quantity, sku }, ctx) =>
        Effect.gen(function*() {
          const { cartTtl } = yield* DemoSettings
          const state = yield* ctx.state.get
          const existing = state.lines.find((l) => l.sku === sku)
          if (existing === undefined && state.lines.length >= maxLines) return yield* new CartFull({ maxLines })
          const lines = existing === undefined
            ? [...state.lines, { sku, quantity }]
            : state.lines.map((l) => (l.sku === sku ? { sku, quantity: Math.min(99, l.quantity + quantity) } : l))
          const expiresAt = DateTime.addDuration(yield* DateTime.now, cartTtl)
          yield* ctx.alarms.schedule("expire", { at: expiresAt })
          yield* ctx.state.set({ ...state, lines, expiresAt })
          return view(yield* ctx.state.get)
        })
    },
    /** Removes an item entirely. */
    remove: {
      payload: Schema.Struct({ sku: Sku }),
      success: CartView,
      error: NotInCart,
      handle: ({ sku }, ctx) =>
        Effect.gen(function*() {
          const { cartTtl } = yield* DemoSettings
          const state = yield* ctx.state.get
          if (!state.lines.some((l) => l.sku === sku)) return yield* new NotInCart({ sku })
          const lines = state.lines.filter((l) => l.sku !== sku)
          let expiresAt: DateTime.Utc | null = null
          if (lines.length === 0) yield* ctx.alarms.cancel("expire")
          else {
            expiresAt = DateTime.addDuration(yield* DateTime.now, cartTtl)
            yield* ctx.alarms.schedule("expire", { at: expiresAt })
          }
          yield* ctx.state.set({ ...state, lines, expiresAt })
          return view(yield* ctx.state.get)
        })
    },
    view: { success: CartView, handle: (_, ctx) => Effect.map(ctx.state.get, view) },
    /** Turns the cart into an order, numbered by the `order-numbers` counter. */
    checkout: {
      success: Schema.Struct({ orderNumber: Schema.Int, lines: Schema.Array(Line) }),
      error: Schema.Union([EmptyCart, OrderNumberUnavailable]),
      handle: (_, ctx) =>
        Effect.gen(function*() {
          const state = yield* ctx.state.get
          if (state.lines.length === 0) return yield* new EmptyCart()
          // A call to another object: it commits on its own, before this handler's changes do.
          const orderNumber = yield* Counter.client(orderNumbers).increment({}).pipe(
            Effect.mapError((error) => new OrderNumberUnavailable({ reason: error._tag }))
          )
          const at = yield* DateTime.now
          yield* ctx.alarms.cancel("expire")
          yield* ctx.state.set({
            ...state,
            lines: [],
            expiresAt: null,
            orders: [...state.orders, { orderNumber, lines: state.lines, at }]
          })
          return { orderNumber, lines: state.lines }
        })
    }
  },
  alarms: {
    /** The cart was left alone for `cartTtl`: empty it. */
    expire: {
      handle: (_, ctx) =>
        ctx.state.update((s) => ({ ...s, lines: [], expiresAt: null, expirations: s.expirations + 1 }))
    }
  },
  options: { hibernateAfter: "1 minute", shutdownAfter: "10 minutes" }
})
