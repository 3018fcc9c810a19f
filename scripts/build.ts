// Builds the library package in the current directory (its `build` and `prepack` scripts run this): removes dist/,
// then TypeScript's own emit from tsconfig.build.json (.js with `.ts` imports rewritten to `.js`, .d.ts, source and
// declaration maps). A fresh dist/ every time, so a file removed from src/ never lingers in a tarball.
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, rmSync } from "node:fs"

if (!existsSync("tsconfig.build.json")) {
  console.error(`build: no tsconfig.build.json in ${process.cwd()}`)
  process.exit(1)
}
rmSync("dist", { recursive: true, force: true })
// `tsc` is found on the PATH npm gives its scripts (the workspace root's node_modules/.bin).
execFileSync("tsc", ["-p", "tsconfig.build.json"], { stdio: "inherit", shell: process.platform === "win32" })
if (!existsSync("dist/index.js") || !existsSync("dist/index.d.ts")) {
  console.error(`build: tsc wrote no dist/index.js and dist/index.d.ts in ${process.cwd()}`)
  process.exit(1)
}
console.error(
  `build: ${process.env.npm_package_name ?? process.cwd()} -> dist/ (${readdirSync("dist").length} entries)`
)
