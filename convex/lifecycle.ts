/**
 * Lifecycle (R4, convex/LIFECYCLE.md): deleting a session, removing its
 * files from S3 after a grace period, and files S3 lost. Retention of
 * obsolete scene versions marks files for the same removal
 * (convex/retention.ts).
 *
 * All functions here are internal (the sync service's deploy key); the web
 * app's `sessions:delete` / `sessions:restore` share `startDeletion` and
 * `startRestore` with `deleteSession` / `restoreSession`.
 *
 * A deletion marks every asset of the session `cleanup_pending` in pages of
 * MARK_PAGE, one mutation each, the next scheduled by the last (scheduled
 * mutations run exactly once), with progress on the session record. The
 * cleanup worker (consumer/cleanup.py) asks `due` for what it may remove,
 * deletes it from S3, then reports `markDeleted` / `recordFailures`. Every
 * mutation re-checks what the worker checked: only `cleanup_pending`
 * records whose grace has passed, only keys inside their session's prefix.
 */
import { ConvexError, Infer, v } from "convex/values";
import { internal } from "./_generated/api";
import { Doc, Id } from "./_generated/dataModel";
import {
  MutationCtx,
  internalMutation,
  internalQuery,
} from "./_generated/server";
import {
  MAX_CLEANUP_BATCH,
  MAX_CLEANUP_ERROR,
  MARK_PAGE,
  backoffMs,
  graceSeconds,
  inSessionPrefix,
  isMarkable,
  moveStatuses,
  pendingFields,
  restoredFields,
} from "./model/lifecycle";
import { sessionBy, stateOf } from "./model/sessions";
import { trackChanges } from "./model/tracking";
import { cleanupRunFields, sessionDeletion } from "./schema";

// --- session deletion -------------------------------------------------------

export const deletionProgress = v.object({
  sessionId: v.string(),
  state: sessionDeletion.fields.state,
  deletedAt: v.optional(v.number()),
  deletedBy: v.optional(v.string()),
  deleteReason: v.optional(v.string()),
  graceUntil: v.number(),
  marked: v.number(),
  restored: v.optional(v.number()),
  // What is left of the session's assets in each lifecycle status.
  pending: v.number(),
  failed: v.number(),
  deleted: v.number(),
});
export type DeletionProgress = Infer<typeof deletionProgress>;

export function progressOf(session: Doc<"videoSessions">): DeletionProgress {
  const deletion = session.deletion!;
  return {
    sessionId: session.sessionId,
    state: deletion.state,
    deletedAt: session.deletedAt,
    deletedBy: session.deletedBy,
    deleteReason: session.deleteReason,
    graceUntil: deletion.graceUntil,
    marked: deletion.marked,
    restored: deletion.restored,
    pending: session.summary.cleanup_pending ?? 0,
    failed: session.summary.cleanup_failed ?? 0,
    deleted: session.summary.deleted,
  };
}

/**
 * Starts (or, when one is under way, reports) the session's deletion: hides
 * the session at once and marks its first page of assets in this mutation.
 * Worst case: 2 index ranges, MARK_PAGE assets read and written (≤ 7 KB
 * each: 3.5 MB each way) + the session twice — measured in
 * tests/convex/lifecycleLimits.test.ts.
 */
export async function startDeletion(
  ctx: MutationCtx,
  session: Doc<"videoSessions">,
  { actor, reason, grace }: { actor: string; reason: string; grace: number },
): Promise<DeletionProgress> {
  const state = session.deletion?.state;
  if (state === "marking" || state === "pending" || state === "deleted")
    return progressOf(session);
  const now = Date.now();
  const generation = (session.deletion?.generation ?? 0) + 1;
  await ctx.db.patch("videoSessions", session._id, {
    deletedAt: now,
    deletedBy: actor,
    deleteReason: reason,
    deletion: {
      state: "marking",
      requestedAt: now,
      graceUntil: now + grace * 1000,
      marked: 0,
      generation,
    },
    updatedAt: now,
  });
  await markPage(ctx, session.sessionId, generation);
  return progressOf((await sessionBy(ctx, session.sessionId))!);
}

