/**
 * An ordered set of index entries: the stand-in for one Convex index B-tree.
 *
 * Entries are kept in chunks of at most MAX_CHUNK sorted entries, so an
 * insert or delete moves a few hundred pointers instead of the whole table
 * (a flat sorted array of 100k entries costs ~25 µs per splice, and a
 * mutation touches every index of every document it writes). Positions are
 * global (0..size-1) so a range can be read like an array.
 *
 * Keys are compared with `compareValues` from `convex/values`, the function
 * convex-test sorts and filters with, so this order is its order.
 *
 * The commit path writes thousands of entries per transaction, mostly next
 * to each other (a page of records read in index order moves into one new
 * range, e.g. `status: "deleted"`, in the same order), so two shortcuts keep
 * comparisons off it, each checked before it is taken:
 *
 *  - `insert` first tries the position right after the previous insert: two
 *    comparisons with the would-be neighbours instead of a binary search;
 *  - `removeEntry` removes an entry the caller holds (the indexes keep every
 *    document's entries) by identity: each entry knows its chunk, so no key
 *    is compared at all.
 */
import { compareValues, type Value } from "convex/values";

export type IndexKey = (Value | undefined)[];

export interface IndexEntry<D> {
  key: IndexKey;
  doc: D;
}

const MAX_CHUNK = 512;

/** Lexicographic comparison over the first `bound.length` fields. */
export function comparePrefix(key: IndexKey, bound: IndexKey): number {
  for (let i = 0; i < bound.length; i++) {
    const c = compareKeyValues(key[i], bound[i]);
    if (c !== 0) return c;
  }
  return 0;
}

/**
 * `compareValues`, with its sign, for one key field. Index maintenance spends
 * most of its time here, and `compareValues` wraps both sides in fresh tuples
 * (`makeComparable`) on every call, so the common cases are answered
 * directly and everything else goes to `compareValues`:
 *
 *  - two strings: UTF-16 code units order like code points (hence like
 *    UTF-8 bytes, Convex's order) unless one of the first differing units is
 *    a surrogate, which goes to `compareValues`;
 *  - two numbers, neither NaN nor a zero (-0 sorts before 0): `<`.
 */
export function compareKeyValues(a: Value | undefined, b: Value | undefined): number {
  if (typeof a === "string" && typeof b === "string") {
    if (a === b) return 0;
    const n = Math.min(a.length, b.length);
    for (let i = 0; i < n; i++) {
      const x = a.charCodeAt(i);
      const y = b.charCodeAt(i);
      if (x === y) continue;
      if ((x & 0xf800) === 0xd800 || (y & 0xf800) === 0xd800) return compareValues(a, b);
      return x - y;
    }
    return a.length - b.length;
  }
  if (typeof a === "number" && typeof b === "number" && a === a && b === b && a !== 0 && b !== 0) {
    return a < b ? -1 : a > b ? 1 : 0;
  }
  return compareValues(a as Value, b as Value);
}

/** An entry as stored: it also knows the chunk holding it (kept up to date on splits). */
type Slot<D> = IndexEntry<D> & { chunk?: IndexEntry<D>[] };

export class SortedIndex<D> {
  private chunks: IndexEntry<D>[][] = [];
  private starts: number[] | null = null; // global position of each chunk's first entry
  private _size = 0;
  /** Where the previous insert put its entry: `hintChunk[hintPos - 1]`. */
  private hintChunk: IndexEntry<D>[] | null = null;
  private hintPos = 0;

  get size(): number {
    return this._size;
  }

  /** Insert an entry whose key is not already present (keys end in `_id`). */
  insert(entry: IndexEntry<D>): void {
    this.starts = null;
    this._size += 1;
    if (this.chunks.length === 0) {
      const first = [entry];
      this.chunks.push(first);
      (entry as Slot<D>).chunk = first;
      this.hintChunk = first;
      this.hintPos = 1;
      return;
    }
    let chunk: IndexEntry<D>[];
    let at = this.hinted(entry.key);
    if (at >= 0) {
      chunk = this.hintChunk!;
    } else {
      chunk = this.chunks[this.chunkFor(entry.key)];
      at = lowerBoundIn(chunk, entry.key);
    }
    chunk.splice(at, 0, entry);
    (entry as Slot<D>).chunk = chunk;
    this.hintChunk = chunk;
    this.hintPos = at + 1;
    if (chunk.length > MAX_CHUNK) {
      const ci = this.chunks.indexOf(chunk);
      const upper = chunk.splice(chunk.length >> 1);
      for (const moved of upper) (moved as Slot<D>).chunk = upper;
      this.chunks.splice(ci + 1, 0, upper);
      this.hintChunk = null;
    }
  }

