/**
 * The audit trail of operator actions: one `replayRuns` row per run of
 * `s3convex replay replay` (DLQ → source queue) or `s3convex replay import
 * --to queue` (file → source queue).
 *
 * The CLI writes a run twice: once as "running" before it moves anything (so
 * a run that crashes still leaves a trace), once with its outcome. HTTP
 * mutations carry no idempotency key, so `recordReplayRun` is an upsert keyed
 * by the client's `runId`: a retried call writes the same row again, and a
 * late retry of the "running" write never overwrites the outcome.
 */
import { ConvexError, Infer, v } from "convex/values";
import { internalMutation, internalQuery } from "./_generated/server";
import schema from "./schema";

/** The row keeps the first message ids moved; the counts stay exact. */
export const MAX_MOVED_IDS = 1_000;
export const MAX_LIST_RUNS = 100;

const runDoc = schema.doc("replayRuns");
const runFields = schema.tables.replayRuns.validator.fields;
export const replayRunValidator = v.object(runFields);
export type ReplayRun = Infer<typeof replayRunValidator>;

const COUNTS = [
  "examined",
  "selected",
  "moved",
  "sendFailed",
  "deleteFailed",
] as const;

/** Why this run record cannot be stored, or null when it can. */
export function findRunProblem(run: ReplayRun): string | null {
  if (run.runId.trim() === "" || run.runId.length > 200) {
    return "runId must be 1-200 characters";
  }
  for (const name of COUNTS) {
    const value = run[name];
    if (!Number.isSafeInteger(value) || value < 0) {
      return `${name} must be a non-negative integer`;
    }
  }
  if (run.movedIds.length > MAX_MOVED_IDS) {
    return `movedIds holds at most ${MAX_MOVED_IDS} entries`;
  }
  if ((run.status === "running") !== (run.finishedAt === undefined)) {
    return "finishedAt is set exactly when the run is no longer running";
  }
  if (run.finishedAt !== undefined && run.finishedAt < run.startedAt) {
    return "finishedAt is before startedAt";
  }
  return null;
}

export const recordReplayRun = internalMutation({
  args: replayRunValidator,
  returns: v.id("replayRuns"),
  handler: async (ctx, run) => {
    const problem = findRunProblem(run);
    if (problem !== null) {
      throw new ConvexError({ code: "BadReplayRun", reason: problem });
    }
    const existing = await ctx.db
      .query("replayRuns")
      .withIndex("by_run_id", (q) => q.eq("runId", run.runId))
      .unique();
    if (existing === null) return await ctx.db.insert("replayRuns", run);
    if (existing.status !== "running" && run.status === "running") {
      return existing._id; // a late retry of the start: the outcome stands
    }
    // Every field named, absent ones as undefined, so the row is exactly `run`.
    await ctx.db.replace("replayRuns", existing._id, run);
    return existing._id;
  },
});

export const getReplayRun = internalQuery({
  args: { runId: v.string() },
  returns: v.union(runDoc, v.null()),
  handler: (ctx, { runId }) =>
    ctx.db
      .query("replayRuns")
      .withIndex("by_run_id", (q) => q.eq("runId", runId))
      .unique(),
});

/** The latest runs, newest first (default 20, at most MAX_LIST_RUNS). */
export const listReplayRuns = internalQuery({
  args: { limit: v.optional(v.number()) },
  returns: v.array(runDoc),
  handler: (ctx, { limit = 20 }) => {
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIST_RUNS) {
      throw new ConvexError({ code: "BadLimit", max: MAX_LIST_RUNS });
    }
    return ctx.db
      .query("replayRuns")
      .withIndex("by_started_at")
      .order("desc")
      .take(limit);
  },
});
