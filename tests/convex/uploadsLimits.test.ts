import { afterEach, describe, expect, test, vi } from "vitest";
import { internal } from "../../convex/_generated/api";
import {
  MAX_BATCH_EVENTS,
  MAX_EVENT_BYTES,
  findProblem,
  type S3Event,
} from "../../convex/events";
import {
  MAX_REPORT_UPDATES,
  MAX_RUN_ID_LENGTH,
  MAX_SWEEP,
  MAX_UPDATE_BYTES,
  MAX_UPLOAD_ERROR,
  type UploadUpdate,
} from "../../convex/model/uploads";
import { MAX_REPORT_MANIFESTS } from "../../convex/model/uploadsManifest";
import { MAX_SCENE_VERSIONS } from "../../convex/model/scenes";
import { BUCKET, T0, backend, created, type Backend } from "./support";

const MiB = 1 << 20;
const LIMIT = 16 * MiB;
const utf8 = new TextEncoder();
const RUN = "0".repeat(MAX_RUN_ID_LENGTH);

afterEach(() => {
  vi.useRealTimers();
});

type Used = Awaited<ReturnType<typeof measure>>["used"];

/** Runs the mutation nested, so the enclosing transaction reports what it used. */
function measure<T>(
  t: Backend,
  run: (ctx: Parameters<Parameters<Backend["run"]>[0]>[0]) => Promise<T>,
) {
  return t.run(async (ctx) => {
    const result = await run(ctx);
    return { result, used: await ctx.meta.getTransactionMetrics() };
  });
}

const key = (i: number) => `${String(i).padStart(4, "0")}/${"k".repeat(1_000)}`;

/** As large as a daemon event may be (as tests/convex/limits.test.ts): 7 KB. */
function largestEvent(i: number, sequencer: string): S3Event {
  const event = created(key(i), {
    sequencer,
    contentType: "video/mp4",
    metadata: Object.fromEntries(
      Array.from({ length: 16 }, (_, j) => [`field-${j}`, "v".repeat(110)]),
    ),
    checksums: { sha256: "x".repeat(44), crc32c: "abcd==" },
    encryption: {
      sse: "aws:kms",
      kmsKeyId: `arn:aws:kms:eu-west-1:123456789012:key/${"a".repeat(36)}`,
    },
    storageClass: "STANDARD",
    url: `https://media.s3.amazonaws.com/${key(i)}?X-Amz-Security-Token=`,
    urlExpiresAt: T0,
    // Each record in a session of its own: the most session writes.
    sessionId: `s${i}`,
    source: `sqs:${"m".repeat(36)}`,
  });
  const room = MAX_EVENT_BYTES - utf8.encode(JSON.stringify(event)).length;
  return { ...event, url: event.url + "t".repeat(room) };
}

/** As large as an update may be: every field, the longest error kept. */
function largestUpdate(
  i: number,
  status: "failed" | "available",
): UploadUpdate {
  const update: UploadUpdate = {
    bucket: BUCKET,
    key: key(i),
    status,
    bytesSent: 5_000_000_000,
    bytesTotal: 5_000_000_000,
    attempt: 99,
    contentType: "video/mp4; codecs=" + "c".repeat(100),
    sceneId: "scene-" + "x".repeat(100),
    version: 123_456,
    kind: "video",
    ...(status === "failed"
      ? { error: "e".repeat(MAX_UPLOAD_ERROR), nextRetryAt: T0 + 60_000 }
      : {
          size: 5_000_000_000,
          etag: "f".repeat(32) + "-10000",
          checksumSha256: "s".repeat(44),
          checksumCrc64nvme: "c".repeat(12),
          versionId: "v".repeat(32),
          uploadedAt: T0,
        }),
  };
  expect(utf8.encode(JSON.stringify(update)).length).toBeLessThan(
    MAX_UPDATE_BYTES,
  );
  return update;
}

const report = (sessionId: string, updates: UploadUpdate[]) => ({
  sessionId,
  runId: RUN,
  updates,
});

