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
 *  - both are maintained in `commit()` when the top-level transaction lands.
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
 */
import { createRequire } from "node:module";
import { CommitTsPlaceholder, jsonToConvex, type Value } from "convex/values";
import { SortedIndex, comparePrefix, type IndexEntry, type IndexKey } from "./sorted_index";

export const PINNED_CONVEX_TEST_VERSION = "0.0.60";

type Doc = Record<string, unknown> & { _id: string; _creationTime: number };
type Writes = Record<string, Doc | null>;

/** The parts of convex-test's `DatabaseFake` this module relies on. */
export interface DatabaseFakeInternals {
  _documents: Record<string, Doc>;
  _writes: Writes[];
  _schema: null | { tables: Map<string, { indexes: { indexDescriptor: string; fields: string[] }[] }> };
  _nextDocId: number;
  _lastCreationTime: number;
  get(table: string | undefined, id: string): Doc | null;
  commit(commitTs?: bigint | null): void;
  paginate(args: { cursor: string | null } & Record<string, unknown>): unknown;
  _iterateDocs(table: string, cb: (doc: Doc) => void): void;
  _resolveQuerySource(query: Query): ResolvedSource;
  _evaluateQuery(query: Query): Doc[];
}

interface RangeExpr {
  type: "Eq" | "Gt" | "Gte" | "Lt" | "Lte";
  fieldPath: string;
  value: unknown;
}
type Source =
  | { type: "FullTableScan"; tableName: string; order?: "asc" | "desc" | null }
  | { type: "IndexRange"; indexName: string; range: RangeExpr[]; order?: "asc" | "desc" | null }
  | { type: "Search"; indexName: string };
interface Query {
  source: Source;
  operators: ({ filter: unknown } | { limit: number })[];
}
interface ResolvedSource {
  sortedDocs: ArrayLike<Doc>;
  filterFn: (doc: Doc) => boolean;
  limit: number | null;
  fieldPathsToSortBy: string[];
  order: "asc" | "desc";
}

const PATCHED = Symbol.for("convex_local.accelerated");
const LAZY_VIEW = Symbol.for("convex_local.lazyView");

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
function fieldValue(fieldPath: string, doc: unknown): Value | undefined {
  let result: unknown = doc;
  for (const part of fieldPath.split(".")) {
    result =
      result !== undefined && result !== null && isSimpleObject(result)
        ? (result as Record<string, unknown>)[part]
        : undefined;
  }
  return result as Value | undefined;
}

function hasPlaceholder(value: unknown): boolean {
  if (value instanceof CommitTsPlaceholder) return true;
  if (Array.isArray(value)) return value.some(hasPlaceholder);
  if (value !== null && value !== undefined && isSimpleObject(value)) {
    return Object.values(value as object).some(hasPlaceholder);
  }
  return false;
}

/** convex-test's `evaluateQueryValue`; `null` when we'd rather fall back. */
function boundValue(raw: unknown): { value: Value | undefined } | null {
  try {
    if (typeof raw === "object" && raw !== null && "$undefined" in raw) return { value: undefined };
    const value = jsonToConvex(raw as never);
    return hasPlaceholder(value) ? null : { value };
  } catch {
    return null;
  }
}

// --- the index bookkeeping --------------------------------------------------

interface IndexDef {
  table: string;
  fields: string[]; // full key: index fields + _creationTime + _id
  entries: SortedIndex<Doc>;
}

export interface AccelerationStats {
  tables: Record<string, number>;
  indexes: Record<string, number>;
}

export class IndexedTables {
  private readonly tableIds = new Map<string, Set<string>>();
  private readonly byTable = new Map<string, IndexDef[]>();
  private readonly byName = new Map<string, IndexDef>();

  constructor(private readonly schemaIndexes: Map<string, { indexDescriptor: string; fields: string[] }[]>) {
    for (const [table] of schemaIndexes) this.ensureTable(table);
  }

  stats(): AccelerationStats {
    const tables: Record<string, number> = {};
    for (const [t, ids] of this.tableIds) tables[t] = ids.size;
    const indexes: Record<string, number> = {};
    for (const [n, def] of this.byName) indexes[n] = def.entries.size;
    return { tables, indexes };
  }

  /** Committed ids of a table, in convex-test's `_documents` insertion order. */
  ids(table: string): Set<string> {
    return this.tableIds.get(table) ?? new Set();
  }

  index(indexName: string): IndexDef | undefined {
    return this.byName.get(indexName);
  }

  defs(table: string): IndexDef[] {
    return this.ensureTable(table);
  }

  /** Apply one committed change (`before`/`after` null = absent). */
  apply(id: string, before: Doc | undefined, after: Doc | undefined): void {
    const table = tableNameFromId(id);
    if (table === null) return;
    const defs = this.ensureTable(table);
    if (before !== undefined && after !== undefined) {
      for (const def of defs) {
        const oldKey = keyOf(def, before);
        const newKey = keyOf(def, after);
        if (comparePrefix(oldKey, newKey) === 0 && oldKey.length === newKey.length) {
          def.entries.replaceDoc(oldKey, after);
        } else {
          def.entries.remove(oldKey);
          def.entries.insert({ key: newKey, doc: after });
        }
      }
      return;
    }
    if (before !== undefined) {
      for (const def of defs) def.entries.remove(keyOf(def, before));
      this.tableIds.get(table)!.delete(id);
    }
    if (after !== undefined) {
      for (const def of defs) def.entries.insert({ key: keyOf(def, after), doc: after });
      this.tableIds.get(table)!.add(id);
    }
  }

