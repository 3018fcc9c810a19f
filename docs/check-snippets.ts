/**
 * Keeps the TypeScript in the documentation compiling.
 *
 * Every ```ts block in `docs/*.md` and `README.md` must be a copy of a real file under `docs/snippets/` (which
 * `npm run check` type-checks, and whose `*.test.ts` files the examples test project runs), announced by a
 * comment on the line before the block:
 *
 *     <!-- snippet: docs/snippets/counter.ts -->            the whole file
 *     <!-- snippet: docs/snippets/counter.ts#define -->     the lines between `// #region define` and
 *                                                          `// #endregion define` in that file
 *
 * `node docs/check-snippets.ts` fails (exit 1) when a block has no such comment, names a missing file or region,
 * or differs from it by a single character. `node docs/check-snippets.ts --write` copies the files into the
 * blocks instead: edit the `.ts` file, then run it.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { dirname, join, relative } from "node:path"
import { fileURLToPath } from "node:url"

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const write = process.argv.includes("--write")

const markdownFiles = [
  join(root, "README.md"),
  ...readdirSync(join(root, "docs")).filter((f) => f.endsWith(".md")).map((f) => join(root, "docs", f))
].filter((f) => existsSync(f))

const marker = /^<!--\s*snippet:\s*(\S+?)(?:#([\w-]+))?\s*-->\s*$/
const fence = /^(\s*)(```|~~~)\s*(\w*)\s*$/
const typescript = new Set(["ts", "typescript", "tsx", "mts", "cts"])

/** The text a snippet reference stands for, or an error message. */
const resolve = (path: string, region: string | undefined): { text: string } | { error: string } => {
  if (!path.startsWith("docs/snippets/")) return { error: `${path} is not under docs/snippets/` }
  const file = join(root, path)
  if (!existsSync(file)) return { error: `${path} does not exist` }
  const lines = readFileSync(file, "utf8").replace(/\n$/, "").split("\n")
  if (region === undefined) return { text: lines.join("\n") }
  const start = lines.findIndex((l) => l.trim() === `// #region ${region}`)
  const end = lines.findIndex((l, i) => i > start && l.trim() === `// #endregion ${region}`)
  if (start < 0 || end < 0) return { error: `${path} has no region "${region}"` }
  return { text: lines.slice(start + 1, end).join("\n") }
}

const problems: Array<string> = []
let blocks = 0

for (const file of markdownFiles) {
  const name = relative(root, file)
  const lines = readFileSync(file, "utf8").split("\n")
  const out: Array<string> = []
  let changed = false
  for (let i = 0; i < lines.length; i++) {
    const open = fence.exec(lines[i]!)
    if (open === null) {
      out.push(lines[i]!)
      continue
    }
    const [, indent, ticks, language] = open
    let close = i + 1
    while (close < lines.length && lines[close]!.trim() !== ticks) close++
    const body = lines.slice(i + 1, close)
    const block = lines.slice(i, close + 1)
    if (!typescript.has(language!)) {
      out.push(...block)
      i = close
      continue
    }
    blocks++
    if (indent !== "" || ticks !== "```") {
      problems.push(`${name}:${i + 1}: ts blocks must be fenced with \`\`\` at the start of the line`)
      out.push(...block)
      i = close
      continue
    }
    const previous = out.findLast((l) => l.trim() !== "")
    const reference = previous === undefined ? null : marker.exec(previous.trim())
    if (reference === null) {
      problems.push(`${name}:${i + 1}: a ts block without a <!-- snippet: docs/snippets/… --> comment before it`)
      out.push(...block)
    } else {
      const resolved = resolve(reference[1]!, reference[2])
      if ("error" in resolved) {
        problems.push(`${name}:${i + 1}: ${resolved.error}`)
        out.push(...block)
      } else if (resolved.text !== body.join("\n")) {
        if (write) changed = true
        else {
          problems.push(`${name}:${i + 1}: differs from ${reference[1]}${reference[2] ? `#${reference[2]}` : ""}`)
        }
        out.push(lines[i]!, ...resolved.text.split("\n"), "```")
      } else {
        out.push(...block)
      }
    }
    i = close
  }
  if (changed) {
    writeFileSync(file, out.join("\n"))
    console.log(`docs: updated ${name}`)
  }
}

if (problems.length > 0) {
  console.error(problems.join("\n"))
  console.error(
    `docs: ${problems.length} snippet problem(s). Every \`\`\`ts block in README.md and docs/*.md copies a file (or a`
      + ` // #region of one) under docs/snippets/, named by <!-- snippet: docs/snippets/file.ts#region --> on the`
      + ` line before it. Edit the file, then run \`node docs/check-snippets.ts --write\` to copy it in.`
  )
  process.exitCode = 1
} else {
  console.log(`docs: ${blocks} TypeScript blocks in ${markdownFiles.length} files match their checked snippets`)
}
