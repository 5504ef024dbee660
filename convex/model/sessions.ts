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
import { QueryCtx } from "../_generated/server";
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
  };
}

// --- session summaries ----------------------------------------------------

export function emptySummary(): Summary {
  return {
    available: 0,
    deleted: 0,
    failed: 0,
    bytes: 0,
    byKind: {},
    scenes: 0,
  };
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

export function count(summary: Summary, state: AssetState, sign: 1 | -1): void {
  summary[state.status] += sign;
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
  return {
    available: base.available + delta.available,
    deleted: base.deleted + delta.deleted,
    failed: base.failed + delta.failed,
    bytes: base.bytes + delta.bytes,
    byKind,
    scenes: base.scenes + delta.scenes,
    lastEventAt,
  };
}

// --- lookups --------------------------------------------------------------

export function sessionBy(ctx: QueryCtx, sessionId: string) {
  return ctx.db
    .query("videoSessions")
    .withIndex("by_session", (q) => q.eq("sessionId", sessionId))
    .unique();
}