/** Marks one page of the session's assets; schedules the next while there is one. */
async function markPage(
  ctx: MutationCtx,
  sessionId: string,
  generation: number,
): Promise<void> {
  const session = await sessionBy(ctx, sessionId);
  const deletion = session?.deletion;
  // A restore (or a newer deletion) since this page was scheduled: stop.
  if (!deletion || deletion.generation !== generation) return;
  if (deletion.state !== "marking") return;
  const now = Date.now();
  const page = await ctx.db
    .query("assets")
    .withIndex("by_session", (q) => q.eq("sessionId", sessionId))
    .paginate({ numItems: MARK_PAGE, cursor: deletion.cursor ?? null });
  const changes: { before: Doc<"assets">; after: Doc<"assets"> }[] = [];
  const marking = {
    cause: "session" as const,
    actor: session.deletedBy ?? "unknown",
    reason: session.deleteReason ?? "session deleted",
    now,
    graceUntil: deletion.graceUntil,
  };
  for (const asset of page.page) {
    if (isMarkable(asset.status)) {
      const fields = pendingFields(asset, marking);
      await ctx.db.patch("assets", asset._id, fields);
      changes.push({ before: asset, after: { ...asset, ...fields } });
    } else if (
      asset.status === "cleanup_pending" &&
      asset.cleanup?.cause === "session"
    ) {
      // Left pending by a restore that was overtaken: the new grace counts.
      await ctx.db.patch("assets", asset._id, {
        cleanup: {
          ...asset.cleanup,
          graceUntil: deletion.graceUntil,
          nextAttemptAt: deletion.graceUntil,
        },
      });
    }
  }
  await moveStatuses(ctx, changes, now);
  await ctx.db.patch("videoSessions", session._id, {
    deletion: {
      ...deletion,
      state: page.isDone ? "pending" : "marking",
      marked: deletion.marked + changes.length,
      cursor: page.isDone ? undefined : page.continueCursor,
    },
  });
  if (!page.isDone)
    await ctx.scheduler.runAfter(0, internal.lifecycle.markSessionPage, {
      sessionId,
      generation,
    });
}

/** One page of a deletion (scheduled by the page before it). Worst case as `startDeletion`. */
export const markSessionPage = internalMutation({
  args: { sessionId: v.string(), generation: v.number() },
  returns: v.null(),
  handler: async (ctx, { sessionId, generation }) => {
    await markPage(ctx, sessionId, generation);
    return null;
  },
});

/**
 * Undoes a deletion while its grace lasts: the session is listed again and
 * each asset gets back the status it had. Throws ConvexError `not_deleted`
 * or `grace_expired` (with `graceUntil`). Worst case as `startDeletion`.
 */
export async function startRestore(
  ctx: MutationCtx,
  session: Doc<"videoSessions">,
): Promise<DeletionProgress> {
  const deletion = session.deletion;
  const state = deletion?.state;
  if (!deletion || state === "restoring" || state === "restored") {
    if (deletion) return progressOf(session);
    throw new ConvexError({ code: "not_deleted" });
  }
  const now = Date.now();
  if (state === "deleted" || now >= deletion.graceUntil)
    throw new ConvexError({
      code: "grace_expired",
      graceUntil: deletion.graceUntil,
    });
  const generation = deletion.generation + 1;
  await ctx.db.patch("videoSessions", session._id, {
    deletedAt: undefined,
    deletedBy: undefined,
    deleteReason: undefined,
    deletion: {
      ...deletion,
      state: "restoring",
      restored: 0,
      cursor: undefined,
      generation,
    },
    updatedAt: now,
  });
  await restorePage(ctx, session.sessionId, generation);
  return progressOf((await sessionBy(ctx, session.sessionId))!);
}

