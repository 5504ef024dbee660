/**
 * Subscribed queries, shared across connections, re-run after commits.
 *
 * One `QueryEntry` per distinct (function, arguments, identity): sessions
 * that subscribe to the same query as the same identity share it, so 100
 * clients on one query cost one re-run per commit, not 100.
 *
 * Each run records its read set (`read_set.ts`). A commit — from the HTTP
 * API, a WebSocket mutation, an action's mutations, a scheduled function —
 * is checked against the entries reading the tables it wrote (per document:
 * whole-table read, point read of that id, or index range containing the
 * document's key before or after); the affected ones are marked dirty and a
 * refresh is queued on the deployment's FIFO queue. The refresh runs after
 * whatever was queued before it; when its turn comes and more executions wait
 * behind it, it steps behind them once more, for at most `refreshDeferMs`
 * since it was asked for (25 ms), so commits that arrive together (the sync
 * daemon keeps several applyEvents in flight) share one re-run per entry and
 * one Transition per session instead of one each. On an idle queue it runs at
 * once. It then takes the latest commit timestamp, applies the sessions' pending
 * query-set and identity changes, re-runs every dirty or new entry once and
 * lets each touched session send one Transition to that timestamp with the
 * results that changed for it.
 *
 * A session that only needs its timestamp to move (a mutation it sent must
 * be covered by a Transition) asks with `schedule(session)`.
 */
import { convexToJson, type Value } from "convex/values";
import { callerIdentity, type Caller } from "./auth";
import { decodeArgs, renderFunctionError, resolveCallable } from "./calls";
import { FunctionError, newRequestId } from "./errors";
import { ReadSet, type CommittedChange } from "./read_set";
import { canonicalUdfPath, stableStringify, type Deployment, type Outcome } from "./runtime";
import { DEFAULT_REFRESH_DEFER_MS } from "./config";
import { trace, tracing, wallMs } from "./trace";

/** What a session does when the hub refreshes (implemented by SyncSession). */
export interface Subscriber {
  /** Apply pending query-set / identity changes (may acquire and release entries). */
  prepare(): void;
  /** Send a Transition to `ts` if anything changed for this subscriber; true if it sent one. */
  emit(ts: bigint): boolean;
}

export class QueryEntry {
  readonly requestId = newRequestId();
  /** Rendered StateModification fields (`"type":"QueryUpdated","value":…`), null before the first run. */
  body: string | null = null;
  reads: ReadSet | null = null;
  tables = new Set<string>();
  readonly subscribers = new Map<Subscriber, number>();

  constructor(
    readonly key: string,
    readonly udfPath: string,
    /** The arguments as the client sent them (`[{…}]`, Convex-encoded JSON). */
    readonly args: unknown,
    readonly caller: Caller,
    /** The query journal (ours: `{"endCursor":…}`), from the client or the first run. */
    public journal: string | null,
  ) {}
}

/** The page end recorded in a journal of ours; anything else (another backend's) is ignored. */
function journalEndCursor(journal: string | null): string | null {
  if (journal === null) return null;
  try {
    const parsed = JSON.parse(journal) as { endCursor?: unknown };
    return typeof parsed.endCursor === "string" ? parsed.endCursor : null;
  } catch {
    return null;
  }
}

export function callerKey(caller: Caller): string {
  if (caller.kind === "anonymous") return "anonymous";
  if (caller.kind === "admin") return caller.actingAs === null ? "admin" : `admin:${stableStringify(caller.actingAs)}`;
  return `user:${stableStringify(caller.identity)}`;
}

export interface HubStats {
  entries: number;
  subscriptions: number;
  refreshes: number;
  reruns: number;
  changedResults: number;
  /** Times a refresh stepped behind queued executions. */
  deferrals: number;
}

