/**
 * An intrusive doubly linked list of idle objects, oldest first: O(1) to append, remove and read the head.
 * (A `Map` in insertion order is not: after many deletions at its front, reading its first entry walks over
 * every deleted slot until V8 rehashes, which made idle expiry quadratic under churn.)
 *
 * @internal
 */

/** What an element carries: its links, and the list it is on. */
export interface IdleNode {
  idlePrev: IdleNode | undefined
  idleNext: IdleNode | undefined
  idleList: IdleList<IdleNode> | undefined
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

  /** Moves `node` to the end of this list (off whichever list it was on). */
  append(node: N): void {
    ;(node.idleList as IdleList<N> | undefined)?.remove(node)
    node.idlePrev = this.tail
    node.idleNext = undefined
    if (this.tail === undefined) this.head = node
    else this.tail.idleNext = node
    this.tail = node
    node.idleList = this as unknown as IdleList<IdleNode>
    this.size++
  }
}
