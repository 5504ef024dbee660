/**
 * Convex's own browser client (`convex/browser` ConvexClient over `ws`) as a
 * subscriber, driven by the Python tests and benchmark as a subprocess:
 *
 *   node_modules/.bin/tsx tests/realtime/subscribe.ts '<config JSON>'
 *
 * config: {
 *   url: string,                        // the deployment (local Convex server)
 *   query: string,                      // e.g. "sessions:live"
 *   args?: object,                      // its arguments (no paginationOpts when paginated)
 *   subscriptions?: [{query, args}],    // instead of query/args: several per client
 *   token?: string | null,              // a JWT for setAuth (none: anonymous)
 *   tokens?: string[],                  // instead of token: client i uses tokens[i % length]
 *   paginated?: { initialNumItems: number },  // onPaginatedUpdate_experimental instead of onUpdate
 *   clients?: number,                   // this many ConvexClients (connections), default 1
 *   emit?: "full" | "keys",             // what to print per update, default "full"
 * }
 *
 * stdout, one JSON line each (t = wall-clock ms, performance.timeOrigin + now):
 *   {"event":"ready","clients":n}                     every client created and subscribed
 *   {"event":"synced","t"}                             every subscription of every client has
 *        had its first result (or error)
 *   {"event":"auth","client":i,"ok":bool,"t"}          setAuth's onChange
 *   {"event":"connection","client":i,"connected":bool,"connectionCount":n,"t"}
 *   {"event":"update","client":i,"sub":j,"t","value"}  emit "full": every result
 *   {"event":"error","client":i,"sub":j,"t","message","data"}  a query error (ConvexError data)
 *   {"event":"key","key","times":[t per client]}       emit "keys": an `available` asset
 *        (page item of sessions:live) every client has now seen, with when each saw it first
 *   {"event":"closed","pending":{key: [t...]}}          on exit (keys not every client saw)
 *
 * stdin, one JSON line each: {"cmd":"setAuth","token":...} (every client), {"cmd":"close"}.
 * End of stdin closes the clients and exits 0.
 */
import { createInterface } from "node:readline";
import WebSocket from "ws";
import { ConvexClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";

/* eslint-disable @typescript-eslint/no-explicit-any */

interface Config {
  url: string;
  query?: string;
  args?: Record<string, unknown>;
  subscriptions?: { query: string; args?: Record<string, unknown> }[];
  token?: string | null;
  tokens?: string[];
  paginated?: { initialNumItems: number };
  clients?: number;
  emit?: "full" | "keys";
}

const config = JSON.parse(process.argv[2] ?? "{}") as Config;
const now = () => performance.timeOrigin + performance.now();
const out: string[] = [];
let flushing = false;
function emit(line: Record<string, unknown>): void {
  out.push(JSON.stringify(line));
  if (!flushing) {
    flushing = true;
    // Batch the lines of one tick (100 clients answer one Transition together).
    setImmediate(() => {
      flushing = false;
      process.stdout.write(`${out.join("\n")}\n`);
      out.length = 0;
    });
  }
}

const subscriptions = (config.subscriptions ?? [{ query: config.query!, args: config.args }]).map(
  (sub) => ({ query: makeFunctionReference<"query">(sub.query), args: sub.args ?? {} }),
);
const count = config.clients ?? 1;
// Subscriptions still waiting for their first result (or error), as "client/sub".
const unsynced = new Set<string>();
for (let i = 0; i < count; i++) subscriptions.forEach((_, j) => unsynced.add(`${i}/${j}`));
function synced(client: number, sub: number): void {
  if (unsynced.size === 0 || !unsynced.delete(`${client}/${sub}`)) return;
  if (unsynced.size === 0) emit({ event: "synced", t: now() });
}
const mode = config.emit ?? "full";
const clients: ConvexClient[] = [];
// emit "keys": key → first time each client saw it available (undefined: not yet).
const seen = new Map<string, (number | undefined)[]>();
const seenBy: Set<string>[] = [];
const complete = new Set<string>();

function onKeys(client: number, items: any[], t: number): void {
  for (const item of items) {
    if (item?.status !== "available" || typeof item.key !== "string") continue;
    const key: string = item.key;
    if (complete.has(key) || seenBy[client].has(key)) continue;
    seenBy[client].add(key);
    let times = seen.get(key);
    if (times === undefined) {
      times = new Array(count).fill(undefined);
      seen.set(key, times);
    }
    times[client] = t;
    if (times.every((x) => x !== undefined)) {
      seen.delete(key);
      complete.add(key);
      for (const s of seenBy) s.delete(key);
      emit({ event: "key", key, times });
    }
  }
}

function onResult(client: number, sub: number, value: any): void {
  const t = now();
  if (mode === "keys") {
    onKeys(client, Array.isArray(value?.page) ? value.page : Array.isArray(value?.results) ? value.results : [], t);
  } else {
    emit({ event: "update", client, sub, t, value });
  }
  synced(client, sub);
}

function onError(client: number, sub: number, e: Error): void {
  emit({ event: "error", client, sub, t: now(), message: e.message, data: (e as any).data ?? null });
  synced(client, sub);
}

function setAuth(client: ConvexClient, index: number, token: string | null | undefined): void {
  if (token === undefined || token === null) return;
  client.setAuth(async () => token, (ok) => emit({ event: "auth", client: index, ok, t: now() }));
}

for (let i = 0; i < count; i++) {
  const c = new ConvexClient(config.url, { webSocketConstructor: WebSocket as any, logger: false });
  clients.push(c);
  seenBy.push(new Set());
  let connected: boolean | null = null;
  c.subscribeToConnectionState((state) => {
    if (state.isWebSocketConnected === connected) return;
    connected = state.isWebSocketConnected;
    emit({ event: "connection", client: i, connected, connectionCount: state.connectionCount, t: now() });
  });
  setAuth(c, i, config.tokens?.length ? config.tokens[i % config.tokens.length] : config.token);
  subscriptions.forEach(({ query, args }, j) => {
    if (config.paginated) {
      c.onPaginatedUpdate_experimental(query, args, config.paginated,
        (page: any) => onResult(i, j, { results: page.results, status: page.status }), (e) => onError(i, j, e));
    } else {
      c.onUpdate(query, args, (value: any) => onResult(i, j, value), (e) => onError(i, j, e));
    }
  });
}
emit({ event: "ready", clients: count });

let closing = false;
async function close(): Promise<void> {
  if (closing) return;
  closing = true;
  await Promise.all(clients.map((c) => c.close()));
  const pending: Record<string, (number | null)[]> = {};
  for (const [key, times] of seen) pending[key] = times.map((t) => t ?? null);
  out.push(JSON.stringify({ event: "closed", pending }));
  process.stdout.write(`${out.join("\n")}\n`, () => process.exit(0));
}

createInterface({ input: process.stdin }).on("line", (line) => {
  if (!line.trim()) return;
  const command = JSON.parse(line) as { cmd: string; token?: string | null };
  if (command.cmd === "setAuth") clients.forEach((c, i) => setAuth(c, i, command.token));
  else if (command.cmd === "close") void close();
}).on("close", () => void close());
process.on("SIGTERM", () => void close());