async function restorePage(
  ctx: MutationCtx,
  sessionId: string,
  generation: number,
): Promise<void> {
  const session = await sessionBy(ctx, sessionId);
  const deletion = session?.deletion;
  if (!deletion || deletion.generation !== generation) return;
  if (deletion.state !== "restoring") return;
  const now = Date.now();
  // The deletion's assets are exactly the pending ones due at its grace end;
  // each restored one leaves this range, so the next page starts afresh.
  const marked = await ctx.db
    .query("assets")
    .withIndex("by_session_cleanup_due", (q) =>
      q
        .eq("sessionId", sessionId)
        .eq("status", "cleanup_pending")
        .eq("cleanup.nextAttemptAt", deletion.graceUntil),
    )
    .take(MARK_PAGE);
  const changes: { before: Doc<"assets">; after: Doc<"assets"> }[] = [];
  for (const asset of marked) {
    if (asset.cleanup?.cause !== "session") continue;
    const fields = restoredFields(asset, now);
    await ctx.db.patch("assets", asset._id, fields);
    changes.push({ before: asset, after: { ...asset, ...fields } });
  }
  await moveStatuses(ctx, changes, now);
  const done = marked.length < MARK_PAGE || changes.length === 0;
  await ctx.db.patch("videoSessions", session._id, {
    deletion: {
      ...deletion,
      state: done ? "restored" : "restoring",
      restored: (deletion.restored ?? 0) + changes.length,
    },
  });
  if (!done)
    await ctx.scheduler.runAfter(0, internal.lifecycle.restoreSessionPage, {
      sessionId,
      generation,
    });
}

export const restoreSessionPage = internalMutation({
  args: { sessionId: v.string(), generation: v.number() },
  returns: v.null(),
  handler: async (ctx, { sessionId, generation }) => {
    await restorePage(ctx, sessionId, generation);
    return null;
  },
});

async function existingSession(ctx: MutationCtx, sessionId: string) {
  const session = await sessionBy(ctx, sessionId);
  if (session === null) throw new ConvexError({ code: "not_found" });
  return session;
}

/**
 * An operator's deletion (`s3convex sessions delete`). `graceSeconds`
 * overrides CLEANUP_GRACE_SECONDS (e.g. 0 to remove at the next run).
 */
export const deleteSession = internalMutation({
  args: {
    sessionId: v.string(),
    actor: v.string(),
    reason: v.optional(v.string()),
    graceSeconds: v.optional(v.number()),
  },
  returns: deletionProgress,
  handler: async (ctx, { sessionId, actor, reason, graceSeconds: grace }) => {
    if (grace !== undefined && !(Number.isInteger(grace) && grace >= 0))
      throw new ConvexError({ code: "bad_request", field: "graceSeconds" });
    return startDeletion(ctx, await existingSession(ctx, sessionId), {
      actor,
      reason: (reason ?? "deleted by operator").slice(0, MAX_CLEANUP_ERROR),
      grace: grace ?? graceSeconds(),
    });
  },
});

export const restoreSession = internalMutation({
  args: { sessionId: v.string() },
  returns: deletionProgress,
  handler: async (ctx, { sessionId }) =>
    startRestore(ctx, await existingSession(ctx, sessionId)),
});

/** Where a session's deletion is (null: never deleted). One index range. */
export const progress = internalQuery({
  args: { sessionId: v.string() },
  returns: v.union(deletionProgress, v.null()),
  handler: async (ctx, { sessionId }) => {
    const session = await sessionBy(ctx, sessionId);
    return session?.deletion ? progressOf(session) : null;
  },
});

// --- the cleanup worker -----------------------------------------------------

export const dueAsset = v.object({
  assetId: v.id("assets"),
  bucket: v.string(),
  key: v.string(),
  sessionId: v.optional(v.string()),
  size: v.optional(v.number()),
  versionId: v.optional(v.string()),
  cause: v.string(),
  attempts: v.number(),
  nextAttemptAt: v.number(),
});

