// @vitest-environment node
/**
 * Convex's own clients against the local server's sync protocol: the real
 * `ConvexClient` from `convex/browser` (over `ws`), raw WebSocket frames
 * where the wire shape matters, and the PyPI `convex` client when the
 * project's .venv has it. The server runs as a child process, with the
 * fixture functions (fixtures/convex/live.ts) and a dev JWT issuer.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { ConvexClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { ConvexError } from "convex/values";
import { createDevKeys, mintDevToken } from "../../convex_local/dev_auth";
import { decodeTs } from "../../convex_local/sync_protocol";
import { eventKeys } from "../../convex_local/trace";
import { ADMIN_KEY, REPO, post, startServer, waitFor, type Running } from "./server_process";

/* eslint-disable @typescript-eslint/no-explicit-any */

const list = makeFunctionReference<"query", { group: string }, string[]>("live:list");
const total = makeFunctionReference<"query", Record<string, never>, number>("live:total");
const needs = makeFunctionReference<"query", { group: string; atLeast: number }, number>("live:needs");
const whoami = makeFunctionReference<"query", Record<string, never>, { subject: string; email: string | null } | null>("live:whoami");
const add = makeFunctionReference<"mutation", { group: string; name: string }, string>("live:add");
const addLater = makeFunctionReference<"mutation", { group: string; name: string }, null>("live:addLater");
const addMine = makeFunctionReference<"mutation", { group: string }, string>("live:addMine");
const failWithData = makeFunctionReference<"mutation", Record<string, never>, null>("live:failWithData");
const addViaAction = makeFunctionReference<"action", { group: string; name: string }, string>("live:addViaAction");
const countInternal = makeFunctionReference<"query", Record<string, never>, number>("items:count");
const othersPage = makeFunctionReference<"query">("live:othersPage");
const addOther = makeFunctionReference<"mutation", { x: number }, string>("live:addOther");

const clients: ConvexClient[] = [];
function client(url: string): ConvexClient {
  const c = new ConvexClient(url, { webSocketConstructor: WebSocket as any, logger: false });
  clients.push(c);
  return c;
}

/** Subscribe and keep every value (and error) in order. */
function watch<T>(c: ConvexClient, query: any, args: any) {
  const values: T[] = [];
  const errors: Error[] = [];
  const unsubscribe = c.onUpdate(
    query,
    args,
    (v: T) => values.push(v),
    (e: Error) => errors.push(e),
  );
  return { values, errors, unsubscribe, last: () => values[values.length - 1] };
}

const httpMutation = (url: string, path: string, args: unknown, headers: Record<string, string> = {}) =>
  post(url, "/api/mutation", { path, args, format: "json" }, headers);
const stats = async (url: string) => (await fetch(`${url}/_local/stats`, { headers: { authorization: `Convex ${ADMIN_KEY}` } })).json();

/** A raw sync connection: send client messages, read server messages in order. */
async function rawSocket(url: string) {
  const ws = new WebSocket(`${url.replace(/^http/, "ws")}/api/1.48.0/sync`);
  const received: any[] = [];
  let closed: { code: number } | null = null;
  ws.on("message", (d) => received.push(JSON.parse(d.toString())));
  ws.on("close", (code) => (closed = { code }));
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  return {
    ws,
    received,
    closed: () => closed,
    send: (m: unknown) => ws.send(JSON.stringify(m)),
    next: async (type: string, from = 0) => waitFor(() => received.slice(from).find((m) => m.type === type), 10_000, type),
  };
}

const connect = (sessionId = "00000000-0000-4000-8000-000000000001") => ({
  type: "Connect",
  sessionId,
  connectionCount: 0,
  lastCloseReason: null,
  clientTs: Date.now(),
});

