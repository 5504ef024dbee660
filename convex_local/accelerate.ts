/**
 * Real index lookups for convex-test's in-memory database.
 *
 * convex-test 0.0.60's `DatabaseFake` answers every query by visiting every
 * document of every table (`_iterateDocs`), filtering, then sorting — an
 * indexed point lookup costs O(all documents). This module patches one
 * `DatabaseFake` *instance* so that:
 *
 *  - each table keeps a set of its committed ids (full scans, search and
 *    vector search stop visiting other tables);
 *  - each schema index and each table's `by_creation_time` keeps a
 *    `SortedIndex` of committed documents keyed by the index fields +
 *    `_creationTime` + `_id` (the key convex-test sorts by);
 *  - both are maintained in `commit()` when the top-level transaction lands,
 *    and a patch moves a document only in the indexes whose key it changed;
 *  - each write's schema check runs a per-table compiled predicate first
 *    (`validation.ts`), convex-test's own check whenever that is not a pass.
 *
 * Query semantics stay convex-test's own: its `_resolveQuerySource` still
 * validates the range, builds the filter function, picks the sort order and
 * (when writes are pending) filters and sorts. We only change *which
 * documents it visits*:
 *
 *  - writes pending in this table (inside a mutation): the candidates are the
 *    committed documents in the index range ∪ every id with a pending write in
 *    the table; convex-test re-reads each through `get()` (so pending versions
 *    win), applies its own range filter and sorts the small set;
 *  - nothing pending: the committed range is already in convex-test's order,
 *    so `sortedDocs` becomes a lazy, array-like view of the range (no copy, no
 *    sort). `paginate()` passes its cursor so the view starts right after it:
 *    walking 100k documents page by page costs O(page) per page, not O(n).
 *
 * Anything we do not recognise (search, `by_id`, an unexpected range shape, a
 * placeholder bound) falls back to convex-test's path over the table's ids.
 *
 * The patch depends on convex-test internals, so it is pinned: `assertPinned`
 * refuses any other convex-test version, and `accelerate` checks the shape of
 * the instance before touching it.
 *
 * The pieces: `convex_test_internals.ts` (the pinned internals and copies of
 * convex-test's private helpers), `indexed_tables.ts` (committed ids and
 * indexes), `pending_writes.ts` (the per-level overlays of pending writes),
 * `index_range.ts` (range bounds and the lazy view); this module installs the
 * patch on a `DatabaseFake` instance.
 */
import {
  parseCursorKeys,
  type DatabaseFakeInternals,
  type Doc,
  type Query,
  type RangeExpr,
  type ResolvedSource,
  type Writes,
} from "./convex_test_internals";
import { IndexedTables, type IndexDef } from "./indexed_tables";
import { isLazyView, lazyView, planRange, positions } from "./index_range";
import { LevelOverlay } from "./pending_writes";
import { installCompiledValidation } from "./validation";
import { comparePrefix } from "./sorted_index";

export {
  PINNED_CONVEX_TEST_VERSION,
  assertPinned,
  tableNameFromId,
  type DatabaseFakeInternals,
} from "./convex_test_internals";
export { IndexedTables, type AccelerationStats } from "./indexed_tables";
export type { IndexEntry } from "./sorted_index";

const PATCHED = Symbol.for("convex_local.accelerated");

export interface Acceleration {
  readonly tables: IndexedTables;
  /**
   * Whether queries use the indexes (default true). With false, queries run
   * convex-test's original code on the same state — the tests compare both.
   * Index maintenance in commit() continues either way.
   */
  queries: boolean;
}

/**
 * Patch one DatabaseFake instance in place. Idempotent per instance.
 */
