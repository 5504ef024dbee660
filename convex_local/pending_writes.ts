/**
 * The pending side of the index acceleration: the writes of one level of
 * convex-test's transaction stack, indexed like the committed documents, so
 * a query inside a mutation visits only the ids that may be in its range.
 */
import { hasPlaceholder, tableNameFromId, type Doc } from "./convex_test_internals";
import { keyOf, type IndexDef, type IndexedTables } from "./indexed_tables";
import { positions, type RangeBounds } from "./index_range";
import { SortedIndex } from "./sorted_index";

/**
 * The writes pending in one level of convex-test's `_writes` stack, indexed
 * like the committed documents. A query's candidates are the committed range
 * plus, from every level, the ids whose value *at that level* falls in the
 * range (plus deletes and unkeyable values): a superset of the ids whose
 * latest value is in range, which convex-test then re-reads and filters.
 * Levels only change through `_addWrite` (nested commits merge through it
 * too) and disappear when popped, so an overlay lives as long as its level.
 */
export class LevelOverlay {
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
