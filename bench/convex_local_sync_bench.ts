/**
 * What subscriptions cost the local Convex server (convex_local/, sync protocol).
 *
 *   npx tsx bench/convex_local_sync_bench.ts          (≈1 minute)
 *   BENCH_WRITES=50 npx tsx bench/convex_local_sync_bench.ts
 *
 * One server (the test fixtures' functions: `live:list` reads one group
 * through an index, `live:add` inserts into it). Sequential HTTP mutations,
 * BENCH_WRITES per scenario after a warm-up, with:
 *
 *   none       — no subscriber: the write latency baseline;
 *   1 shared   — 1 ConvexClient subscribed to the written group;
 *   100 shared — 100 ConvexClients subscribed to the same query (one shared
 *                re-run per write);
 *   100 apart  — 100 ConvexClients on 100 different groups, writes to one of
 *                them (the other 99 ranges are not touched: no re-run).
 *
 * Per write: write latency (HTTP request → response, the commit is inside),
 * and commit → callback latency, measured from the HTTP response to each
 * subscribed client's callback seeing the new row (negative when the push
 * beats the response). "all" is the last of the clients. Server CPU per
 * write comes from GET /_local/cpu, re-runs from /_local/stats. The clients
 * run in a child process (so their JSON parsing does not delay the writer);
 * times cross processes as performance.timeOrigin + performance.now(). The
 * server, the clients and the writer share the machine's cores. Results
 * also go to bench/results/convex_local_sync_bench.json.
 */
import { fork, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";
import { ConvexClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const KEY = "bench-admin-key";
const WRITES = Number(process.env.BENCH_WRITES ?? 200);
const WARMUP = 20;
const list = makeFunctionReference<"query", { group: string }, string[]>("live:list");

async function startServer(): Promise<{ url: string; stop(): Promise<void> }> {
  const child = spawn(process.execPath, ["--import", "tsx", join(REPO, "convex_local/server.ts")], {
    cwd: REPO,
    env: {
      ...process.env,
      CONVEX_LOCAL_ADMIN_KEY: KEY,
      CONVEX_LOCAL_PORT: "0",
      CONVEX_LOCAL_FUNCTIONS_DIR: join(REPO, "tests/convex_local/fixtures/convex"),
    },
    stdio: ["ignore", "pipe", "ignore"],
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  const url: string = await new Promise((resolve, reject) => {
    child.stdout!.once("data", (d) => resolve(JSON.parse(d.toString().split("\n")[0]).url));
    void exited.then(() => reject(new Error("server exited before listening")));
  });
  return {
    url,
    stop: async () => {
      child.kill("SIGTERM");
      await exited;
    },
  };
}

const admin = { authorization: `Convex ${KEY}` };
const getJson = async (url: string) => (await fetch(url, { headers: admin })).json();

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
}
const summary = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { p50: round(percentile(s, 0.5)), p99: round(percentile(s, 0.99)), max: round(s[s.length - 1]) };
};
const round = (x: number) => Math.round(x * 100) / 100;

interface Scenario {
  name: string;
  clients: number;
  /** The group client k subscribes to. */
  groupOf: (k: number) => string;
  /** The group the writes go to. */
  written: string;
}

const now = () => performance.timeOrigin + performance.now();

/** Child process: `clients` ConvexClients; reports (name, client, time) of every new last row. */
async function hostClients(url: string, groups: string[]): Promise<void> {
  const clients: ConvexClient[] = [];
  let ready = 0;
  groups.forEach((group, k) => {
    const c = new ConvexClient(url, { webSocketConstructor: WebSocket as never, logger: false });
    clients.push(c);
    let first = true;
    c.onUpdate(list, { group }, (names) => {
      const t = now();
      if (first) {
        first = false;
        if (++ready === groups.length) process.send!({ type: "ready" });
      }
      const last = names[names.length - 1];
      if (last !== undefined) process.send!({ type: "seen", name: last, k, t });
    });
  });
  process.on("message", async (m: { type: string }) => {
    if (m.type !== "close") return;
    await Promise.all(clients.map((c) => c.close()));
    process.exit(0);
  });
}

async function run(url: string, sc: Scenario) {
  // write name → resolvers of the clients still waiting for it
  const waiting = new Map<string, Map<number, (t: number) => void>>();
  let host: ChildProcess | null = null;
  if (sc.clients > 0) {
    const groups = [...Array(sc.clients).keys()].map(sc.groupOf);
    host = fork(fileURLToPath(import.meta.url), ["--host", url, JSON.stringify(groups)], { execArgv: ["--import", "tsx"] });
    await new Promise<void>((resolve) =>
      host!.on("message", (m: { type: string; name: string; k: number; t: number }) => {
        if (m.type === "ready") resolve();
        else if (m.type === "seen") waiting.get(m.name)?.get(m.k)?.(m.t);
      }),
    );
  }
  const watchers = [...Array(sc.clients).keys()].filter((k) => sc.groupOf(k) === sc.written);

  const write = async (name: string) => {
    const seen = watchers.map(
      (k) =>
        new Promise<number>((resolve) => {
          let m = waiting.get(name);
          if (m === undefined) waiting.set(name, (m = new Map()));
          m.set(k, resolve);
        }),
    );
    const t0 = now();
    const res = await fetch(`${url}/api/mutation`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ path: "live:add", args: { group: sc.written, name }, format: "json" }),
    });
    await res.text();
    const t1 = now();
    const times = await Promise.all(seen);
    waiting.delete(name);
    return { write: t1 - t0, callbacks: times.map((t) => t - t1) };
  };

  for (let i = 0; i < WARMUP; i++) await write(`${sc.name}-warm-${i}`);
  const cpu0 = (await getJson(`${url}/_local/cpu`)).cpuMicros as number;
  const stats0 = (await getJson(`${url}/_local/stats`)).sync;
  const writes: number[] = [];
  const each: number[] = [];
  const all: number[] = [];
  for (let i = 0; i < WRITES; i++) {
    const r = await write(`${sc.name}-${i}`);
    writes.push(r.write);
    each.push(...r.callbacks);
    if (r.callbacks.length > 0) all.push(Math.max(...r.callbacks));
  }
  const cpu1 = (await getJson(`${url}/_local/cpu`)).cpuMicros as number;
  const stats1 = (await getJson(`${url}/_local/stats`)).sync;
  if (host !== null) {
    const exited = new Promise((r) => host!.once("exit", r));
    host.send({ type: "close" });
    await exited;
  }
  return {
    scenario: sc.name,
    clients: sc.clients,
    subscribedToWrites: watchers.length,
    writeMs: summary(writes),
    callbackMsEach: watchers.length ? summary(each) : null,
    callbackMsAll: watchers.length ? summary(all) : null,
    serverCpuMsPerWrite: round((cpu1 - cpu0) / 1000 / WRITES),
    rerunsPerWrite: round((stats1.reruns - stats0.reruns) / WRITES),
    sharedEntries: stats1.entries,
  };
}

