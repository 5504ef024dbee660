/**
 * The session side of the session model: what it knows of an asset, the
 * changes one batch applied, and a session's summary (counts by status,
 * bytes, counts by kind), moved by the difference each change makes.
 *
 * Helpers for `convex/sessions.ts`, `convex/assets.ts` and `convex/access.ts`;
 * no Convex functions are registered here.
 */
import { Infer } from "convex/values";
import { Doc, Id } from "../_generated/dataModel";
import { MutationCtx, QueryCtx } from "../_generated/server";
import { sessionSummary } from "../schema";

export type Summary = Infer<typeof sessionSummary>;

/** What the session model needs to know about an asset, before or after a change. */
export type AssetState = {
  assetId: Id<"assets">;
  key: string;
  status: Doc<"assets">["status"];
  sessionId?: string;
  sceneId?: string;
  version?: number;
  kind?: string;
  size?: number;
  eventTime: number;
  // Known only from the uploader (revision 0): no S3 event yet, so no
  // scene points at it and its eventTime is a placeholder.
  provisional: boolean;
  // What the summary's upload progress counts (convex/uploads.ts).
  upload?: { bytesSent: number; bytesTotal: number };
};

/** One applied change: the asset as it was (null: first sight) and as it is now. */
export type TrackedChange = { before: AssetState | null; after: AssetState };

/** What one batch did: the changes it applied, and created events it found stale. */
export type BatchChanges = {
  applied: TrackedChange[];
  // Outdated for their record, yet proof that a file of the version existed
  // then: history's times come from every created event, in any order.
  staleCreated: {
    sessionId?: string;
    sceneId?: string;
    version?: number;
    eventTime: number;
  }[];
};

export function stateOf(
  asset: Omit<Doc<"assets">, "_creationTime">,
): AssetState {
  return {
    assetId: asset._id,
    key: asset.key,
    status: asset.status,
    sessionId: asset.sessionId,
    sceneId: asset.sceneId,
    version: asset.version,
    kind: asset.kind,
    size: asset.size,
    eventTime: asset.eventTime,
    provisional: asset.revision === 0,
    upload:
      asset.upload === undefined
        ? undefined
        : {
            bytesSent: asset.upload.bytesSent,
            bytesTotal: asset.upload.bytesTotal,
          },
  };
}

// --- session summaries ----------------------------------------------------

export function emptySummary(): Summary {
  return {
    available: 0,
    deleted: 0,
    failed: 0,
    pending: 0,
    uploading: 0,
    cleanup_pending: 0,
    cleanup_failed: 0,
    missing: 0,
    bytes: 0,
    byKind: {},
    scenes: 0,
    filesDone: 0,
    filesTotal: 0,
    bytesDone: 0,
    bytesTotal: 0,
  };
}

/** The summary's plain counters (all but `byKind` and `lastEventAt`). */
const COUNTERS = [
  "available",
  "deleted",
  "failed",
  "pending",
  "uploading",
  // Lifecycle statuses (convex/LIFECYCLE.md).
  "cleanup_pending",
  "cleanup_failed",
  "missing",
  "bytes",
  "scenes",
  "filesDone",
  "filesTotal",
  "bytesDone",
  "bytesTotal",
] as const;
type Counter = (typeof COUNTERS)[number];

function add(summary: Summary, counter: Counter, n: number): void {
  summary[counter] = (summary[counter] ?? 0) + n;
}

export function deltaFor(
  deltas: Map<string, Summary>,
  sessionId: string,
): Summary {
  let delta = deltas.get(sessionId);
  if (delta === undefined) {
    delta = emptySummary();
    deltas.set(sessionId, delta);
  }
  return delta;
}

// Summary keys are document field names: only plain words.
function kindKey(kind: string | undefined): string {
  return kind !== undefined && /^[a-z][a-z0-9_]{0,31}$/.test(kind)
    ? kind
    : "other";
}

/**
 * Adds (sign 1) or takes away (-1) what one asset contributes. Every write
 * of an asset moves the summary by its contribution after minus before, so
 * the summary is always what `sessions:rebuild` would count.
 *
 * Upload progress counts the files the uploader reported on, but not deleted
 * ones: an available file is done with all its bytes; a pending or uploading
 * one has its bytes sent so far; a failed one none (a retry starts again).
 */
export function count(summary: Summary, state: AssetState, sign: 1 | -1): void {
  add(summary, state.status, sign);
  const upload = state.upload;
  if (upload !== undefined && state.status !== "deleted") {
    add(summary, "filesTotal", sign);
    add(summary, "bytesTotal", sign * upload.bytesTotal);
    if (state.status === "available") {
      add(summary, "filesDone", sign);
      add(summary, "bytesDone", sign * upload.bytesTotal);
    } else if (state.status !== "failed") {
      add(summary, "bytesDone", sign * upload.bytesSent);
    }
  }
  if (state.status !== "available") return;
  summary.bytes += sign * (state.size ?? 0);
  const kind = kindKey(state.kind);
  summary.byKind[kind] = (summary.byKind[kind] ?? 0) + sign;
}

export function addSummaries(base: Summary, delta: Summary): Summary {
  const byKind: Record<string, number> = { ...base.byKind };
  for (const [kind, n] of Object.entries(delta.byKind)) {
    byKind[kind] = (byKind[kind] ?? 0) + n;
    if (byKind[kind] === 0) delete byKind[kind];
  }
  const lastEventAt =
    delta.lastEventAt === undefined
      ? base.lastEventAt
      : Math.max(base.lastEventAt ?? 0, delta.lastEventAt);
  const sum = { ...base, byKind, lastEventAt } as Summary;
  for (const counter of COUNTERS) {
    sum[counter] = (base[counter] ?? 0) + (delta[counter] ?? 0);
  }
  return sum;
}

/**
 * Writes each session's summary once, moved by its delta; a session not
 * seen yet is created (ownerless). `fieldsOf` adds to what is written.
 */
export async function moveSummaries(
  ctx: MutationCtx,
  deltas: Map<string, Summary>,
  now: number,
  fieldsOf: (
    sessionId: string,
  ) => Partial<Pick<Doc<"videoSessions">, "runId">> = () => ({}),
): Promise<Map<string, Summary>> {
  const written = new Map<string, Summary>();
  for (const [sessionId, delta] of deltas) {
    const fields = fieldsOf(sessionId);
    const session = await sessionBy(ctx, sessionId);
    const summary = addSummaries(session?.summary ?? emptySummary(), delta);
    if (session === null) {
      await ctx.db.insert("videoSessions", {
        sessionId,
        summary,
        ...fields,
        createdAt: now,
        updatedAt: now,
      });
    } else {
      await ctx.db.patch("videoSessions", session._id, {
        summary,
        ...fields,
        updatedAt: now,
      });
    }
    written.set(sessionId, summary);
  }
  return written;
}

// --- lookups --------------------------------------------------------------

export function sessionBy(ctx: QueryCtx, sessionId: string) {
  return ctx.db
    .query("videoSessions")
    .withIndex("by_session", (q) => q.eq("sessionId", sessionId))
    .unique();
}
