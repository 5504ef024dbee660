import { describe, expect, test } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import {
  compareUploads,
  judgeUpload,
  type UploadPosition,
} from "../../convex/ordering";
import {
  MAX_REPORT_UPDATES,
  MAX_UPLOAD_ERROR,
  type UploadUpdate,
} from "../../convex/model/uploads";
import { ALICE } from "./identities";
import { BUCKET, backend, random, removed, shuffle } from "./support";
import {
  RUN,
  LATER_RUN,
  EARLIER_RUN,
  SESSION,
  dir,
  VIDEO,
  SOURCE,
  ETAG,
  done,
  report,
  apply,
  record,
  history,
  session,
  layoutOf,
  upd,
  s3Created,
  everything,
} from "./uploadsSupport";

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
