/**
 * The render workers' uploader (`S3Storage`, Python) reports here, over
 * Convex's HTTP API with the deploy key, what it is doing with each file:
 * pending → uploading (bytes sent of total) → available | failed. It writes
 * the same asset records as the daemon's S3 events (`assets:applyEvents`);
 * how the two order is one rule, stated in ./ordering.ts (U1–U5, S).
 * Shapes and the caller's contract: ./UPLOADS.md.
 *
 * All functions are internal.
 */
import { ConvexError, v } from "convex/values";
import { internalMutation } from "./_generated/server";
import { UploadVerdict } from "./ordering";
import { audit, checkPrincipal } from "./model/access";
import {
  Summary,
  deltaFor,
  emptySummary,
  moveSummaries,
  sessionBy,
} from "./model/sessions";
import {
  Deltas,
  MAX_REPORT_UPDATES,
  MAX_SWEEP,
  applyUpdate,
  badRequest,
  checkKey,
  checkRunId,
  failStalled,
  normalise,
  uploadUpdate,
} from "./model/uploads";
import {
  MAX_REPORT_MANIFESTS,
  manifestProblem,
  manifestRef,
  referManifest,
} from "./model/uploadsManifest";

const MAX_ID_LENGTH = 256;

function checkId(value: string, field: string): void {
  if (value.trim() === "" || value.length > MAX_ID_LENGTH) {
    badRequest(`${field} must be 1–${MAX_ID_LENGTH} characters`);
  }
}

/** The later of two run ids (they sort by start time). */
function laterRun(a: string | undefined, b: string | undefined) {
  return a === undefined ? b : b === undefined || a >= b ? a : b;
}

/**
 * Creates the session's record — empty summary, owner, run id — if absent
 * (R2.1). Idempotent: a retried call returns `created: false` and writes
 * nothing. A session the daemon saw first (no owner yet) gets this owner.
 * Throws ConvexError `{code: "conflict"}` if the session has another owner.
 * Setting the owner writes an audit row, as `access:setOwner` does.
 */
export const createSession = internalMutation({
  args: {
    sessionId: v.string(),
    ownerId: v.string(),
    runId: v.optional(v.string()),
  },
  returns: v.object({ created: v.boolean() }),
  handler: async (ctx, { sessionId, ownerId, runId }) => {
    checkId(sessionId, "sessionId");
    checkPrincipal(ownerId, "ownerId");
    if (runId !== undefined) checkRunId(runId);
    const now = Date.now();
    const session = await sessionBy(ctx, sessionId);
    if (session?.ownerId !== undefined && session.ownerId !== ownerId) {
      throw new ConvexError({ code: "conflict", sessionId });
    }
    const owned = {
      action: "setOwner" as const,
      principal: ownerId,
      outcome: "done" as const,
      sessionId,
      actor: "uploads:createSession",
      at: now,
    };
    if (session === null) {
      await ctx.db.insert("videoSessions", {
        sessionId,
        ownerId,
        runId,
        summary: emptySummary(),
        createdAt: now,
        updatedAt: now,
      });
      await audit(ctx, owned);
      return { created: true };
    }
    const later = laterRun(session.runId, runId);
    if (session.ownerId === undefined || later !== session.runId) {
      await ctx.db.patch("videoSessions", session._id, {
        ownerId,
        runId: later,
        updatedAt: now,
      });
      if (session.ownerId === undefined) await audit(ctx, owned);
    }
    return { created: false };
  },
});

const reportResult = v.union(
  v.literal("applied"),
  v.literal("stale"),
  v.literal("ignored"),
);

const sessionProgress = v.object({
  filesDone: v.number(),
  filesTotal: v.number(),
  bytesDone: v.number(),
  bytesTotal: v.number(),
  failed: v.number(),
});