export function accelerate(db: DatabaseFakeInternals): Acceleration {
  const existing = (db as unknown as Record<symbol, Acceleration>)[PATCHED];
  if (existing) return existing;
  for (const method of ["get", "commit", "paginate", "_iterateDocs", "_resolveQuerySource", "_evaluateQuery"] as const) {
    if (typeof db[method] !== "function") {
      throw new Error(`convex_local: DatabaseFake has no ${method}(); the acceleration patch does not fit this convex-test`);
    }
  }
  if (typeof db._documents !== "object" || !Array.isArray(db._writes)) {
    throw new Error("convex_local: DatabaseFake lacks _documents/_writes; the acceleration patch does not fit this convex-test");
  }

  const schemaIndexes = new Map<string, { indexDescriptor: string; fields: string[] }[]>();
  for (const [table, def] of db._schema?.tables ?? []) schemaIndexes.set(table, def.indexes);
  const tables = new IndexedTables(schemaIndexes);
  for (const id of Object.keys(db._documents)) tables.apply(id, undefined, db._documents[id]);
  const acceleration: Acceleration = { tables, queries: true };

  const original = {
    commit: db.commit,
    paginate: db.paginate,
    _iterateDocs: db._iterateDocs,
    _resolveQuerySource: db._resolveQuerySource,
    _evaluateQuery: db._evaluateQuery,
  };

  // Which ids `_iterateDocs` visits during one `_resolveQuerySource` call
  // (null = the whole table). Set and cleared synchronously around the call.
  let candidates: Iterable<string> | null = null;
  let cursorHint: unknown = undefined;

  const overlays = new WeakMap<Writes, LevelOverlay>();
  const original_addWrite = (db as unknown as { _addWrite: (id: string, v: Doc | null) => void })._addWrite;
  if (typeof original_addWrite !== "function") {
    throw new Error("convex_local: DatabaseFake has no _addWrite(); the acceleration patch does not fit this convex-test");
  }
  (db as unknown as { _addWrite: (id: string, v: Doc | null) => void })._addWrite = function (
    this: DatabaseFakeInternals,
    id: string,
    value: Doc | null,
  ) {
    const level = this._writes[this._writes.length - 1];
    const before = level?.[id];
    original_addWrite.call(this, id, value);
    let overlay = overlays.get(level);
    if (overlay === undefined) overlays.set(level, (overlay = new LevelOverlay(tables, level)));
    overlay.apply(id, before, value);
  };

  /** Overlays of the levels holding writes to `table`, bottom to top. */
  const pendingLevels = (table: string): LevelOverlay[] => {
    const out: LevelOverlay[] = [];
    for (const level of db._writes) {
      const overlay = overlays.get(level);
      if (overlay !== undefined && (overlay.ids.get(table)?.size ?? 0) > 0) out.push(overlay);
    }
    return out;
  };

  const withCandidates = (ids: Iterable<string> | null, query: Query): ResolvedSource => {
    candidates = ids;
    try {
      return original._resolveQuerySource.call(db, query);
    } finally {
      candidates = null;
    }
  };

  db._iterateDocs = function (tableName: string, callback: (doc: Doc) => void): void {
    if (!acceleration.queries) return original._iterateDocs.call(this, tableName, callback);
    let ids: Iterable<string>;
    if (candidates !== null) {
      ids = candidates;
    } else {
      // convex-test's order: committed ids, then pending ones, each once.
      const all = new Set(tables.ids(tableName));
      for (const overlay of pendingLevels(tableName)) for (const id of overlay.ids.get(tableName)!) all.add(id);
      ids = all;
    }
    for (const id of ids) {
      const doc = this.get(tableName, id);
      if (doc !== null) callback(doc);
    }
  };

  db._resolveQuerySource = function (query: Query): ResolvedSource {
    if (!acceleration.queries) return original._resolveQuerySource.call(this, query);
    const source = query.source;
    let index: IndexDef | undefined;
    let range: RangeExpr[];
    if (source.type === "FullTableScan") {
      index = tables.index(`${source.tableName}.by_creation_time`);
      range = [];
    } else if (source.type === "IndexRange") {
      index = tables.index(source.indexName);
      range = source.range;
    } else {
      return withCandidates(null, query);
    }
    if (index === undefined) return withCandidates(null, query);
    const bounds = planRange(index, range);
    if (bounds === null) return withCandidates(null, query);
    const plan = positions(index.entries, bounds);

    const pending = pendingLevels(index.table);
    if (pending.length > 0) {
      const ids = new Set<string>();
      const read = index.entries.reader();
      for (let p = plan.start; p < plan.end; p++) ids.add(read(p).doc._id);
      for (const overlay of pending) overlay.addCandidates(index, bounds, ids);
      return withCandidates(ids, query);
    }

    // Nothing pending: convex-test's own pass over zero documents gives us
    // validation, the filter function, sort fields and order; the documents
    // come from the index, already in that order.
    const resolved = withCandidates([], query);
    const order = resolved.order;
    let { start, end } = plan;
    if (cursorHint !== undefined && cursorHint !== null) {
      if (cursorHint === "_end_cursor") {
        start = end;
      } else {
        const cursorKeys = parseCursorKeys(cursorHint);
        if (cursorKeys !== null && cursorKeys.length === index.fields.length) {
          const keys = cursorKeys;
          if (order === "asc") {
            start = Math.max(start, index.entries.firstWhere((k) => comparePrefix(k, keys) > 0));
          } else {
            end = Math.min(end, index.entries.firstWhere((k) => comparePrefix(k, keys) >= 0));
          }
          if (end < start) end = start;
        }
      }
    }
    resolved.sortedDocs = lazyView(index.entries, start, end, order);
    return resolved;
  };

  db._evaluateQuery = function (query: Query): Doc[] {
    if (!acceleration.queries) return original._evaluateQuery.call(this, query);
    const { sortedDocs, filterFn, limit } = this._resolveQuerySource(query);
    if (!isLazyView(sortedDocs)) {
      let results = Array.prototype.filter.call(sortedDocs, filterFn) as Doc[];
      if (limit !== null) results = results.slice(0, limit);
      return results;
    }
    // Same result as `sortedDocs.filter(filterFn).slice(0, limit)`, but stops
    // reading at the limit (`.first()` / `.unique()` / `.take(n)`).
    const results: Doc[] = [];
    const n = sortedDocs.length;
    for (let i = 0; i < n && (limit === null || results.length < limit); i++) {
      const doc = sortedDocs[i];
      if (filterFn(doc)) results.push(doc);
    }
    return results;
  };

  db.paginate = function (args: { cursor: string | null } & Record<string, unknown>) {
    cursorHint = args.cursor;
    try {
      return original.paginate.call(this, args);
    } finally {
      cursorHint = undefined;
    }
  };

  db.commit = function (commitTs: bigint | null = null): void {
    const isTopLevel = this._writes.length === 1;
    const lastWrites = this._writes[this._writes.length - 1];
    let before: [string, Doc | undefined][] | null = null;
    if (isTopLevel && lastWrites !== undefined) {
      before = Object.keys(lastWrites).map((id) => [id, this._documents[id]]);
    }
    original.commit.call(this, commitTs);
    if (before !== null) {
      for (const [id, old] of before) tables.apply(id, old, this._documents[id]);
    }
  };

  installCompiledValidation(db as unknown as Parameters<typeof installCompiledValidation>[0]);

  (db as unknown as Record<symbol, Acceleration>)[PATCHED] = acceleration;
  return acceleration;
}
