/**
 * Lifecycle (convex/lifecycle.ts, convex/LIFECYCLE.md): deleting a session
 * (hidden at once, restorable within the grace), the worker's guards, the
 * backoff, retention, missing files and every "gone" path.
 */
import { afterEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import type { Id } from "../../convex/_generated/dataModel";
import { obsoleteVersions } from "../../convex/retention";
import { ALICE, BOB, HOUR, apply } from "./identities";
import { BUCKET, T0, backend, created, removed, type Backend } from "./support";

const DAY = 24 * HOUR;

afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllEnvs();
});

const key = (scene: string, version: number, file: string) =>
  `sessions/s1/scenes/${scene}/v${version}/${file}`;

/** Session s1 owned by Alice: 3 scenes × 3 versions, a video and a manifest each. */
async function seeded(): Promise<Backend> {
  vi.useFakeTimers({ now: T0 });
  const t = backend();
  const events = [];
  for (const scene of ["a", "b", "c"])
    for (const version of [1, 2, 3])
      for (const file of ["video.mp4", "manifest.json"])
        events.push(
          created(key(scene, version, file), {
            sessionId: "s1",
            sceneId: scene,
            version,
            kind: file === "video.mp4" ? "video" : "manifest",
            eventTime: T0 + version * 1000,
            url: `stored-${scene}-${version}-${file}`,
            urlExpiresAt: T0 + DAY,
          }),
        );
  await apply(t, events);
  await t.mutation(internal.access.setOwner, {
    sessionId: "s1",
    ownerId: ALICE.tokenIdentifier,
    actor: "platform",
  });
  return t;
}

const assets = (t: Backend) =>
  t.run((ctx) => ctx.db.query("assets").collect());
const history = (t: Backend, assetId: Id<"assets">) =>
  t.run((ctx) =>
    ctx.db
      .query("assetVersions")
      .withIndex("by_asset", (q) => q.eq("assetId", assetId))
      .collect(),
  );
const page = { numItems: 50, cursor: null };

async function runScheduled(t: Backend) {
  await t.finishAllScheduledFunctions(vi.runAllTimers);
}

async function cleanAllDue(t: Backend, runId = "run-1") {
  const { page: due } = await t.query(internal.lifecycle.due, { bucket: BUCKET, limit: 1000 });
  return t.mutation(internal.lifecycle.markDeleted, {
    runId,
    assets: due.map(({ assetId, key }) => ({ assetId, key })),
  });
}