function progressOf(summary: Summary) {
  return {
    filesDone: summary.filesDone ?? 0,
    filesTotal: summary.filesTotal ?? 0,
    bytesDone: summary.bytesDone ?? 0,
    bytesTotal: summary.bytesTotal ?? 0,
    failed: summary.failed,
  };
}

/**
 * One flush of the uploader for one session: at most MAX_REPORT_UPDATES
 * file updates, applied in order (a later update for a key sees an earlier
 * one), one result each, in input order:
 *
 * - "applied": ahead of the report the record held (rules U1–U5 in
 *   ./ordering.ts); `upload` moved, and while no S3 event has reached the
 *   record (revision 0) its status and object fields too (rule S);
 * - "stale": behind it — an earlier run or attempt, less progress, an
 *   earlier status within the attempt (a late `uploading` after `available`
 *   or `failed`). Nothing written;
 * - "ignored": the same report again (a retried flush). Nothing written.
 *
 * Then `manifests` (at most MAX_REPORT_MANIFESTS), after the updates: each
 * a scene version's manifest.json referenced as `setManifest` does, for the
 * report's session and run — the uploader's last report of an upload_dir
 * carries its files' finals and the manifest reference in one mutation, the
 * reference after the records it names. One result each: "applied", or
 * "ignored" (the same reference, or an earlier run's).
 *
 * Each touched session's summary is written once; the report's session
 * records the latest runId. A replayed report writes nothing. Throws
 * ConvexError `bad_request` (`reason`, and `index` of the update or
 * `manifest` of the reference) for what a consistent uploader never sends,
 * `BatchTooLarge` over either bound.
 *
 * Worst case, MAX_REPORT_UPDATES updates of existing 7 KB records (the
 * largest the daemon writes), each in a session of its own, and
 * MAX_REPORT_MANIFESTS references to the largest scene records: 1,012 index
 * ranges of 4,096, 2,010 documents read of 32,000 and 1,011 written of
 * 16,000; measured 9.9 MB read and 5.2 MB written of 16 MiB each
 * (tests/convex/uploadsLimits.test.ts). Arguments ≤ 500 × MAX_UPDATE_BYTES
 * + 10 × ~1.3 KB = 1.5 MB of 16 MiB.
 */
export const report = internalMutation({
  args: {
    sessionId: v.string(),
    runId: v.string(),
    updates: v.array(uploadUpdate),
    manifests: v.optional(v.array(manifestRef)),
  },
  returns: v.object({
    results: v.array(reportResult),
    // Only when the call carried references.
    manifests: v.optional(
      v.array(v.union(v.literal("applied"), v.literal("ignored"))),
    ),
    session: sessionProgress,
  }),
  handler: async (ctx, { sessionId, runId, updates, manifests = [] }) => {
    if (updates.length > MAX_REPORT_UPDATES) {
      throw new ConvexError({
        code: "BatchTooLarge",
        max: MAX_REPORT_UPDATES,
        got: updates.length,
      });
    }
    if (manifests.length > MAX_REPORT_MANIFESTS) {
      throw new ConvexError({
        code: "BatchTooLarge",
        max: MAX_REPORT_MANIFESTS,
        got: manifests.length,
      });
    }
    checkId(sessionId, "sessionId");
    checkRunId(runId);
    // Every update and reference is checked before any is applied: a bad one
    // fails the call as a whole, and writes nothing.
    const normal = updates.map((u, i) => normalise(u, sessionId, i));
    manifests.forEach((ref, i) => {
      const problem = manifestProblem(ref);
      if (problem !== null) {
        throw new ConvexError({
          code: "bad_request",
          reason: problem,
          manifest: i,
        });
      }
    });
    const now = Date.now();
    const deltas: Deltas = new Map();
    const results: UploadVerdict[] = [];
    for (const update of normal) {
      results.push(await applyUpdate(ctx, runId, update, now, deltas));
    }
    const referenced: ("applied" | "ignored")[] = [];
    for (const ref of manifests) {
      referenced.push(
        await referManifest(ctx, sessionId, runId, ref, now, deltas),
      );
    }
    const session = await sessionBy(ctx, sessionId);
    const later = laterRun(session?.runId, runId);
    if (session === null || later !== session.runId) {
      deltaFor(deltas, sessionId); // the run id is written with the summary
    }
    const written = await moveSummaries(ctx, deltas, now, (id) =>
      id === sessionId ? { runId: later } : {},
    );
    const summary =
      written.get(sessionId) ?? session?.summary ?? emptySummary();
    return {
      results,
      ...(manifests.length > 0 ? { manifests: referenced } : {}),
      session: progressOf(summary),
    };
  },
});

