/**
 * How the local Convex server's cost grows with stored data.
 *
 *   npx tsx bench/convex_local_bench.ts                    (≈5 minutes)
 *   BENCH_DOCS=20000 npx tsx bench/convex_local_bench.ts   (quicker)
 *
 * One run, side by side: a 100-event `assets:applyEvents` batch (80 new keys
 * + 20 updates of stored keys) sent over HTTP, with ~100 stored documents and
 * with BENCH_DOCS stored assets (default 100,000, plus one history row each),
 * through the accelerated server and through plain convex-test
 * (CONVEX_LOCAL_ACCELERATE=0); then a full `assets:listByBucket` walk of the
 * stored assets in pages of 1,000.
 *
 * The large state is built once through the accelerated server and handed to
 * the unaccelerated one through CONVEX_LOCAL_STATE, so both measure the same
 * documents. Small and large samples alternate between two servers running
 * side by side, so load from other processes hits both alike; besides wall
 * time, each sample records the server's own CPU time (GET /_local/cpu),
 * which is what the ratio is computed from. Results also go to
 * bench/results/convex_local_bench.json.
 *
 *   npx tsx bench/convex_local_bench.ts --commit           (≈1 minute)
 *
 * The commit path alone, in-process (no HTTP): 10,000 assets stored through
 * `assets:applyEvents`, then rounds of one transaction shaped like
 * `lifecycle:markDeleted` — 1,000 asset patches (status, deletedAt, URL
 * fields, revision) + 1,000 `assetVersions` inserts — timing the whole
 * transaction and its commit (index maintenance) separately.
 *
 *   npx tsx bench/convex_local_bench.ts --lifecycle        (≈10 seconds)
 *
 * The cleanup worker's Convex side over HTTP: `lifecycle:due` and
 * `lifecycle:markDeleted` over 10,000 marked assets, server CPU per asset
 * (bench/results/convex_local_lifecycle_bench.json).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { convexTest } from "convex-test";
import { accelerate, type DatabaseFakeInternals } from "../convex_local/accelerate";
import { discoverFunctions, loadSchema } from "../convex_local/modules";
import { captureConvexGlobal } from "../convex_local/runtime";

const REPO = fileURLToPath(new URL("..", import.meta.url));
const SERVER = join(REPO, "convex_local/server.ts");
const KEY = "bench-admin-key";
const BIG = Number(process.env.BENCH_DOCS ?? 100_000);
const SAMPLES = Number(process.env.BENCH_SAMPLES ?? 15);
const SLOW_SAMPLES = Number(process.env.BENCH_SLOW_SAMPLES ?? 3);
const SLOW_BUDGET_MS = Number(process.env.BENCH_SLOW_BUDGET_MS ?? 240_000);
const BUCKET = "bench";
const T0 = Date.UTC(2026, 10, 1);

interface Server {
  name: string;
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

function startServer(name: string, env: Record<string, string>): Promise<Server> {
  const child = spawn(process.execPath, ["--import", "tsx", SERVER], {
    cwd: REPO,
    env: { ...process.env, CONVEX_LOCAL_ADMIN_KEY: KEY, CONVEX_LOCAL_PORT: "0", ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  return new Promise((resolve, reject) => {
    child.stdout!.once("data", (d) => {
      const { url } = JSON.parse(d.toString().split("\n")[0]);
      resolve({
        name,
        url,
        child,
        stop: async () => {
          child.kill("SIGTERM");
          await exited;
        },
      });
    });
    child.once("exit", (code) => reject(new Error(`${name} exited ${code}`)));
  });
}

const headers = { "content-type": "application/json", authorization: `Convex ${KEY}` };

async function call(server: Server, kind: "query" | "mutation", path: string, args: unknown, timeoutMs = 600_000): Promise<any> {
  const res = await fetch(`${server.url}/api/${kind}`, {
    method: "POST",
    headers,
    body: JSON.stringify({ path, args, format: "json" }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const body = await res.json();
  if (res.status !== 200 || body.status !== "success") throw new Error(`${path}: ${res.status} ${JSON.stringify(body).slice(0, 300)}`);
  return body.value;
}

async function reset(server: Server): Promise<void> {
  const res = await fetch(`${server.url}/_local/reset`, { method: "POST", headers, body: "{}" });
  if (res.status !== 200) throw new Error(`reset: ${res.status}`);
}

async function cpuMs(server: Server): Promise<number> {
  const res = await fetch(`${server.url}/_local/cpu`, { headers });
  return (await res.json()).cpuMicros / 1000;
}

function created(key: string, eventTime: number, i: number) {
  return {
    type: "created",
    bucket: BUCKET,
    key,
    eventName: "ObjectCreated:Put",
    eventTime,
    size: 1000 + i,
    etag: `etag-${i}-${eventTime}`,
    etagKind: "md5",
    contentType: "video/mp4",
    sessionId: `session-${i % 500}`,
    kind: "video",
  };
}

const seedKey = (i: number) => `sessions/s${i % 500}/file-${String(i).padStart(7, "0")}.mp4`;

/** Stores `count` assets (keys 0..count-1) in batches of 500 events (applyEvents takes ≤ 800). */
async function seed(server: Server, count: number, progress = false): Promise<void> {
  const started = performance.now();
  for (let from = 0; from < count; from += 500) {
    const events = [];
    for (let i = from; i < Math.min(count, from + 500); i++) events.push(created(seedKey(i), T0, i));
    const results = await call(server, "mutation", "assets:applyEvents", { events });
    if (results.some((r: { status: string }) => r.status !== "applied")) throw new Error("seed batch not applied");
    if (progress && (from / 500) % 40 === 39) {
      process.stderr.write(`  stored ${from + 500} assets (${((performance.now() - started) / 1000).toFixed(0)} s)\n`);
    }
  }
}