describe("sync protocol with Convex's clients", () => {
  let server: Running;
  let keys: string;
  let otherKeys: string;

  beforeAll(async () => {
    keys = mkdtempSync(join(tmpdir(), "convex-local-auth-"));
    otherKeys = mkdtempSync(join(tmpdir(), "convex-local-auth-other-"));
    const env = await createDevKeys(keys);
    await createDevKeys(otherKeys);
    server = await startServer(env);
  }, 30_000);

  afterAll(async () => {
    await Promise.all(clients.map((c) => c.close()));
    expect(await server.stop()).toBe(0);
    rmSync(keys, { recursive: true, force: true });
    rmSync(otherKeys, { recursive: true, force: true });
  });

  it("pushes inserts made over HTTP and by the client's own mutation; the mutation resolves after its update", async () => {
    const c = client(server.url);
    const events: string[] = [];
    const sub = watch<string[]>(c, list, { group: "g1" });
    c.onUpdate(list, { group: "g1" }, (v) => events.push(`update ${v.join(",")}`));
    await waitFor(() => sub.values.length > 0, 10_000, "first result");
    expect(sub.last()).toEqual([]);

    expect((await httpMutation(server.url, "live:add", { group: "g1", name: "via-http" })).json.status).toBe("success");
    await waitFor(() => sub.last()?.includes("via-http"), 5_000, "the HTTP insert");

    const id = await c.mutation(add, { group: "g1", name: "via-ws" }).then((r) => {
      events.push("resolved");
      return r;
    });
    expect(typeof id).toBe("string");
    // Read-your-writes: the update holding the write came before the promise resolved.
    const resolvedAt = events.indexOf("resolved");
    expect(events.slice(0, resolvedAt).some((e) => e.includes("via-ws"))).toBe(true);
    expect(sub.last()).toEqual(["via-http", "via-ws"]);
    expect(await c.query(list, { group: "g1" })).toEqual(["via-http", "via-ws"]);
    expect(sub.errors).toEqual([]);
  });

  it("stops updates on unsubscribe (Remove) and drops the shared entry", async () => {
    const c = client(server.url);
    const sub = watch<string[]>(c, list, { group: "g2" });
    await waitFor(() => sub.values.length > 0, 10_000, "first result");
    await httpMutation(server.url, "live:add", { group: "g2", name: "a" });
    await waitFor(() => sub.last()?.length === 1, 5_000, "first insert");
    const before = (await stats(server.url)).sync;
    sub.unsubscribe();
    const seen = sub.values.length;
    await new Promise((r) => setTimeout(r, 100));
    await httpMutation(server.url, "live:add", { group: "g2", name: "b" });
    await new Promise((r) => setTimeout(r, 300));
    expect(sub.values.length).toBe(seen);
    const after = (await stats(server.url)).sync;
    expect(after.subscriptions).toBe(before.subscriptions - 1);
    expect(after.entries).toBe(before.entries - 1);
  });

  it("shares one re-run between clients and re-runs only queries whose reads a write touches", async () => {
    const a = client(server.url);
    const b = client(server.url);
    const subA = watch<string[]>(a, list, { group: "g3" });
    const subB = watch<string[]>(b, list, { group: "g3" });
    const other = watch<string[]>(a, list, { group: "g3-other" });
    await waitFor(() => subA.values.length && subB.values.length && other.values.length, 10_000, "first results");
    const before = (await stats(server.url)).sync;
    await httpMutation(server.url, "live:add", { group: "g3", name: "shared" });
    await waitFor(() => subA.last()?.includes("shared") && subB.last()?.includes("shared"), 5_000, "both clients");
    const after = (await stats(server.url)).sync;
    // One shared entry for g3 re-ran; the g3-other range was not touched by the write.
    expect(after.reruns - before.reruns).toBe(1);
    expect(other.values).toEqual([[]]);
  });

  it("re-runs on commits of scheduled functions and of an action's mutations", async () => {
    const c = client(server.url);
    const sub = watch<string[]>(c, list, { group: "g4" });
    const count = watch<number>(c, total, {});
    await waitFor(() => sub.values.length && count.values.length, 10_000, "first results");
    const start = count.last()!;
    await c.mutation(addLater, { group: "g4", name: "scheduled" });
    await waitFor(() => sub.last()?.includes("scheduled"), 5_000, "the scheduled insert");
    await c.action(addViaAction, { group: "g4", name: "from-action" });
    await waitFor(() => sub.last()?.includes("from-action"), 5_000, "the action's insert");
    await waitFor(() => count.last() === start + 2, 5_000, "the full-scan count");
  });

  it("reports query errors (ConvexError data) and recovers; mutation errors reject with data", async () => {
    const c = client(server.url);
    const sub = watch<number>(c, needs, { group: "g5", atLeast: 1 });
    await waitFor(() => sub.errors.length > 0, 10_000, "the query error");
    expect(sub.errors[0]).toBeInstanceOf(ConvexError);
    expect((sub.errors[0] as ConvexError<any>).data).toEqual({ code: "TooFew", n: 0 });
    await httpMutation(server.url, "live:add", { group: "g5", name: "one" });
    await waitFor(() => sub.last() === 1, 5_000, "recovery");
    const failure = await c.mutation(failWithData, {}).catch((e) => e);
    expect(failure).toBeInstanceOf(ConvexError);
    expect(failure.data).toEqual({ code: "Nope" });
  });

  it("runs queries and mutations as the user of a valid dev JWT", async () => {
    const c = client(server.url);
    const changes: boolean[] = [];
    c.setAuth(async () => mintDevToken(keys, "alice", { claims: { email: "alice@example.test" } }), (ok) => changes.push(ok));
    const me = watch<{ subject: string; email: string | null } | null>(c, whoami, {});
    await waitFor(() => me.last()?.subject === "alice", 10_000, "alice's identity");
    expect(me.last()).toEqual({
      subject: "alice",
      issuer: "https://convex-local.dev-auth.invalid",
      tokenIdentifier: "https://convex-local.dev-auth.invalid|alice",
      email: "alice@example.test",
    });
    expect(changes).toContain(true);
    expect(await c.mutation(addMine, { group: "g6" })).toBe("alice");
    // Anonymous clients see no identity on the same query (a separate entry).
    const anon = watch(client(server.url), whoami, {});
    await waitFor(() => anon.values.length > 0, 10_000, "anonymous result");
    expect(anon.last()).toBeNull();

    const token = await mintDevToken(keys, "bob");
    const http = await post(server.url, "/api/query", { path: "live:whoami", args: {}, format: "json" }, { authorization: `Bearer ${token}` });
    expect(http.status).toBe(200);
    expect(http.json.value.subject).toBe("bob");
  });

  it("refuses expired, wrong-issuer, wrong-audience and badly signed tokens: HTTP 401 and socket AuthError", async () => {
    const valid = await mintDevToken(keys, "carol");
    const [head, payload, signature] = valid.split(".");
    const flipped = signature.slice(0, -2) + (signature.endsWith("AA") ? "BB" : "AA");
    const cases: [string, string, string][] = [
      ["expired", await mintDevToken(keys, "carol", { ttlSeconds: -60 }), "InvalidAuthHeader"],
      ["wrong issuer", await mintDevToken(keys, "carol", { issuer: "https://someone-else.example" }), "NoAuthProvider"],
      ["wrong audience", await mintDevToken(keys, "carol", { audience: "another-app" }), "NoAuthProvider"],
      ["bad signature", `${head}.${payload}.${flipped}`, "InvalidAuthHeader"],
      ["another key", await mintDevToken(otherKeys, "carol"), "InvalidAuthHeader"],
      ["not a JWT", "abc.def.ghi", "InvalidAuthHeader"],
    ];
    for (const [what, token, code] of cases) {
      const res = await post(server.url, "/api/query", { path: "live:whoami", args: {}, format: "json" }, { authorization: `Bearer ${token}` });
      expect(res.status, what).toBe(401);
      expect(res.json, what).toEqual({ code, message: expect.any(String) });

      const sock = await rawSocket(server.url);
      sock.send(connect());
      sock.send({ type: "Authenticate", tokenType: "User", value: token, baseVersion: 0 });
      const error = await sock.next("AuthError");
      expect(error, what).toEqual({ type: "AuthError", error: expect.any(String), baseVersion: 0, authUpdateAttempted: true });
      await waitFor(() => sock.closed(), 5_000, "close after AuthError");
    }
    expect((await post(server.url, "/api/query", { path: "live:whoami", args: {}, format: "json" }, { authorization: `Bearer ${valid}` })).status).toBe(200);
  });

  it("lets the client fall back to no auth when its token keeps being refused, and recover with a fresh one", async () => {
    const expired = await mintDevToken(keys, "dave", { ttlSeconds: -60 });
    const refused = client(server.url);
    const changes: boolean[] = [];
    refused.setAuth(async () => expired, (ok) => changes.push(ok));
    const me = watch(refused, whoami, {});
    await waitFor(() => changes.includes(false), 10_000, "onChange(false)");
    await waitFor(() => me.values.length > 0, 10_000, "a result");
    expect(me.last()).toBeNull();

    // First token refused, the forced refresh brings a valid one.
    const refreshed = client(server.url);
    const asked: boolean[] = [];
    refreshed.setAuth(async ({ forceRefreshToken }) => {
      asked.push(forceRefreshToken);
      return forceRefreshToken ? mintDevToken(keys, "erin") : expired;
    });
    const erin = watch<{ subject: string } | null>(refreshed, whoami, {});
    await waitFor(() => erin.last()?.subject === "erin", 15_000, "erin after refresh");
    expect(asked).toEqual(expect.arrayContaining([false, true]));
  });

  it("tells a socket when its user token expires (AuthError without an update attempt)", async () => {
    // Expired 4.5 s ago: still inside the 5 s leeway when it arrives, out of it right after.
    const token = await mintDevToken(keys, "frank", { ttlSeconds: -4.5 });
    const sock = await rawSocket(server.url);
    sock.send(connect());
    sock.send({ type: "Authenticate", tokenType: "User", value: token, baseVersion: 0 });
    sock.send({ type: "ModifyQuerySet", baseVersion: 0, newVersion: 1, modifications: [{ type: "Add", queryId: 0, udfPath: "live:whoami", args: [{}] }] });
    const answered = await waitFor(() => sock.received.find((m) => m.type === "Transition" && m.modifications.length > 0), 5_000, "the query");
    expect(answered.endVersion.identity).toBe(1);
    expect(answered.modifications[0].value.subject).toBe("frank");
    const expired = await sock.next("AuthError");
    expect(expired).toEqual({ type: "AuthError", error: "Token expired", baseVersion: 1, authUpdateAttempted: false });
  });

  it("accepts the admin key (internal queries) and refuses a wrong one", async () => {
    const admin = client(server.url);
    (admin as any).setAdminAuth(ADMIN_KEY);
    const count = watch<number>(admin, countInternal, {});
    await waitFor(() => count.values.length > 0, 10_000, "the internal query");
    expect(typeof count.last()).toBe("number");
    const anon = watch<number>(client(server.url), countInternal, {});
    await waitFor(() => anon.errors.length > 0, 10_000, "anonymous error");
    expect(anon.errors[0].message).toContain("Could not find public function for 'items:count'");

    const sock = await rawSocket(server.url);
    sock.send(connect());
    sock.send({ type: "Authenticate", tokenType: "Admin", value: "wrong", baseVersion: 0 });
    expect((await sock.next("AuthError")).authUpdateAttempted).toBe(true);
  });

  it("speaks the wire protocol: chained versions, u64 timestamps, response before the covering Transition, no double apply", async () => {
    const sock = await rawSocket(server.url);
    const sessionId = "00000000-0000-4000-8000-00000000abcd";
    sock.send(connect(sessionId));
    sock.send({ type: "ModifyQuerySet", baseVersion: 0, newVersion: 1, modifications: [{ type: "Add", queryId: 7, udfPath: "live:list", args: [{ group: "g7" }] }] });
    const first = await sock.next("Transition");
    expect(first.startVersion).toEqual({ querySet: 0, identity: 0, ts: "AAAAAAAAAAA=" });
    expect(first.endVersion.querySet).toBe(1);
    expect(first.modifications).toEqual([{ type: "QueryUpdated", queryId: 7, value: [], logLines: [], journal: null }]);

    const mark = sock.received.length;
    sock.send({ type: "Mutation", requestId: 0, udfPath: "live:add", args: [{ group: "g7", name: "once" }] });
    const response = await sock.next("MutationResponse", mark);
    expect(response).toMatchObject({ requestId: 0, success: true, logLines: [] });
    const covering = await sock.next("Transition", mark);
    expect(sock.received.indexOf(response)).toBeLessThan(sock.received.indexOf(covering));
    expect(covering.startVersion).toEqual(first.endVersion);
    expect(decodeTs(covering.endVersion.ts)).toBeGreaterThanOrEqual(decodeTs(response.ts));
    expect(covering.modifications).toEqual([{ type: "QueryUpdated", queryId: 7, value: ["once"], logLines: [], journal: null }]);

    // The same (session, request) again — as after a reconnect — answers the first result.
    const mark2 = sock.received.length;
    const sock2 = await rawSocket(server.url);
    sock2.send(connect(sessionId));
    sock2.send({ type: "Mutation", requestId: 0, udfPath: "live:add", args: [{ group: "g7", name: "once" }] });
    const again = await sock2.next("MutationResponse");
    expect(again).toEqual(response);
    expect(await (await fetch(`${server.url}/api/query`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ path: "live:list", args: { group: "g7" }, format: "json" }),
    })).json()).toMatchObject({ value: ["once"] });
    expect(sock.received.slice(mark2).filter((m) => m.type === "Transition")).toEqual([]);

    sock.send({ type: "ModifyQuerySet", baseVersion: 1, newVersion: 2, modifications: [{ type: "Remove", queryId: 7 }] });
    const removed = await waitFor(() => sock.received.slice(mark2).find((m) => m.type === "Transition"), 5_000, "removal");
    expect(removed.startVersion).toEqual(covering.endVersion);
    expect(removed.modifications).toEqual([{ type: "QueryRemoved", queryId: 7 }]);

    sock.send({ type: "ModifyQuerySet", baseVersion: 1, newVersion: 2, modifications: [] });
    expect((await sock.next("FatalError")).error).toContain("Base version 1");
    await waitFor(() => sock.closed(), 5_000, "close after FatalError");

    const garbage = await rawSocket(server.url);
    garbage.ws.send("{not json");
    expect((await garbage.next("FatalError")).error).toContain("Invalid JSON");
  });

  it("answers the sync route for any client version and 404s other upgrades", async () => {
    for (const path of ["/api/sync", "/api/0.8.1/sync"]) {
      const ws = new WebSocket(`${server.url.replace(/^http/, "ws")}${path}`);
      await new Promise((resolve, reject) => {
        ws.once("open", resolve);
        ws.once("error", reject);
      });
      ws.close();
    }
    const bad = new WebSocket(`${server.url.replace(/^http/, "ws")}/api/nowhere`);
    bad.on("error", () => {});
    const status = await new Promise<number>((resolve) => bad.once("unexpected-response", (_req, res) => resolve(res.statusCode!)));
    expect(status).toBe(404);
  });

  it("keeps reactive pages gapless: a page keeps its end (query journal) when rows arrive inside it", async () => {
    const c = client(server.url);
    for (const x of [1, 3, 5, 7]) await c.mutation(addOther, { x });
    const updates: { results: number[]; status: string; loadMore: (n: number) => boolean }[] = [];
    c.onPaginatedUpdate_experimental(othersPage, {}, { initialNumItems: 2 }, (r: any) => updates.push(r));
    await waitFor(() => updates.at(-1)?.results.length === 2, 10_000, "the first page");
    expect(updates.at(-1)!.results).toEqual([1, 3]);
    updates.at(-1)!.loadMore(2);
    await waitFor(() => updates.at(-1)?.results.length === 4, 10_000, "the second page");
    await c.mutation(addOther, { x: 2 });
    // Without the journal the first page would end at 2 and 3 would fall between the pages.
    await waitFor(() => updates.at(-1)?.results.length === 5, 5_000, "the insert");
    expect(updates.at(-1)!.results).toEqual([1, 2, 3, 5, 7]);
  });

  it("re-runs every subscription after /_local/reset", async () => {
    const c = client(server.url);
    const count = watch<number>(c, total, {});
    await waitFor(() => (count.last() ?? 0) > 0, 10_000, "a non-empty count");
    expect((await post(server.url, "/_local/reset", {}, { authorization: `Convex ${ADMIN_KEY}` })).status).toBe(200);
    await waitFor(() => count.last() === 0, 5_000, "the count after reset");
    await c.mutation(add, { group: "g8", name: "fresh" });
    expect(count.last()).toBe(1);
  });

  const python = join(REPO, ".venv/bin/python");
  // The project's venv (scripts/setup.sh, which `make test` runs first) has the PyPI client.
  it("serves the PyPI convex client's subscribe()", async () => {
    const script = String.raw`
import json, subprocess, sys
import convex
url = sys.argv[1]
client = convex.ConvexClient(url)
updates = iter(client.subscribe("live:list", {"group": "py"}))
print(json.dumps(next(updates)), flush=True)
# The client holds the GIL while it waits: write from another process.
post = "import json,sys,time,urllib.request as u; time.sleep(0.2); u.urlopen(u.Request(sys.argv[1] + '/api/mutation', data=json.dumps({'path': 'live:add', 'args': {'group': 'py', 'name': 'from-http'}, 'format': 'json'}).encode(), headers={'content-type': 'application/json'})).read()"
subprocess.Popen([sys.executable, "-c", post, url])
print(json.dumps(next(updates)), flush=True)
print(json.dumps(client.mutation("live:add", {"group": "py", "name": "from-python"})[-5:]), flush=True)
print(json.dumps(next(updates)), flush=True)
`;
    const run = spawnSync(python, ["-c", script, server.url], { encoding: "utf8", timeout: 30_000 });
    expect(run.stderr).toBe("");
    const lines = run.stdout.trim().split("\n").map((l) => JSON.parse(l));
    expect(lines[0]).toEqual([]);
    expect(lines[1]).toEqual(["from-http"]);
    expect(lines[3]).toEqual(["from-http", "from-python"]);
  }, 40_000);
});

