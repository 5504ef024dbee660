/**
 * One WebSocket connection speaking Convex's sync protocol — the local
 * counterpart of convex-backend's sync worker (crates/sync/src/worker.rs,
 * state.rs).
 *
 * Versions. The client numbers its query-set and identity changes
 * (`baseVersion` → `newVersion`); we check each against what we received
 * (`received`), apply them at the next refresh (`applied`), and every
 * Transition goes from the version we last sent (`sent`) to the applied
 * versions at the refresh's timestamp — so consecutive Transitions chain.
 *
 * Messages are handled one at a time in arrival order (authentication is
 * async). Mutations and actions run through the deployment's FIFO queue as
 * the identity current when their message arrived; a mutation's
 * MutationResponse is written from inside its queue task, right after the
 * commit, and the session then asks for a Transition to a timestamp ≥ the
 * commit's — which comes after the response, as the clients need (they
 * resolve a mutation on the first Transition past its `ts`).
 *
 * Re-sent mutations (same session id and request id after a reconnect) get
 * their first response again instead of running twice.
 *
 * Errors: a malformed message or version mismatch → FatalError, close; a
 * rejected token → AuthError {authUpdateAttempted: true}, close (the client
 * fetches a fresh token and reconnects); a user token expiring during the
 * session → AuthError {authUpdateAttempted: false}, close.
 */
import type { WebSocket } from "ws";
import { convexToJson, type Value } from "convex/values";
import { ANONYMOUS, CLOCK_TOLERANCE_S, callerIdentity, type AuthVerifier, type Caller, type UserIdentity } from "./auth";
import { decodeArgs, renderFunctionError, resolveCallable } from "./calls";
import { FunctionError, SystemError, newRequestId } from "./errors";
import { adminKeyMatches } from "./http_api";
import type { Deployment, Outcome, ResolvedFunction } from "./runtime";
import type { QueryEntry, Subscriber, SubscriptionHub } from "./subscriptions";
import {
  PING,
  ProtocolError,
  parseClientMessage,
  renderActionResponse,
  renderAuthError,
  renderFatalError,
  renderMutationResponse,
  renderTransition,
  type ClientMessage,
  type FunctionCallMessage,
  type FunctionReply,
  type QuerySetModification,
  type StateVersion,
} from "./sync_protocol";

const HEARTBEAT_MS = 15_000;
const MAX_REMEMBERED_RESPONSES = 10_000;

export interface SessionContext {
  deployment: Deployment;
  hub: SubscriptionHub;
  auth: AuthVerifier;
  adminKey: string;
  functionsDir: string;
  /** Responses of mutations by "sessionId|requestId", shared by all connections. */
  responses: Map<string, RememberedResponse>;
  afterExecute?: () => void;
  log?: (record: Record<string, unknown>) => void;
}

/** A mutation's response once known; re-sends arriving before that wait for it. */
export interface RememberedResponse {
  text: string | null;
  ts: bigint | null;
  waiting: ((text: string, ts: bigint | null) => void)[];
}

interface BoundQuery {
  entry: QueryEntry;
  lastSent: string | null;
}

export class SyncSession implements Subscriber {
  private sent: StateVersion = { querySet: 0, identity: 0, ts: 0n };
  private readonly received = { querySet: 0, identity: 0 };
  private applied = { querySet: 0, identity: 0 };
  private caller: Caller = ANONYMOUS;
  private callerChanged = false;
  private pendingMods: QuerySetModification[] = [];
  private removed: number[] = [];
  private readonly queries = new Map<number, BoundQuery>();
  private requiredTs: bigint | null = null;
  private clientClockSkew: number | null = null;
  private sessionId: string | null = null;
  private inbox: Promise<void> = Promise.resolve();
  private closed = false;
  private heartbeat: NodeJS.Timeout | null = null;
  private expiry: NodeJS.Timeout | null = null;

  constructor(
    private readonly ws: WebSocket,
    private readonly ctx: SessionContext,
    readonly id: number,
  ) {
    ws.on("message", (data, isBinary) => {
      if (isBinary) return this.fatal(new ProtocolError("WSMessageInvalidJson", "Received a binary message on the sync websocket"));
      const text = data.toString();
      this.inbox = this.inbox.then(() => this.handle(text)).catch((e) => this.fatal(e));
    });
    ws.on("close", () => this.dispose());
    ws.on("error", () => this.dispose());
    this.armHeartbeat();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Close from the server side (shutdown). */
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.ws.close(code, reason);
    this.dispose();
  }

