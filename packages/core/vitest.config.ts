import { defineProject } from "vitest/config"
import { fromSource } from "../../vitest.shared.ts"

export default defineProject({
  ...fromSource,
  test: {
    name: "core",
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
