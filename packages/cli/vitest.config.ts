// The command line's tests: their own run after the workspace's tests (`npm run test:cli`, a step of `npm test`),
// because they start dozens of Node processes (the real executable, the demo, a browser), which must not compete
// for the CPU with the workspace's timing-sensitive tests (event-loop fairness, alarm lateness).
import { defineConfig } from "vitest/config"
import { fromSource } from "../../vitest.shared.ts"

export default defineConfig({
  ...fromSource,
  test: {
    name: "cli",
    root: import.meta.dirname,
    include: ["test/**/*.test.ts"],
    globalSetup: ["../../scripts/vitest-global-setup.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000
  }
})
