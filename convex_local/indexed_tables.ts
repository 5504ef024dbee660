/**
 * The committed side of the index acceleration: per table, the set of its
 * committed ids, and per index (each schema index and `by_creation_time`) a
 * `SortedIndex` of committed documents in convex-test's order, maintained
 * from each committed change.
 */
import { fieldValue, tableNameFromId, type Doc } from "./convex_test_internals";
import { SortedIndex, comparePrefix, type IndexKey } from "./sorted_index";

export interface IndexDef {
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

export function keyOf(def: IndexDef, doc: Doc): IndexKey {
  return def.fields.map((f) => fieldValue(f, doc));
}
