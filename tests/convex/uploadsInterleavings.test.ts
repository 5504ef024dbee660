// The uploader's reports and the daemon's S3 events for the same objects, in
// every order: the records converge (convex/UPLOADS.md, the ordering rule).
import { describe, expect, test } from "vitest";
import { internal } from "../../convex/_generated/api";
import type { Doc } from "../../convex/_generated/dataModel";
import type { S3Event } from "../../convex/events";
import type { UploadUpdate } from "../../convex/model/uploads";
import { T0, backend, random, shuffle, type Backend } from "./support";
import {
  RUN,
  SESSION,
  dir,
  VIDEO,
  SOURCE,
  done,
  report,
  apply,
  upd,
  s3Created,
  everything,
} from "./uploadsSupport";

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
