/**
 * What `s3convex trace` reads: the correlation and commit `applyEvents`
 * keeps in history, the DLQ episodes of convex/trace.ts — and the worst
 * cases with the new fields, against a deployment's limits
 * (`transactionLimits: true`).
 */
import { describe, expect, test } from "vitest";
import { internal } from "../../convex/_generated/api";
import {
  MAX_BATCH_EVENTS,
  MAX_CORRELATION_ID_LENGTH,
  MAX_EVENT_BYTES,
  findProblem,
  type S3Event,
} from "../../convex/events";
import { MAX_DEAD_LETTER_ROWS } from "../../convex/trace";
import { BUCKET, T0, backend, created, removed, type Backend } from "./support";

const MiB = 1 << 20;
const utf8 = new TextEncoder();
const longest = (c: string) => c.repeat(MAX_CORRELATION_ID_LENGTH);

/** As large as an event may be, with every correlation id at its longest. */
function largest(i: number, sequencer: string, withIds = true): S3Event {
  const key = `${String(i).padStart(4, "0")}/${"k".repeat(1_000)}`;
  const event = created(key, {
    sequencer,
    contentType: "video/mp4",
    metadata: Object.fromEntries(
      Array.from({ length: 16 }, (_, j) => [`field-${j}`, "v".repeat(110)]),
    ),
    checksums: { sha256: "x".repeat(44), crc32c: "abcd==" },
    storageClass: "STANDARD",
    url: `https://media.s3.amazonaws.com/${key}?X-Amz-Security-Token=`,
    urlExpiresAt: T0,
    sessionId: "s1",
    source: "aws:s3",
    ...(withIds
      ? {
          correlation: {
            s3RequestId: longest("r"),
            s3HostId: longest("h"),
            sqsMessageId: longest("m"),
            uploadRunId: longest("u"),
          },
        }
      : {}),
  });
  const room = MAX_EVENT_BYTES - utf8.encode(JSON.stringify(event)).length;
  return { ...event, url: event.url + "t".repeat(room) };
}

function measured(t: Backend, events: S3Event[], commit: string) {
  return t.run(async (ctx) => {
    const results = await ctx.runMutation(internal.assets.applyEvents, {
      events,
      commit,
    });
    return { results, used: await ctx.meta.getTransactionMetrics() };
  });
}

describe("correlation in history", () => {
  test("each applied event's row keeps its cause and the batch's commit", async () => {
    const t = backend();
    const correlation = {
      s3RequestId: "C3D13FE58DE4C810",
      s3HostId: "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
      sqsMessageId: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
      uploadRunId: "run-1",
    };
    await t.mutation(internal.assets.applyEvents, {
      events: [created("a.mp4", { sequencer: "01", correlation })],
      commit: "commit-1",
    });
    await t.mutation(internal.assets.applyEvents, {
      events: [
        created("a.mp4", { sequencer: "01", correlation }), // duplicate: no row
        removed("a.mp4", { sequencer: "02" }),
      ],
      commit: "commit-2",
    });
    const rows = await t.query(internal.assets.history, {
      bucket: BUCKET,
      key: "a.mp4",
    });
    expect(rows.map((r) => [r.revision, r.commit, r.correlation])).toEqual([
      [2, "commit-2", undefined],
      [1, "commit-1", correlation],
    ]);
  });

  test("an overlong or empty id is refused, per event", () => {
    expect(
      findProblem(
        created("a", { correlation: { sqsMessageId: longest("m") + "m" } }),
      ),
    ).toMatch(/correlation.sqsMessageId/);
    expect(
      findProblem(created("a", { correlation: { s3RequestId: "" } })),
    ).toMatch(/correlation.s3RequestId/);
  });

  test("the largest batch with the longest ids still fits with headroom", async () => {
    const t = backend();
    const commit = "c".repeat(256);
    const first = Array.from({ length: MAX_BATCH_EVENTS }, (_, i) =>
      largest(i, "01"),
    );
    expect(findProblem(first[0])).toBeNull();
    const inserted = await measured(t, first, commit);
    expect(inserted.results.every((r) => r.status === "applied")).toBe(true);
    // An update reads its record twice (lookup, patch): the worst case.
    const second = Array.from({ length: MAX_BATCH_EVENTS }, (_, i) =>
      largest(i, "02"),
    );
    const { results, used } = await measured(t, second, commit);
    expect(results.every((r) => r.status === "applied")).toBe(true);
    // The same batch without the new fields, for the difference they make.
    const plain = backend();
    const without = (seq: string) =>
      Array.from({ length: MAX_BATCH_EVENTS }, (_, i) => largest(i, seq, false));
    await measured(plain, without("01"), "");
    const baseline = (await measured(plain, without("02"), "")).used;
    console.log(
      `without: read ${(baseline.bytesRead.used / MiB).toFixed(2)} MiB,` +
        ` written ${(baseline.bytesWritten.used / MiB).toFixed(2)} MiB`,
    );
    console.log(
      `applyEvents worst case with correlation: read ${(used.bytesRead.used / MiB).toFixed(2)} MiB,` +
        ` written ${(used.bytesWritten.used / MiB).toFixed(2)} MiB (insert batch wrote` +
        ` ${(inserted.used.bytesWritten.used / MiB).toFixed(2)} MiB)`,
    );
    expect(used.bytesRead.remaining).toBeGreaterThan(0.1 * 16 * MiB);
    expect(used.bytesWritten.remaining).toBeGreaterThan(0.1 * 16 * MiB);
    expect(inserted.used.bytesWritten.remaining).toBeGreaterThan(0.1 * 16 * MiB);
  }, 120_000);
});