let batchNo = 0;
/** 80 new keys + 20 updates of stored keys (a later eventTime, so applied). */
function measuredBatch(stored: number) {
  batchNo += 1;
  const events = [];
  for (let i = 0; i < 80; i++) events.push(created(`new/b${batchNo}/k${i}.mp4`, T0 + batchNo, i));
  for (let i = 0; i < 20; i++) events.push(created(seedKey((batchNo * 7919 + i * 104729) % stored), T0 + batchNo, i));
  return events;
}

interface Sample {
  wallMs: number;
  cpuMs: number;
}

async function timeBatch(server: Server, stored: number, timeoutMs?: number): Promise<Sample> {
  const events = measuredBatch(stored);
  const cpu0 = await cpuMs(server);
  const started = performance.now();
  const results = await call(server, "mutation", "assets:applyEvents", { events }, timeoutMs);
  const wallMs = performance.now() - started;
  const cpu = (await cpuMs(server)) - cpu0;
  const applied = results.filter((r: { status: string }) => r.status === "applied").length;
  if (applied !== 100) throw new Error(`expected 100 applied, got ${applied}`);
  return { wallMs, cpuMs: cpu };
}

/** ~100 stored documents: reset, store 50 assets (+50 history rows), time one batch. */
async function smallSample(server: Server): Promise<Sample> {
  await reset(server);
  await seed(server, 50);
  return timeBatch(server, 50);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const p90 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.9))];