async function main() {
  const server = await startServer();
  const results = [];
  try {
    const scenarios: Scenario[] = [
      { name: "none", clients: 0, groupOf: () => "", written: "none" },
      { name: "1 shared", clients: 1, groupOf: () => "one", written: "one" },
      { name: "100 shared", clients: 100, groupOf: () => "hundred", written: "hundred" },
      { name: "100 apart", clients: 100, groupOf: (k) => `apart-${k}`, written: "apart-0" },
    ];
    for (const sc of scenarios) {
      const r = await run(server.url, sc);
      results.push(r);
      const fmt = (s: { p50: number; p99: number } | null) => (s ? `${s.p50} / ${s.p99}` : "—");
      process.stdout.write(
        `${sc.name.padEnd(11)} write p50/p99 ${fmt(r.writeMs).padEnd(14)} ms | callback each ${fmt(r.callbackMsEach).padEnd(14)} ms | all ${fmt(r.callbackMsAll).padEnd(14)} ms | server CPU ${r.serverCpuMsPerWrite} ms/write | re-runs/write ${r.rerunsPerWrite}\n`,
      );
    }
  } finally {
    await server.stop();
  }
  const out = join(REPO, "bench/results");
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, "convex_local_sync_bench.json"),
    `${JSON.stringify({ at: new Date().toISOString(), writes: WRITES, loadavg: loadavg(), results }, null, 2)}\n`,
  );
}

const fail = (e: unknown) => {
  process.stderr.write(`${(e as Error).stack}\n`);
  process.exit(1);
};
if (process.argv[2] === "--host") void hostClients(process.argv[3], JSON.parse(process.argv[4])).catch(fail);
else void main().catch(fail);