describe("sync across a server restart", () => {
  it("reconnects and converges on the restarted server's data (persisted state)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "convex-local-sync-"));
    const state = join(dir, "state.json");
    let server = await startServer({ CONVEX_LOCAL_STATE: state, CONVEX_LOCAL_SAVE_DEBOUNCE_MS: "20" });
    const port = String(server.port);
    const c = new ConvexClient(server.url, { webSocketConstructor: WebSocket as any, logger: false });
    try {
      const sub = watch<string[]>(c, list, { group: "r" });
      await c.mutation(add, { group: "r", name: "before" });
      await waitFor(() => sub.last()?.includes("before"), 5_000, "before restart");
      expect(await server.stop("SIGTERM")).toBe(0);

      server = await startServer({ CONVEX_LOCAL_STATE: state, CONVEX_LOCAL_PORT: port });
      await httpMutation(server.url, "live:add", { group: "r", name: "after" });
      await waitFor(() => sub.last()?.join(",") === "before,after", 30_000, "the client to converge");
      expect(await c.mutation(add, { group: "r", name: "again" })).toEqual(expect.any(String));
      expect(sub.last()).toEqual(["before", "after", "again"]);
    } finally {
      await c.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("stage trace (CONVEX_LOCAL_TRACE)", () => {
  it("writes each execution and each refresh that pushed, in order, with the commit's timestamp", async () => {
    const dir = mkdtempSync(join(tmpdir(), "convex-local-trace-"));
    const path = join(dir, "trace.jsonl");
    const server = await startServer({ CONVEX_LOCAL_TRACE: path });
    const c = new ConvexClient(server.url, { webSocketConstructor: WebSocket as any, logger: false });
    try {
      const sub = watch<string[]>(c, list, { group: "t" });
      await waitFor(() => sub.values.length > 0, 10_000, "first result");
      expect((await httpMutation(server.url, "live:add", { group: "t", name: "traced" })).json.status).toBe("success");
      await waitFor(() => sub.last()?.includes("traced"), 5_000, "the insert");
      await c.close();
      expect(await server.stop()).toBe(0); // the buffered lines are written at exit
      const lines = readFileSync(path, "utf8").trim().split("\n").map((l) => JSON.parse(l));
      const exec = lines.find((l) => l.e === "exec" && l.path === "live:add");
      expect(exec.queued).toBeLessThanOrEqual(exec.start);
      expect(exec.start).toBeLessThanOrEqual(exec.end);
      const push = lines.find((l) => l.e === "refresh" && BigInt(l.ts) >= BigInt(exec.ts) && l.start >= exec.end);
      expect(push).toMatchObject({ reruns: 1, changed: 1, sent: 1 });
      expect(push.end).toBeGreaterThanOrEqual(push.start);
    } finally {
      await c.close();
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it("names the keys of an `events` argument (what applyEvents writes)", () => {
    expect(eventKeys({ events: [{ key: "a/1.mp4" }, { key: "b/2.mp4" }], commit: "x" })).toEqual(["a/1.mp4", "b/2.mp4"]);
    expect(eventKeys({ group: "g" })).toBeUndefined();
  });
});
