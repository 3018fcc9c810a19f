import { defineConfig } from "vitest/config"
import projects from "./vitest.workspace.ts"

export default defineConfig({
  test: {
    projects,
    globalSetup: ["./scripts/vitest-global-setup.ts"]
  }
})