describe("sessions:delete", () => {
  test("hides the session and its URLs at once; S3 work waits for the grace", async () => {
    const t = await seeded();
    const alice = t.withIdentity(ALICE);
    const [asset] = await assets(t);
    const progress = await alice.mutation(api.sessions.delete, {
      sessionId: "s1",
      reason: "user asked",
    });
    expect(progress).toMatchObject({
      state: "pending",
      marked: 18,
      pending: 18,
      deletedBy: ALICE.tokenIdentifier,
      deleteReason: "user asked",
      graceUntil: T0 + DAY,
    });
    expect((await alice.query(api.sessions.mine, { paginationOpts: page })).page).toEqual([]);
    await expect(
      alice.query(api.sessions.live, { sessionId: "s1", paginationOpts: page }),
    ).rejects.toThrow(/gone/);
    expect(
      await alice.mutation(api.access.requestUrl, { assetId: asset._id }),
    ).toEqual({
      status: "error",
      error: { code: "gone", deletedAt: T0, reason: "user asked" },
    });
    const internalAnswer = await t.mutation(internal.access.authorize, {
      principal: ALICE.tokenIdentifier,
      bucket: BUCKET,
      key: asset.key,
      maxTtlMs: HOUR,
    });
    expect(internalAnswer).toMatchObject({ outcome: "gone", reason: "user asked" });
    // Nothing is due before the grace ends.
    expect((await t.query(internal.lifecycle.due, { bucket: BUCKET, limit: 1000 })).page).toEqual([]);
    vi.setSystemTime(T0 + DAY);
    expect((await t.query(internal.lifecycle.due, { bucket: BUCKET, limit: 1000 })).page).toHaveLength(18);
  });

  test("only the owner may delete", async () => {
    const t = await seeded();
    await expect(
      t.withIdentity(BOB).mutation(api.sessions.delete, { sessionId: "s1" }),
    ).rejects.toThrow(/forbidden/);
    await expect(t.mutation(api.sessions.delete, { sessionId: "s1" })).rejects.toThrow(
      /forbidden/,
    );
  });

  test("restore within the grace brings everything back", async () => {
    const t = await seeded();
    const alice = t.withIdentity(ALICE);
    const before = await assets(t);
    const summary = (await t.query(internal.sessions.get, { sessionId: "s1" }))!.summary;
    await alice.mutation(api.sessions.delete, { sessionId: "s1" });
    vi.setSystemTime(T0 + HOUR);
    expect(await alice.mutation(api.sessions.restore, { sessionId: "s1" })).toMatchObject({
      state: "restored",
      restored: 18,
    });
    const after = await assets(t);
    expect(after.map((a) => a.status)).toEqual(before.map((a) => a.status));
    expect(after.every((a) => a.cleanup === undefined && a.deleteReason === undefined)).toBe(true);
    const session = (await t.query(internal.sessions.get, { sessionId: "s1" }))!;
    expect(session.summary).toMatchObject({ ...summary, cleanup_pending: 0 });
    expect(session.deletedAt).toBeUndefined();
    expect((await alice.query(api.sessions.mine, { paginationOpts: page })).page).toHaveLength(1);
    // Readable again (the stored URL outlives the kind's 1 h: a signing request).
    expect(
      await alice.mutation(api.access.requestUrl, { assetId: after[0]._id }),
    ).toMatchObject({ status: "pending" });
  });

  test("restore after the grace is refused", async () => {
    const t = await seeded();
    const alice = t.withIdentity(ALICE);
    await alice.mutation(api.sessions.delete, { sessionId: "s1" });
    vi.setSystemTime(T0 + DAY);
    await expect(alice.mutation(api.sessions.restore, { sessionId: "s1" })).rejects.toThrow(
      /grace_expired/,
    );
  });

  test("cleanup tombstones each record once, with reason and history", async () => {
    vi.stubEnv("CLEANUP_GRACE_SECONDS", "0");
    const t = await seeded();
    await t.withIdentity(ALICE).mutation(api.sessions.delete, {
      sessionId: "s1",
      reason: "user asked",
    });
    const results = await cleanAllDue(t);
    expect(results.map((r) => r.outcome)).toEqual(Array(18).fill("deleted"));
    const all = await assets(t);
    expect(all.every((a) => a.status === "deleted" && a.deleteReason === "user asked")).toBe(true);
    expect(all.every((a) => a.deletedAt === T0 && a.url === undefined)).toBe(true);
    // A retry (a lost answer) and the S3 removal events change nothing.
    const again = await t.mutation(internal.lifecycle.markDeleted, {
      runId: "run-2",
      assets: all.map(({ _id, key }) => ({ assetId: _id, key })),
    });
    expect(again.every((r) => r.outcome === "already_deleted")).toBe(true);
    const echoes = await apply(t, all.map((a) => removed(a.key, { eventTime: T0 + 5000 })));
    expect(echoes.every((r) => r.status === "duplicate")).toBe(true);
    const rows = await history(t, all[0]._id);
    expect(rows.map((r) => r.eventName)).toEqual(["ObjectCreated:Put", "s3convex:Cleanup"]);
    expect(await t.query(internal.lifecycle.progress, { sessionId: "s1" })).toMatchObject({
      state: "deleted",
      pending: 0,
      deleted: 18,
    });
  });
});

