/**
 * The deployment: the project's Convex functions running in one convex-test
 * instance, one request at a time.
 *
 * convex-test keeps a stack of pending writes on a single fake database and
 * its own top-level lock is not FIFO, so every query, mutation and action
 * goes through `SerialQueue` — like a database with one writer, in arrival
 * order. `reset()` swaps in a fresh instance through the same queue.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { inspect } from "node:util";
import { convexTest } from "convex-test";
import { accelerate, assertPinned, tableNameFromId, type Acceleration, type DatabaseFakeInternals } from "./accelerate";
import type { UserIdentity } from "./auth";
import { installFastSyscalls, type SyscallGlobal } from "./fast_syscalls";
import type { Doc } from "./convex_test_internals";
import { discoverFunctions, loadSchema, type FunctionsDir } from "./modules";
import { ReadTracker, type CommittedChange, type ReadSet } from "./read_set";
import { eventKeys, trace, tracing, wallMs } from "./trace";

export type FunctionKind = "query" | "mutation" | "action";

export interface ResolvedFunction {
  udfPath: string; // canonical "dir/module:export"
  kind: FunctionKind;
  isPublic: boolean;
}

export type Outcome =
  | { ok: true; value: unknown; logLines: string[] }
  | { ok: false; error: unknown; logLines: string[] };

interface ConvexGlobal {
  components: Record<string, { db: DatabaseFakeInternals }>;
  transactionManager: { _lastCommitTs: bigint };
}

interface FromPath {
  queryFromPath(p: { udfPath: string; componentPath: string }, args: unknown): Promise<unknown>;
  mutationFromPath(p: { udfPath: string; componentPath: string }, args: unknown): Promise<unknown>;
  actionFromPath(p: { udfPath: string; componentPath: string }, args: unknown): Promise<unknown>;
}

type TestInstance = ReturnType<typeof convexTest> &
  FromPath & { withIdentity(identity: UserIdentity): FromPath & TestInstance };

/** A top-level commit: its timestamp and every document it changed. */
export type CommitListener = (ts: bigint, changes: CommittedChange[]) => void;

/** convex-test accessors per identity (each `withIdentity` builds ~20 closures). */
const MAX_CACHED_IDENTITIES = 256;

