import { defineConfig } from "vitest/config"
import projects from "./vitest.workspace.ts"
import "./vitest.shared.ts"

export default defineConfig({
  test: {
    projects,
    globalSetup: ["./scripts/vitest-global-setup.ts"]
  }
})
