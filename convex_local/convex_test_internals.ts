/**
 * The convex-test 0.0.60 internals the index acceleration relies on: the
 * shape of its `DatabaseFake` and of a query, the version pin, and copies of
 * the private helpers whose semantics the indexes must share (field paths,
 * table names from ids, query bound values, paginate cursors).
 */
import { createRequire } from "node:module";
import { CommitTsPlaceholder, jsonToConvex, type Value } from "convex/values";
import type { IndexKey } from "./sorted_index";

export const PINNED_CONVEX_TEST_VERSION = "0.0.60";

export type Doc = Record<string, unknown> & { _id: string; _creationTime: number };
export type Writes = Record<string, Doc | null>;

/** The parts of convex-test's `DatabaseFake` the acceleration relies on. */
export interface DatabaseFakeInternals {
  _documents: Record<string, Doc>;
  _writes: Writes[];
  _schema: null | { tables: Map<string, { indexes: { indexDescriptor: string; fields: string[] }[] }> };
  _nextDocId: number;
  _lastCreationTime: number;
  get(table: string | undefined, id: string): Doc | null;
  commit(commitTs?: bigint | null): void;
  startQuery(query: Query): number;
  paginate(args: { cursor: string | null } & Record<string, unknown>): unknown;
  _iterateDocs(table: string, cb: (doc: Doc) => void): void;
  _resolveQuerySource(query: Query): ResolvedSource;
  _evaluateQuery(query: Query): Doc[];
}

export interface RangeExpr {
  type: "Eq" | "Gt" | "Gte" | "Lt" | "Lte";
  fieldPath: string;
  value: unknown;
}
export type Source =
  | { type: "FullTableScan"; tableName: string; order?: "asc" | "desc" | null }
  | { type: "IndexRange"; indexName: string; range: RangeExpr[]; order?: "asc" | "desc" | null }
  | { type: "Search"; indexName: string };
export interface Query {
  source: Source;
  operators: ({ filter: unknown } | { limit: number })[];
}
export interface ResolvedSource {
  sortedDocs: ArrayLike<Doc>;
  filterFn: (doc: Doc) => boolean;
  limit: number | null;
  fieldPathsToSortBy: string[];
  order: "asc" | "desc";
}

/** Throws unless the installed convex-test is the version this patch was written against. */
export function assertPinned(): void {
  const require = createRequire(import.meta.url);
  const version: string = require("convex-test/package.json").version;
  if (version !== PINNED_CONVEX_TEST_VERSION) {
    throw new Error(
      `convex-test ${version} is installed, but the index acceleration in ` +
        `infra/convex_local/accelerate.ts patches convex-test ${PINNED_CONVEX_TEST_VERSION} internals. ` +
        `Re-check the patch against the new DatabaseFake, then bump PINNED_CONVEX_TEST_VERSION ` +
        `(or run with CONVEX_LOCAL_ACCELERATE=0).`,
    );
  }
}

// --- helpers mirroring convex-test's private ones (same semantics) ---------

/** Same as convex-test's `tableNameFromId`. */
export function tableNameFromId(id: string): string | null {
  const match = id.match(/^[0-9]+/);
  if (!match || match[0].length === id.length) return null;
  return id.slice(match[0].length);
}

function isSimpleObject(value: unknown): boolean {
  const prototype = Object.getPrototypeOf(value);
  return (
    typeof value === "object" &&
    (prototype === null ||
      prototype === Object.prototype ||
      prototype?.constructor?.name === "Object")
  );
}

/** convex-test's `evaluateFieldPath` for committed documents (they hold no placeholders). */
export function fieldValue(fieldPath: string, doc: unknown): Value | undefined {
  return fieldAt(fieldPath.split("."), doc);
}

/** `fieldValue` for a path already split at its dots (index keys, once per index). */
export function fieldAt(parts: readonly string[], doc: unknown): Value | undefined {
  let result: unknown = doc;
  for (let i = 0; i < parts.length; i++) {
    result =
      result !== undefined && result !== null && isSimpleObject(result)
        ? (result as Record<string, unknown>)[parts[i]]
        : undefined;
  }
  return result as Value | undefined;
}

export function hasPlaceholder(value: unknown): boolean {
  if (value instanceof CommitTsPlaceholder) return true;
  if (Array.isArray(value)) return value.some(hasPlaceholder);
  if (value !== null && value !== undefined && isSimpleObject(value)) {
    return Object.values(value as object).some(hasPlaceholder);
  }
  return false;
}

/** convex-test's `evaluateQueryValue`; `null` when we'd rather fall back. */
export function boundValue(raw: unknown): { value: Value | undefined } | null {
  try {
    if (typeof raw === "object" && raw !== null && "$undefined" in raw) return { value: undefined };
    const value = jsonToConvex(raw as never);
    return hasPlaceholder(value) ? null : { value };
  } catch {
    return null;
  }
}

/** Parse a paginate cursor exactly like convex-test does; null if it can't. */
export function parseCursorKeys(cursor: unknown): IndexKey | null {
  if (typeof cursor !== "string" || cursor === "" || cursor === "_end_cursor") return null;
  try {
    const parts = JSON.parse(cursor);
    if (!Array.isArray(parts)) return null;
    return parts.map((k: string | null) => (k === null ? undefined : jsonToConvex(JSON.parse(k))));
  } catch {
    return null;
  }
}