  /**
   * The position in `hintChunk` right after the previous insert, if `key`
   * belongs exactly there (strictly between its neighbours); else -1.
   */
  private hinted(key: IndexKey): number {
    const chunk = this.hintChunk;
    const at = this.hintPos;
    // A chunk leaves `chunks` only when it is empty, so a non-empty one is still in use.
    if (chunk === null || at === 0 || at > chunk.length) return -1;
    if (comparePrefix(chunk[at - 1].key, key) >= 0) return -1;
    if (at < chunk.length) return comparePrefix(chunk[at].key, key) > 0 ? at : -1;
    // At the end of its chunk: only the last chunk has no next neighbour to check.
    return chunk === this.chunks[this.chunks.length - 1] ? at : -1;
  }

  /** Remove the entry with exactly this key; returns whether one was found. */
  remove(key: IndexKey): boolean {
    const found = this.find(key);
    if (found === null) return false;
    this.removeAt(found[0], found[1]);
    return true;
  }

  /**
   * Remove this very entry (one `insert` was given); by identity, no key
   * compared. Falls back to `remove(entry.key)` for an entry it does not hold.
   */
  removeEntry(entry: IndexEntry<D>): boolean {
    const chunk = (entry as Slot<D>).chunk;
    const i = chunk === undefined ? -1 : chunk.indexOf(entry);
    if (i < 0) return this.remove(entry.key);
    (entry as Slot<D>).chunk = undefined;
    this.removeAt(this.chunks.indexOf(chunk!), i);
    return true;
  }

  private removeAt(ci: number, i: number): void {
    this.starts = null;
    this._size -= 1;
    const chunk = this.chunks[ci];
    chunk.splice(i, 1);
    if (chunk === this.hintChunk && i < this.hintPos) this.hintPos -= 1;
    if (chunk.length === 0) this.chunks.splice(ci, 1);
  }

  /** Replace the document of the entry with exactly this key. */
  replaceDoc(key: IndexKey, doc: D): boolean {
    const found = this.find(key);
    if (found === null) return false;
    this.chunks[found[0]][found[1]].doc = doc;
    return true;
  }

  /**
   * Global position of the first entry for which `isAtOrAfter(key)` holds.
   * `isAtOrAfter` must be monotone over the index order (false…false true…true).
   */
  firstWhere(isAtOrAfter: (key: IndexKey) => boolean): number {
    const chunks = this.chunks;
    let lo = 0;
    let hi = chunks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const c = chunks[mid];
      if (isAtOrAfter(c[c.length - 1].key)) hi = mid;
      else lo = mid + 1;
    }
    if (lo === chunks.length) return this._size;
    const chunk = chunks[lo];
    let a = 0;
    let b = chunk.length;
    while (a < b) {
      const mid = (a + b) >> 1;
      if (isAtOrAfter(chunk[mid].key)) b = mid;
      else a = mid + 1;
    }
    return this.chunkStarts()[lo] + a;
  }

  /** A reader for positions; sequential reads cost O(1) each. */
  reader(): (pos: number) => IndexEntry<D> {
    const starts = this.chunkStarts();
    const chunks = this.chunks;
    let ci = 0;
    return (pos: number) => {
      if (pos < starts[ci] || pos >= starts[ci] + chunks[ci].length) {
        ci = upperBound(starts, pos) - 1;
      }
      return chunks[ci][pos - starts[ci]];
    };
  }

  *entries(): IterableIterator<IndexEntry<D>> {
    for (const chunk of this.chunks) yield* chunk;
  }

  private chunkFor(key: IndexKey): number {
    // The first chunk whose last key is >= key, or the last chunk.
    const chunks = this.chunks;
    let lo = 0;
    let hi = chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const c = chunks[mid];
      if (comparePrefix(c[c.length - 1].key, key) >= 0) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  private find(key: IndexKey): [number, number] | null {
    if (this.chunks.length === 0) return null;
    const ci = this.chunkFor(key);
    const chunk = this.chunks[ci];
    const i = lowerBoundIn(chunk, key);
    if (i < chunk.length && comparePrefix(chunk[i].key, key) === 0) return [ci, i];
    return null;
  }

  private chunkStarts(): number[] {
    if (this.starts === null) {
      const starts = new Array<number>(this.chunks.length);
      let total = 0;
      for (let i = 0; i < this.chunks.length; i++) {
        starts[i] = total;
        total += this.chunks[i].length;
      }
      this.starts = starts;
    }
    return this.starts;
  }
}

function lowerBoundIn<D>(chunk: IndexEntry<D>[], key: IndexKey): number {
  let a = 0;
  let b = chunk.length;
  while (a < b) {
    const mid = (a + b) >> 1;
    if (comparePrefix(chunk[mid].key, key) < 0) a = mid + 1;
    else b = mid;
  }
  return a;
}

/** First index i with sorted[i] > value. */
function upperBound(sorted: number[], value: number): number {
  let a = 0;
  let b = sorted.length;
  while (a < b) {
    const mid = (a + b) >> 1;
    if (sorted[mid] <= value) a = mid + 1;
    else b = mid;
  }
  return a;
}
