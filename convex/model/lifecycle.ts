/**
 * The lifecycle model (convex/LIFECYCLE.md): which records are on their way
 * out of S3, what a reader is told about them, and how a status change
 * moves the session summary.
 *
 * Helpers for `convex/lifecycle.ts`, `convex/sessions.ts`, `convex/assets.ts`
 * and `convex/access.ts`; no Convex functions are registered here.
 */
import { Infer } from "convex/values";
import { Doc } from "../_generated/dataModel";
import { MutationCtx, QueryCtx } from "../_generated/server";
import { cleanupCause } from "../schema";
import { Summary, count, deltaFor, moveSummaries, stateOf } from "./sessions";

export type CleanupCause = Infer<typeof cleanupCause>;

/** Assets one mutation marks (or restores) per page: ≤ 2 × 500 docs, ≤ 7 MB. */
export const MARK_PAGE = 500;
/** Keys one cleanup call names: S3's DeleteObjects takes at most 1,000. */
export const MAX_CLEANUP_BATCH = 1_000;
/** `lastError` is cut to this many characters (it rides on every read of the record). */
export const MAX_CLEANUP_ERROR = 500;

export const DEFAULT_GRACE_SECONDS = 86_400;
const MAX_GRACE_SECONDS = 90 * 86_400;

/**
 * The grace period between a deletion and the removal from S3, from
 * Convex's environment (`CLEANUP_GRACE_SECONDS`, default a day). It lives in
 * Convex, not in the daemon, because the public `sessions:delete` must fix
 * the end of the grace when it runs, with no daemon involved. A bad value
 * fails loudly rather than deleting sooner than intended.
 */
export function graceSeconds(): number {
  const raw = process.env.CLEANUP_GRACE_SECONDS;
  if (raw === undefined || raw.trim() === "") return DEFAULT_GRACE_SECONDS;
  const seconds = Number(raw);
  if (!Number.isInteger(seconds) || seconds < 0 || seconds > MAX_GRACE_SECONDS)
    throw new Error(
      `CLEANUP_GRACE_SECONDS must be whole seconds between 0 and ${MAX_GRACE_SECONDS}`,
    );
  return seconds;
}

/** Statuses whose asset no reader may have: removed, on its way out, or lost. */
const GONE = new Set(["deleted", "cleanup_pending", "cleanup_failed", "missing"]);

/** Statuses a deletion marks; `deleted` ones have nothing left in S3. */
const MARKABLE = new Set([
  "available",
  "failed",
  "pending",
  "uploading",
  "missing",
]);

export function isMarkable(status: Doc<"assets">["status"]): boolean {
  return MARKABLE.has(status);
}

export type Gone = { deletedAt: number; reason?: string };

/** What a reader is told about an asset that is gone, or null when it is not. */
export function goneOf(asset: Doc<"assets">): Gone | null {
  if (!GONE.has(asset.status)) return null;
  if (asset.status === "missing")
    return { deletedAt: asset.missingSince ?? asset.updatedAt, reason: "missing" };
  return {
    deletedAt:
      asset.deletedAt ?? asset.cleanup?.requestedAt ?? asset.eventTime,
    reason: asset.deleteReason,
  };
}

/** The same for a deleted (or deleting) session. */
export function sessionGoneOf(session: Doc<"videoSessions"> | null): Gone | null {
  if (session?.deletedAt === undefined) return null;
  return { deletedAt: session.deletedAt, reason: session.deleteReason };
}

/** Whether the asset's session is deleted: one index range. */
export async function sessionGone(
  ctx: QueryCtx,
  sessionId: string | undefined,
): Promise<Gone | null> {
  if (sessionId === undefined) return null;
  const session = await ctx.db
    .query("videoSessions")
    .withIndex("by_session", (q) => q.eq("sessionId", sessionId))
    .unique();
  return sessionGoneOf(session);
}

/**
 * Whether `key` lies under the session's own prefix: the layout always puts
 * the session id as one whole key segment (`sessions/{sessionId}/…`), so a
 * record whose key lacks it was mislabelled and is never removed for its
 * session. The worker checks the same with the full layout.
 */
export function inSessionPrefix(key: string, sessionId: string | undefined) {
  if (sessionId === undefined || sessionId === "") return false;
  return key.split("/").slice(0, -1).includes(sessionId);
}

/**
 * The delay before the next attempt after `attempts` failures: exponential
 * from `baseMs`, capped at `maxMs`, with full jitter over its upper half so
 * a burst of failures does not come back as one burst.
 */
export function backoffMs(
  attempts: number,
  baseMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const exp = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(exp / 2 + (random() * exp) / 2);
}

/** What marking an asset for removal writes. */
export function pendingFields(
  asset: Doc<"assets">,
  {
    cause,
    actor,
    reason,
    now,
    graceUntil,
  }: {
    cause: CleanupCause;
    actor: string;
    reason: string;
    now: number;
    graceUntil: number;
  },
) {
  return {
    status: "cleanup_pending" as const,
    deletedBy: actor,
    deleteReason: reason,
    cleanup: {
      cause,
      requestedAt: now,
      graceUntil,
      attempts: 0,
      nextAttemptAt: graceUntil,
      previousStatus: asset.status,
    },
    updatedAt: now,
  };
}

type Status = Doc<"assets">["status"];
const RESTORABLE = new Set<string>(MARKABLE);

/** What restoring a marked asset writes: its status before, nothing of the removal. */
export function restoredFields(asset: Doc<"assets">, now: number) {
  const previous = asset.cleanup?.previousStatus ?? "available";
  return {
    status: (RESTORABLE.has(previous) ? previous : "available") as Status,
    deletedBy: undefined,
    deleteReason: undefined,
    cleanup: undefined,
    updatedAt: now,
  };
}

/**
 * Moves each session's summary by what the status changes did (one write
 * per session). Scenes are not touched: a deleted session is hidden as a
 * whole, and retention never marks a current version, so no scene pointer
 * names a file that changed here (see LIFECYCLE.md for what `sessions:scene`
 * shows meanwhile).
 */
export async function moveStatuses(
  ctx: MutationCtx,
  changes: { before: Doc<"assets">; after: Doc<"assets"> }[],
  now: number,
): Promise<Map<string, Summary>> {
  const deltas = new Map<string, Summary>();
  for (const { before, after } of changes) {
    if (before.sessionId !== undefined)
      count(deltaFor(deltas, before.sessionId), stateOf(before), -1);
    if (after.sessionId !== undefined)
      count(deltaFor(deltas, after.sessionId), stateOf(after), +1);
  }
  return moveSummaries(ctx, deltas, now);
}
