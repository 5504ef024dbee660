/**
 * The WebSocket side of the server: `GET /api/<client version>/sync` (any
 * version string; `/api/sync` too) upgrades to Convex's sync protocol, one
 * `SyncSession` per connection, all sharing one `SubscriptionHub`.
 */
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer } from "ws";
import type { AuthVerifier } from "./auth";
import type { Deployment } from "./runtime";
import { SubscriptionHub, type HubStats } from "./subscriptions";
import { SyncSession, type RememberedResponse } from "./sync_session";

const SYNC_PATH = /^\/api\/(?:[^/]+\/)?sync\/?$/;
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

export interface SyncServerOptions {
  deployment: Deployment;
  auth: AuthVerifier;
  adminKey: string;
  functionsDir: string;
  /** SubscriptionHub's bound on yielding a refresh to queued executions (ms; 0: never). */
  refreshDeferMs?: number;
  afterExecute?: () => void;
  log?: (record: Record<string, unknown>) => void;
}

export class SyncServer {
  readonly hub: SubscriptionHub;
  private readonly wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_MESSAGE_BYTES });
  private readonly sessions = new Set<SyncSession>();
  private readonly responses = new Map<string, RememberedResponse>();
  private nextId = 1;

  constructor(private readonly options: SyncServerOptions) {
    this.hub = new SubscriptionHub(
      options.deployment,
      options.functionsDir,
      (e) => process.stderr.write(`${JSON.stringify({ event: "sync_refresh_failed", error: String((e as Error)?.stack ?? e) })}\n`),
      options.refreshDeferMs,
    );
  }

  /** For `server.on("upgrade")`: the sync route, or 404. */
  handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const path = new URL(req.url ?? "/", "http://local").pathname;
    if (!SYNC_PATH.test(path)) {
      socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const o = this.options;
      const id = this.nextId++;
      const session = new SyncSession(
        ws,
        {
          deployment: o.deployment,
          hub: this.hub,
          auth: o.auth,
          adminKey: o.adminKey,
          functionsDir: o.functionsDir,
          responses: this.responses,
          afterExecute: o.afterExecute,
          log: o.log,
        },
        id,
      );
      this.sessions.add(session);
      ws.on("close", () => this.sessions.delete(session));
      o.log?.({ event: "ws_open", session: id, path });
    });
  };

  stats(): HubStats & { connections: number } {
    return { connections: this.sessions.size, ...this.hub.stats() };
  }

  /** Close every connection ("going away": clients reconnect with backoff). */
  close(): void {
    for (const session of this.sessions) session.close(1001, "Server shutting down");
    this.sessions.clear();
  }
}