/**
 * Pending removals whose time has come (grace passed, backoff waited), the
 * longest due first, a page at a time. A pass passes back `asOf` (Convex's
 * time of its first page) with each cursor, so every page reads the same
 * index range; what is due at `asOf` is due now. Worst case: 1 index range,
 * `limit` ≤ 1,000 assets of ≤ 7 KB: 7 MB of 16 MiB.
 */
export const due = internalQuery({
  args: {
    bucket: v.string(),
    limit: v.number(),
    sessionId: v.optional(v.string()),
    cursor: v.optional(v.union(v.string(), v.null())),
    asOf: v.optional(v.number()),
  },
  returns: v.object({
    page: v.array(dueAsset),
    continueCursor: v.string(),
    isDone: v.boolean(),
    asOf: v.number(),
  }),
  handler: async (ctx, { bucket, limit, sessionId, cursor, asOf }) => {
    checkBatch(limit);
    const now = Date.now();
    // A time ahead of Convex's would make records due before their time.
    const at = asOf === undefined ? now : Math.min(asOf, now);
    const rows =
      sessionId === undefined
        ? ctx.db
            .query("assets")
            .withIndex("by_cleanup_due", (q) =>
              q
                .eq("bucket", bucket)
                .eq("status", "cleanup_pending")
                .lte("cleanup.nextAttemptAt", at),
            )
        : ctx.db
            .query("assets")
            .withIndex("by_session_cleanup_due", (q) =>
              q
                .eq("sessionId", sessionId)
                .eq("status", "cleanup_pending")
                .lte("cleanup.nextAttemptAt", at),
            )
            // A session lives in one bucket; another's records are not ours.
            .filter((q) => q.eq(q.field("bucket"), bucket));
    const page = await rows.paginate({ numItems: limit, cursor: cursor ?? null });
    return {
      page: page.page.map((asset) => ({
        assetId: asset._id,
        bucket: asset.bucket,
        key: asset.key,
        sessionId: asset.sessionId,
        size: asset.size,
        versionId: asset.versionId,
        cause: asset.cleanup!.cause,
        attempts: asset.cleanup!.attempts,
        nextAttemptAt: asset.cleanup!.nextAttemptAt,
      })),
      continueCursor: page.continueCursor,
      isDone: page.isDone,
      asOf: at,
    };
  },
});

function checkBatch(n: number) {
  if (!Number.isInteger(n) || n < 1 || n > MAX_CLEANUP_BATCH)
    throw new ConvexError({ code: "BadLimit", max: MAX_CLEANUP_BATCH });
}

const removal = v.object({ assetId: v.id("assets"), key: v.string() });

/**
 * Why a removal was refused: the record is not pending (restored, already
 * deleted, replaced by a new upload), not due, or its key is not its own.
 */
function refusal(
  asset: Doc<"assets"> | null,
  key: string,
  now: number,
): string | null {
  if (asset === null) return "no_record";
  if (asset.status === "deleted") return "already_deleted";
  if (asset.status !== "cleanup_pending") return "not_pending";
  if (asset.key !== key) return "key_mismatch";
  if (asset.cleanup === undefined || asset.cleanup.nextAttemptAt > now)
    return "not_due";
  if (!inSessionPrefix(asset.key, asset.sessionId)) return "outside_prefix";
  return null;
}

/**
 * Tombstones the records S3 confirmed removed: status `deleted`, `deletedAt`,
 * the reason kept, and one history row each (`s3convex:Cleanup`). A record
 * already `deleted` (the S3 removal event got here first, or a retry after
 * a lost answer) is left as it is: one removal in history, never two.
 *
 * Worst case: MAX_CLEANUP_BATCH (1,000) records read and written (≤ 7 KB:
 * 7 MB) + as many history rows (~1.3 KB) + each touched session twice;
 * 2,000 + 2 × sessions documents of 16,000. Measured in
 * tests/convex/lifecycleLimits.test.ts.
 */