function figures(used: Used) {
  return {
    ranges: used.databaseQueries.used,
    readMB: +(used.bytesRead.used / 1e6).toFixed(2),
    docsRead: used.documentsRead.used,
    writtenMB: +(used.bytesWritten.used / 1e6).toFixed(2),
    docsWritten: used.documentsWritten.used,
  };
}

describe("uploads:report at MAX_REPORT_UPDATES", () => {
  test("is 500", () => {
    expect(MAX_REPORT_UPDATES).toBe(500);
  });

  test("over the largest existing records, each in its own session: fits with headroom", async () => {
    const t = backend();
    const n = MAX_REPORT_UPDATES;
    const events = Array.from({ length: n }, (_, i) => largestEvent(i, "01"));
    expect(findProblem(events[0])).toBeNull();
    await t.mutation(internal.assets.applyEvents, { events });

    const { result, used } = await measure(t, (ctx) =>
      ctx.runMutation(
        internal.uploads.report,
        report(
          "s-report",
          Array.from({ length: n }, (_, i) => largestUpdate(i, "failed")),
        ),
      ),
    );
    console.info("uploads:report, 500 over 7 KB records", figures(used));
    expect(result.results.every((r) => r === "applied")).toBe(true);
    // Per update its record's lookup; per session (500 + the report's) one,
    // and the report's session once more (its run id).
    expect(used.databaseQueries.used).toBe(n + n + 2);
    expect(used.documentsWritten.used).toBe(n + n + 1);
    expect(used.bytesRead.used).toBeLessThan(0.5 * LIMIT);
    expect(used.bytesWritten.used).toBeLessThan(0.5 * LIMIT);
  }, 60_000);

  test(`with MAX_REPORT_MANIFESTS references to the largest scene records: fits with headroom`, async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(T0);
    const t = backend();
    const n = MAX_REPORT_UPDATES;
    await t.mutation(internal.assets.applyEvents, {
      events: Array.from({ length: n }, (_, i) => largestEvent(i, "01")),
    });
    // The largest scene record: MAX_SCENE_VERSIONS uploads of 1 KB keys.
    const sceneId = (j: number) => "scene-" + String(j).padStart(100, "x");
    await t.run(async (ctx) => {
      for (let j = 0; j < MAX_REPORT_MANIFESTS; j++) {
        await ctx.db.insert("scenes", {
          sessionId: "s-report",
          sceneId: sceneId(j),
          files: {},
          versions: [],
          uploads: Array.from({ length: MAX_SCENE_VERSIONS }, (_, v) => ({
            version: v,
            runId: "0".repeat(MAX_RUN_ID_LENGTH - 1),
            manifest: { bucket: BUCKET, key: key(v) },
            updatedAt: T0,
          })),
          createdAt: T0,
          updatedAt: T0,
        });
      }
    });
    const { result, used } = await measure(t, (ctx) =>
      ctx.runMutation(internal.uploads.report, {
        ...report(
          "s-report",
          Array.from({ length: n }, (_, i) => largestUpdate(i, "failed")),
        ),
        manifests: Array.from({ length: MAX_REPORT_MANIFESTS }, (_, j) => ({
          sceneId: sceneId(j),
          version: 50,
          bucket: BUCKET,
          key: key(50),
        })),
      }),
    );
    console.info(
      `uploads:report, 500 over 7 KB records + ${MAX_REPORT_MANIFESTS} manifests over the largest scenes`,
      figures(used),
    );
    expect(result.manifests).toEqual(
      Array.from({ length: MAX_REPORT_MANIFESTS }, () => "applied"),
    );
    // The updates' own, and one range, one read and one write per reference.
    expect(used.databaseQueries.used).toBe(n + n + 2 + MAX_REPORT_MANIFESTS);
    expect(used.documentsWritten.used).toBe(n + n + 1 + MAX_REPORT_MANIFESTS);
    // Measured 9.9 MB read, 5.2 MB written.
    expect(used.bytesRead.used).toBeLessThan(0.65 * LIMIT);
    expect(used.bytesWritten.used).toBeLessThan(0.4 * LIMIT);
  }, 60_000);

  test("inserting the largest updates: fits with headroom", async () => {
    const t = backend();
    const { result, used } = await measure(t, (ctx) =>
      ctx.runMutation(
        internal.uploads.report,
        report(
          "s1",
          Array.from({ length: MAX_REPORT_UPDATES }, (_, i) =>
            largestUpdate(i, "available"),
          ),
        ),
      ),
    );
    console.info("uploads:report, 500 inserts", figures(used));
    expect(result.results.every((r) => r === "applied")).toBe(true);
    expect(used.documentsWritten.used).toBe(MAX_REPORT_UPDATES + 1);
    expect(used.bytesWritten.used).toBeLessThan(0.25 * LIMIT);
  }, 60_000);
});

