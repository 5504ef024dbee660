/**
 * A session of 5,000 assets: its deletion, restore and cleanup complete
 * across many mutations, each inside Convex's per-transaction limits
 * (`transactionLimits: true`), with progress on the session record. The
 * worst cases stated in convex/lifecycle.ts are measured here.
 */
import { afterEach, describe, expect, test, vi } from "vitest";
import { internal } from "../../convex/_generated/api";
import { MARK_PAGE } from "../../convex/model/lifecycle";
import type { S3Event } from "../../convex/events";
import { BUCKET, T0, backend, created, type Backend } from "./support";

const MiB = 1 << 20;
const ASSETS = 5_000;

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllEnvs();
});

/** A plausible record: presigned URL with a session token, some metadata (~1.6 KB). */
function typical(i: number): S3Event {
  const scene = `scene-${i % 50}`;
  const version = 1 + (Math.floor(i / 50) % 5);
  const key = `sessions/big/scenes/${scene}/v${version}/take-${i}.mp4`;
  return created(key, {
    contentType: "video/mp4",
    metadata: { camera: "A", operator: "jo", take: String(i) },
    url: `https://media.s3.eu-west-1.amazonaws.com/${key}?X-Amz-Security-Token=${"t".repeat(900)}`,
    urlExpiresAt: T0 + 3_600_000,
    sessionId: "big",
    sceneId: scene,
    version,
    kind: "video",
    size: 1000 + i,
  });
}

async function seeded(): Promise<Backend> {
  vi.useFakeTimers({ now: T0 });
  const t = backend();
  for (let i = 0; i < ASSETS; i += 500) {
    const events = Array.from({ length: 500 }, (_, j) => typical(i + j));
    await t.mutation(internal.assets.applyEvents, { events });
  }
  return t;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function measured(t: Backend, call: (ctx: any) => Promise<any>) {
  return t.run(async (ctx) => {
    const result = await call(ctx);
    return { result, used: await ctx.meta.getTransactionMetrics() };
  });
}

async function scheduledStates(t: Backend) {
  const jobs = await t.run((ctx) => ctx.db.system.query("_scheduled_functions").collect());
  return jobs.map((job) => job.state.kind);
}

describe(`a session of ${ASSETS.toLocaleString()} assets`, () => {
  test("deletion: page by page inside the limits, progress on the session", async () => {
    vi.stubEnv("CLEANUP_GRACE_SECONDS", "0");
    const t = await seeded();
    const { result: first, used } = await measured(t, (ctx) =>
      ctx.runMutation(internal.lifecycle.deleteSession, { sessionId: "big", actor: "ops" }),
    );
    expect(first).toMatchObject({ state: "marking", marked: MARK_PAGE });
    // One page: MARK_PAGE records read and written, the session a few times.
    expect(used.documentsWritten.used).toBeLessThanOrEqual(MARK_PAGE + 3);
    // (a patch reads the record it writes: each record counts twice)
    expect(used.documentsRead.used).toBeLessThanOrEqual(2 * MARK_PAGE + 10);
    expect(used.bytesRead.used).toBeLessThan(2 * MiB);
    expect(used.bytesWritten.used).toBeLessThan(2 * MiB);
    expect(used.databaseQueries.used).toBeLessThanOrEqual(5);

    await t.finishAllScheduledFunctions(vi.runAllTimers);
    const states = await scheduledStates(t);
    expect(states).toHaveLength(ASSETS / MARK_PAGE - 1);
    expect(states.every((s) => s === "success")).toBe(true);
    expect(await t.query(internal.lifecycle.progress, { sessionId: "big" })).toMatchObject({
      state: "pending",
      marked: ASSETS,
      pending: ASSETS,
    });

    // Cleanup: DeleteObjects-sized batches of 1,000, each one mutation.
    let cleaned = 0;
    let worst = { bytesWritten: 0, docsWritten: 0, bytesRead: 0 };
    for (;;) {
      const { page: due } = await t.query(internal.lifecycle.due, { bucket: BUCKET, limit: 1000 });
      if (due.length === 0) break;
      const { result, used } = await measured(t, (ctx) =>
        ctx.runMutation(internal.lifecycle.markDeleted, {
          runId: "run-1",
          assets: due.map(({ assetId, key }) => ({ assetId, key })),
        }),
      );
      cleaned += result.filter((r: { outcome: string }) => r.outcome === "deleted").length;
      worst = {
        bytesWritten: Math.max(worst.bytesWritten, used.bytesWritten.used),
        docsWritten: Math.max(worst.docsWritten, used.documentsWritten.used),
        bytesRead: Math.max(worst.bytesRead, used.bytesRead.used),
      };
    }
    expect(cleaned).toBe(ASSETS);
    // 1,000 records + 1,000 history rows + the session: of 16,000 documents;
    // ~3 MB of 16 MiB with these records (7 KB records: ~9 MB).
    expect(worst.docsWritten).toBeLessThanOrEqual(2 * 1000 + 3);
    expect(worst.bytesWritten).toBeLessThan(4 * MiB);
    expect(worst.bytesRead).toBeLessThan(4 * MiB);
    expect(await t.query(internal.lifecycle.progress, { sessionId: "big" })).toMatchObject({
      state: "deleted",
      pending: 0,
      deleted: ASSETS,
    });
  }, 180_000);

  test("restore and the backlog: inside the limits", async () => {
    const t = await seeded();
    await t.mutation(internal.lifecycle.deleteSession, { sessionId: "big", actor: "ops" });
    await t.finishAllScheduledFunctions(vi.runAllTimers);

    const backlog = await measured(t, (ctx) => ctx.runQuery(internal.lifecycle.backlog, { bucket: BUCKET }));
    // The grace (a day) has not passed: pending, none due.
    expect(backlog.result).toMatchObject({ pending: 1000, due: 0, more: true });
    expect(backlog.used.bytesRead.used).toBeLessThan(4 * MiB);
    const due = await measured(t, (ctx) =>
      ctx.runQuery(internal.lifecycle.due, { bucket: BUCKET, limit: 1000, sessionId: "big" }),
    );
    expect(due.result.page).toEqual([]);
    expect(due.used.databaseQueries.used).toBe(1);

    const { result, used } = await measured(t, (ctx) =>
      ctx.runMutation(internal.lifecycle.restoreSession, { sessionId: "big" }),
    );
    expect(result).toMatchObject({ state: "restoring", restored: MARK_PAGE });
    expect(used.documentsWritten.used).toBeLessThanOrEqual(MARK_PAGE + 3);
    expect(used.bytesRead.used).toBeLessThan(2 * MiB);
    await t.finishAllScheduledFunctions(vi.runAllTimers);
    expect((await scheduledStates(t)).every((s) => s === "success")).toBe(true);
    const session = (await t.query(internal.sessions.get, { sessionId: "big" }))!;
    expect(session.deletion).toMatchObject({ state: "restored", restored: ASSETS });
    expect(session.summary).toMatchObject({ available: ASSETS, cleanup_pending: 0 });
  }, 180_000);
});