function deadLetter(key: string, i: number, extra: Record<string, unknown> = {}) {
  return {
    bucket: BUCKET,
    key,
    sqsMessageId: `m-${i}`,
    dlqMessageId: `d-${i}`,
    reason: "poison: invalid S3 notification",
    receiveCount: 1,
    failedAt: T0 + i,
    ...extra,
  };
}

describe("dead letters", () => {
  test("are listed per key, oldest first; a retried write adds nothing", async () => {
    const t = backend();
    const rows = [deadLetter("a.mp4", 1), deadLetter("b.mp4", 2), deadLetter("a.mp4", 3)];
    expect(await t.mutation(internal.trace.recordDeadLetters, { rows })).toBe(3);
    expect(await t.mutation(internal.trace.recordDeadLetters, { rows })).toBe(0);
    // The same message dead-lettered again (a new DLQ copy) is a new episode.
    const again = [deadLetter("a.mp4", 1, { dlqMessageId: "d-1b", failedAt: T0 + 9 })];
    expect(await t.mutation(internal.trace.recordDeadLetters, { rows: again })).toBe(1);
    const listed = await t.query(internal.trace.deadLetters, { bucket: BUCKET, key: "a.mp4" });
    expect(listed.map((r) => r.dlqMessageId)).toEqual(["d-1", "d-3", "d-1b"]);
  });

  test("a full call of the longest rows fits with headroom", async () => {
    const t = backend();
    const rows = Array.from({ length: MAX_DEAD_LETTER_ROWS }, (_, i) =>
      deadLetter(`${String(i).padStart(4, "0")}/${"k".repeat(1_000)}`, i, {
        sqsMessageId: longest("m"),
        dlqMessageId: `${i}`.padEnd(256, "d"),
        s3RequestId: longest("r"),
        reason: "x".repeat(1_000),
      }),
    );
    const used = await t.run(async (ctx) => {
      await ctx.runMutation(internal.trace.recordDeadLetters, { rows });
      return await ctx.meta.getTransactionMetrics();
    });
    console.log(
      `recordDeadLetters worst case: read ${(used.bytesRead.used / MiB).toFixed(3)} MiB,` +
        ` written ${(used.bytesWritten.used / MiB).toFixed(3)} MiB`,
    );
    expect(used.bytesWritten.used).toBeLessThan(0.5 * MiB);
    expect(used.databaseQueries.used).toBe(MAX_DEAD_LETTER_ROWS);
    await expect(
      t.mutation(internal.trace.recordDeadLetters, {
        rows: [...rows, deadLetter("one-more", 999)],
      }),
    ).rejects.toThrow(/TooManyRows/);
  });
});