export const markDeleted = internalMutation({
  args: { runId: v.string(), assets: v.array(removal) },
  returns: v.array(
    v.object({ assetId: v.id("assets"), outcome: v.string() }),
  ),
  handler: async (ctx, { runId, assets }) => {
    if (assets.length > MAX_CLEANUP_BATCH) checkBatch(assets.length);
    const now = Date.now();
    const results: { assetId: Id<"assets">; outcome: string }[] = [];
    const changes: { before: Doc<"assets">; after: Doc<"assets"> }[] = [];
    const touched = new Set<string>();
    for (const { assetId, key } of assets) {
      const asset = await ctx.db.get("assets", assetId);
      const refused = refusal(asset, key, now);
      if (refused !== null || asset === null) {
        results.push({ assetId, outcome: refused ?? "no_record" });
        // Tombstoned by the S3 removal event first: the session may be done.
        if (refused === "already_deleted" && asset?.sessionId !== undefined)
          touched.add(asset.sessionId);
        continue;
      }
      const fields = {
        status: "deleted" as const,
        deletedAt: now,
        url: undefined,
        urlExpiresAt: undefined,
        urlConfig: undefined,
        cleanup: { ...asset.cleanup!, runId, lastError: undefined },
        revision: asset.revision + 1,
        updatedAt: now,
      };
      await ctx.db.patch("assets", asset._id, fields);
      await ctx.db.insert("assetVersions", {
        assetId,
        revision: fields.revision,
        bucket: asset.bucket,
        key: asset.key,
        type: "removed",
        eventName: "s3convex:Cleanup",
        eventTime: now,
        size: asset.size,
        etag: asset.etag,
        versionId: asset.versionId,
        source: `cleanup:${runId}`,
        appliedAt: now,
      });
      changes.push({ before: asset, after: { ...asset, ...fields } });
      results.push({ assetId, outcome: "deleted" });
    }
    const summaries = await moveStatuses(ctx, changes, now);
    await settleSessions(ctx, new Set([...summaries.keys(), ...touched]));
    return results;
  },
});

/** A deleted session none of whose assets is left to remove is `deleted`. */
async function settleSessions(ctx: MutationCtx, sessionIds: Iterable<string>) {
  for (const sessionId of sessionIds) {
    const session = await sessionBy(ctx, sessionId);
    const deletion = session?.deletion;
    if (!session || deletion?.state !== "pending") continue;
    const left =
      (session.summary.cleanup_pending ?? 0) +
      (session.summary.cleanup_failed ?? 0);
    if (left === 0)
      await ctx.db.patch("videoSessions", session._id, {
        deletion: { ...deletion, state: "deleted" },
      });
  }
}

/**
 * Records S3's refusals: each record stays pending with `lastError` and a
 * jittered exponential backoff in `nextAttemptAt`; after `maxAttempts` it is
 * `cleanup_failed` (shown by `s3convex health`, retried by
 * `retryFailed`). Only pending records are touched. Worst case: 1,000
 * records read and written (7 MB) + their sessions.
 */
