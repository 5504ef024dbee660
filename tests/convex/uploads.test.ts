import { ConvexError, type Value } from "convex/values";
import { afterEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import type { Doc } from "../../convex/_generated/dataModel";
import type { S3Event } from "../../convex/events";
import {
  compareUploads,
  judgeUpload,
  type UploadPosition,
} from "../../convex/ordering";
import {
  MAX_REPORT_UPDATES,
  MAX_UPLOAD_ERROR,
  STALLED_ERROR,
  type UploadUpdate,
} from "../../convex/model/uploads";
import { MAX_REPORT_MANIFESTS } from "../../convex/model/uploadsManifest";
import { ALICE } from "./identities";
import {
  BUCKET,
  T0,
  backend,
  created,
  random,
  removed,
  shuffle,
  type Backend,
} from "./support";

// Run ids sort by start time (convex/UPLOADS.md): a ULID-like prefix.
const RUN = "01JT0000000000000000000001";
const LATER_RUN = "01JT0000000000000000000002";
const EARLIER_RUN = "01JT0000000000000000000000";

const SESSION = "s1";
const dir = (file: string, sceneId = "intro", version = 1) =>
  `sessions/${SESSION}/scenes/${sceneId}/v${version}/${file}`;
const VIDEO = dir("video.mp4");
const SOURCE = dir("scene.py");
const MANIFEST = dir("manifest.json");

const KIND_OF: Record<string, string> = {
  mp4: "video",
  py: "source",
  json: "metadata",
};

/** What the key layout says about a key, as both writers send it. */
function layoutOf(key: string) {
  const m = /^sessions\/([^/]+)\/scenes\/([^/]+)\/v(\d+)\/(.+)$/.exec(key);
  if (m === null) return { sessionId: key.split("/")[1], kind: "metadata" };
  const [, sessionId, sceneId, version, file] = m;
  const kind =
    file === "manifest.json"
      ? "manifest"
      : (KIND_OF[file.split(".").pop()!] ?? "other");
  return { sessionId, sceneId, version: Number(version), kind };
}

function upd(
  key: string,
  status: UploadUpdate["status"],
  fields: Partial<UploadUpdate> = {},
): UploadUpdate {
  return {
    bucket: BUCKET,
    key,
    status,
    bytesSent: 0,
    bytesTotal: 1_000,
    attempt: 1,
    contentType: key.endsWith(".mp4") ? "video/mp4" : "text/plain",
    ...layoutOf(key),
    ...fields,
  };
}

const ETAG = "9e107d9d372bb6826bd81d3542a419d6";

/** The uploader's `available` for the object the daemon's `s3Created` describes. */
const done = (key: string, fields: Partial<UploadUpdate> = {}) =>
  upd(key, "available", {
    bytesSent: fields.bytesTotal ?? 1_000,
    size: 1_000,
    etag: ETAG,
    uploadedAt: T0,
    ...fields,
  });

function s3Created(key: string, fields: Partial<S3Event> = {}): S3Event {
  return created(key, {
    sequencer: "0055AED6DCD90281E5",
    size: 1_000,
    etag: ETAG,
    contentType: key.endsWith(".mp4") ? "video/mp4" : "text/plain",
    url: `https://cdn.example/${key}`,
    source: "sqs:m-1",
    ...layoutOf(key),
    ...fields,
  });
}

const report = (
  t: Backend,
  updates: UploadUpdate[],
  runId = RUN,
  sessionId = SESSION,
) => t.mutation(internal.uploads.report, { sessionId, runId, updates });
const apply = (t: Backend, events: S3Event[]) =>
  t.mutation(internal.assets.applyEvents, { events });
const record = (t: Backend, key: string) =>
  t.query(internal.assets.getByKey, { bucket: BUCKET, key });
const history = (t: Backend, key: string) =>
  t.query(internal.assets.history, { bucket: BUCKET, key });
const session = (t: Backend, sessionId = SESSION) =>
  t.query(internal.sessions.get, { sessionId });

/** Every row of every table the upload path may write. */
function everything(t: Backend) {
  return t.run(async (ctx) => ({
    assets: await ctx.db.query("assets").collect(),
    versions: await ctx.db.query("assetVersions").collect(),
    sessions: await ctx.db.query("videoSessions").collect(),
    scenes: await ctx.db.query("scenes").collect(),
    audit: await ctx.db.query("accessAudit").collect(),
  }));
}

afterEach(() => {
  vi.useRealTimers();
});

describe("compareUploads (convex/ordering.ts, U1–U5)", () => {
  const at = (fields: Partial<UploadPosition> = {}): UploadPosition => ({
    runId: RUN,
    attempt: 1,
    status: "uploading",
    bytesSent: 10,
    digest: "00000000000000",
    ...fields,
  });

  test("run, then attempt, then status, then bytes, then digest", () => {
    expect(
      compareUploads(at({ runId: LATER_RUN, attempt: 1 }), at({ attempt: 9 })),
    ).toBeGreaterThan(0);
    expect(
      compareUploads(at({ attempt: 2, bytesSent: 0 }), at({ bytesSent: 999 })),
    ).toBeGreaterThan(0);
    expect(
      compareUploads(
        at({ status: "uploading", bytesSent: 999 }),
        at({ status: "failed" }),
      ),
    ).toBeLessThan(0);
    expect(
      compareUploads(at({ status: "failed" }), at({ status: "available" })),
    ).toBeLessThan(0);
    expect(
      compareUploads(at({ status: "pending", bytesSent: 0 }), at()),
    ).toBeLessThan(0);
    expect(compareUploads(at({ bytesSent: 11 }), at())).toBeGreaterThan(0);
    expect(
      compareUploads(at({ digest: "1" }), at({ digest: "0" })),
    ).toBeGreaterThan(0);
    expect(judgeUpload(at(), at())).toBe("ignored");
    expect(judgeUpload(at(), at({ bytesSent: 9 }))).toBe("stale");
    expect(judgeUpload(null, at())).toBe("applied");
  });

  test("is antisymmetric and sorts to one order whatever the input order", () => {
    const all: UploadPosition[] = [];
    for (const runId of [EARLIER_RUN, RUN])
      for (const attempt of [1, 2])
        for (const status of [
          "pending",
          "uploading",
          "failed",
          "available",
        ] as const)
          for (const bytesSent of [0, 5])
            for (const digest of ["a", "b"])
              all.push({ runId, attempt, status, bytesSent, digest });
    for (const a of all) {
      for (const b of all) {
        expect(Math.sign(compareUploads(a, b))).toBe(
          -Math.sign(compareUploads(b, a)) || 0,
        );
      }
    }
    const rand = random(11);
    const reference = [...all].sort(compareUploads);
    for (let i = 0; i < 10; i++) {
      expect(shuffle(all, rand).sort(compareUploads)).toEqual(reference);
    }
  });
});

describe("createSession", () => {
  test("creates the record with owner, run id and an empty summary; again, writes nothing", async () => {
    const t = backend();
    const args = {
      sessionId: SESSION,
      ownerId: ALICE.tokenIdentifier,
      runId: RUN,
    };
    expect(await t.mutation(internal.uploads.createSession, args)).toEqual({
      created: true,
    });
    expect(await session(t)).toMatchObject({
      ownerId: ALICE.tokenIdentifier,
      runId: RUN,
      summary: {
        available: 0,
        pending: 0,
        uploading: 0,
        failed: 0,
        filesDone: 0,
        filesTotal: 0,
        bytesDone: 0,
        bytesTotal: 0,
      },
    });
    const before = await everything(t);
    expect(before.audit.map((r) => [r.action, r.principal, r.actor])).toEqual([
      ["setOwner", ALICE.tokenIdentifier, "uploads:createSession"],
    ]);
    expect(await t.mutation(internal.uploads.createSession, args)).toEqual({
      created: false,
    });
    expect(await everything(t)).toEqual(before);
  });

  test("another owner is a conflict, and changes nothing", async () => {
    const t = backend();
    await t.mutation(internal.uploads.createSession, {
      sessionId: SESSION,
      ownerId: "alice",
    });
    const before = await everything(t);
    await expect(
      t.mutation(internal.uploads.createSession, {
        sessionId: SESSION,
        ownerId: "bob",
      }),
    ).rejects.toMatchObject({ data: { code: "conflict" } });
    expect(await everything(t)).toEqual(before);
  });

  test("a session the daemon saw first gets its owner and keeps its summary", async () => {
    const t = backend();
    await apply(t, [s3Created(VIDEO)]);
    expect((await session(t))!.ownerId).toBeUndefined();
    expect(
      await t.mutation(internal.uploads.createSession, {
        sessionId: SESSION,
        ownerId: "alice",
        runId: RUN,
      }),
    ).toEqual({ created: false });
    expect(await session(t)).toMatchObject({
      ownerId: "alice",
      runId: RUN,
      summary: { available: 1, scenes: 1 },
    });
  });
});

describe("report", () => {
  test("pending → uploading → available moves the record and the session's progress", async () => {
    const t = backend();
    await t.mutation(internal.uploads.createSession, {
      sessionId: SESSION,
      ownerId: ALICE.tokenIdentifier,
      runId: RUN,
    });
    const first = await report(t, [
      upd(VIDEO, "pending"),
      upd(SOURCE, "pending", { bytesTotal: 200 }),
    ]);
    expect(first).toEqual({
      results: ["applied", "applied"],
      session: {
        filesDone: 0,
        filesTotal: 2,
        bytesDone: 0,
        bytesTotal: 1_200,
        failed: 0,
      },
    });
    expect(await record(t, VIDEO)).toMatchObject({
      status: "pending",
      revision: 0,
      sessionId: SESSION,
      sceneId: "intro",
      version: 1,
      kind: "video",
      upload: { runId: RUN, attempt: 1, status: "pending", bytesSent: 0 },
    });

    const second = await report(t, [
      upd(VIDEO, "uploading", { bytesSent: 400 }),
      done(SOURCE, { bytesTotal: 200, size: 200 }),
    ]);
    expect(second.session).toEqual({
      filesDone: 1,
      filesTotal: 2,
      bytesDone: 600,
      bytesTotal: 1_200,
      failed: 0,
    });
    expect((await session(t))!.summary).toMatchObject({
      available: 1,
      uploading: 1,
      pending: 0,
      bytes: 200,
      byKind: { source: 1 },
    });
    // No S3 event yet: no history, no scene (scenes follow S3 only).
    expect(await history(t, SOURCE)).toEqual([]);
    expect(
      await t.query(internal.sessions.scene, {
        sessionId: SESSION,
        sceneId: "intro",
      }),
    ).toBeNull();

    // The owner's live view shows per-asset progress and the session's.
    const live = await t.withIdentity(ALICE).query(api.sessions.live, {
      sessionId: SESSION,
      paginationOpts: { numItems: 10, cursor: null },
    });
    expect(live.session.summary).toMatchObject({
      filesDone: 1,
      filesTotal: 2,
      bytesDone: 600,
      bytesTotal: 1_200,
    });
    const video = live.page.find((a) => a.key === VIDEO)!;
    expect(video).toMatchObject({
      status: "uploading",
      upload: {
        status: "uploading",
        attempt: 1,
        bytesSent: 400,
        bytesTotal: 1_000,
      },
    });
    expect(video.upload).not.toHaveProperty("runId");
  });

  test("progress never goes back: a late lower bytesSent is stale, the same report again ignored", async () => {
    const t = backend();
    await report(t, [upd(VIDEO, "uploading", { bytesSent: 600 })]);
    const before = await everything(t);
    const late = await report(t, [
      upd(VIDEO, "uploading", { bytesSent: 300 }),
      upd(VIDEO, "pending"),
      upd(VIDEO, "uploading", { bytesSent: 600 }),
    ]);
    expect(late.results).toEqual(["stale", "stale", "ignored"]);
    expect(late.session.bytesDone).toBe(600);
    expect(await everything(t)).toEqual(before);
  });

  test("bytesSent over bytesTotal (a retried part counted twice) is taken as all of it", async () => {
    const t = backend();
    await report(t, [upd(VIDEO, "uploading", { bytesSent: 1_200 })]);
    expect((await record(t, VIDEO))!.upload).toMatchObject({
      bytesSent: 1_000,
      bytesTotal: 1_000,
    });
  });

  test("a failure records error, attempt and retry time; a newer attempt restarts; the old one is stale", async () => {
    const t = backend();
    const retryAt = Date.now() + 30_000;
    await report(t, [upd(VIDEO, "uploading", { bytesSent: 600 })]);
    const failed = await report(t, [
      upd(VIDEO, "failed", {
        bytesSent: 600,
        error: "ConnectionClosedError: " + "x".repeat(400),
        nextRetryAt: retryAt,
      }),
    ]);
    expect(failed.session).toMatchObject({ failed: 1, bytesDone: 0 });
    const asset = await record(t, VIDEO);
    expect(asset).toMatchObject({
      status: "failed",
      upload: { status: "failed", attempt: 1, nextRetryAt: retryAt },
    });
    expect(asset!.upload!.error).toHaveLength(MAX_UPLOAD_ERROR);
    expect(asset!.error).toBe(asset!.upload!.error);

    const retry = await report(t, [
      upd(VIDEO, "uploading", { attempt: 2, bytesSent: 100 }),
      upd(VIDEO, "uploading", { attempt: 1, bytesSent: 900 }),
    ]);
    expect(retry.results).toEqual(["applied", "stale"]);
    expect(retry.session).toMatchObject({ failed: 0, bytesDone: 100 });
    const retried = await record(t, VIDEO);
    expect(retried).toMatchObject({
      status: "uploading",
      upload: { attempt: 2, bytesSent: 100, status: "uploading" },
    });
    expect(retried!.error).toBeUndefined();
    expect(retried!.upload!.error).toBeUndefined();
    expect(retried!.upload!.nextRetryAt).toBeUndefined();
  });

  test("a later run supersedes an earlier one; the session keeps the latest run id", async () => {
    const t = backend();
    await report(t, [upd(VIDEO, "uploading", { attempt: 3, bytesSent: 900 })]);
    const newer = await report(t, [upd(VIDEO, "pending")], LATER_RUN);
    expect(newer.results).toEqual(["applied"]);
    const older = await report(
      t,
      [upd(VIDEO, "uploading", { attempt: 9, bytesSent: 999 })],
      EARLIER_RUN,
    );
    expect(older.results).toEqual(["stale"]);
    expect(await record(t, VIDEO)).toMatchObject({
      status: "pending",
      upload: { runId: LATER_RUN, attempt: 1 },
    });
    expect((await session(t))!.runId).toBe(LATER_RUN);
  });

  test("available from S3 is never turned back by a late or a new upload", async () => {
    const t = backend();
    await report(t, [upd(VIDEO, "uploading", { bytesSent: 500 })]);
    await apply(t, [s3Created(VIDEO)]);
    const late = await report(t, [
      upd(VIDEO, "uploading", { bytesSent: 700 }),
      upd(VIDEO, "failed", { bytesSent: 700, error: "timeout" }),
    ]);
    // The upload's own state moves on; what S3 said stays.
    expect(late.results).toEqual(["applied", "applied"]);
    const newRun = await report(t, [upd(VIDEO, "pending")], LATER_RUN);
    expect(newRun.results).toEqual(["applied"]);
    expect(newRun.session).toMatchObject({ filesDone: 1, failed: 0 });
    const asset = await record(t, VIDEO);
    expect(asset).toMatchObject({
      status: "available",
      revision: 1,
      etag: ETAG,
      url: `https://cdn.example/${VIDEO}`,
      upload: { runId: LATER_RUN, status: "pending" },
    });
    expect(asset!.error).toBeUndefined();
    expect(await history(t, VIDEO)).toHaveLength(1);
  });

  test("available from the uploader is not undone by its own late progress", async () => {
    const t = backend();
    await report(t, [done(VIDEO)]);
    const late = await report(t, [
      upd(VIDEO, "uploading", { bytesSent: 999 }),
      upd(VIDEO, "pending"),
      upd(VIDEO, "failed", { bytesSent: 999, error: "late" }),
      done(VIDEO),
    ]);
    expect(late.results).toEqual(["stale", "stale", "stale", "ignored"]);
    expect(await record(t, VIDEO)).toMatchObject({
      status: "available",
      size: 1_000,
      etag: ETAG,
      revision: 0,
    });
  });

  test("the daemon's event after the uploader's available is the first and only history version", async () => {
    const t = backend();
    await report(t, [done(VIDEO, { checksumSha256: "sha=" })]);
    const summaryBefore = (await session(t))!.summary;
    const [first] = await apply(t, [s3Created(VIDEO)]);
    expect(first.status).toBe("applied");
    // Redelivered: the existing duplicate rule.
    const [again] = await apply(t, [s3Created(VIDEO)]);
    expect(again.status).toBe("duplicate");
    // The uploader's `available` once more: the record knew it already.
    expect(
      (await report(t, [done(VIDEO, { checksumSha256: "sha=" })])).results,
    ).toEqual(["ignored"]);
    expect(await history(t, VIDEO)).toHaveLength(1);
    expect(await record(t, VIDEO)).toMatchObject({
      status: "available",
      revision: 1,
      sequencer: "0055AED6DCD90281E5",
      lastEventName: "ObjectCreated:Put",
      url: `https://cdn.example/${VIDEO}`,
      upload: { status: "available", etag: ETAG },
    });
    const summary = (await session(t))!.summary;
    expect(summary).toMatchObject({
      available: 1,
      filesDone: 1,
      filesTotal: 1,
      bytes: 1_000,
      scenes: 1,
    });
    expect({ ...summary, scenes: 0, lastEventAt: undefined }).toEqual({
      ...summaryBefore,
      scenes: 0,
      lastEventAt: undefined,
    });
    // The scene points at it once S3 has said so.
    const scene = await t.query(internal.sessions.scene, {
      sessionId: SESSION,
      sceneId: "intro",
    });
    expect(scene!.files.video!.key).toBe(VIDEO);
  });

  test("a removal of an uploaded file leaves it out of the progress", async () => {
    const t = backend();
    await report(t, [upd(VIDEO, "uploading", { bytesSent: 10 }), done(SOURCE)]);
    await apply(t, [removed(VIDEO, layoutOf(VIDEO))]);
    expect(await record(t, VIDEO)).toMatchObject({
      status: "deleted",
      revision: 1,
    });
    expect((await session(t))!.summary).toMatchObject({
      deleted: 1,
      uploading: 0,
      filesTotal: 1,
      filesDone: 1,
      bytesTotal: 1_000,
      bytesDone: 1_000,
    });
    // A late report moves the upload's state only.
    await report(t, [upd(VIDEO, "uploading", { bytesSent: 500 })]);
    expect(await record(t, VIDEO)).toMatchObject({ status: "deleted" });
  });

  test("no URL is handed out for a file not in S3 yet", async () => {
    const t = backend();
    await t.mutation(internal.uploads.createSession, {
      sessionId: SESSION,
      ownerId: ALICE.tokenIdentifier,
    });
    await report(t, [upd(VIDEO, "uploading", { bytesSent: 1 })]);
    const assetId = (await record(t, VIDEO))!._id;
    expect(
      await t.withIdentity(ALICE).mutation(api.access.requestUrl, { assetId }),
    ).toEqual({ status: "error", error: { code: "unavailable" } });
    expect(
      await t.mutation(internal.access.authorize, {
        principal: ALICE.tokenIdentifier,
        bucket: BUCKET,
        key: VIDEO,
        maxTtlMs: 60_000,
        fresh: {
          url: "https://signed.example/x",
          expiresAt: Date.now() + 60_000,
        },
      }),
    ).toMatchObject({
      outcome: "unavailable",
      reason: "asset is uploading: not in S3 yet",
    });
    expect(await t.run((ctx) => ctx.db.query("urlRequests").collect())).toEqual(
      [],
    );
  });

  test("what a consistent uploader never sends fails the whole call with the update's index", async () => {
    const t = backend();
    const bad: [Partial<UploadUpdate>, RegExp][] = [
      [{ bytesSent: -1 }, /bytesSent/],
      [{ status: "uploading", error: "x" }, /failed update/],
      [{ status: "uploading", etag: "e" }, /available update/],
      [{ sessionId: "s2" }, /not the report's/],
      [{ attempt: 1.5 }, /attempt/],
      [{ key: "" }, /key is empty/],
      [{ status: "failed", nextRetryAt: 1_700_000 }, /milliseconds/],
    ];
    for (const [fields, reason] of bad) {
      await expect(
        report(t, [upd(SOURCE, "pending"), upd(VIDEO, "uploading", fields)]),
      ).rejects.toMatchObject({
        data: {
          code: "bad_request",
          index: 1,
          reason: expect.stringMatching(reason),
        },
      });
    }
    await expect(
      t.mutation(internal.uploads.report, {
        sessionId: SESSION,
        runId: "",
        updates: [],
      }),
    ).rejects.toMatchObject({ data: { code: "bad_request" } });
    await expect(
      report(
        t,
        Array.from({ length: MAX_REPORT_UPDATES + 1 }, (_, i) =>
          upd(dir(`f${i}.json`), "pending"),
        ),
      ),
    ).rejects.toMatchObject({
      data: { code: "BatchTooLarge", max: 500, got: 501 },
    });
    expect((await everything(t)).assets).toEqual([]);
  });
});

// --- any interleaving of the two writers converges --------------------------

type Delivery =
  { kind: "report"; update: UploadUpdate } | { kind: "event"; event: S3Event };

describe("shuffled interleavings of uploader reports and S3 events", () => {
  const A = VIDEO;
  const B = SOURCE;
  const C = dir("poster.png");
  const D = `sessions/${SESSION}/summary.json`;
  const retryAt = T0 + 60_000;

  // A: the happy path. B: attempt 1 fails, attempt 2 makes it (its object is
  // attempt 2's). C: fails for good (no object). D: the daemon's only.
  function deliveries(): Delivery[] {
    const r = (update: UploadUpdate): Delivery => ({ kind: "report", update });
    const e = (event: S3Event): Delivery => ({ kind: "event", event });
    return [
      r(upd(A, "pending")),
      r(upd(A, "uploading", { bytesSent: 250 })),
      r(upd(A, "uploading", { bytesSent: 500 })),
      r(upd(A, "uploading", { bytesSent: 1_000 })),
      r(done(A)),
      e(s3Created(A)),
      r(upd(B, "pending", { bytesTotal: 300 })),
      r(upd(B, "uploading", { bytesTotal: 300, bytesSent: 100 })),
      r(
        upd(B, "failed", {
          bytesTotal: 300,
          bytesSent: 100,
          error: "SlowDown",
          nextRetryAt: retryAt,
        }),
      ),
      r(upd(B, "uploading", { attempt: 2, bytesTotal: 300, bytesSent: 200 })),
      r(done(B, { attempt: 2, bytesTotal: 300, size: 300, etag: "b2" })),
      e(s3Created(B, { size: 300, etag: "b2", eventTime: T0 + 5 })),
      r(upd(C, "uploading", { bytesTotal: 50, bytesSent: 10 })),
      r(
        upd(C, "failed", {
          bytesTotal: 50,
          bytesSent: 10,
          error: "AccessDenied",
        }),
      ),
      e(s3Created(D, { size: 7, etag: "d" })),
    ];
  }

  /** Delivers in this order, each writer's items in batches of 1–4. */
  async function deliver(order: Delivery[], rand: () => number) {
    const t = backend();
    const everAvailable = new Set<string>();
    for (let i = 0; i < order.length;) {
      const kind = order[i].kind;
      let j = i + 1;
      const size = 1 + Math.floor(rand() * 4);
      while (j < order.length && j - i < size && order[j].kind === kind) j++;
      const batch = order.slice(i, j);
      if (kind === "report") {
        await report(
          t,
          batch.map((d) => (d as { update: UploadUpdate }).update),
        );
      } else {
        await apply(
          t,
          batch.map((d) => (d as { event: S3Event }).event),
        );
      }
      i = j;
      // After every call: once available, always available (nothing here
      // removes a file).
      for (const asset of (await everything(t)).assets) {
        if (everAvailable.has(asset.key))
          expect(asset.status).toBe("available");
        if (asset.status === "available") everAvailable.add(asset.key);
      }
    }
    return t;
  }

  // Fields that record when Convex wrote, not what it knows.
  function comparable(asset: Doc<"assets">) {
    const { _id, _creationTime, createdAt, updatedAt, upload, ...rest } = asset;
    const known = {
      ...rest,
      // Revision 0: a placeholder position stamped with Convex's clock.
      eventTime: rest.revision === 0 ? 0 : rest.eventTime,
      upload: upload && { ...upload, updatedAt: 0 },
    };
    return known;
  }

  async function state(t: Backend) {
    const all = await everything(t);
    const strip = <T extends { _id: unknown }>(doc: T) => {
      const { _id, _creationTime, createdAt, updatedAt, ...rest } = doc as T & {
        _creationTime: number;
        createdAt: number;
        updatedAt: number;
      };
      return rest;
    };
    return {
      assets: all.assets
        .map(comparable)
        .sort((a, b) => (a.key < b.key ? -1 : 1)),
      versions: all.versions
        .map(({ _id, _creationTime, assetId, appliedAt, ...rest }) => rest)
        .sort((a, b) => (a.key < b.key ? -1 : 1)),
      sessions: all.sessions.map(strip),
      scenes: all.scenes.map((s) => ({
        ...strip(s),
        files: Object.fromEntries(
          Object.entries(s.files).map(([kind, f]) => [kind, f!.key]),
        ),
      })),
    };
  }

  test.each([1, 2, 3, 4, 5, 6, 7, 8])(
    "seed %i: shuffled, duplicated, batched — one available record per object, one history version, the same summary",
    async (seed) => {
      const inOrder = await state(await deliver(deliveries(), random(0)));
      expect(inOrder.assets.map((a) => [a.key, a.status, a.revision])).toEqual([
        [C, "failed", 0],
        [B, "available", 1],
        [A, "available", 1],
        [D, "available", 1],
      ]);
      // One version per object that reached S3; none for C.
      expect(inOrder.versions.map((v) => v.key)).toEqual([B, A, D]);
      expect(inOrder.sessions).toHaveLength(1);
      expect(inOrder.sessions[0]).toMatchObject({
        runId: RUN,
        summary: {
          available: 3,
          failed: 1,
          pending: 0,
          uploading: 0,
          deleted: 0,
          filesTotal: 3,
          filesDone: 2,
          bytesTotal: 1_000 + 300 + 50,
          bytesDone: 1_000 + 300,
          bytes: 1_000 + 300 + 7,
          scenes: 1,
        },
      });
      expect(inOrder.assets.find((a) => a.key === C)).toMatchObject({
        error: "AccessDenied",
        upload: { status: "failed", error: "AccessDenied", attempt: 1 },
      });

      const rand = random(seed);
      const items = deliveries();
      const delivered = shuffle(
        [...items, ...items.filter(() => rand() < 0.3)],
        rand,
      );
      const t = await deliver(delivered, rand);
      expect(await state(t)).toEqual(inOrder);

      // What a rebuild from the asset records computes is the same.
      await t.mutation(internal.sessions.rebuild, { sessionId: SESSION });
      expect(await state(t)).toEqual(inOrder);

      // Scenes are what the S3 events alone make.
      const daemonOnly = backend();
      await apply(
        daemonOnly,
        items.flatMap((d) => (d.kind === "event" ? [d.event] : [])),
      );
      expect((await state(t)).scenes).toEqual((await state(daemonOnly)).scenes);
    },
    30_000,
  );
});

describe("setManifest", () => {
  const args = {
    sessionId: SESSION,
    sceneId: "intro",
    version: 1,
    bucket: BUCKET,
    key: MANIFEST,
    runId: RUN,
  };
  const sceneDoc = (t: Backend) =>
    t.run((ctx) => ctx.db.query("scenes").first());

  test("references the manifest from the scene before S3 has said anything; idempotent", async () => {
    const t = backend();
    await t.mutation(internal.uploads.setManifest, args);
    expect(await sceneDoc(t)).toMatchObject({
      sessionId: SESSION,
      sceneId: "intro",
      files: {},
      versions: [],
      uploads: [
        { version: 1, runId: RUN, manifest: { bucket: BUCKET, key: MANIFEST } },
      ],
    });
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
    const before = await everything(t);
    await t.mutation(internal.uploads.setManifest, args);
    // An earlier run's manifest loses to the one held.
    await t.mutation(internal.uploads.setManifest, {
      ...args,
      runId: EARLIER_RUN,
      key: dir("old-manifest.json"),
    });
    expect(await everything(t)).toEqual(before);

    // The daemon's events then fill the same scene: counted once.
    await apply(t, [s3Created(VIDEO), s3Created(MANIFEST)]);
    const scene = await sceneDoc(t);
    expect(scene).toMatchObject({
      currentVersion: 1,
      uploads: [{ version: 1, runId: RUN }],
    });
    expect(scene!.files.manifest!.key).toBe(MANIFEST);
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
    await t.mutation(internal.sessions.rebuild, { sessionId: SESSION });
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
  });

  test("per version; a later run replaces its version's entry", async () => {
    const t = backend();
    await apply(t, [s3Created(VIDEO)]);
    await t.mutation(internal.uploads.setManifest, { ...args, version: 2 });
    await t.mutation(internal.uploads.setManifest, args);
    await t.mutation(internal.uploads.setManifest, {
      ...args,
      version: 2,
      runId: LATER_RUN,
      key: dir("manifest.json", "intro", 2),
    });
    expect(
      (await sceneDoc(t))!.uploads!.map((u) => [
        u.version,
        u.runId,
        u.manifest.key,
      ]),
    ).toEqual([
      [1, RUN, MANIFEST],
      [2, LATER_RUN, dir("manifest.json", "intro", 2)],
    ]);
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
  });
});

describe("report with manifests (the last report of an upload_dir)", () => {
  const ref = { sceneId: "intro", version: 1, bucket: BUCKET, key: MANIFEST };
  const withManifests = (
    t: Backend,
    updates: UploadUpdate[],
    manifests: (typeof ref)[],
    runId = RUN,
  ) =>
    t.mutation(internal.uploads.report, {
      sessionId: SESSION,
      runId,
      updates,
      manifests,
    });

  test("writes the finals and the reference in one call, as report + setManifest do", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(T0);
    const t = backend();
    const answer = await withManifests(t, [done(VIDEO), done(MANIFEST)], [ref]);
    expect(answer.results).toEqual(["applied", "applied"]);
    expect(answer.manifests).toEqual(["applied"]);
    expect(answer.session).toMatchObject({ filesDone: 2, filesTotal: 2 });

    const twoCalls = backend();
    await report(twoCalls, [done(VIDEO), done(MANIFEST)]);
    await twoCalls.mutation(internal.uploads.setManifest, {
      sessionId: SESSION,
      runId: RUN,
      ...ref,
    });
    const strip = (rows: Awaited<ReturnType<typeof everything>>) =>
      JSON.parse(
        JSON.stringify(rows, (k, v) =>
          ["_id", "_creationTime", "assetId"].includes(k) ? undefined : v,
        ),
      );
    expect(strip(await everything(t))).toEqual(
      strip(await everything(twoCalls)),
    );
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
  });

  test("replayed, or an earlier run's, writes nothing; a later run's replaces it", async () => {
    const t = backend();
    await withManifests(t, [done(MANIFEST)], [ref]);
    const before = await everything(t);
    const again = await withManifests(t, [done(MANIFEST)], [ref]);
    expect(again).toMatchObject({
      results: ["ignored"],
      manifests: ["ignored"],
    });
    const earlier = await withManifests(
      t,
      [],
      [{ ...ref, key: dir("old-manifest.json") }],
      EARLIER_RUN,
    );
    expect(earlier.manifests).toEqual(["ignored"]);
    expect(await everything(t)).toEqual(before);

    await withManifests(t, [], [ref], LATER_RUN);
    const scene = await t.run((ctx) => ctx.db.query("scenes").first());
    expect(scene!.uploads).toMatchObject([{ version: 1, runId: LATER_RUN }]);
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
  });

  test("a bad reference refuses the whole call, naming it; nothing written", async () => {
    const t = backend();
    const before = await everything(t);
    const refused = await withManifests(
      t,
      [done(VIDEO)],
      [ref, { ...ref, version: -1 }],
    ).then(
      () => null,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(ConvexError);
    expect((refused as ConvexError<Record<string, Value>>).data).toMatchObject({
      code: "bad_request",
      manifest: 1,
    });
    expect(await everything(t)).toEqual(before);
  });

  test(`more than MAX_REPORT_MANIFESTS (${MAX_REPORT_MANIFESTS}) is BatchTooLarge`, async () => {
    const t = backend();
    const refs = Array.from({ length: MAX_REPORT_MANIFESTS + 1 }, (_, i) => ({
      ...ref,
      version: i,
    }));
    await expect(withManifests(t, [], refs)).rejects.toThrow(/BatchTooLarge/);
  });
});

describe("sweepStale", () => {
  const sweep = (t: Backend, olderThanMs: number, limit?: number) =>
    t.mutation(internal.uploads.sweepStale, { olderThanMs, limit });

  test("uploading records without progress for longer than the timeout become failed", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(T0);
    const t = backend();
    await t.mutation(internal.uploads.createSession, {
      sessionId: SESSION,
      ownerId: ALICE.tokenIdentifier,
    });
    const keys = [1, 2, 3].map((i) => dir(`part${i}.json`));
    await report(
      t,
      keys.map((k) => upd(k, "uploading", { bytesSent: 10 })),
    );
    // Waiting, not uploading: never swept. Known to S3: never swept either.
    await report(t, [
      upd(SOURCE, "pending"),
      upd(VIDEO, "uploading", { bytesSent: 5 }),
    ]);
    await apply(t, [s3Created(VIDEO)]);

    vi.setSystemTime(T0 + 50_000);
    const fresh = dir("fresh.json");
    await report(t, [upd(fresh, "uploading", { bytesSent: 1 })]);

    vi.setSystemTime(T0 + 61_000);
    expect(await sweep(t, 60_000, 2)).toEqual({ swept: 2 });
    expect(await sweep(t, 60_000, 2)).toEqual({ swept: 1 });
    expect(await sweep(t, 60_000, 2)).toEqual({ swept: 0 });

    for (const key of keys) {
      expect(await record(t, key)).toMatchObject({
        status: "failed",
        error: STALLED_ERROR,
        upload: {
          status: "failed",
          error: STALLED_ERROR,
          attempt: 1,
          bytesSent: 10,
        },
      });
    }
    expect(await record(t, fresh)).toMatchObject({ status: "uploading" });
    expect(await record(t, SOURCE)).toMatchObject({ status: "pending" });
    expect(await record(t, VIDEO)).toMatchObject({ status: "available" });
    expect((await session(t))!.summary).toMatchObject({
      failed: 3,
      uploading: 1,
      pending: 1,
      available: 1,
      filesTotal: 6,
      filesDone: 1,
      bytesDone: 1_000 + 1,
    });
    const live = await t.withIdentity(ALICE).query(api.sessions.live, {
      sessionId: SESSION,
      paginationOpts: { numItems: 10, cursor: null },
    });
    expect(live.page.find((a) => a.key === keys[0])).toMatchObject({
      status: "failed",
      error: "processing_failed",
      upload: { status: "failed", error: "upload_stalled" },
    });

    // The same attempt's late progress is stale; its success, or a retry, is not.
    const late = await report(t, [
      upd(keys[0], "uploading", { bytesSent: 11 }),
      done(keys[1]),
      upd(keys[2], "uploading", { attempt: 2, bytesSent: 0 }),
    ]);
    expect(late.results).toEqual(["stale", "applied", "applied"]);
    expect(late.session).toMatchObject({ failed: 1, filesDone: 2 });
  });

  test("refuses a timeout that is not positive and a limit out of bounds", async () => {
    const t = backend();
    for (const [olderThanMs, limit] of [
      [0, undefined],
      [-1, undefined],
      [1_000, 0],
      [1_000, 501],
    ]) {
      await expect(sweep(t, olderThanMs!, limit)).rejects.toMatchObject({
        data: { code: "bad_request" },
      });
    }
  });
});

describe("the offline spool's delivery (s3convex.storage.spool_sink)", () => {
  // What the spool holds after an upload_dir with Convex away, in the order it was written.
  const manifestArgs = {
    sessionId: SESSION,
    sceneId: "intro",
    version: 1,
    bucket: BUCKET,
    key: MANIFEST,
    runId: RUN,
  };
  const spooled = (t: Backend) => [
    () =>
      t.mutation(internal.uploads.createSession, {
        sessionId: SESSION,
        ownerId: ALICE.tokenIdentifier,
      }),
    () => report(t, [upd(VIDEO, "pending"), upd(SOURCE, "pending")]),
    () =>
      report(t, [
        upd(VIDEO, "uploading", { bytesSent: 400 }),
        upd(VIDEO, "failed", {
          bytesSent: 400,
          error: "SlowDown (HTTP 503)",
          nextRetryAt: T0,
        }),
        done(SOURCE),
      ]),
    () => report(t, [upd(VIDEO, "uploading", { attempt: 2, bytesSent: 500 })]),
    () => report(t, [done(VIDEO, { attempt: 2 }), done(MANIFEST)]),
    () => t.mutation(internal.uploads.setManifest, manifestArgs),
    // Today's last report carries the reference (an older spool: setManifest).
    () =>
      t.mutation(internal.uploads.report, {
        sessionId: SESSION,
        runId: RUN,
        updates: [done(MANIFEST)],
        manifests: [
          { sceneId: "intro", version: 1, bucket: BUCKET, key: MANIFEST },
        ],
      }),
  ];

  test("delivered again (a crash before the spool forgot it), it writes nothing", async () => {
    const t = backend();
    for (const call of spooled(t)) await call();
    const first = await everything(t);
    expect(await record(t, VIDEO)).toMatchObject({
      status: "available",
      upload: { attempt: 2, status: "available" },
    });

    // The whole spool again, then each entry again after the ones behind it.
    for (const call of spooled(t)) await call();
    for (const call of spooled(t).reverse()) await call();
    expect(await everything(t)).toEqual(first);

    // The daemon's events for the same objects, then the spool once more: one version each.
    await apply(t, [s3Created(VIDEO), s3Created(SOURCE), s3Created(MANIFEST)]);
    const withEvents = await everything(t);
    for (const call of spooled(t)) await call();
    expect(await everything(t)).toEqual(withEvents);
    for (const key of [VIDEO, SOURCE, MANIFEST]) {
      expect(await history(t, key)).toHaveLength(1);
    }
    expect((await session(t))!.summary).toMatchObject({
      filesDone: 3,
      filesTotal: 3,
      failed: 0,
    });
  });
});
