/**
 * The layering the runtime's design rests on, checked on the sources themselves: storage sits below the
 * runtime and never reaches up into it, only the public `DurableObject` module builds runtimes, and no library
 * module depends on itself through others (type-only imports count: they tangle modules just the same).
 */
import { assert, describe, it } from "@effect/vitest"
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../../..")
const packages = join(root, "packages")

const sourcesUnder = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sourcesUnder(path)
    return entry.name.endsWith(".ts") ? [path] : []
  })

const libraryFiles = readdirSync(packages, { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .flatMap((entry) => {
    const src = join(packages, entry.name, "src")
    return readdirSync(join(packages, entry.name)).includes("src") ? sourcesUnder(src) : []
  })

// `import … from "x"`, `export … from "x"`, `import "x"` and `import("x")`, across lines.
const specifiers = /(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']/g

/** Each library file, relative to the repository, with the library files it imports. */
const graph = new Map<string, Array<string>>(
  libraryFiles.map((file) => {
    const text = readFileSync(file, "utf8")
    const imports: Array<string> = []
    for (const match of text.matchAll(specifiers)) {
      const specifier = match[1]!
      if (!specifier.startsWith(".")) continue
      imports.push(relative(root, resolve(dirname(file), specifier)))
    }
    return [relative(root, file), imports]
  })
)

const core = (path: string) => `packages/core/src/${path}`

/** Every module reachable from `start` through imports (itself excluded unless a cycle leads back). */
const reachable = (start: string): Set<string> => {
  const seen = new Set<string>()
  const stack = [...(graph.get(start) ?? [])]
  while (stack.length > 0) {
    const next = stack.pop()!
    if (seen.has(next)) continue
    seen.add(next)
    stack.push(...(graph.get(next) ?? []))
  }
  return seen
}

/** Strongly connected components of more than one module, or of one that imports itself. */
const cycles = (): Array<Array<string>> => {
  let index = 0
  const indices = new Map<string, number>()
  const lowlink = new Map<string, number>()
  const onStack = new Set<string>()
  const stack: Array<string> = []
  const found: Array<Array<string>> = []
  const visit = (node: string) => {
    indices.set(node, index)
    lowlink.set(node, index)
    index++
    stack.push(node)
    onStack.add(node)
    for (const next of graph.get(node) ?? []) {
      if (!graph.has(next)) continue
      if (!indices.has(next)) {
        visit(next)
        lowlink.set(node, Math.min(lowlink.get(node)!, lowlink.get(next)!))
      } else if (onStack.has(next)) {
        lowlink.set(node, Math.min(lowlink.get(node)!, indices.get(next)!))
      }
    }
    if (lowlink.get(node) === indices.get(node)) {
      const component: Array<string> = []
      let member: string
      do {
        member = stack.pop()!
        onStack.delete(member)
        component.push(member)
      } while (member !== node)
      if (component.length > 1 || (graph.get(node) ?? []).includes(node)) found.push(component.toSorted())
    }
  }
  for (const node of graph.keys()) if (!indices.has(node)) visit(node)
  return found
}

describe("module layering", () => {
  it("the graph covers the library: every package's sources, internal modules included", () => {
    assert.isTrue(graph.has(core("internal/runtime.ts")))
    assert.isTrue(graph.has(core("Storage.ts")))
    assert.isTrue(graph.has("packages/sql-sqlite-node/src/SqliteClient.ts"))
    for (const [file, imports] of graph) {
      for (const target of imports) assert.isTrue(graph.has(target), `${file} imports ${target}, which is no source`)
    }
  })

  it("no library module depends on itself through its imports", () => {
    assert.deepStrictEqual(cycles(), [])
  })

  it("storage never reaches up into the runtime, the call path or the public object API", () => {
    const above = [
      "DurableObject.ts",
      "DurableObjectTest.ts",
      "DurableObjectCluster.ts",
      "internal/cluster.ts",
      "internal/runtime.ts",
      "internal/call.ts",
      "internal/commit.ts",
      "internal/instance.ts",
      "internal/lifecycle.ts",
      "internal/alarmRunner.ts",
      "internal/userCode.ts"
    ].map(core)
    for (const storage of ["Storage.ts", "SqlStorage.ts", "internal/memoryStorage.ts"].map(core)) {
      const reached = reachable(storage)
      assert.deepStrictEqual(above.filter((module) => reached.has(module)), [], `${storage} reaches them`)
    }
  })

  it("only DurableObject.ts and cluster mode's owner side build runtimes: nothing else imports internal/runtime.ts", () => {
    const importers = Array.from(graph).filter(([, imports]) => imports.includes(core("internal/runtime.ts")))
    assert.deepStrictEqual(
      importers.map(([file]) => file).toSorted(),
      [
        core("DurableObject.ts"),
        core("internal/cluster.ts")
      ].toSorted()
    )
  })
})
