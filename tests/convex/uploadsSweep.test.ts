// Stalled uploads swept to `failed`, and what the offline spool delivers.
import { afterEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import { STALLED_ERROR } from "../../convex/model/uploads";
import { ALICE } from "./identities";
import { BUCKET, T0, backend, type Backend } from "./support";
import {
  RUN,
  SESSION,
  dir,
  VIDEO,
  SOURCE,
  MANIFEST,
  done,
  report,
  apply,
  record,
  history,
  session,
  upd,
  s3Created,
  everything,
} from "./uploadsSupport";

afterEach(() => {
  vi.useRealTimers();
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
