/**
 * Reading an index range: the bounds of an `eq* [lower] [upper]` range as
 * convex-test's query states it, their positions in a `SortedIndex`, and a
 * lazy array-like view of those positions that stands in for convex-test's
 * sorted document list.
 */
import type { Value } from "convex/values";
import { boundValue, type Doc, type RangeExpr } from "./convex_test_internals";
import type { IndexDef } from "./indexed_tables";
import { comparePrefix, type IndexKey, type SortedIndex } from "./sorted_index";

const LAZY_VIEW = Symbol.for("convex_local.lazyView");

/** Where an index range starts and ends, applicable to any SortedIndex of that index. */
export interface RangeBounds {
  isAtOrAfterStart: (key: IndexKey) => boolean;
  isPastEnd: (key: IndexKey) => boolean;
}

export function positions(entries: SortedIndex<Doc>, bounds: RangeBounds): { start: number; end: number } {
  const start = entries.firstWhere(bounds.isAtOrAfterStart);
  const end = entries.firstWhere(bounds.isPastEnd);
  return { start, end: Math.max(start, end) };
}

/**
 * The bounds of an index range, or null when the range is not the
 * `eq* [lower] [upper]` shape we can plan (convex-test then handles it,
 * errors included).
 */
export function planRange(index: Pick<IndexDef, "fields">, range: RangeExpr[]): RangeBounds | null {
  const eqs: IndexKey = [];
  let lower: { value: Value | undefined; inclusive: boolean } | null = null;
  let upper: { value: Value | undefined; inclusive: boolean } | null = null;
  for (const expr of range) {
    const bound = boundValue(expr.value);
    if (bound === null) return null;
    if (expr.type === "Eq") {
      if (lower || upper || expr.fieldPath !== index.fields[eqs.length]) return null;
      eqs.push(bound.value);
      continue;
    }
    if (expr.fieldPath !== index.fields[eqs.length]) return null;
    if (expr.type === "Gt" || expr.type === "Gte") {
      if (lower) return null;
      lower = { value: bound.value, inclusive: expr.type === "Gte" };
    } else if (expr.type === "Lt" || expr.type === "Lte") {
      if (upper) return null;
      upper = { value: bound.value, inclusive: expr.type === "Lte" };
    } else {
      return null;
    }
  }
  let isAtOrAfterStart: (k: IndexKey) => boolean;
  if (lower) {
    const b = [...eqs, lower.value];
    isAtOrAfterStart = lower.inclusive ? (k) => comparePrefix(k, b) >= 0 : (k) => comparePrefix(k, b) > 0;
  } else {
    isAtOrAfterStart = (k) => comparePrefix(k, eqs) >= 0;
  }
  let isPastEnd: (k: IndexKey) => boolean;
  if (upper) {
    const b = [...eqs, upper.value];
    isPastEnd = upper.inclusive ? (k) => comparePrefix(k, b) > 0 : (k) => comparePrefix(k, b) >= 0;
  } else {
    isPastEnd = (k) => comparePrefix(k, eqs) > 0;
  }
  return { isAtOrAfterStart, isPastEnd };
}

/**
 * An array-like, read-only view of `entries[start..end)` (reversed for
 * "desc"). convex-test's `paginate` and `_evaluateQuery` only read `length`,
 * indices and `filter`, which a Proxy over an empty array provides.
 */
export function lazyView(entries: SortedIndex<Doc>, start: number, end: number, order: "asc" | "desc"): Doc[] {
  const length = Math.max(0, end - start);
  const read = entries.reader();
  const at = order === "asc" ? (i: number) => read(start + i).doc : (i: number) => read(end - 1 - i).doc;
  const isIndex = (prop: string | symbol): number => {
    if (typeof prop !== "string") return -1;
    const n = Number(prop);
    return Number.isInteger(n) && n >= 0 && n < length && String(n) === prop ? n : -1;
  };
  return new Proxy([] as Doc[], {
    get(target, prop, receiver) {
      if (prop === "length") return length;
      if (prop === LAZY_VIEW) return true;
      const i = isIndex(prop);
      if (i >= 0) return at(i);
      return Reflect.get(target, prop, receiver);
    },
    has(target, prop) {
      return isIndex(prop) >= 0 || Reflect.has(target, prop);
    },
    set() {
      throw new Error("convex_local: query view is read-only");
    },
  });
}

export function isLazyView(docs: ArrayLike<Doc>): boolean {
  return (docs as unknown as Record<symbol, unknown>)[LAZY_VIEW] === true;
}
