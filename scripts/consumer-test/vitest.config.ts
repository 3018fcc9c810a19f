// The consumer test (consumer.test.ts): its own run after the workspace's tests (`npm run test:consumer`, the last
// step of `npm test`), so packing and installing never compete with the timing-sensitive tests for the CPU.
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    name: "consumer",
    root: import.meta.dirname,
    include: ["consumer.test.ts"],
    testTimeout: 120_000,
    hookTimeout: 600_000
  }
})