export class SubscriptionHub {
  private readonly entries = new Map<string, QueryEntry>();
  private readonly byTable = new Map<string, Set<QueryEntry>>();
  private dirty = new Set<QueryEntry>();
  private pending = new Set<Subscriber>();
  private refreshQueued = false;
  private refreshAskedAt = 0;
  private commitCount = 0;
  private readonly counters = { refreshes: 0, reruns: 0, changedResults: 0, deferrals: 0 };

  constructor(
    private readonly deployment: Deployment,
    private readonly functionsDir: string,
    private readonly onError: (e: unknown) => void,
    private readonly refreshDeferMs = DEFAULT_REFRESH_DEFER_MS,
  ) {
    deployment.onCommit((_ts, changes) => this.onCommit(changes));
    deployment.onReset(() => {
      for (const entry of this.entries.values()) this.dirty.add(entry);
      this.queueRefresh();
    });
  }

  stats(): HubStats {
    let subscriptions = 0;
    for (const entry of this.entries.values()) for (const n of entry.subscribers.values()) subscriptions += n;
    return { entries: this.entries.size, subscriptions, ...this.counters };
  }

  /** The shared entry for this query as this caller; new entries run in the next refresh. */
  acquire(subscriber: Subscriber, udfPath: string, args: unknown, caller: Caller, journal: string | null = null): QueryEntry {
    const path = canonicalUdfPath(udfPath);
    const key = `${callerKey(caller)}\u0000${path}\u0000${stableStringify(args)}\u0000${journal ?? ""}`;
    let entry = this.entries.get(key);
    if (entry === undefined) {
      entry = new QueryEntry(key, path, args, caller, journal);
      this.entries.set(key, entry);
      this.dirty.add(entry);
    }
    entry.subscribers.set(subscriber, (entry.subscribers.get(subscriber) ?? 0) + 1);
    return entry;
  }

  release(subscriber: Subscriber, entry: QueryEntry): void {
    const n = entry.subscribers.get(subscriber) ?? 0;
    if (n > 1) {
      entry.subscribers.set(subscriber, n - 1);
      return;
    }
    entry.subscribers.delete(subscriber);
    if (entry.subscribers.size > 0) return;
    this.entries.delete(entry.key);
    this.dirty.delete(entry);
    for (const table of entry.tables) this.byTable.get(table)?.delete(entry);
  }

  /** Ask for a refresh that lets `subscriber` prepare and emit. */
  schedule(subscriber: Subscriber): void {
    this.pending.add(subscriber);
    this.queueRefresh();
  }

  /** Forget a closed subscriber's pending refresh (its entries are released by the caller). */
  forget(subscriber: Subscriber): void {
    this.pending.delete(subscriber);
  }

  private onCommit(changes: CommittedChange[]): void {
    this.commitCount += 1;
    let marked = false;
    for (const change of changes) {
      const candidates = this.byTable.get(change.table);
      if (candidates === undefined) continue;
      for (const entry of candidates) {
        if (this.dirty.has(entry)) continue;
        if (entry.reads === null || entry.reads.affectedBy(change)) {
          this.dirty.add(entry);
          marked = true;
        }
      }
    }
    if (marked) this.queueRefresh();
  }

  private queueRefresh(): void {
    if (this.refreshQueued) return;
    this.refreshQueued = true;
    this.refreshAskedAt = performance.now();
    this.enqueueRefresh();
  }

  private enqueueRefresh(): void {
    this.deployment.queue
      .run(() => this.refreshOrYield())
      .catch((e) => this.onError(e));
  }

  private async refreshOrYield(): Promise<void> {
    if (this.refreshDeferMs > 0) {
      // convex-test runs a function without yielding to I/O, so requests that
      // arrived meanwhile are still unread: one event-loop turn lets them
      // queue their executions. The queue's depth counts this task.
      await new Promise((resolve) => setImmediate(resolve));
      if (this.deployment.queue.depth > 1 && performance.now() - this.refreshAskedAt < this.refreshDeferMs) {
        this.counters.deferrals += 1;
        this.enqueueRefresh();
        return;
      }
    }
    await this.refresh();
  }

