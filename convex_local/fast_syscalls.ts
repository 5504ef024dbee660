/**
 * The hot database syscalls (`get`, `queryPage`, `shallowMerge`, `insert`)
 * without their repeated per-document work, with convex-test 0.0.60's exact
 * results, errors and transaction metrics.
 *
 * Every `ctx.db.get/paginate/patch/insert` is one `Convex.asyncSyscall` into
 * convex-test, which measures each document it reads or writes
 * (`getDocumentSize` / `getConvexSize`: a walk over every field and string,
 * for `transactionLimits`) and serialises what it read (`convexToJson`, then
 * `JSON.stringify`). The cleanup worker's records are read by `lifecycle:due`
 * (a page), then read, patched and re-measured by `lifecycle:markDeleted`:
 * the same unchanged document walked four times.
 *
 * convex-test never changes a stored document object in place: a patch or
 * replace stores a new object, functions only ever see copies (through
 * JSON), and a commit keeps the object (or resolves placeholders into a new
 * one). So a document object's size and JSON text never change; here they
 * are computed once per object (WeakMaps: they go with the document), and a
 * patched document's size is the old one plus the difference of the patched
 * fields (the size is a sum over fields, so this is the same number).
 *
 * Everything else is convex-test's code path, replayed in the same order on
 * its `DatabaseFake` and metrics tracker: the database calls (so validation,
 * the index acceleration and the read sets see what they saw), the tracking
 * calls and their limit errors, and the one-`paginate`-per-function check on
 * convex-test's own execution context (found once, see `captureExecution`).
 * Other operations, and a deployment with components, go to convex-test.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { convexToJson, getConvexSize, getDocumentSize, jsonToConvex, type Value } from "convex/values";
import type { DatabaseFakeInternals, Doc } from "./convex_test_internals";

interface MetricsTracker {
  trackRead(bytes: number): void;
  trackWrite(bytes: number): void;
  trackIndexRange(): void;
}

/** The parts of convex-test's per-instance global this module uses. */
export interface SyscallGlobal {
  components: Record<string, { db: unknown }>;
  transactionManager: { getMetricsTracker(): MetricsTracker | null };
  asyncSyscall: (op: string, jsonArgs: string) => Promise<string>;
}

interface ExecutionContext {
  componentPath: string;
  paginatedQueries: number;
}

interface Writing {
  insert(table: string, value: unknown): string;
  patch(table: string | undefined, id: string, value: unknown): void;
  paginate(args: Record<string, unknown>): {
    page: Doc[];
    isDone: boolean;
    continueCursor: string;
    splitCursor: unknown;
    pageStatus: unknown;
  };
}

const FAST_OPS = new Set(["1.0/get", "1.0/queryPage", "1.0/shallowMerge", "1.0/insert"]);
const INSTALLED = Symbol.for("convex_local.fastSyscalls");

// convex-test's text, word for word.
const ONE_PAGINATE =
  "Only a single paginated query (`.paginate()`) is allowed per " +
  "function execution. Calling `.paginate()` more than once in a " +
  "single Convex function fails at runtime in a deployed backend. " +
  "This is a Convex limit: https://docs.convex.dev/database/pagination";

/**
 * convex-test keeps each function's execution context (component path,
 * paginate count) in a module-private AsyncLocalStorage that every syscall
 * reads first (`getDb()`). While one syscall runs through convex-test, watch
 * `getStore` for the storage whose store has that shape.
 */
function captureExecution(call: () => Promise<string>): { found: AsyncLocalStorage<ExecutionContext> | null; result: Promise<string> } {
  const proto = AsyncLocalStorage.prototype as unknown as { getStore: (this: AsyncLocalStorage<unknown>) => unknown };
  const getStore = proto.getStore;
  let found: AsyncLocalStorage<ExecutionContext> | null = null;
  proto.getStore = function (this: AsyncLocalStorage<unknown>) {
    const store = getStore.call(this);
    if (found === null && typeof store === "object" && store !== null && "paginatedQueries" in store && "componentPath" in store) {
      found = this as AsyncLocalStorage<ExecutionContext>;
    }
    return store;
  };
  let result: Promise<string>;
  try {
    result = call(); // its synchronous part reads the execution context
  } finally {
    proto.getStore = getStore;
  }
  return { found, result };
}

