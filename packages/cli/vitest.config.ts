import { defineProject } from "vitest/config"
import { fromSource } from "../../vitest.shared.ts"

export default defineProject({
  ...fromSource,
  test: {
    name: "cli",
    include: ["test/**/*.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000
  }
})