export const recordFailures = internalMutation({
  args: {
    runId: v.string(),
    failures: v.array(
      v.object({
        assetId: v.id("assets"),
        key: v.string(),
        code: v.string(),
        message: v.optional(v.string()),
      }),
    ),
    maxAttempts: v.number(),
    baseDelayMs: v.number(),
    maxDelayMs: v.number(),
  },
  returns: v.array(
    v.object({
      assetId: v.id("assets"),
      outcome: v.string(),
      attempts: v.optional(v.number()),
      nextAttemptAt: v.optional(v.number()),
    }),
  ),
  handler: async (ctx, args) => {
    const { failures, maxAttempts, baseDelayMs, maxDelayMs } = args;
    if (failures.length > MAX_CLEANUP_BATCH) checkBatch(failures.length);
    if (!(maxAttempts >= 1 && baseDelayMs >= 0 && maxDelayMs >= baseDelayMs))
      throw new ConvexError({ code: "bad_request", field: "backoff" });
    const now = Date.now();
    const results = [];
    const changes: { before: Doc<"assets">; after: Doc<"assets"> }[] = [];
    for (const { assetId, key, code, message } of failures) {
      const asset = await ctx.db.get("assets", assetId);
      if (asset?.status !== "cleanup_pending" || asset.key !== key) {
        results.push({ assetId, outcome: "not_pending" });
        continue;
      }
      const attempts = asset.cleanup!.attempts + 1;
      const lastError = (message ? `${code}: ${message}` : code).slice(
        0,
        MAX_CLEANUP_ERROR,
      );
      const gaveUp = attempts >= maxAttempts;
      const nextAttemptAt = now + backoffMs(attempts, baseDelayMs, maxDelayMs);
      const fields = {
        status: gaveUp ? ("cleanup_failed" as const) : asset.status,
        cleanup: { ...asset.cleanup!, attempts, nextAttemptAt, lastError },
        updatedAt: now,
      };
      await ctx.db.patch("assets", assetId, fields);
      if (gaveUp) changes.push({ before: asset, after: { ...asset, ...fields } });
      results.push({
        assetId,
        outcome: gaveUp ? "cleanup_failed" : "retry",
        attempts,
        nextAttemptAt,
      });
    }
    await moveStatuses(ctx, changes, now);
    return results;
  },
});

/**
 * Puts `cleanup_failed` records back to pending, due now, attempts reset
 * (an operator fixed the cause). Worst case: `limit` ≤ 1,000 records (7 MB).
 */
export const retryFailed = internalMutation({
  args: { sessionId: v.optional(v.string()), limit: v.number() },
  returns: v.number(),
  handler: async (ctx, { sessionId, limit }) => {
    checkBatch(limit);
    const now = Date.now();
    const failed = await (sessionId === undefined
      ? ctx.db
          .query("assets")
          .withIndex("by_status", (q) => q.eq("status", "cleanup_failed"))
      : ctx.db
          .query("assets")
          .withIndex("by_session_status", (q) =>
            q.eq("sessionId", sessionId).eq("status", "cleanup_failed"),
          )
    ).take(limit);
    const changes = [];
    for (const asset of failed) {
      const fields = {
        status: "cleanup_pending" as const,
        cleanup: { ...asset.cleanup!, attempts: 0, nextAttemptAt: now },
        updatedAt: now,
      };
      await ctx.db.patch("assets", asset._id, fields);
      changes.push({ before: asset, after: { ...asset, ...fields } });
    }
    await moveStatuses(ctx, changes, now);
    return changes.length;
  },
});

/** The backlog counted up to this many per status (a count reads every record). */
export const MAX_BACKLOG_COUNT = 1_000;

/**
 * The cleanup backlog for metrics and `s3convex health`: pending records
 * (and how many are due now), failed ones, and the oldest due time. Counts
 * stop at MAX_BACKLOG_COUNT (`more`). Worst case: 2 index ranges, 2,002
 * records (~3 MB typical; with the largest, 7 KB records, 14 MB of 16 MiB).
 */
