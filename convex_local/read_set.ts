/**
 * What a query read while it ran, so a commit can tell whether it may have
 * changed the query's result.
 *
 * `ReadTracker.install` wraps one convex-test `DatabaseFake` instance: while
 * a function runs under `ReadTracker.run(readSet, …)` (an AsyncLocalStorage
 * scope, so concurrent work outside the scope is not recorded), every
 *
 *  - `get(id)` records the id (a point read),
 *  - `startQuery` / `paginate` records its source: an index range as the
 *    bounds convex-test's query states (`index_range.planRange`), a full
 *    table scan, search, or any range we cannot plan as the whole table.
 *
 * Reads a query makes *inside* a query/paginate (convex-test re-reads each
 * candidate through `get`) are not recorded: the range covers them.
 *
 * Pagination journals: the first run of a query records where its page
 * ended (`pageEnd`, the continue cursor); later runs get it back as
 * `endCursor` (unless the function passes one) so the page keeps its end
 * while documents come and go — what Convex's query journal does for
 * reactive pagination.
 *
 * A read set is a superset of what the result depends on: `.first()`,
 * `.take(n)`, `.filter()` and pagination are recorded as their whole range.
 * A change to a document invalidates a query when the document's table is
 * read whole, its id was read, or its index key before or after the change
 * falls in a recorded range of that index.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { fieldValue, tableNameFromId, type DatabaseFakeInternals, type Doc, type Query } from "./convex_test_internals";
import { planRange, type RangeBounds } from "./index_range";

/** One committed document change: `before`/`after` undefined = absent. */
export interface CommittedChange {
  id: string;
  table: string;
  before: Doc | undefined;
  after: Doc | undefined;
}

interface RangeRead {
  fields: string[];
  bounds: RangeBounds;
}

/** Past these, a table's reads collapse to "the whole table" (bounded cost per commit). */
const MAX_RANGES_PER_TABLE = 64;
const MAX_POINT_READS = 4096;

export class ReadSet {
  readonly wholeTables = new Set<string>();
  readonly ids = new Set<string>();
  readonly ranges = new Map<string, RangeRead[]>();
  /** >0 while inside a query/paginate (their internal `get`s are covered by the range). */
  depth = 0;
  /** The page end from the query's journal, handed to `paginate` as `endCursor`. */
  readonly journalEndCursor: string | null;
  /** Where this run's `paginate` ended. */
  pageEnd: string | null = null;

  constructor(journalEndCursor: string | null = null) {
    this.journalEndCursor = journalEndCursor;
  }

  addId(id: string): void {
    const table = tableNameFromId(id);
    if (table === null || this.wholeTables.has(table)) return;
    this.ids.add(id);
    if (this.ids.size > MAX_POINT_READS) {
      for (const read of this.ids) {
        const t = tableNameFromId(read);
        if (t !== null) this.wholeTables.add(t);
      }
      this.ids.clear();
    }
  }

  addQuery(query: Query, indexFields: (indexName: string) => string[] | undefined): void {
    const source = query.source;
    if (source.type === "FullTableScan") {
      this.addWholeTable(source.tableName);
      return;
    }
    const table = source.indexName.split(".")[0];
    if (source.type !== "IndexRange") {
      this.addWholeTable(table);
      return;
    }
    const fields = indexFields(source.indexName);
    const bounds = fields === undefined ? null : planRange({ fields }, source.range);
    if (fields === undefined || bounds === null) {
      this.addWholeTable(table);
      return;
    }
    if (this.wholeTables.has(table)) return;
    let list = this.ranges.get(table);
    if (list === undefined) this.ranges.set(table, (list = []));
    list.push({ fields, bounds });
    if (list.length > MAX_RANGES_PER_TABLE) this.addWholeTable(table);
  }

  private addWholeTable(table: string): void {
    this.wholeTables.add(table);
    this.ranges.delete(table);
  }

  /** Every table this read set depends on. */
  tables(): Set<string> {
    const out = new Set<string>([...this.wholeTables, ...this.ranges.keys()]);
    for (const id of this.ids) {
      const t = tableNameFromId(id);
      if (t !== null) out.add(t);
    }
    return out;
  }

  affectedBy(change: CommittedChange): boolean {
    if (this.wholeTables.has(change.table) || this.ids.has(change.id)) return true;
    const ranges = this.ranges.get(change.table);
    if (ranges === undefined) return false;
    for (const range of ranges) {
      if (change.before !== undefined && inRange(range, change.before)) return true;
      if (change.after !== undefined && inRange(range, change.after)) return true;
    }
    return false;
  }
}

function inRange(range: RangeRead, doc: Doc): boolean {
  const key = range.fields.map((f) => fieldValue(f, doc));
  return range.bounds.isAtOrAfterStart(key) && !range.bounds.isPastEnd(key);
}

/** Index name ("table.index") → full key fields, as convex-test sorts by them. */
function indexFieldsOf(db: DatabaseFakeInternals): (indexName: string) => string[] | undefined {
  const fields = new Map<string, string[]>();
  for (const [table, def] of db._schema?.tables ?? []) {
    for (const { indexDescriptor, fields: f } of def.indexes) {
      fields.set(`${table}.${indexDescriptor}`, [...f, "_creationTime", "_id"]);
    }
  }
  return (indexName) => {
    const known = fields.get(indexName);
    if (known !== undefined) return known;
    if (indexName.endsWith(".by_creation_time")) return ["_creationTime", "_id"];
    if (indexName.endsWith(".by_id")) return ["_id"];
    return undefined;
  };
}

const TRACKED = Symbol.for("convex_local.readTracked");

export class ReadTracker {
  private readonly scope = new AsyncLocalStorage<ReadSet>();

  /** Wrap one DatabaseFake instance (after the acceleration patch, if any). Idempotent. */
  install(db: DatabaseFakeInternals): void {
    const marked = db as unknown as Record<symbol, boolean>;
    if (marked[TRACKED]) return;
    marked[TRACKED] = true;
    const scope = this.scope;
    const fields = indexFieldsOf(db);
    const original = { get: db.get, startQuery: db.startQuery, paginate: db.paginate };
    db.get = function (this: DatabaseFakeInternals, table: string | undefined, id: string) {
      const reads = scope.getStore();
      if (reads !== undefined && reads.depth === 0 && typeof id === "string") reads.addId(id);
      return original.get.call(this, table, id);
    };
    db.startQuery = function (this: DatabaseFakeInternals, query: Query) {
      const reads = scope.getStore();
      if (reads === undefined) return original.startQuery.call(this, query);
      if (reads.depth === 0) reads.addQuery(query, fields);
      reads.depth += 1;
      try {
        return original.startQuery.call(this, query);
      } finally {
        reads.depth -= 1;
      }
    };
    db.paginate = function (this: DatabaseFakeInternals, args: { cursor: string | null } & Record<string, unknown>) {
      const reads = scope.getStore();
      if (reads === undefined || reads.depth > 0) return original.paginate.call(this, args);
      reads.addQuery(args.query as Query, fields);
      const call = reads.journalEndCursor !== null && !args.endCursor ? { ...args, endCursor: reads.journalEndCursor } : args;
      reads.depth += 1;
      try {
        const result = original.paginate.call(this, call) as { continueCursor?: unknown };
        if (typeof result?.continueCursor === "string") reads.pageEnd = result.continueCursor;
        return result;
      } finally {
        reads.depth -= 1;
      }
    };
  }

  /** Run `fn` recording its reads into `reads`. */
  run<T>(reads: ReadSet, fn: () => Promise<T>): Promise<T> {
    return this.scope.run(reads, fn);
  }
}
