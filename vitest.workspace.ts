// The test projects, one per package. Vitest 5 no longer reads this file by itself:
// vitest.config.ts passes the list to `test.projects`. packages/cli runs on its own (`npm run test:cli`).
export default [
  "packages/sql-sqlite-node",
  "packages/core",
  "packages/examples",
  "packages/bench"
]