  // --- outgoing --------------------------------------------------------------

  private send(text: string): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(text);
    this.armHeartbeat();
  }

  private armHeartbeat(): void {
    if (this.heartbeat !== null) clearTimeout(this.heartbeat);
    if (this.closed) return;
    this.heartbeat = setTimeout(() => this.send(PING), HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  private dispose(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeat !== null) clearTimeout(this.heartbeat);
    if (this.expiry !== null) clearTimeout(this.expiry);
    this.ctx.hub.forget(this);
    for (const q of this.queries.values()) this.ctx.hub.release(this, q.entry);
    this.queries.clear();
    this.ctx.log?.({ event: "ws_close", session: this.id });
  }

  private fatal(e: unknown): void {
    if (this.closed) return;
    const message = e instanceof ProtocolError || e instanceof SystemError ? e.message : "Your request couldn't be completed. Try again later.";
    if (!(e instanceof ProtocolError) && !(e instanceof SystemError)) {
      process.stderr.write(`${JSON.stringify({ event: "sync_internal_error", error: String((e as Error)?.stack ?? e) })}\n`);
    }
    this.send(renderFatalError(message));
    this.ws.close();
    this.dispose();
  }

  private authError(message: string, baseVersion: number, authUpdateAttempted: boolean): void {
    if (this.closed) return;
    this.send(renderAuthError(message, baseVersion, authUpdateAttempted));
    // No close code, like the backend for Unauthenticated: the client decides.
    this.ws.close();
    this.dispose();
  }

  // --- the hub's side ----------------------------------------------------------

  prepare(): void {
    if (this.closed) return;
    const hub = this.ctx.hub;
    if (this.callerChanged) {
      this.callerChanged = false;
      // Re-bind every query to the new identity; unchanged results are not re-sent.
      for (const q of this.queries.values()) {
        const next = hub.acquire(this, q.entry.udfPath, q.entry.args, this.caller, q.entry.journal);
        hub.release(this, q.entry);
        q.entry = next;
      }
    }
    for (const mod of this.pendingMods) {
      const existing = this.queries.get(mod.queryId);
      if (existing !== undefined) {
        hub.release(this, existing.entry);
        this.queries.delete(mod.queryId);
      }
      if (mod.type === "Add") {
        const entry = hub.acquire(this, mod.udfPath, mod.args, this.caller, mod.journal);
        this.queries.set(mod.queryId, { entry, lastSent: null });
        this.removed = this.removed.filter((id) => id !== mod.queryId);
      } else if (existing !== undefined) {
        this.removed.push(mod.queryId);
      }
    }
    this.pendingMods = [];
    this.applied = { querySet: this.received.querySet, identity: this.received.identity };
  }

  emit(ts: bigint): boolean {
    if (this.closed) return false;
    const modifications: string[] = [];
    for (const id of this.removed) modifications.push(`{"type":"QueryRemoved","queryId":${id}}`);
    this.removed = [];
    for (const [id, q] of this.queries) {
      const body = q.entry.body;
      if (body !== null && body !== q.lastSent) {
        modifications.push(`{"queryId":${id},${body}}`);
        q.lastSent = body;
      }
    }
    const end: StateVersion = {
      querySet: this.applied.querySet,
      identity: this.applied.identity,
      ts: ts > this.sent.ts ? ts : this.sent.ts,
    };
    const covers = this.requiredTs !== null && this.requiredTs <= end.ts;
    const versionMoved = end.querySet !== this.sent.querySet || end.identity !== this.sent.identity;
    if (modifications.length === 0 && !versionMoved && !covers) return false;
    if (covers) this.requiredTs = null;
    this.send(renderTransition(this.sent, end, modifications, this.clientClockSkew));
    this.sent = end;
    return true;
  }

  // --- incoming ----------------------------------------------------------------

  private async handle(text: string): Promise<void> {
    if (this.closed) return;
    const message = parseClientMessage(text);
    switch (message.type) {
      case "Connect":
        return this.connect(message);
      case "ModifyQuerySet":
        return this.modifyQuerySet(message);
      case "Authenticate":
        return this.authenticate(message);
      case "Mutation":
        return this.mutation(message);
      case "Action":
        return this.action(message);
      case "Event":
        this.ctx.log?.({ event: "ws_client_event", session: this.id, eventType: message.eventType });
        return;
    }
  }

  private connect(m: Extract<ClientMessage, { type: "Connect" }>): void {
    this.sessionId = m.sessionId;
    // The Python client sends clientTs 0: no clock to compare.
    if (m.clientTs !== null && m.clientTs > 0) this.clientClockSkew = Math.round(m.clientTs - Date.now());
    const latest = this.ctx.deployment.lastCommitTs;
    // The backend refuses a client that has seen the future; a local server
    // restarted from a debounced state file may legitimately be behind.
    if (m.maxObservedTimestamp !== null && m.maxObservedTimestamp > latest) {
      this.ctx.log?.({ event: "ws_client_ahead", session: this.id, observed: String(m.maxObservedTimestamp), latest: String(latest) });
    }
    this.ctx.log?.({ event: "ws_connect", session: this.id, connectionCount: m.connectionCount });
  }

  private modifyQuerySet(m: Extract<ClientMessage, { type: "ModifyQuerySet" }>): void {
    if (m.baseVersion !== this.received.querySet) {
      throw new ProtocolError(
        "BaseVersionMismatch",
        `Base version ${m.baseVersion} passed up doesn't match the current version ${this.received.querySet}`,
      );
    }
    if (m.newVersion <= m.baseVersion) throw new ProtocolError("BaseVersionMismatch", `New version ${m.newVersion} is not after ${m.baseVersion}`);
    this.received.querySet = m.newVersion;
    this.pendingMods.push(...m.modifications);
    this.ctx.hub.schedule(this);
  }

  private async authenticate(m: Extract<ClientMessage, { type: "Authenticate" }>): Promise<void> {
    if (m.baseVersion !== this.received.identity) {
      throw new ProtocolError("BaseVersionMismatch", `Identity base version ${m.baseVersion} doesn't match the current version ${this.received.identity}`);
    }
    let caller: Caller;
    try {
      caller = await this.callerFor(m);
    } catch (e) {
      if (e instanceof SystemError) return this.authError(e.message, m.baseVersion, true);
      throw e;
    }
    if (this.closed) return;
    this.caller = caller;
    this.received.identity = m.baseVersion + 1;
    this.callerChanged = true;
    this.armExpiry();
    this.ctx.hub.schedule(this);
  }

  private async callerFor(m: Extract<ClientMessage, { type: "Authenticate" }>): Promise<Caller> {
    if (m.tokenType === "None") return ANONYMOUS;
    if (m.tokenType === "User") return this.ctx.auth.verify(m.value);
    if (!adminKeyMatches(m.value, this.ctx.adminKey)) {
      throw new SystemError(401, "BadAdminKey", "The provided admin key was invalid for this instance");
    }
    if (m.actingAs === null) return { kind: "admin", actingAs: null };
    const attrs = m.actingAs;
    const subject = typeof attrs.subject === "string" ? attrs.subject : "";
    const issuer = typeof attrs.issuer === "string" ? attrs.issuer : "";
    const tokenIdentifier = typeof attrs.tokenIdentifier === "string" ? attrs.tokenIdentifier : `${issuer}|${subject}`;
    return { kind: "admin", actingAs: { ...attrs, subject, issuer, tokenIdentifier } as UserIdentity };
  }

  /** A user token that expires mid-session: tell the client, which fetches a new one. */
  private armExpiry(): void {
    if (this.expiry !== null) clearTimeout(this.expiry);
    this.expiry = null;
    if (this.caller.kind !== "user") return;
    const delay = this.caller.expiresAtMs + CLOCK_TOLERANCE_S * 1000 - Date.now();
    if (delay > 2 ** 31 - 1) return;
    this.expiry = setTimeout(() => this.authError("Token expired", this.sent.identity, false), Math.max(0, delay));
    this.expiry.unref();
  }

  private tokenExpired(caller: Caller): boolean {
    if (caller.kind === "user" && Date.now() >= caller.expiresAtMs + CLOCK_TOLERANCE_S * 1000) {
      this.authError("Token expired", this.sent.identity, false);
      return true;
    }
    return false;
  }

  private mutation(m: FunctionCallMessage): void {
    const caller = this.caller;
    if (this.tokenExpired(caller)) return;
    const key = this.sessionId === null ? null : `${this.sessionId}|${m.requestId}`;
    const remembered = key === null ? undefined : this.ctx.responses.get(key);
    if (remembered !== undefined) {
      // A re-send after a reconnect: answer with the first execution's response.
      if (remembered.text === null) remembered.waiting.push((text, ts) => this.deliverMutation(text, ts));
      else this.inQueue(() => this.deliverMutation(remembered.text!, remembered.ts));
      return;
    }
    const requestId = newRequestId();
    const failed = (e: unknown) => {
      const text = renderMutationResponse(m.requestId, this.reply({ ok: false, error: e, logLines: [] }, requestId), null);
      this.inQueue(() => this.deliverMutation(text, null));
    };
    const call = this.resolveCall(m, "mutation", failed);
    if (call === null) return;
    const [fn, args] = call;
    const memo: RememberedResponse = { text: null, ts: null, waiting: [] };
    if (key !== null) this.remember(key, memo);
    void this.ctx.deployment.execute(fn, args, callerIdentity(caller), (outcome, ts) => {
      const commitTs = outcome.ok ? ts : null;
      const text = renderMutationResponse(m.requestId, this.reply(outcome, requestId), commitTs);
      memo.text = text;
      memo.ts = commitTs;
      this.deliverMutation(text, commitTs);
      for (const deliver of memo.waiting.splice(0)) deliver(text, commitTs);
      this.ctx.afterExecute?.();
    });
  }

  /** The function a Mutation or Action names and its decoded arguments, or null after `failed`. */
  private resolveCall(
    m: FunctionCallMessage,
    kind: "mutation" | "action",
    failed: (e: unknown) => void,
  ): [ResolvedFunction, Value] | null {
    if (m.componentPath) {
      failed(new FunctionError("Components are not supported by the local server."));
      return null;
    }
    const found = resolveCallable(this.ctx.deployment, m.udfPath, kind, this.caller.kind === "admin");
    if (!found.ok) {
      failed(new FunctionError(found.message));
      return null;
    }
    try {
      return [found.fn, decodeArgs(m.args)];
    } catch (e) {
      failed(e);
      return null;
    }
  }

  /** Run `fn` as a task of the deployment's queue (in order with executions and refreshes). */
  private inQueue(fn: () => void): void {
    this.ctx.deployment.queue.run(async () => fn()).catch((e) => this.fatal(e));
  }

  /** Inside a queue task: the response, then (via the hub) a Transition covering `ts`. */
  private deliverMutation(text: string, ts: bigint | null): void {
    this.send(text);
    if (ts === null || this.closed) return;
    if (this.requiredTs === null || ts > this.requiredTs) this.requiredTs = ts;
    this.ctx.hub.schedule(this);
  }

  private remember(key: string, memo: RememberedResponse): void {
    const responses = this.ctx.responses;
    responses.set(key, memo);
    if (responses.size > MAX_REMEMBERED_RESPONSES) responses.delete(responses.keys().next().value!);
  }

  private action(m: FunctionCallMessage): void {
    const caller = this.caller;
    if (this.tokenExpired(caller)) return;
    const requestId = newRequestId();
    const failed = (e: unknown) => {
      const text = renderActionResponse(m.requestId, this.reply({ ok: false, error: e, logLines: [] }, requestId));
      this.inQueue(() => this.send(text));
    };
    const call = this.resolveCall(m, "action", failed);
    if (call === null) return;
    const [fn, args] = call;
    void this.ctx.deployment.execute(fn, args, callerIdentity(caller), (outcome) => {
      this.send(renderActionResponse(m.requestId, this.reply(outcome, requestId)));
      this.ctx.afterExecute?.();
    });
  }

  private reply(outcome: Outcome, requestId: string): FunctionReply {
    if (outcome.ok) {
      try {
        return {
          success: true,
          resultJson: JSON.stringify(convexToJson((outcome.value ?? null) as Value)),
          errorDataJson: null,
          logLines: outcome.logLines,
        };
      } catch (e) {
        return this.reply({ ok: false, error: e, logLines: outcome.logLines }, requestId);
      }
    }
    const rendered = renderFunctionError(outcome.error, requestId, this.ctx.functionsDir);
    let errorDataJson: string | null = null;
    if (rendered.hasData) {
      try {
        errorDataJson = JSON.stringify(convexToJson(rendered.data as Value));
      } catch {
        errorDataJson = null;
      }
    }
    return { success: false, resultJson: JSON.stringify(rendered.message), errorDataJson, logLines: outcome.logLines };
  }
}