/** Stable JSON (object keys sorted) — the key of an identity or of arguments. */
export function stableStringify(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(stableStringify).join(",")}]`;
  const keys = Object.keys(value as object)
    .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${stableStringify((value as Record<string, unknown>)[k])}`).join(",")}}`;
}

/** Runs tasks one after another, in the order they were submitted. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private _depth = 0;

  get depth(): number {
    return this._depth;
  }

  run<T>(task: () => Promise<T>): Promise<T> {
    this._depth += 1;
    const result = this.tail.then(task);
    this.tail = result.then(
      () => {
        this._depth -= 1;
      },
      () => {
        this._depth -= 1;
      },
    );
    return result;
  }

  /** Resolves once everything submitted so far has finished. */
  idle(): Promise<void> {
    return this.tail.then(() => undefined);
  }
}

/**
 * convex-test keeps its per-instance state (databases, transaction manager)
 * in a closure and hands it to every call through an AsyncLocalStorage.
 * Observe one `run()` of that storage to get hold of it.
 */
export function captureConvexGlobal(t: ReturnType<typeof convexTest>): ConvexGlobal {
  const proto = AsyncLocalStorage.prototype as unknown as { run: (...a: unknown[]) => unknown };
  const originalRun = proto.run;
  let captured: ConvexGlobal | undefined;
  proto.run = function (this: unknown, store: unknown, ...rest: unknown[]) {
    if (
      captured === undefined &&
      typeof store === "object" &&
      store !== null &&
      "components" in store &&
      "transactionManager" in store
    ) {
      captured = store as ConvexGlobal;
    }
    return originalRun.call(this, store, ...rest);
  };
  try {
    void t.finishInProgressScheduledFunctions();
  } finally {
    proto.run = originalRun;
  }
  if (captured === undefined || captured.components[""]?.db === undefined) {
    throw new Error("convex_local: could not reach convex-test's database (has convex-test changed?)");
  }
  return captured;
}

// --- console capture: a function's console output becomes its logLines ------

const LEVELS = { log: "LOG", info: "INFO", warn: "WARN", error: "ERROR", debug: "DEBUG" } as const;
let currentLogLines: string[] | null = null;
let consoleCaptured = false;

function captureConsole(): void {
  if (consoleCaptured) return;
  consoleCaptured = true;
  for (const [method, level] of Object.entries(LEVELS)) {
    (console as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
      const line = `[${level}] ${args.map((a) => inspect(a, { depth: 4, breakLength: Infinity })).join(" ")}`;
      if (currentLogLines !== null) currentLogLines.push(line);
      // Outside a request (a scheduled function): keep stdout clean, use stderr.
      else process.stderr.write(`${JSON.stringify({ event: "function_log", line })}\n`);
    };
  }
}

export interface RuntimeOptions {
  functionsDir: string;
  accelerate: boolean;
  /** Called on a fresh database before indexes are built (state loading). */
  seed?: (db: DatabaseFakeInternals, tm: ConvexGlobal["transactionManager"]) => void;
  captureConsole?: boolean;
}

export class Deployment {
  readonly queue = new SerialQueue();
  private t!: TestInstance;
  private global: ConvexGlobal | undefined;
  private acceleration: Acceleration | null = null;
  private readonly reads = new ReadTracker();
  private readonly identityAccessors = new Map<string, FromPath>();
  private readonly commitListeners: CommitListener[] = [];
  private readonly resetListeners: (() => void)[] = [];

  private constructor(
    private readonly options: RuntimeOptions,
    private readonly fns: FunctionsDir,
    private readonly schema: unknown,
    private readonly functions: Map<string, ResolvedFunction>,
  ) {}

  static async load(options: RuntimeOptions): Promise<Deployment> {
    if (options.accelerate) assertPinned();
    if (options.captureConsole !== false) captureConsole();
    const fns = discoverFunctions(options.functionsDir);
    const schema = await loadSchema(fns);
    const functions = new Map<string, ResolvedFunction>();
    for (const modulePath of fns.modulePaths) {
      if (modulePath.startsWith("_generated/") || modulePath === "schema") continue;
      const entry = Object.entries(fns.modules).find(
        ([p]) => p.slice(fns.root.length + 1).replace(/\.[^.]+$/, "") === modulePath,
      );
      const mod = await entry![1]();
      for (const [name, fn] of Object.entries(mod)) {
        const f = fn as Record<string, unknown> | null;
        if (f === null || (typeof f !== "function" && typeof f !== "object")) continue;
        const kind: FunctionKind | null = f.isQuery ? "query" : f.isMutation ? "mutation" : f.isAction ? "action" : null;
        if (kind === null) continue;
        const udfPath = `${modulePath}:${name}`;
        functions.set(udfPath, { udfPath, kind, isPublic: f.isPublic === true });
      }
    }
    const deployment = new Deployment(options, fns, schema, functions);
    deployment.fresh(options.seed);
    return deployment;
  }

  /** Build a new, empty (or seeded) database. Not queued: callers queue it. */
  private fresh(seed?: RuntimeOptions["seed"]): void {
    const t = convexTest({
      schema: this.schema as never,
      modules: this.fns.modules,
      transactionLimits: true,
    } as never) as TestInstance;
    const global = captureConvexGlobal(t);
    if (seed) seed(global.components[""].db, global.transactionManager);
    // Timestamps never go back, not even across a reset: sync clients compare them.
    if (this.global) global.transactionManager._lastCommitTs = this.global.transactionManager._lastCommitTs;
    this.t = t;
    this.global = global;
    this.identityAccessors.clear();
    const db = global.components[""].db;
    this.acceleration = this.options.accelerate ? accelerate(db) : null;
    if (this.options.accelerate) installFastSyscalls(global as unknown as SyscallGlobal);
    this.reads.install(db);
    this.observeCommits(db);
  }

  /** Report each top-level commit (HTTP, WebSocket, scheduled functions) to the listeners. */
  private observeCommits(db: DatabaseFakeInternals): void {
    const commit = db.commit;
    const listeners = this.commitListeners;
    db.commit = function (this: DatabaseFakeInternals, commitTs: bigint | null = null): void {
      const top = this._writes.length === 1 ? this._writes[0] : undefined;
      const before: [string, Doc | undefined][] | null =
        top !== undefined && commitTs !== null ? Object.keys(top).map((id) => [id, this._documents[id]]) : null;
      commit.call(this, commitTs);
      if (before === null || listeners.length === 0) return;
      const changes: CommittedChange[] = [];
      for (const [id, old] of before) {
        const table = tableNameFromId(id);
        if (table !== null) changes.push({ id, table, before: old, after: this._documents[id] });
      }
      for (const listener of listeners) listener(commitTs!, changes);
    };
  }

  onCommit(listener: CommitListener): void {
    this.commitListeners.push(listener);
  }

  onReset(listener: () => void): void {
    this.resetListeners.push(listener);
  }

  get db(): DatabaseFakeInternals {
    return this.global!.components[""].db;
  }

  get lastCommitTs(): bigint {
    return this.global!.transactionManager._lastCommitTs;
  }

  get accelerated(): boolean {
    return this.acceleration !== null;
  }

  functionNames(): string[] {
    return [...this.functions.keys()];
  }

  /** `assets:getByKey`, `assets.js:getByKey`, `dir/mod` (default export). */
  resolve(udfPath: string): ResolvedFunction | undefined {
    return this.functions.get(canonicalUdfPath(udfPath));
  }

  stats(): Record<string, unknown> {
    const counts: Record<string, number> = {};
    for (const id of Object.keys(this.db._documents)) {
      const table = id.replace(/^[0-9]+/, "");
      counts[table] = (counts[table] ?? 0) + 1;
    }
    return { accelerated: this.accelerated, queueDepth: this.queue.depth, documents: counts };
  }

  /**
   * Run a registered function through the queue, as `identity` (null: no
   * user). Never throws for function errors. `then` runs inside the queue
   * right after, with the latest commit timestamp (a mutation's own), before
   * anything queued later — the sync protocol answers mutations from there.
   */
  execute(
    fn: ResolvedFunction,
    args: unknown,
    identity: UserIdentity | null = null,
    then?: (outcome: Outcome, lastCommitTs: bigint) => void,
  ): Promise<Outcome> {
    const queued = tracing ? wallMs() : 0;
    return this.queue.run(async () => {
      const start = tracing ? wallMs() : 0;
      const outcome = await this.executeNow(fn, args, identity);
      if (tracing) {
        trace({ e: "exec", path: fn.udfPath, queued, start, end: wallMs(), ts: String(this.lastCommitTs), keys: eventKeys(args) });
      }
      try {
        then?.(outcome, this.lastCommitTs);
      } catch (e) {
        process.stderr.write(`${JSON.stringify({ event: "internal_error", error: String((e as Error)?.stack ?? e) })}\n`);
      }
      return outcome;
    });
  }

  /**
   * Run a query recording what it reads into `reads`. Only from inside a
   * task of `queue` (the subscription refresh is one).
   */
  runQueryTracked(fn: ResolvedFunction, args: unknown, identity: UserIdentity | null, reads: ReadSet): Promise<Outcome> {
    return this.reads.run(reads, () => this.executeNow(fn, args, identity));
  }

  private accessor(identity: UserIdentity | null): FromPath {
    if (identity === null) return this.t;
    const key = stableStringify(identity);
    let accessor = this.identityAccessors.get(key);
    if (accessor === undefined) {
      if (this.identityAccessors.size >= MAX_CACHED_IDENTITIES) this.identityAccessors.clear();
      accessor = this.t.withIdentity(identity);
      this.identityAccessors.set(key, accessor);
    }
    return accessor;
  }

  private async executeNow(fn: ResolvedFunction, args: unknown, identity: UserIdentity | null): Promise<Outcome> {
    const logLines: string[] = [];
    currentLogLines = logLines;
    const path = { udfPath: fn.udfPath, componentPath: "" };
    const t = this.accessor(identity);
    try {
      let value: unknown;
      if (fn.kind === "query") value = await t.queryFromPath(path, args);
      else if (fn.kind === "mutation") value = await t.mutationFromPath(path, args);
      else value = await t.actionFromPath(path, args);
      return { ok: true, value, logLines };
    } catch (error) {
      return { ok: false, error, logLines };
    } finally {
      currentLogLines = null;
    }
  }

  /** Wipe the database (queued behind everything already submitted). */
  reset(): Promise<void> {
    return this.queue.run(async () => {
      await this.t.finishInProgressScheduledFunctions();
      this.fresh();
      for (const listener of this.resetListeners) listener();
    });
  }
}

export function canonicalUdfPath(udfPath: string): string {
  const [modulePath, exportName = "default"] = udfPath.split(":");
  return `${modulePath.replace(/\.js$/, "")}:${exportName}`;
}