  private ensureTable(table: string): IndexDef[] {
    let defs = this.byTable.get(table);
    if (defs === undefined) {
      defs = [];
      const add = (name: string, fields: string[]) => {
        const def: IndexDef = { table, fields, entries: new SortedIndex<Doc>() };
        defs!.push(def);
        this.byName.set(`${table}.${name}`, def);
      };
      add("by_creation_time", ["_creationTime", "_id"]);
      for (const { indexDescriptor, fields } of this.schemaIndexes.get(table) ?? []) {
        add(indexDescriptor, [...fields, "_creationTime", "_id"]);
      }
      this.byTable.set(table, defs);
      this.tableIds.set(table, new Set());
    }
    return defs;
  }
}

/**
 * The writes pending in one level of convex-test's `_writes` stack, indexed
 * like the committed documents. A query's candidates are the committed range
 * plus, from every level, the ids whose value *at that level* falls in the
 * range (plus deletes and unkeyable values): a superset of the ids whose
 * latest value is in range, which convex-test then re-reads and filters.
 * Levels only change through `_addWrite` (nested commits merge through it
 * too) and disappear when popped, so an overlay lives as long as its level.
 */
class LevelOverlay {
  /** Ids written at this level, per table, in first-write order. */
  readonly ids = new Map<string, Set<string>>();
  private readonly indexes = new Map<IndexDef, SortedIndex<Doc>>();
  /** Ids whose pending value has a commit-timestamp placeholder in an index field. */
  private readonly unkeyable = new Map<string, Set<string>>();

  constructor(private readonly tables: IndexedTables) {}

  apply(id: string, before: Doc | null | undefined, after: Doc | null): void {
    const table = tableNameFromId(id);
    if (table === null) return;
    let ids = this.ids.get(table);
    if (ids === undefined) this.ids.set(table, (ids = new Set()));
    ids.add(id);
    for (const def of this.tables.defs(table)) {
      let entries = this.indexes.get(def);
      if (entries === undefined) this.indexes.set(def, (entries = new SortedIndex<Doc>()));
      if (before) {
        const key = keyOf(def, before);
        if (!entries.remove(key)) this.unkeyable.get(table)?.delete(id);
      }
      if (after) {
        const key = keyOf(def, after);
        if (key.some(hasPlaceholder)) {
          let set = this.unkeyable.get(table);
          if (set === undefined) this.unkeyable.set(table, (set = new Set()));
          set.add(id);
        } else {
          entries.insert({ key, doc: after });
        }
      }
    }
  }

  /** Ids at this level that may be in the range (see the class comment). */
  addCandidates(def: IndexDef, bounds: RangeBounds, out: Set<string>): void {
    const entries = this.indexes.get(def);
    if (entries !== undefined) {
      const { start, end } = positions(entries, bounds);
      const read = entries.reader();
      for (let p = start; p < end; p++) out.add(read(p).doc._id);
    }
    for (const id of this.unkeyable.get(def.table) ?? []) out.add(id);
  }
}

function keyOf(def: IndexDef, doc: Doc): IndexKey {
  return def.fields.map((f) => fieldValue(f, doc));
}

/** Where an index range starts and ends, applicable to any SortedIndex of that index. */
interface RangeBounds {
  isAtOrAfterStart: (key: IndexKey) => boolean;
  isPastEnd: (key: IndexKey) => boolean;
}

function positions(entries: SortedIndex<Doc>, bounds: RangeBounds): { start: number; end: number } {
  const start = entries.firstWhere(bounds.isAtOrAfterStart);
  const end = entries.firstWhere(bounds.isPastEnd);
  return { start, end: Math.max(start, end) };
}

/**
 * The bounds of an index range, or null when the range is not the
 * `eq* [lower] [upper]` shape we can plan (convex-test then handles it,
 * errors included).
 */
function planRange(index: IndexDef, range: RangeExpr[]): RangeBounds | null {
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

/** Parse a paginate cursor exactly like convex-test does; null if it can't. */
function parseCursorKeys(cursor: unknown): IndexKey | null {
  if (typeof cursor !== "string" || cursor === "" || cursor === "_end_cursor") return null;
  try {
    const parts = JSON.parse(cursor);
    if (!Array.isArray(parts)) return null;
    return parts.map((k: string | null) => (k === null ? undefined : jsonToConvex(JSON.parse(k))));
  } catch {
    return null;
  }
}

/**
 * An array-like, read-only view of `entries[start..end)` (reversed for
 * "desc"). convex-test's `paginate` and `_evaluateQuery` only read `length`,
 * indices and `filter`, which a Proxy over an empty array provides.
 */
function lazyView(entries: SortedIndex<Doc>, start: number, end: number, order: "asc" | "desc"): Doc[] {
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

function isLazyView(docs: ArrayLike<Doc>): boolean {
  return (docs as unknown as Record<symbol, unknown>)[LAZY_VIEW] === true;
}

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
    if (overlay === undefined) overlays.set(level, (overlay = new LevelOverlay(tables)));
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

  (db as unknown as Record<symbol, Acceleration>)[PATCHED] = acceleration;
  return acceleration;
}

export type { IndexEntry };