  private async refresh(): Promise<void> {
    this.refreshQueued = false;
    this.counters.refreshes += 1;
    const start = tracing ? wallMs() : 0;
    const reruns = this.counters.reruns;
    const changed = this.counters.changedResults;
    const ts = this.deployment.lastCommitTs;
    const touched = this.pending;
    this.pending = new Set();
    for (const subscriber of touched) subscriber.prepare();
    const toRun = this.dirty;
    this.dirty = new Set();
    for (const entry of toRun) {
      if (entry.subscribers.size === 0) continue;
      const before = entry.body;
      const commits = this.commitCount;
      await this.run(entry);
      // A scheduled function may commit while this query runs (it does not
      // go through the queue): run it again in the next refresh.
      if (this.commitCount !== commits) {
        this.dirty.add(entry);
        this.queueRefresh();
      }
      if (entry.body !== before) {
        this.counters.changedResults += 1;
        for (const subscriber of entry.subscribers.keys()) touched.add(subscriber);
      }
    }
    let sent = 0;
    for (const subscriber of touched) if (subscriber.emit(ts)) sent += 1;
    if (tracing) {
      trace({
        e: "refresh", start, end: wallMs(), ts: String(ts), reruns: this.counters.reruns - reruns,
        changed: this.counters.changedResults - changed, sent,
      });
    }
  }

  private async run(entry: QueryEntry): Promise<void> {
    this.counters.reruns += 1;
    const reads = new ReadSet(journalEndCursor(entry.journal));
    let body: string;
    const found = resolveCallable(this.deployment, entry.udfPath, "query", entry.caller.kind === "admin");
    if (!found.ok) {
      body = this.failedBody(new FunctionError(found.message), [], entry);
    } else {
      let args: Value | undefined;
      try {
        args = decodeArgs(entry.args);
      } catch (e) {
        body = this.failedBody(e, [], entry);
      }
      if (args !== undefined) {
        const outcome = await this.deployment.runQueryTracked(found.fn, args, callerIdentity(entry.caller), reads);
        if (reads.journalEndCursor === null && reads.pageEnd !== null) entry.journal = JSON.stringify({ endCursor: reads.pageEnd });
        body = this.bodyOf(outcome, entry);
      }
    }
    if (body! !== entry.body) entry.body = body!;
    this.index(entry, reads);
  }

  private index(entry: QueryEntry, reads: ReadSet): void {
    const tables = reads.tables();
    for (const table of entry.tables) if (!tables.has(table)) this.byTable.get(table)?.delete(entry);
    for (const table of tables) {
      let set = this.byTable.get(table);
      if (set === undefined) this.byTable.set(table, (set = new Set()));
      set.add(entry);
    }
    entry.tables = tables;
    entry.reads = reads;
  }

  private bodyOf(outcome: Outcome, entry: QueryEntry): string {
    if (!outcome.ok) return this.failedBody(outcome.error, outcome.logLines, entry);
    let valueJson: string;
    try {
      valueJson = JSON.stringify(convexToJson((outcome.value ?? null) as Value));
    } catch (e) {
      return this.failedBody(e, outcome.logLines, entry);
    }
    return `"type":"QueryUpdated","value":${valueJson},"logLines":${JSON.stringify(outcome.logLines)},"journal":${JSON.stringify(entry.journal)}`;
  }

  private failedBody(thrown: unknown, logLines: string[], entry: QueryEntry): string {
    const rendered = renderFunctionError(thrown, entry.requestId, this.functionsDir);
    let data = "";
    if (rendered.hasData) {
      try {
        data = `,"errorData":${JSON.stringify(convexToJson(rendered.data as Value))}`;
      } catch {
        data = "";
      }
    }
    return `"type":"QueryFailed","errorMessage":${JSON.stringify(rendered.message)},"logLines":${JSON.stringify(logLines)},"journal":${JSON.stringify(entry.journal)}${data}`;
  }
}
