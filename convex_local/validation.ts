/**
 * A faster schema check for convex-test's writes, with convex-test's exact
 * verdicts.
 *
 * convex-test 0.0.60 validates every inserted, patched or replaced document
 * (`DatabaseFake._validate`) by walking the table's validator JSON; a union
 * is tried branch by branch and every failed branch throws and catches an
 * Error (a stack trace each). A status field that is a union of ten literals
 * costs up to nine throws per write, and a mutation writing 1,000 records
 * spent ~350 ms there.
 *
 * `compileValidator` turns a validator JSON into a predicate once per table.
 * The predicate mirrors convex-test's `validateValidator` case for case
 * (including what it lets through: a validator type it does not know passes)
 * but answers true/false without throwing. It only ever short-cuts a pass:
 * when it says false — or the document holds a commit-timestamp placeholder
 * it would have to resolve — convex-test's own `_validate` runs, so every
 * rejection and its message are convex-test's. Validation is never skipped.
 */
import { CommitTsPlaceholder } from "convex/values";
import { tableNameFromId } from "./convex_test_internals";

export type Check = (value: unknown) => boolean;

interface ValidatorJson {
  type: string;
  value?: unknown;
  tableName?: string;
}

/** Same as convex-test's `isSimpleObject` (null throws there; here it is "not sure"). */
function isSimpleObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value);
  return prototype === null || prototype === Object.prototype || prototype?.constructor?.name === "Object";
}

/** A predicate that is true only where convex-test's `validateValidator` passes. */
export function compileValidator(validator: ValidatorJson): Check {
  switch (validator.type) {
    case "null":
      return (v) => v === null;
    case "number":
      return (v) => typeof v === "number";
    case "bigint":
      // A placeholder is resolved to an int64 before convex-test checks: let it decide.
      return (v) => typeof v === "bigint";
    case "commitTs":
      return (v) => typeof v === "bigint" || v instanceof CommitTsPlaceholder;
    case "boolean":
      return (v) => typeof v === "boolean";
    case "string":
      return (v) => typeof v === "string";
    case "bytes":
      return (v) => v instanceof ArrayBuffer;
    case "any":
      return () => true;
    case "literal": {
      const literal = validator.value;
      return (v) => v === literal;
    }
    case "id": {
      const table = validator.tableName;
      return (v) => typeof v === "string" && tableNameFromId(v) === table;
    }
    case "array": {
      const item = compileValidator(validator.value as ValidatorJson);
      return (v) => {
        if (!Array.isArray(v)) return false;
        for (const x of v) if (!item(x)) return false;
        return true;
      };
    }
    case "union": {
      const branches = (validator.value as ValidatorJson[]).map(compileValidator);
      return (v) => {
        for (const branch of branches) if (branch(v)) return true;
        return false;
      };
    }
    case "object": {
      // convex-test looks fields up with `validator.value[k] === undefined`;
      // the same object is used here so the lookups agree.
      const fields = validator.value as Record<string, { fieldType: ValidatorJson; optional: boolean }>;
      const checks = Object.entries(fields).map(([k, { fieldType, optional }]) => ({ k, optional, check: compileValidator(fieldType) }));
      return (v) => {
        if (typeof v !== "object" || v === null || !isSimpleObject(v)) return false;
        const obj = v as Record<string, unknown>;
        for (const { k, optional, check } of checks) {
          const x = obj[k];
          if (x === undefined) {
            if (!optional) return false;
          } else if (!check(x)) {
            return false;
          }
        }
        for (const k of Object.keys(obj)) if (fields[k] === undefined) return false;
        return true;
      };
    }
    default:
      // convex-test's switch has no case for it (e.g. "record"): it passes there.
      return () => true;
  }
}

/** The parts of convex-test's `DatabaseFake` the compiled check replaces. */
interface Validating {
  _schema: null | { schemaValidation?: boolean; tables: Map<string, { documentType?: unknown }> };
  _validate(tableName: string, doc: unknown): void;
}

/**
 * Patch one DatabaseFake instance so each write is first checked by its
 * table's compiled predicate; anything it does not pass goes to
 * convex-test's `_validate`, which throws or passes as it always did.
 */
export function installCompiledValidation(db: Validating): void {
  const original = db._validate;
  if (typeof original !== "function") {
    throw new Error("convex_local: DatabaseFake has no _validate(); the compiled validation does not fit this convex-test");
  }
  const compiled = new Map<string, Check | null>();
  db._validate = function (this: Validating, tableName: string, doc: unknown): void {
    const schema = this._schema;
    if (schema !== null && schema.schemaValidation) {
      let check = compiled.get(tableName);
      if (check === undefined) {
        const documentType = schema.tables.get(tableName)?.documentType as ValidatorJson | undefined;
        check = documentType === undefined ? null : compileValidator(documentType);
        compiled.set(tableName, check);
      }
      if (check !== null && check(doc)) return;
    }
    original.call(this, tableName, doc);
  };
}