describe("the worker's guards", () => {
  test("refuses records that are not pending, not due, or outside their session", async () => {
    vi.stubEnv("CLEANUP_GRACE_SECONDS", "0");
    const t = await seeded();
    const [first, second] = await assets(t);
    const outcome = () =>
      t.mutation(internal.lifecycle.markDeleted, {
        runId: "r",
        assets: [{ assetId: first._id, key: first.key }],
      });
    expect((await outcome())[0].outcome).toBe("not_pending");
    await t.mutation(internal.lifecycle.deleteSession, {
      sessionId: "s1",
      actor: "ops",
      graceSeconds: 60,
    });
    expect((await outcome())[0].outcome).toBe("not_due");
    vi.setSystemTime(T0 + 60_000);
    // A record claiming session s1 whose key is elsewhere.
    await t.run((ctx) => ctx.db.patch("assets", second._id, { key: "other/x.mp4" }));
    const [wrong] = await t.mutation(internal.lifecycle.markDeleted, {
      runId: "r",
      assets: [{ assetId: second._id, key: "other/x.mp4" }],
    });
    expect(wrong.outcome).toBe("outside_prefix");
    const [mismatch] = await t.mutation(internal.lifecycle.markDeleted, {
      runId: "r",
      assets: [{ assetId: first._id, key: "sessions/s1/elsewhere.mp4" }],
    });
    expect(mismatch.outcome).toBe("key_mismatch");
  });

  test("failures back off with jitter, then give up as cleanup_failed", async () => {
    vi.stubEnv("CLEANUP_GRACE_SECONDS", "0");
    const t = await seeded();
    await t.mutation(internal.lifecycle.deleteSession, { sessionId: "s1", actor: "ops" });
    const [asset] = await assets(t);
    const fail = () =>
      t.mutation(internal.lifecycle.recordFailures, {
        runId: "r",
        failures: [{ assetId: asset._id, key: asset.key, code: "AccessDenied" }],
        maxAttempts: 3,
        baseDelayMs: 1000,
        maxDelayMs: 60_000,
      });
    const [one] = await fail();
    expect(one.outcome).toBe("retry");
    expect(one.nextAttemptAt! - T0).toBeGreaterThanOrEqual(500);
    expect(one.nextAttemptAt! - T0).toBeLessThanOrEqual(1000);
    const { page: due } = await t.query(internal.lifecycle.due, { bucket: BUCKET, limit: 1000 });
    expect(due.map((d) => d.assetId)).not.toContain(asset._id);
    const [two] = await fail();
    expect(two.nextAttemptAt! - T0).toBeGreaterThanOrEqual(1000);
    expect(two.nextAttemptAt! - T0).toBeLessThanOrEqual(2000);
    const [three] = await fail();
    expect(three.outcome).toBe("cleanup_failed");
    const stored = (await assets(t)).find((a) => a._id === asset._id)!;
    expect(stored).toMatchObject({
      status: "cleanup_failed",
      cleanup: { attempts: 3, lastError: "AccessDenied" },
    });
    expect(await t.query(internal.lifecycle.backlog, { bucket: BUCKET })).toMatchObject({ failed: 1, pending: 17 });
    expect(await t.mutation(internal.lifecycle.retryFailed, { limit: 10 })).toBe(1);
  });
});

