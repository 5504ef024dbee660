/**
 * The pending side of the index acceleration: the writes of one level of
 * convex-test's transaction stack, indexed like the committed documents, so
 * a query inside a mutation visits only the ids that may be in its range.
 */
import { hasPlaceholder, tableNameFromId, type Doc, type Writes } from "./convex_test_internals";
import { keyOf, type IndexDef, type IndexedTables } from "./indexed_tables";
import { positions, type RangeBounds } from "./index_range";
import { SortedIndex } from "./sorted_index";

/**
 * The writes pending in one level of convex-test's `_writes` stack, indexed
 * like the committed documents. A query's candidates are the committed range
 * plus, from every level, the ids whose value *at that level* falls in the
 * range (plus unkeyable values): a superset of the ids whose latest value is
 * in range, which convex-test then re-reads and filters (an id deleted at a
 * level needs no entry: if it is in a range, the committed range has it).
 *
 * An index of a level is built the first time a query asks for it, from the
 * level's own values (`level[id]` is each id's value at that level), and
 * kept up to date from then on; until then a write only records its id. A
 * mutation that writes 1,000 assets and never queries their 13 indexes
 * inside itself (`lifecycle:markDeleted`) builds none of them.
 * Levels only change through `_addWrite` (nested commits merge through it
 * too) and disappear when popped, so an overlay lives as long as its level.
 */
export class LevelOverlay {
  /** Ids written at this level, per table, in first-write order. */
  readonly ids = new Map<string, Set<string>>();
  /** The built indexes: the ids' values at this level, by index key. */
  private readonly indexes = new Map<IndexDef, BuiltIndex>();

  constructor(
    private readonly tables: IndexedTables,
    private readonly level: Writes,
  ) {}

  /** Record one write at this level (`before`: the id's previous value here). */
  apply(id: string, before: Doc | null | undefined, after: Doc | null): void {
    const table = tableNameFromId(id);
    if (table === null) return;
    let ids = this.ids.get(table);
    if (ids === undefined) this.ids.set(table, (ids = new Set()));
    ids.add(id);
    for (const def of this.tables.defs(table)) {
      const built = this.indexes.get(def);
      if (built === undefined) continue;
      if (before) built.remove(def, id, before);
      if (after) built.add(def, id, after);
    }
  }

  /** Ids at this level that may be in the range (see the class comment). */
  addCandidates(def: IndexDef, bounds: RangeBounds, out: Set<string>): void {
    const built = this.built(def);
    const { start, end } = positions(built.entries, bounds);
    const read = built.entries.reader();
    for (let p = start; p < end; p++) out.add(read(p).doc._id);
    for (const id of built.unkeyable) out.add(id);
  }

  private built(def: IndexDef): BuiltIndex {
    let built = this.indexes.get(def);
    if (built === undefined) {
      built = new BuiltIndex();
      for (const id of this.ids.get(def.table) ?? []) {
        const value = this.level[id];
        if (value) built.add(def, id, value);
      }
      this.indexes.set(def, built);
    }
    return built;
  }
}

/** One index of one level: keyed entries, and the ids whose key holds a placeholder. */
class BuiltIndex {
  readonly entries = new SortedIndex<Doc>();
  /** Ids whose value has a commit-timestamp placeholder in this index's fields. */
  readonly unkeyable = new Set<string>();

  add(def: IndexDef, id: string, value: Doc): void {
    const key = keyOf(def, value);
    if (key.some(hasPlaceholder)) this.unkeyable.add(id);
    else this.entries.insert({ key, doc: value });
  }

  remove(def: IndexDef, id: string, value: Doc): void {
    if (!this.unkeyable.delete(id)) this.entries.remove(keyOf(def, value));
  }
}
