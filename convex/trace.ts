/**
 * Failure episodes for `s3convex trace`: the messages the sync service sent
 * to the DLQ, one row per key each names.
 *
 * With the history rows (`assets:history`: each revision's correlation and
 * commit) and the replay audit (`operations:listReplayRuns`: which DLQ
 * message ids each run moved, to which new ids), these rows let the trace
 * follow an asset from its S3 request to its Convex commit through a DLQ
 * episode and its replay, from Convex's records alone.
 *
 * HTTP mutations carry no idempotency key: a retried `recordDeadLetters`
 * writes nothing twice (a row is keyed by its SQS message id and key).
 */
import { ConvexError, v } from "convex/values";
import { internalMutation, internalQuery } from "./_generated/server";
import schema from "./schema";

/** Rows per call; a notification names one key, a batch of them a few. */
export const MAX_DEAD_LETTER_ROWS = 100;
export const MAX_LIST_DEAD_LETTERS = 100;
const MAX_REASON = 1_000;
// A message is received at most maxReceiveCount times, so has at most that
// many episodes; reading 20 bounds the check whatever happened.
const MAX_EPISODES_PER_MESSAGE = 20;

const rowFields = schema.tables.deadLetters.validator.fields;
const deadLetterDoc = schema.doc("deadLetters");

/**
 * Worst case: MAX_DEAD_LETTER_ROWS index ranges, each reading at most
 * MAX_EPISODES_PER_MESSAGE rows (2,000 rows), and MAX_DEAD_LETTER_ROWS rows
 * written, each ≤ ~2.3 KB (a 1 KB key, a 1,000-character reason): ≤ 4.6 MB
 * read, 0.23 MB written (tests/convex/trace.test.ts measures it).
 */
export const recordDeadLetters = internalMutation({
  args: { rows: v.array(v.object(rowFields)) },
  returns: v.number(),
  handler: async (ctx, { rows }) => {
    if (rows.length > MAX_DEAD_LETTER_ROWS) {
      throw new ConvexError({
        code: "TooManyRows",
        max: MAX_DEAD_LETTER_ROWS,
        got: rows.length,
      });
    }
    let written = 0;
    for (const row of rows) {
      // The same message dead-lettered again (a crash between the DLQ send
      // and the delete) has a new DLQ id: a new episode. A retried call has not.
      const same = await ctx.db
        .query("deadLetters")
        .withIndex("by_message", (q) =>
          q
            .eq("sqsMessageId", row.sqsMessageId)
            .eq("bucket", row.bucket)
            .eq("key", row.key),
        )
        .take(MAX_EPISODES_PER_MESSAGE);
      if (same.some((r) => r.dlqMessageId === row.dlqMessageId)) continue;
      await ctx.db.insert("deadLetters", {
        ...row,
        reason: row.reason.slice(0, MAX_REASON),
      });
      written += 1;
    }
    return written;
  },
});

/** A key's DLQ episodes, oldest first (default and at most MAX_LIST_DEAD_LETTERS). */
export const deadLetters = internalQuery({
  args: {
    bucket: v.string(),
    key: v.string(),
    limit: v.optional(v.number()),
  },
  returns: v.array(deadLetterDoc),
  handler: (ctx, { bucket, key, limit = MAX_LIST_DEAD_LETTERS }) => {
    if (
      !Number.isInteger(limit) ||
      limit < 1 ||
      limit > MAX_LIST_DEAD_LETTERS
    ) {
      throw new ConvexError({ code: "BadLimit", max: MAX_LIST_DEAD_LETTERS });
    }
    return ctx.db
      .query("deadLetters")
      .withIndex("by_bucket_key", (q) =>
        q.eq("bucket", bucket).eq("key", key),
      )
      .take(limit);
  },
});