describe("assets:applyEvents at MAX_BATCH_EVENTS over records carrying the largest upload state", () => {
  test("the 7 KB event bound still fits: the upload state is small", async () => {
    const t = backend();
    const n = MAX_BATCH_EVENTS;
    await t.mutation(internal.assets.applyEvents, {
      events: Array.from({ length: n }, (_, i) => largestEvent(i, "01")),
    });
    for (let from = 0; from < n; from += MAX_REPORT_UPDATES) {
      await t.mutation(
        internal.uploads.report,
        report(
          "s-report",
          Array.from({ length: MAX_REPORT_UPDATES }, (_, i) =>
            largestUpdate(from + i, "failed"),
          ),
        ),
      );
    }
    const stored = await t.query(internal.assets.getByKey, {
      bucket: BUCKET,
      key: key(0),
    });
    const uploadBytes = utf8.encode(JSON.stringify(stored!.upload)).length;
    console.info("stored upload state, bytes", uploadBytes);
    expect(uploadBytes).toBeLessThan(450);

    const { result, used } = await measure(t, (ctx) =>
      ctx.runMutation(internal.assets.applyEvents, {
        events: Array.from({ length: n }, (_, i) => largestEvent(i, "02")),
      }),
    );
    console.info(
      `assets:applyEvents, ${n} over upload-carrying records`,
      figures(used),
    );
    expect(result.every((r) => r.status === "applied")).toBe(true);
    // The worst of everything at once — 7 KB events, a session each, the
    // longest upload error on every record — keeps real headroom at
    // MAX_BATCH_EVENTS = 800 (1,000 such events read 15.96 MB of 16 MiB).
    expect(used.bytesRead.remaining).toBeGreaterThan(0.15 * LIMIT);
    expect(used.bytesWritten.remaining).toBeGreaterThan(0.1 * LIMIT);
  }, 120_000);
});

describe("uploads:sweepStale at MAX_SWEEP", () => {
  test("500 stalled uploads of 10 sessions: one index range, then the sessions", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(T0);
    const t = backend();
    const perSession = 50;
    for (let s = 0; s < MAX_SWEEP / perSession; s++) {
      await t.mutation(
        internal.uploads.report,
        report(
          `s${s}`,
          Array.from({ length: perSession }, (_, j) => {
            const { error, nextRetryAt, ...rest } = largestUpdate(
              s * perSession + j,
              "failed",
            );
            return { ...rest, status: "uploading" as const, bytesSent: 1 };
          }),
        ),
      );
    }
    vi.setSystemTime(T0 + 60_000);
    const { result, used } = await measure(t, (ctx) =>
      ctx.runMutation(internal.uploads.sweepStale, {
        olderThanMs: 30_000,
        limit: MAX_SWEEP,
      }),
    );
    console.info("uploads:sweepStale, 500", figures(used));
    expect(result).toEqual({ swept: MAX_SWEEP });
    const sessions = MAX_SWEEP / perSession;
    expect(used.databaseQueries.used).toBe(1 + sessions);
    expect(used.documentsWritten.used).toBe(MAX_SWEEP + sessions);
    expect(used.bytesRead.used).toBeLessThan(0.25 * LIMIT);
  }, 60_000);
});