describe("retention", () => {
  const scene = (n: number) => ({
    currentVersion: n,
    versions: Array.from({ length: n }, (_, i) => ({
      version: i + 1,
      firstSeenAt: T0 + i * DAY,
      lastSeenAt: T0 + i * DAY,
    })),
  });

  test("7 versions, keep 3: exactly the 3 oldest; never the current", () => {
    expect(obsoleteVersions(scene(7), { keep: 3 }, T0)).toEqual([1, 2, 3]);
    expect(obsoleteVersions(scene(7), { keep: 0 }, T0)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(obsoleteVersions(scene(1), { keep: 0 }, T0)).toEqual([]);
    // Age alone: last seen more than 3 days before now (day 7): days 0-3.
    expect(obsoleteVersions(scene(7), { maxAgeMs: 3 * DAY }, T0 + 7 * DAY)).toEqual([1, 2, 3, 4]);
    // Both: only what both rules let go (beyond v6, and seen before day 2.5).
    expect(
      obsoleteVersions(scene(7), { keep: 1, maxAgeMs: 4.5 * DAY }, T0 + 7 * DAY),
    ).toEqual([1, 2, 3]);
    expect(
      obsoleteVersions(scene(7), { keep: 5, maxAgeMs: 4.5 * DAY }, T0 + 7 * DAY),
    ).toEqual([1]);
    expect(obsoleteVersions({ currentVersion: undefined, versions: [] }, { keep: 0 }, T0)).toEqual([]);
  });

  test("plan and apply mark an obsolete version, re-checked against the scene", async () => {
    const t = await seeded();
    const plan = await t.query(internal.retention.plan, {
      keep: 1,
      cursor: null,
      numItems: 10,
    });
    expect(plan.scenes.map((s) => [s.sceneId, s.obsolete])).toEqual([
      ["a", [1]],
      ["b", [1]],
      ["c", [1]],
    ]);
    const mark = (version: number, protectedKeys?: string[]) =>
      t.mutation(internal.retention.mark, {
        keep: 1,
        sessionId: "s1",
        sceneId: "a",
        version,
        actor: "ops",
        protectedKeys,
      });
    expect(await mark(2)).toMatchObject({ marked: 0, refused: "not_obsolete" });
    expect(await mark(3)).toMatchObject({ marked: 0, refused: "not_obsolete" });
    expect(await mark(1, [key("a", 1, "video.mp4")])).toEqual({ marked: 1, bytes: 100 });
    const marked = (await assets(t)).filter((a) => a.status === "cleanup_pending");
    expect(marked.map((a) => [a.key, a.deleteReason])).toEqual([
      [key("a", 1, "manifest.json"), "retention"],
    ]);
    // The live view no longer lists it; the current version is untouched.
    const live = await t
      .withIdentity(ALICE)
      .query(api.sessions.live, { sessionId: "s1", paginationOpts: page });
    expect(live.page.map((a) => a.key)).not.toContain(key("a", 1, "manifest.json"));
    expect(live.scenes.find((s) => s.sceneId === "a")!.currentVersion).toBe(3);
  });
});

describe("missing files", () => {
  test("an available record S3 lost is missing: gone, never a URL", async () => {
    const t = await seeded();
    const target = key("a", 3, "video.mp4");
    expect(
      await t.mutation(internal.lifecycle.markMissing, { bucket: BUCKET, key: target, seenAt: T0 + 7 }),
    ).toBe("missing");
    expect(
      await t.mutation(internal.lifecycle.markMissing, { bucket: BUCKET, key: target, seenAt: T0 + 8 }),
    ).toBe("skipped");
    const asset = (await assets(t)).find((a) => a.key === target)!;
    expect(asset).toMatchObject({ status: "missing", missingSince: T0 + 7 });
    expect(asset.url).toBeUndefined();
    expect(
      await t.withIdentity(ALICE).mutation(api.access.requestUrl, { assetId: asset._id }),
    ).toEqual({ status: "error", error: { code: "gone", deletedAt: T0 + 7, reason: "missing" } });
    const scene = await t.query(internal.sessions.scene, { sessionId: "s1", sceneId: "a" });
    expect(scene!.files.video).toBeUndefined();
    // The object comes back (a new upload): available again, nothing left of it.
    await apply(t, [created(target, { sessionId: "s1", sceneId: "a", version: 3, kind: "video", eventTime: T0 + 9000 })]);
    const back = (await assets(t)).find((a) => a.key === target)!;
    expect(back.status).toBe("available");
    expect(back.missingSince).toBeUndefined();
  });

  test("a URL request racing a cleanup is closed as gone, not signed", async () => {
    vi.stubEnv("CLEANUP_GRACE_SECONDS", "0");
    const t = await seeded();
    const alice = t.withIdentity(ALICE);
    const [asset] = await assets(t);
    await t.run((ctx) => ctx.db.patch("assets", asset._id, { url: undefined, urlExpiresAt: undefined }));
    const asked = await alice.mutation(api.access.requestUrl, { assetId: asset._id });
    expect(asked.status).toBe("pending");
    await alice.mutation(api.sessions.delete, { sessionId: "s1" });
    await cleanAllDue(t);
    const requestId = (asked as { requestId: Id<"urlRequests"> }).requestId;
    const fulfilled = await t.mutation(internal.urls.fulfilRequests, {
      fulfilments: [{ requestId, url: "https://signed", urlExpiresAt: T0 + HOUR }],
    } as never);
    expect(JSON.stringify(fulfilled)).toContain("gone");
    expect(await alice.query(api.access.urlRequest, { requestId })).toMatchObject({ status: "gone" });
    await expect(
      alice.query(api.assets.view, { assetId: asset._id, paginationOpts: page }),
    ).rejects.toThrow(/gone/);
  });
});

test("scheduled pages: a deletion larger than a page completes across mutations", async () => {
  vi.useFakeTimers({ now: T0 });
  const t = backend();
  const events = Array.from({ length: 1200 }, (_, i) =>
    created(`sessions/big/f${i}.bin`, { sessionId: "big", kind: "other" }),
  );
  for (let i = 0; i < events.length; i += 400) await apply(t, events.slice(i, i + 400));
  const first = await t.mutation(internal.lifecycle.deleteSession, { sessionId: "big", actor: "ops" });
  expect(first).toMatchObject({ state: "marking", marked: 500 });
  await runScheduled(t);
  expect(await t.query(internal.lifecycle.progress, { sessionId: "big" })).toMatchObject({
    state: "pending",
    marked: 1200,
    pending: 1200,
  });
});
