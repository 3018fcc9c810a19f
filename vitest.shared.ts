// Inside this repository our packages are used from their TypeScript sources, never from a build: their `exports`
// put the `@durable-object/source` condition first (./src/*.ts), then the built ./dist for everyone else. The type
// checker opts in through tsconfig.json's `customConditions`, npm scripts through .npmrc's `node-options`, and
// Vitest (Vite's resolver, and the Node processes the tests start) through this file, so no test can pick up a
// stale or missing dist/.
import { defaultClientConditions, defaultServerConditions } from "vite"

/** The export condition that selects a workspace package's TypeScript sources. */
export const sourceCondition = "@durable-object/source"

/** Vite resolve options for a test project: the source condition first, then Vite's defaults. */
export const fromSource = {
  resolve: { conditions: [sourceCondition, ...defaultClientConditions] },
  ssr: { resolve: { conditions: [sourceCondition, ...defaultServerConditions] } }
}

const flag = `--conditions=${sourceCondition}`
// Node processes the tests start (the crash-safety worker, the demo and bench smoke tests) inherit the condition.
if (!(process.env.NODE_OPTIONS ?? "").includes(flag)) {
  process.env.NODE_OPTIONS = [process.env.NODE_OPTIONS, flag].filter(Boolean).join(" ")
}
