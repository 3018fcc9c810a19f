import { defineProject } from "vitest/config"
import { fromSource } from "../../vitest.shared.ts"

export default defineProject({
  ...fromSource,
  test: {
    name: "examples",
    // The demo's smoke test, and the documentation's snippets that are tests (docs/snippets/*.test.ts), so the
    // examples the docs show are run, not only type-checked.
    include: ["test/**/*.test.ts", "../../docs/snippets/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