export const backlog = internalQuery({
  args: { bucket: v.string() },
  returns: v.object({
    pending: v.number(),
    due: v.number(),
    failed: v.number(),
    more: v.boolean(),
    oldestDueAt: v.optional(v.number()),
    oldestRequestedAt: v.optional(v.number()),
  }),
  handler: async (ctx, { bucket }) => {
    const now = Date.now();
    const byDue = (status: "cleanup_pending" | "cleanup_failed") =>
      ctx.db
        .query("assets")
        .withIndex("by_cleanup_due", (q) =>
          q.eq("bucket", bucket).eq("status", status),
        )
        .take(MAX_BACKLOG_COUNT + 1);
    const pendingRows = await byDue("cleanup_pending");
    const failedRows = await byDue("cleanup_failed");
    const more =
      pendingRows.length > MAX_BACKLOG_COUNT ||
      failedRows.length > MAX_BACKLOG_COUNT;
    const pending = pendingRows.slice(0, MAX_BACKLOG_COUNT);
    const failed = failedRows.slice(0, MAX_BACKLOG_COUNT);
    const due = pending.filter((a) => a.cleanup!.nextAttemptAt <= now);
    return {
      pending: pending.length,
      due: due.length,
      failed: failed.length,
      more,
      oldestDueAt: due[0]?.cleanup!.nextAttemptAt,
      oldestRequestedAt: due.length
        ? Math.min(...due.map((a) => a.cleanup!.requestedAt))
        : undefined,
    };
  },
});

// --- the audit of cleanup runs ----------------------------------------------

/**
 * Writes a run's audit row: created on the first call, its counts replaced
 * on each later one (the worker calls it once per batch and at the end), so
 * a run killed half-way still shows what it did. 1 index range, 1 write.
 */
export const recordRun = internalMutation({
  args: cleanupRunFields,
  returns: v.id("cleanupRuns"),
  handler: async (ctx, args) => {
    const now = Date.now();
    const errors = args.errors.slice(0, 20).map(({ key, code }) => ({
      key: key.slice(0, 1024),
      code: code.slice(0, 100),
    }));
    const row = {
      ...args,
      errors,
      error: args.error?.slice(0, MAX_CLEANUP_ERROR),
      finishedAt: args.status === "running" ? undefined : now,
    };
    const existing = await ctx.db
      .query("cleanupRuns")
      .withIndex("by_run_id", (q) => q.eq("runId", args.runId))
      .unique();
    if (existing !== null) {
      await ctx.db.patch("cleanupRuns", existing._id, row);
      return existing._id;
    }
    return ctx.db.insert("cleanupRuns", { ...row, startedAt: now });
  },
});

/** The latest cleanup runs, newest first (at most 100). */
export const runs = internalQuery({
  args: { limit: v.number() },
  handler: async (ctx, { limit }) =>
    ctx.db
      .query("cleanupRuns")
      .withIndex("by_started_at")
      .order("desc")
      .take(Math.max(1, Math.min(100, Math.floor(limit)))),
});

// --- missing files -----------------------------------------------------------

/**
 * An object Convex holds `available` that S3 answered 404 for: marked
 * `missing` with the time it was seen, so no URL is handed out for it and
 * reconcile reports it. An etag that differs from the record's means the
 * record moved on meanwhile: nothing is written. The scene's pointers move
 * as for a removal. Worst case: 1 asset + its scene's files (a rescan).
 */
export const markMissing = internalMutation({
  args: {
    bucket: v.string(),
    key: v.string(),
    seenAt: v.number(),
    etag: v.optional(v.string()),
  },
  returns: v.union(v.literal("missing"), v.literal("skipped")),
  handler: async (ctx, { bucket, key, seenAt, etag }) => {
    const asset = await ctx.db
      .query("assets")
      .withIndex("by_bucket_key", (q) => q.eq("bucket", bucket).eq("key", key))
      .unique();
    if (asset === null || asset.status !== "available") return "skipped";
    if (etag !== undefined && asset.etag !== undefined && asset.etag !== etag)
      return "skipped";
    const now = Date.now();
    const fields = {
      status: "missing" as const,
      missingSince: seenAt,
      url: undefined,
      urlExpiresAt: undefined,
      urlConfig: undefined,
      updatedAt: now,
    };
    await ctx.db.patch("assets", asset._id, fields);
    await trackChanges(
      ctx,
      {
        applied: [
          { before: stateOf(asset), after: stateOf({ ...asset, ...fields }) },
        ],
        staleCreated: [],
      },
      now,
    );
    return "missing";
  },
});
