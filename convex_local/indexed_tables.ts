/**
 * The committed side of the index acceleration: per table, the set of its
 * committed ids, and per index (each schema index and `by_creation_time`) a
 * `SortedIndex` of committed documents in convex-test's order, maintained
 * from each committed change.
 */
import { fieldAt, tableNameFromId, type Doc } from "./convex_test_internals";
import { SortedIndex, compareKeyValues, type IndexEntry, type IndexKey } from "./sorted_index";

export interface IndexDef {
  table: string;
  fields: string[]; // full key: index fields + _creationTime + _id
  paths: string[][]; // `fields`, split at dots once
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
  /** Per table, each committed document's entries, one per def (in `defs` order). */
  private readonly entriesById = new Map<string, Map<string, IndexEntry<Doc>[]>>();

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

  /**
   * Apply one committed change (`before`/`after` undefined = absent).
   *
   * A patch or replace moves a document only in the indexes whose key
   * changed: the stored entry's key is compared with the new document's
   * fields, and where they are equal the entry just takes the new document
   * (no search). `before` must be the document the entries were built from —
   * the committed one, which is what commit() passes.
   */
  apply(id: string, before: Doc | undefined, after: Doc | undefined): void {
    const table = tableNameFromId(id);
    if (table === null) return;
    const defs = this.ensureTable(table);
    const byId = this.entriesById.get(table)!;
    const stored = before !== undefined ? byId.get(id) : undefined;
    if (before !== undefined && after !== undefined && stored !== undefined) {
      for (let i = 0; i < defs.length; i++) {
        const def = defs[i];
        const entry = stored[i];
        if (sameKey(def, entry.key, after)) {
          entry.doc = after;
        } else {
          def.entries.removeEntry(entry);
          const moved = { key: keyOf(def, after), doc: after };
          def.entries.insert(moved);
          stored[i] = moved;
        }
      }
      return;
    }
    if (before !== undefined) {
      if (stored !== undefined) {
        for (let i = 0; i < defs.length; i++) defs[i].entries.removeEntry(stored[i]);
      } else {
        for (const def of defs) def.entries.remove(keyOf(def, before));
      }
      byId.delete(id);
      this.tableIds.get(table)!.delete(id);
    }
    if (after !== undefined) {
      const entries = defs.map((def) => ({ key: keyOf(def, after), doc: after }));
      for (let i = 0; i < defs.length; i++) defs[i].entries.insert(entries[i]);
      byId.set(id, entries);
      this.tableIds.get(table)!.add(id);
    }
  }

  private ensureTable(table: string): IndexDef[] {
    let defs = this.byTable.get(table);
    if (defs === undefined) {
      defs = [];
      const add = (name: string, fields: string[]) => {
        const def: IndexDef = { table, fields, paths: fields.map((f) => f.split(".")), entries: new SortedIndex<Doc>() };
        defs!.push(def);
        this.byName.set(`${table}.${name}`, def);
      };
      add("by_creation_time", ["_creationTime", "_id"]);
      for (const { indexDescriptor, fields } of this.schemaIndexes.get(table) ?? []) {
        add(indexDescriptor, [...fields, "_creationTime", "_id"]);
      }
      this.byTable.set(table, defs);
      this.tableIds.set(table, new Set());
      this.entriesById.set(table, new Map());
    }
    return defs;
  }
}

export function keyOf(def: Pick<IndexDef, "paths">, doc: Doc): IndexKey {
  const paths = def.paths;
  const key: IndexKey = new Array(paths.length);
  for (let i = 0; i < paths.length; i++) key[i] = fieldAt(paths[i], doc);
  return key;
}

/**
 * Whether `doc`'s key in this index is `key`, field by field, in
 * `compareValues`' sense: `===` settles equal primitives except zeros (-0
 * and 0 sort apart); the rest (NaN payloads, objects, arrays, bytes) go to
 * the comparison.
 */
function sameKey(def: IndexDef, key: IndexKey, doc: Doc): boolean {
  const paths = def.paths;
  for (let i = 0; i < paths.length; i++) {
    const a = key[i];
    const b = fieldAt(paths[i], doc);
    if (a === b && a !== 0) continue;
    if (compareKeyValues(a, b) !== 0) return false;
  }
  return true;
}