/**
 * References a scene version's manifest.json from its scene record (R5.3),
 * with the run that uploaded that version (its upload_dir, R9.1): the
 * scene's `uploads` entry for `version`. Creates the scene (and session)
 * record if the daemon has not yet. Idempotent; of two runs the later one's
 * manifest is kept, so the order of calls does not matter.
 *
 * The uploader now sends the reference with its final `uploads:report`
 * (`manifests`); this call stays for spooled writes of earlier versions and
 * for callers of their own. One index range, one scene read and written
 * (≤ ~110 KB), and the session's summary when the scene is new.
 */
export const setManifest = internalMutation({
  args: {
    sessionId: v.string(),
    sceneId: v.string(),
    version: v.number(),
    bucket: v.string(),
    key: v.string(),
    runId: v.string(),
  },
  returns: v.null(),
  handler: async (ctx, args) => {
    const { sessionId, runId, ...ref } = args;
    checkId(sessionId, "sessionId");
    checkId(ref.sceneId, "sceneId");
    checkRunId(runId);
    const problem = manifestProblem(ref);
    if (problem !== null) badRequest(problem);
    const now = Date.now();
    const deltas: Deltas = new Map();
    await referManifest(ctx, sessionId, runId, ref, now, deltas);
    await moveSummaries(ctx, deltas, now);
    return null;
  },
});

/** `sweepStale` handles this many records when no limit is given. */
export const DEFAULT_SWEEP = 100;

/**
 * Marks `uploading` records whose last progress (`upload.updatedAt`,
 * Convex's clock) is older than `olderThanMs` as failed with error
 * "upload stalled" (R6.2), oldest first, at most `limit` (default
 * DEFAULT_SWEEP, at most MAX_SWEEP) per call through the
 * `by_upload_progress` index: call again while `swept === limit`. A late
 * report of the same attempt is then stale, unless it says `available`
 * (the file made it after all) or is a newer attempt.
 *
 * Not scheduled here (convex-test runs no crons): the daemon's sweeper
 * (consumer/upload_sweeper.py) calls it every UPLOAD_SWEEP_INTERVAL, or a
 * `crons.interval` in convex/crons.ts can on a real deployment
 * (convex/UPLOADS.md).
 */
export const sweepStale = internalMutation({
  args: { olderThanMs: v.number(), limit: v.optional(v.number()) },
  returns: v.object({ swept: v.number() }),
  handler: async (ctx, { olderThanMs, limit = DEFAULT_SWEEP }) => {
    if (!(Number.isFinite(olderThanMs) && olderThanMs > 0)) {
      badRequest("olderThanMs must be a positive number of milliseconds");
    }
    if (!(Number.isSafeInteger(limit) && limit >= 1 && limit <= MAX_SWEEP)) {
      badRequest(`limit must be an integer from 1 to ${MAX_SWEEP}`);
    }
    const now = Date.now();
    const stalled = await ctx.db
      .query("assets")
      .withIndex("by_upload_progress", (q) =>
        q.eq("status", "uploading").lt("upload.updatedAt", now - olderThanMs),
      )
      .take(limit);
    const deltas: Deltas = new Map();
    for (const asset of stalled) await failStalled(ctx, asset, now, deltas);
    await moveSummaries(ctx, deltas, now);
    return { swept: stalled.length };
  },
});