export function installFastSyscalls(global: SyscallGlobal): void {
  if ((global as unknown as Record<symbol, boolean>)[INSTALLED]) return;
  const original = global.asyncSyscall;
  if (typeof original !== "function") {
    throw new Error("convex_local: convex-test's global has no asyncSyscall; the fast syscalls do not fit this convex-test");
  }
  let execution: AsyncLocalStorage<ExecutionContext> | null = null;
  const sizes = new WeakMap<object, number>();
  const texts = new WeakMap<object, string>();

  /** `getConvexSize(doc)`, once per document object. */
  const convexSize = (doc: Doc): number => {
    let size = sizes.get(doc);
    if (size === undefined) sizes.set(doc, (size = getConvexSize(doc as Value)));
    return size;
  };
  /** `getDocumentSize(doc)`: `getConvexSize` when both system fields are there. */
  const documentSize = (doc: Doc): number =>
    doc._id !== undefined && doc._creationTime !== undefined ? convexSize(doc) : getDocumentSize(doc as unknown as Record<string, Value>);
  const text = (doc: Doc): string => {
    let json = texts.get(doc);
    if (json === undefined) texts.set(doc, (json = JSON.stringify(convexToJson(doc as Value))));
    return json;
  };
  /** What one field adds to an object's `getConvexSize`. */
  const fieldSize = (key: string, value: unknown): number =>
    value === undefined ? 0 : getConvexSize(key) - 2 + 1 + getConvexSize(value as Value);
  /** The size of `after`, a patch of `before` on `keys`, from `before`'s (cached) size. */
  const patchedSize = (before: Doc, after: Doc, keys: string[]): number => {
    if (!sizes.has(before)) return convexSize(after);
    let size = convexSize(before);
    for (const key of keys) {
      if (key === "_id" || key === "_creationTime") continue; // never changed by a patch
      size += fieldSize(key, after[key]) - fieldSize(key, before[key]);
    }
    sizes.set(after, size);
    return size;
  };

  global.asyncSyscall = function (op: string, jsonArgs: string): Promise<string> {
    const paths = Object.keys(global.components);
    if (!FAST_OPS.has(op) || paths.length !== 1 || paths[0] !== "") return original(op, jsonArgs);
    if (execution === null) {
      const { found, result } = captureExecution(() => original(op, jsonArgs));
      execution = found;
      return result;
    }
    const ctx = execution.getStore();
    if ((ctx?.componentPath ?? "") !== "") return original(op, jsonArgs);
    // Settled at once, as convex-test's async implementation settles (one promise fewer per call).
    try {
      return Promise.resolve(fast(op, jsonArgs, ctx));
    } catch (e) {
      return Promise.reject(e);
    }
  };

  function fast(op: string, jsonArgs: string, ctx: ExecutionContext | undefined): string {
    const args = JSON.parse(jsonArgs);
    const db = global.components[""].db as DatabaseFakeInternals & Writing;
    const tracker = global.transactionManager.getMetricsTracker();
    switch (op) {
      case "1.0/get": {
        tracker?.trackIndexRange();
        const doc = db.get(args.table, args.id);
        if (doc === null) return "null";
        tracker?.trackRead(documentSize(doc));
        return text(doc);
      }
      case "1.0/queryPage": {
        const { query, cursor, endCursor, pageSize, maximumRowsRead, maximumBytesRead } = args;
        if (ctx) {
          ctx.paginatedQueries += 1;
          if (ctx.paginatedQueries > 1) throw new Error(ONE_PAGINATE);
        }
        const { page, isDone, continueCursor, splitCursor, pageStatus } = db.paginate({
          query,
          cursor,
          endCursor,
          pageSize,
          maximumRowsRead,
          maximumBytesRead,
        });
        if (tracker) {
          tracker.trackIndexRange();
          for (const doc of page) tracker.trackRead(documentSize(doc));
        }
        // convexToJson of the whole answer (its fields sorted), each document's text cached:
        // the only `"page":[]` in the skeleton is the key (quotes inside strings are escaped).
        const skeleton = JSON.stringify(convexToJson({ page: [], isDone, continueCursor, splitCursor, pageStatus } as Value));
        const at = skeleton.indexOf('"page":[]') + '"page":['.length;
        return `${skeleton.slice(0, at)}${page.map(text).join(",")}${skeleton.slice(at)}`;
      }
      case "1.0/shallowMerge": {
        const { table, id, value } = args;
        const before = db.get(table, id);
        if (before !== null) tracker?.trackRead(documentSize(before));
        const keys = typeof value === "object" && value !== null ? Object.keys(value) : [];
        db.patch(table, id, value);
        const after = db.get(table, id);
        tracker?.trackWrite(after === null ? 1 : before === null ? convexSize(after) : patchedSize(before, after, keys));
        return "{}";
      }
      default: {
        const _id = db.insert(args.table, jsonToConvex(args.value));
        const after = db.get(args.table, _id);
        tracker?.trackWrite(after === null ? 1 : convexSize(after));
        return JSON.stringify({ _id });
      }
    }
  }
  (global as unknown as Record<symbol, boolean>)[INSTALLED] = true;
}
