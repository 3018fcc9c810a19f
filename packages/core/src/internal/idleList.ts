/**
 * An intrusive doubly linked list of idle objects, ordered by `idleAt` (oldest first): O(1) to remove and
 * read the head, and to add at the end (an insert searches from the end, and the usual one belongs there).
 * (A `Map` in insertion order is not: after many deletions at its front, reading its first entry walks over
 * every deleted slot until V8 rehashes, which made idle expiry quadratic under churn.)
 *
 * @internal
 */

/** What an element carries: its links, the list it is on, and the time its place reflects. */
export interface IdleNode {
  idlePrev: IdleNode | undefined
  idleNext: IdleNode | undefined
  idleList: IdleList<IdleNode> | undefined
  /** The time the element's place in its list reflects (it may have been active since). */
  idleAt: number
}

export class IdleList<N extends IdleNode> {
  head: N | undefined = undefined
  tail: N | undefined = undefined
  size = 0

  /** Removes `node` if it is on this list. */
  remove(node: N): void {
    if (node.idleList !== this) return
    if (node.idlePrev === undefined) this.head = node.idleNext as N | undefined
    else node.idlePrev.idleNext = node.idleNext
    if (node.idleNext === undefined) this.tail = node.idlePrev as N | undefined
    else node.idleNext.idlePrev = node.idlePrev
    node.idlePrev = undefined
    node.idleNext = undefined
    node.idleList = undefined
    this.size--
  }

  /** Moves `node` to its place for `at` in this list (off whichever list it was on). */
  insert(node: N, at: number): void {
    ;(node.idleList as IdleList<N> | undefined)?.remove(node)
    node.idleAt = at
    let after = this.tail as IdleNode | undefined
    while (after !== undefined && after.idleAt > at) after = after.idlePrev
    node.idlePrev = after
    node.idleNext = after === undefined ? this.head : after.idleNext
    if (node.idleNext === undefined) this.tail = node
    else node.idleNext.idlePrev = node
    if (after === undefined) this.head = node
    else after.idleNext = node
    node.idleList = this as unknown as IdleList<IdleNode>
    this.size++
  }
}
