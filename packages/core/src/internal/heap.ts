/**
 * A binary min-heap whose items know their own position, so any item can be removed or re-keyed in
 * O(log n) (the in-memory alarm index needs both: a commit replaces or cancels alarms anywhere in it).
 *
 * @internal
 */

/** An item of a {@link Heap}: the heap keeps `heapIndex` up to date (-1 while the item is in no heap). */
export interface HeapItem {
  heapIndex: number
}

export interface Heap<A extends HeapItem> {
  readonly size: () => number
  readonly peek: () => A | undefined
  readonly push: (item: A) => void
  readonly pop: () => A | undefined
  /** Removes `item` if it is in this heap; returns whether it was. */
  readonly remove: (item: A) => boolean
  readonly has: (item: A) => boolean
}

/** A new empty heap ordered by `before(a, b)` (true when `a` comes out first). */
export const make = <A extends HeapItem>(before: (a: A, b: A) => boolean): Heap<A> => {
  const items: Array<A> = []

  const place = (item: A, index: number) => {
    items[index] = item
    item.heapIndex = index
  }

  const up = (index: number) => {
    const item = items[index]!
    while (index > 0) {
      const parentIndex = (index - 1) >> 1
      const parent = items[parentIndex]!
      if (!before(item, parent)) break
      place(parent, index)
      index = parentIndex
    }
    place(item, index)
  }

  const down = (index: number) => {
    const item = items[index]!
    const n = items.length
    while (true) {
      const left = 2 * index + 1
      if (left >= n) break
      const right = left + 1
      const child = right < n && before(items[right]!, items[left]!) ? right : left
      if (!before(items[child]!, item)) break
      place(items[child]!, index)
      index = child
    }
    place(item, index)
  }

  const has = (item: A) => item.heapIndex >= 0 && items[item.heapIndex] === item

  const removeAt = (index: number): A => {
    const item = items[index]!
    const last = items.pop()!
    if (last !== item) {
      place(last, index)
      // The moved item may belong above or below its new place.
      if (index > 0 && before(last, items[(index - 1) >> 1]!)) up(index)
      else down(index)
    }
    item.heapIndex = -1
    return item
  }

  return {
    size: () => items.length,
    peek: () => items[0],
    push: (item) => {
      items.push(item)
      up(items.length - 1)
    },
    pop: () => (items.length === 0 ? undefined : removeAt(0)),
    remove: (item) => {
      if (!has(item)) return false
      removeAt(item.heapIndex)
      return true
    },
    has
  }
}