const fmt = (ms: number | null | undefined) =>
  ms === null || ms === undefined ? "—" : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`;
const summary = (xs: Sample[]) =>
  xs.length === 0 ? null : { wall: median(xs.map((x) => x.wallMs)), cpu: median(xs.map((x) => x.cpuMs)), wallP90: p90(xs.map((x) => x.wallMs)), n: xs.length };

async function walk(server: Server, pageSize: number): Promise<{ docs: number; pages: number; ms: number; cpuMs: number; pageMs: number[] }> {
  let cursor: string | null = null;
  let docs = 0;
  let pages = 0;
  const pageMs: number[] = [];
  const cpu0 = await cpuMs(server);
  const started = performance.now();
  for (;;) {
    const t = performance.now();
    const page: { page: unknown[]; isDone: boolean; continueCursor: string } = await call(server, "query", "assets:listByBucket", {
      bucket: BUCKET,
      paginationOpts: { numItems: pageSize, cursor },
    });
    pageMs.push(performance.now() - t);
    docs += page.page.length;
    pages += 1;
    if (page.isDone) break;
    cursor = page.continueCursor;
  }
  return { docs, pages, ms: performance.now() - started, cpuMs: (await cpuMs(server)) - cpu0, pageMs };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "convex-local-bench-"));
  const state = join(dir, "big.json");
  const servers: Server[] = [];
  const load0 = loadavg()[0];
  try {
    // --- accelerated: build the large state, then alternate samples -----------
    process.stderr.write(`accelerated: storing ${BIG} assets\n`);
    const fastBig = await startServer("fast-big", { CONVEX_LOCAL_STATE: state, CONVEX_LOCAL_SAVE_DEBOUNCE_MS: "3600000" });
    servers.push(fastBig);
    const seedStarted = performance.now();
    await seed(fastBig, BIG, true);
    const seedMs = performance.now() - seedStarted;
    const fastSmall = await startServer("fast-small", {});
    servers.push(fastSmall);
    for (let i = 0; i < 3; i++) {
      await smallSample(fastSmall); // warm up both
      await timeBatch(fastBig, BIG);
    }
    process.stderr.write("accelerated: alternating samples\n");
    const fs: Sample[] = [];
    const fb: Sample[] = [];
    for (let i = 0; i < SAMPLES; i++) {
      fs.push(await smallSample(fastSmall));
      fb.push(await timeBatch(fastBig, BIG));
    }
    const point: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      await call(fastBig, "query", "assets:getByKey", { bucket: BUCKET, key: seedKey(i * 499) });
      point.push(performance.now() - t);
    }
    process.stderr.write("accelerated: listByBucket walk\n");
    const fastWalk = await walk(fastBig, 1000);
    await fastSmall.stop();
    await fastBig.stop(); // writes the state for the unaccelerated server
    const slowState = join(dir, "big-slow.json");
    copyFileSync(state, slowState);

    // --- unaccelerated -------------------------------------------------------
    process.stderr.write(`unaccelerated: loading ${BIG} assets\n`);
    const slowBig = await startServer("slow-big", { CONVEX_LOCAL_ACCELERATE: "0", CONVEX_LOCAL_STATE: slowState, CONVEX_LOCAL_SAVE_DEBOUNCE_MS: "3600000" });
    servers.push(slowBig);
    const slowSmall = await startServer("slow-small", { CONVEX_LOCAL_ACCELERATE: "0" });
    servers.push(slowSmall);
    for (let i = 0; i < 3; i++) await smallSample(slowSmall);
    const ss: Sample[] = [];
    const sb: Sample[] = [];
    let slowNote = "";
    const budgetStarted = performance.now();
    for (let i = 0; i < SAMPLES; i++) {
      ss.push(await smallSample(slowSmall));
      if (sb.length < SLOW_SAMPLES && performance.now() - budgetStarted < SLOW_BUDGET_MS) {
        try {
          sb.push(await timeBatch(slowBig, BIG, SLOW_BUDGET_MS));
        } catch (e) {
          slowNote = `gave up after ${fmt(SLOW_BUDGET_MS)}: ${(e as Error).message}`;
          break;
        }
      }
    }
    let slowPage: Sample | null = null;
    if (slowNote === "") {
      const cpu0 = await cpuMs(slowBig);
      const t = performance.now();
      await call(slowBig, "query", "assets:listByBucket", { bucket: BUCKET, paginationOpts: { numItems: 1000, cursor: null } });
      slowPage = { wallMs: performance.now() - t, cpuMs: (await cpuMs(slowBig)) - cpu0 };
    }
    slowBig.child.kill("SIGKILL"); // don't write the state back
    await slowSmall.stop();

    // --- report --------------------------------------------------------------
    const m = { fastSmall: summary(fs)!, fastBig: summary(fb)!, slowSmall: summary(ss)!, slowBig: summary(sb) };
    const lines: string[] = [];
    const say = (s = "") => lines.push(s);
    const big = BIG.toLocaleString("en");
    say(`convex_local bench — 100-event assets:applyEvents over HTTP; median of ${SAMPLES} (unaccelerated at ${big}: ${sb.length})`);
    say(`server CPU time per batch (wall time in brackets; load average ${load0.toFixed(1)} → ${loadavg()[0].toFixed(1)} on ${process.env.BENCH_CORES ?? "2"} cores)`);
    say("");
    say(`${"stored".padEnd(44)}${"accelerated".padStart(26)}${"convex-test".padStart(26)}${"speed-up".padStart(10)}`);
    const row = (name: string, a: typeof m.fastSmall, b: typeof m.slowBig) => {
      const cell = (x: typeof a | null) => (x === null ? "—" : `${fmt(x.cpu)} (${fmt(x.wall)})`);
      const ratio = b === null ? "—" : `${(b.cpu / a.cpu).toFixed(1)}×`;
      say(`${name.padEnd(44)}${cell(a).padStart(26)}${cell(b).padStart(26)}${ratio.padStart(10)}`);
    };
    row("~100 documents", m.fastSmall, m.slowSmall);
    row(`${big} assets + ${big} history rows`, m.fastBig, m.slowBig);
    say("");
    const growth = m.fastBig.cpu / m.fastSmall.cpu;
    const growthWall = m.fastBig.wall / m.fastSmall.wall;
    say(`accelerated, ${big} vs ~100 stored: ${growth.toFixed(2)}× CPU, ${growthWall.toFixed(2)}× wall (target ≤ 2×: ${Math.max(growth, growthWall) <= 2 ? "met" : "NOT met"})`);
    if (m.slowBig) say(`convex-test, same: ${(m.slowBig.cpu / m.slowSmall.cpu).toFixed(0)}× CPU`);
    if (slowNote) say(`unaccelerated at ${big}: ${slowNote}`);
    say(`accelerated wall p90: ${fmt(m.fastSmall.wallP90)} (~100) / ${fmt(m.fastBig.wallP90)} (${big})`);
    say(`point query (assets:getByKey) HTTP round trip at ${big}, median: ${fmt(median(point))}`);
    say(`storing ${big} assets in 500-event batches (accelerated): ${fmt(seedMs)}`);
    say("");
    say(
      `listByBucket walk of ${fastWalk.docs.toLocaleString("en")} assets, pages of 1,000 (accelerated): ${fmt(fastWalk.ms)} wall, ` +
        `${fmt(fastWalk.cpuMs)} CPU, ${fastWalk.pages} pages; page median ${fmt(median(fastWalk.pageMs))}, ` +
        `first ${fmt(fastWalk.pageMs[0])}, last ${fmt(fastWalk.pageMs[fastWalk.pageMs.length - 1])}`,
    );
    if (slowPage !== null) {
      say(
        `  convex-test: one page ${fmt(slowPage.cpuMs)} CPU (${fmt(slowPage.wallMs)}) → whole walk ≈ ${fmt(slowPage.cpuMs * fastWalk.pages)} CPU (extrapolated, not run)`,
      );
    }
    process.stdout.write(`${lines.join("\n")}\n`);

    const results = { bigAssets: BIG, samples: { fastSmall: fs, fastBig: fb, slowSmall: ss, slowBig: sb }, medians: m, growth, growthWall, pointQueryMs: median(point), seedMs, walk: { ...fastWalk, pageMs: undefined }, slowPage, slowNote };
    mkdirSync(join(REPO, "bench/results"), { recursive: true });
    writeFileSync(join(REPO, "bench/results/convex_local_bench.json"), `${JSON.stringify(results, null, 2)}\n`);
  } finally {
    for (const s of servers) if (s.child.exitCode === null) s.child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The `--commit` case: markDeleted-shaped transactions over 10,000 stored assets. */
async function commitBench(): Promise<void> {
  const stored = Number(process.env.BENCH_COMMIT_DOCS ?? 10_000);
  const rounds = Number(process.env.BENCH_COMMIT_ROUNDS ?? 8);
  const batch = 1000;
  const fns = discoverFunctions(join(REPO, "convex"));
  const schema = await loadSchema(fns);
  /* eslint-disable @typescript-eslint/no-explicit-any */
  const t: any = convexTest({ schema: schema as never, modules: fns.modules, transactionLimits: true } as never);
  const db = captureConvexGlobal(t).components[""].db as DatabaseFakeInternals;
  if (process.env.CONVEX_LOCAL_ACCELERATE !== "0") accelerate(db);
  const applyEvents = "assets:applyEvents";
  for (let from = 0; from < stored; from += 500) {
    const events = [];
    for (let i = from; i < Math.min(stored, from + 500); i++) events.push(created(seedKey(i), T0, i));
    await t.mutationFromPath({ udfPath: applyEvents, componentPath: "" }, { events });
  }
  let commitMs = 0;
  const commit = db.commit;
  db.commit = function (this: DatabaseFakeInternals, ts?: bigint | null) {
    const started = performance.now();
    try {
      return commit.call(this, ts);
    } finally {
      if (this._writes.length === 0) commitMs += performance.now() - started;
    }
  };
  const ids: string[] = await t.run(async (ctx: any) => (await ctx.db.query("assets").collect()).map((a: any) => a._id));
  const totals: number[] = [];
  const commits: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const now = T0 + 1000 + round;
    const slice = ids.slice((round * batch) % ids.length, ((round * batch) % ids.length) + batch);
    commitMs = 0;
    const started = performance.now();
    await t.run(async (ctx: any) => {
      for (const id of slice) {
        const asset = await ctx.db.get(id);
        await ctx.db.patch(id, {
          status: "deleted",
          deletedAt: now,
          url: undefined,
          urlExpiresAt: undefined,
          urlConfig: undefined,
          revision: asset.revision + 1,
          updatedAt: now,
        });
        await ctx.db.insert("assetVersions", {
          assetId: id,
          revision: asset.revision + 1,
          bucket: asset.bucket,
          key: asset.key,
          type: "removed",
          eventName: "s3convex:Cleanup",
          eventTime: now,
          size: asset.size,
          etag: asset.etag,
          source: `cleanup:bench-${round}`,
          appliedAt: now,
        });
      }
    });
    totals.push(performance.now() - started);
    commits.push(commitMs);
  }
  const warm = totals.slice(1);
  const warmCommits = commits.slice(1);
  process.stdout.write(
    `convex_local commit bench — ${stored.toLocaleString("en")} stored assets, ${rounds} transactions of ` +
      `${batch} patches + ${batch} inserts (${process.env.CONVEX_LOCAL_ACCELERATE === "0" ? "unaccelerated" : "accelerated"})\n` +
      `  per transaction, median of ${warm.length} after the first: ${fmt(median(warm))} total, ${fmt(median(warmCommits))} in commit\n` +
      `  per patched record: ${(median(warm) / batch).toFixed(3)} ms (first transaction ${fmt(totals[0])})\n`,
  );
}

/**
 * The `--lifecycle` case: the cleanup worker's Convex side over HTTP, alone.
 * BENCH_LIFECYCLE_DOCS assets (default 10,000) of one session are stored and
 * marked (`lifecycle:deleteSession`, grace 0); then pages of 1,000 go
 * through `lifecycle:due` and `lifecycle:markDeleted` one after another, as
 * the worker sends them, and the server's CPU time is read around each call.
 * CONVEX_LOCAL_CPU_PROFILE is passed on to the server (a V8 profile).
 */
async function lifecycleBench(): Promise<void> {
  const count = Number(process.env.BENCH_LIFECYCLE_DOCS ?? 10_000);
  const session = "bench-session";
  const server = await startServer("lifecycle", {});
  try {
    for (let from = 0; from < count; from += 500) {
      const events = [];
      for (let i = from; i < Math.min(count, from + 500); i++) {
        events.push({ ...created(`sessions/${session}/f${String(i).padStart(6, "0")}.bin`, T0, i), sessionId: session });
      }
      await call(server, "mutation", "assets:applyEvents", { events });
    }
    await call(server, "mutation", "lifecycle:deleteSession", { sessionId: session, actor: "bench", graceSeconds: 0 });
    for (;;) {
      const progress = await call(server, "query", "lifecycle:progress", { sessionId: session });
      if (progress.state !== "marking") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const dueCpu: number[] = [];
    const markCpu: number[] = [];
    const wall: number[] = [];
    let cursor: string | null = null;
    let asOf: number | undefined;
    let total = 0;
    for (;;) {
      const started = performance.now();
      let cpu = await cpuMs(server);
      const page: any = await call(server, "query", "lifecycle:due", { bucket: BUCKET, limit: 1000, sessionId: session, cursor, ...(asOf === undefined ? {} : { asOf }) });
      let after = await cpuMs(server);
      dueCpu.push(after - cpu);
      cpu = after;
      if (page.page.length > 0) {
        const results = await call(server, "mutation", "lifecycle:markDeleted", { runId: "bench", assets: page.page.map((r: any) => ({ assetId: r.assetId, key: r.key })) });
        if (results.some((r: { outcome: string }) => r.outcome !== "deleted")) throw new Error("markDeleted refused a record");
        after = await cpuMs(server);
        markCpu.push(after - cpu);
        total += page.page.length;
      }
      wall.push(performance.now() - started);
      ({ continueCursor: cursor, asOf } = page);
      if (page.isDone) break;
    }
    if (total !== count) throw new Error(`marked ${total} of ${count}`);
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    const results = {
      assets: count,
      dueCpuMs: sum(dueCpu), markDeletedCpuMs: sum(markCpu), wallMs: sum(wall),
      dueMsPerAsset: sum(dueCpu) / count, markDeletedMsPerAsset: sum(markCpu) / count,
      dueCpuPerPage: dueCpu.map(Math.round), markDeletedCpuPerPage: markCpu.map(Math.round),
    };
    process.stdout.write(
      `convex_local lifecycle bench — ${count.toLocaleString("en")} assets, pages of 1,000 (server CPU)\n` +
        `  lifecycle:due          ${fmt(results.dueCpuMs)} (${(results.dueMsPerAsset * 1000).toFixed(0)} µs an asset)\n` +
        `  lifecycle:markDeleted  ${fmt(results.markDeletedCpuMs)} (${(results.markDeletedMsPerAsset * 1000).toFixed(0)} µs an asset)\n` +
        `  wall, both, sequential ${fmt(results.wallMs)}\n`,
    );
    mkdirSync(join(REPO, "bench/results"), { recursive: true });
    writeFileSync(join(REPO, "bench/results/convex_local_lifecycle_bench.json"), `${JSON.stringify(results, null, 2)}\n`);
  } finally {
    await server.stop();
  }
}

if (process.argv.includes("--commit")) void commitBench();
else if (process.argv.includes("--lifecycle")) void lifecycleBench();
else void main();
