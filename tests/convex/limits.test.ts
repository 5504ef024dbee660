import { convexTest } from "convex-test";
import { describe, expect, test } from "vitest";
import { internal } from "../../convex/_generated/api";
import {
  MAX_BATCH_EVENTS,
  MAX_EVENT_BYTES,
  findProblem,
  type S3Event,
} from "../../convex/events";
import schema from "../../convex/schema";
import { T0, backend, created, modules, type Backend } from "./support";

const MiB = 1 << 20;
const utf8 = new TextEncoder();

/**
 * Runs the batch as a nested mutation so the enclosing transaction can report
 * what it used; the limits enforced are the same as for a direct call.
 */
function applyMeasured(t: Backend, events: S3Event[]) {
  return t.run(async (ctx) => {
    const results = await ctx.runMutation(internal.assets.applyEvents, {
      events,
    });
    return { results, used: await ctx.meta.getTransactionMetrics() };
  });
}

/** A plausible event: presigned URL with a session token, some user metadata. */
function typical(i: number, sequencer: string): S3Event {
  const key = `sessions/s${i % 10}/scenes/${i}/take-${i}.mp4`;
  return created(key, {
    sequencer,
    contentType: "video/mp4",
    metadata: { camera: "A", operator: "jo", take: String(i) },
    checksums: { sha256: "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=" },
    url: `https://media.s3.eu-west-1.amazonaws.com/${key}?X-Amz-Security-Token=${"t".repeat(900)}`,
    urlExpiresAt: T0 + 3_600_000,
    sessionId: `s${i % 10}`,
    sceneId: String(i),
    kind: "video",
    source: `sqs:${crypto.randomUUID()}`,
  });
}

/** As large as an event may be: long key, long URL, the most user metadata S3 allows. */
function largest(i: number, sequencer: string): S3Event {
  const key = `${String(i).padStart(4, "0")}/${"k".repeat(1_000)}`;
  const event = created(key, {
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
    url: `https://media.s3.amazonaws.com/${key}?X-Amz-Security-Token=`,
    urlExpiresAt: T0,
    sessionId: "s1",
    source: `sqs:${"m".repeat(36)}`,
  });
  const room = MAX_EVENT_BYTES - utf8.encode(JSON.stringify(event)).length;
  return { ...event, url: event.url + "t".repeat(room) };
}

describe("a batch of MAX_BATCH_EVENTS", () => {
  test("is 1,000", () => {
    expect(MAX_BATCH_EVENTS).toBe(800);
  });

  test("of typical events: inserts, then updates, well inside the limits", async () => {
    const t = backend();
    for (const sequencer of ["01", "02"]) {
      const events = Array.from({ length: MAX_BATCH_EVENTS }, (_, i) =>
        typical(i, sequencer),
      );
      const { results, used } = await applyMeasured(t, events);
      expect(results.every((r) => r.status === "applied")).toBe(true);
      expect(used.bytesRead.used).toBeLessThan(4 * MiB);
      // Per event an asset and a version; once per batch each of the 1,000
      // scenes and 10 sessions these events name (convex/sessions.ts).
      const scenes = MAX_BATCH_EVENTS;
      const sessions = 10;
      expect(used.documentsWritten.used).toBe(
        2 * MAX_BATCH_EVENTS + scenes + sessions,
      );
      expect(used.databaseQueries.used).toBe(
        MAX_BATCH_EVENTS + scenes + sessions,
      );
    }
  }, 60_000);

  test("of the largest events allowed: updates still fit", async () => {
    const t = backend();
    const first = Array.from({ length: MAX_BATCH_EVENTS }, (_, i) =>
      largest(i, "01"),
    );
    expect(findProblem(first[0])).toBeNull();
    expect(findProblem({ ...first[0], url: first[0].url + "t" })).toMatch(
      /larger/,
    );
    await applyMeasured(t, first);

    // An update reads its record twice (lookup, patch): the worst case.
    const second = Array.from({ length: MAX_BATCH_EVENTS }, (_, i) =>
      largest(i, "02"),
    );
    const { results, used } = await applyMeasured(t, second);
    expect(results.every((r) => r.status === "applied")).toBe(true);
    expect(used.bytesRead.remaining).toBeGreaterThan(0.1 * 16 * MiB);
    expect(used.bytesWritten.remaining).toBeGreaterThan(0.1 * 16 * MiB);
  }, 60_000);

  test("for one key applies every event in order", async () => {
    const t = backend();
    const events = Array.from({ length: MAX_BATCH_EVENTS }, (_, i) =>
      created("hot.json", { sequencer: (i + 1).toString(16), size: i }),
    );
    const { results } = await applyMeasured(t, events);
    expect(results.every((r) => r.status === "applied")).toBe(true);
    const asset = await t.query(internal.assets.getByKey, {
      bucket: events[0].bucket,
      key: "hot.json",
    });
    expect(asset).toMatchObject({
      size: MAX_BATCH_EVENTS - 1,
      revision: MAX_BATCH_EVENTS,
    });
  }, 60_000);

  test("fails as a whole when the limits are tighter (they are enforced)", async () => {
    const t = convexTest({
      schema,
      modules,
      transactionLimits: { documentsWritten: 2 * MAX_BATCH_EVENTS - 1 },
    });
    const events = Array.from({ length: MAX_BATCH_EVENTS }, (_, i) =>
      typical(i, "01"),
    );
    await expect(
      t.mutation(internal.assets.applyEvents, { events }),
    ).rejects.toThrow(/too many documents/);
    expect(await t.run((ctx) => ctx.db.query("assets").take(1))).toEqual([]);
  }, 60_000);
});
