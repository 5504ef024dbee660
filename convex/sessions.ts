/**
 * Video sessions and their scenes, kept from the asset records.
 *
 * The layout of keys is parsed by the sync service, which fills `sessionId`,
 * `sceneId`, `version` and `kind` on each event. `applyEvents` hands every
 * change it applied to `trackChanges`, inside the same mutation, so the
 * session, its scenes and its assets never disagree:
 *
 * - a session and a scene are created on first sight of any of their keys;
 * - a scene points at its current version — the highest version with an
 *   available file — and, per kind, at that version's file (the latest
 *   written when a version has several of one kind); `scene` returns each
 *   with the URL stored on its asset. Older versions stay listed in
 *   `versions` with the times they were seen, their files in the assets
 *   table (`versionFiles`);
 * - a session's summary (counts by status, bytes, counts by kind) is moved
 *   by the difference each change makes, and written once per batch, so a UI
 *   subscribes to one small document.
 *
 * The bookkeeping lives in `convex/model/` (`tracking.ts`, `scenes.ts`,
 * `sessions.ts`); this module holds the queries and the repair.
 *
 * `mine`, `live` and `sceneView` are public: the web app subscribes to them
 * with the user's JWT, and each answers only what the caller may read
 * (owner or active grant, `convex/model/public.ts`); see convex/PUBLIC_API.md.
 */
import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { ConvexError, Infer, v } from "convex/values";
import { Doc } from "./_generated/dataModel";
import {
  QueryCtx,
  internalMutation,
  internalQuery,
  mutation,
  query,
} from "./_generated/server";
import {
  deletionProgress,
  progressOf,
  startDeletion,
  startRestore,
} from "./lifecycle";
import { principalOf } from "./model/identity";
import { graceSeconds } from "./model/lifecycle";
import {
  assetProblem,
  bounded,
  FORBIDDEN,
  emptyPage,
  fail,
  mapPage,
  problemOf,
  readableSession,
  requirePrincipal,
  role,
  roleOf,
} from "./model/public";
import { readerTtlMs, shownUrl } from "./model/urlPolicy";
import {
  SCENE_KINDS,
  currentFiles,
  sceneBy,
  withVersion,
  writeScene,
} from "./model/scenes";
import { count, emptySummary, sessionBy, stateOf } from "./model/sessions";
import { STALLED_ERROR } from "./model/uploads";
import schema, {
  assetStatus,
  sceneFile,
  sceneVersion,
  sessionSummary,
  uploadStatus,
} from "./schema";

/** `versionFiles` returns at most this many files. */
export const MAX_VERSION_FILES = 200;

const sessionDoc = schema.doc("videoSessions");
const sceneDoc = schema.doc("scenes");
const assetDoc = schema.doc("assets");

/** A scene pointer with what a player needs from its asset. */
const sceneFileView = v.object({
  ...sceneFile.fields,
  url: v.optional(v.string()),
  urlExpiresAt: v.optional(v.number()),
  urlError: v.optional(v.string()),
  size: v.optional(v.number()),
  contentType: v.optional(v.string()),
});
const internalSceneView = v.object({
  ...sceneDoc.fields,
  files: v.object({
    video: v.optional(sceneFileView),
    source: v.optional(sceneFileView),
    metadata: v.optional(sceneFileView),
    manifest: v.optional(sceneFileView),
    thumbnail: v.optional(sceneFileView),
    subtitle: v.optional(sceneFileView),
  }),
});
export type SceneView = Infer<typeof internalSceneView>;

/** The scene with the stored URL of each current file (one read per file). */
async function viewOf(ctx: QueryCtx, scene: Doc<"scenes">): Promise<SceneView> {
  const files: SceneView["files"] = {};
  for (const kind of SCENE_KINDS) {
    const file = scene.files[kind];
    if (file === undefined) continue;
    const asset = await ctx.db.get("assets", file.assetId);
    files[kind] = {
      ...file,
      url: asset?.url,
      urlExpiresAt: asset?.urlExpiresAt,
      urlError: asset?.urlError,
      size: asset?.size,
      contentType: asset?.contentType,
    };
  }
  return { ...scene, files };
}

/** The session with its summary: the one document a session's UI subscribes to. */
export const get = internalQuery({
  args: { sessionId: v.string() },
  returns: v.union(sessionDoc, v.null()),
  handler: (ctx, { sessionId }) => sessionBy(ctx, sessionId),
});

/** The scene: current version, its files with their stored URLs, and version history. */
export const scene = internalQuery({
  args: { sessionId: v.string(), sceneId: v.string() },
  returns: v.union(internalSceneView, v.null()),
  handler: async (ctx, { sessionId, sceneId }) => {
    const found = await sceneBy(ctx, sessionId, sceneId);
    return found === null ? null : viewOf(ctx, found);
  },
});

/** A session's scenes in scene-id order, each as `scene` returns it. */
export const scenes = internalQuery({
  args: { sessionId: v.string(), paginationOpts: paginationOptsValidator },
  returns: paginationResultValidator(internalSceneView),
  handler: async (ctx, { sessionId, paginationOpts }) => {
    const page = await ctx.db
      .query("scenes")
      .withIndex("by_session_scene", (q) => q.eq("sessionId", sessionId))
      .paginate(paginationOpts);
    return {
      ...page,
      page: await Promise.all(page.page.map((s) => viewOf(ctx, s))),
    };
  },
});

/** Every file of one version of a scene, current or in history, deleted ones included. */
export const versionFiles = internalQuery({
  args: { sessionId: v.string(), sceneId: v.string(), version: v.number() },
  returns: v.array(assetDoc),
  handler: (ctx, { sessionId, sceneId, version }) =>
    ctx.db
      .query("assets")
      .withIndex("by_scene", (q) =>
        q
          .eq("sessionId", sessionId)
          .eq("sceneId", sceneId)
          .eq("version", version),
      )
      .take(MAX_VERSION_FILES),
});

/** Sessions whose owner is this principal, newest first. */
export const byOwner = internalQuery({
  args: { ownerId: v.string(), paginationOpts: paginationOptsValidator },
  returns: paginationResultValidator(sessionDoc),
  handler: (ctx, { ownerId, paginationOpts }) =>
    ctx.db
      .query("videoSessions")
      .withIndex("by_owner", (q) => q.eq("ownerId", ownerId))
      .order("desc")
      .paginate(paginationOpts),
});

/** At most this many assets per rebuild: one mutation must stay inside Convex's limits. */
export const MAX_REBUILD_ASSETS = 8_000;

/**
 * Recomputes a session's summary and scenes from its asset records: the
 * repair after a layout change or an import, and the oracle the tests hold
 * the incremental path to. History keeps what it knew and gains any version
 * only the assets know of.
 */
export const rebuild = internalMutation({
  args: { sessionId: v.string() },
  returns: v.object({ assets: v.number(), scenes: v.number() }),
  handler: async (ctx, { sessionId }) => {
    const assets = await ctx.db
      .query("assets")
      .withIndex("by_session", (q) => q.eq("sessionId", sessionId))
      .take(MAX_REBUILD_ASSETS + 1);
    if (assets.length > MAX_REBUILD_ASSETS) {
      throw new ConvexError({
        code: "SessionTooLarge",
        max: MAX_REBUILD_ASSETS,
      });
    }
    const now = Date.now();
    const summary = emptySummary();
    const byScene = new Map<string, Doc<"assets">[]>();
    for (const asset of assets) {
      count(summary, stateOf(asset), +1);
      // Revision 0 (known only from the uploader): no S3 event, no scene yet.
      if (asset.revision === 0) continue;
      summary.lastEventAt = Math.max(summary.lastEventAt ?? 0, asset.eventTime);
      if (asset.sceneId === undefined) continue;
      byScene.set(asset.sceneId, [
        ...(byScene.get(asset.sceneId) ?? []),
        asset,
      ]);
    }
    for (const [sceneId, sceneAssets] of byScene) {
      const scene = await sceneBy(ctx, sessionId, sceneId);
      let versions = scene?.versions ?? [];
      for (const asset of sceneAssets) {
        if (
          asset.status === "available" ||
          !versions.some((e) => e.version === (asset.version ?? 0))
        ) {
          versions = withVersion(versions, asset.version ?? 0, asset.eventTime);
        }
      }
      const { currentVersion, files } = await currentFiles(
        ctx,
        sessionId,
        sceneId,
      );
      await writeScene(
        ctx,
        scene,
        { sessionId, sceneId, currentVersion, files, versions },
        now,
      );
    }
    const sceneCount = (
      await ctx.db
        .query("scenes")
        .withIndex("by_session_scene", (q) => q.eq("sessionId", sessionId))
        .collect()
    ).length;
    summary.scenes = sceneCount;
    const session = await sessionBy(ctx, sessionId);
    if (session === null) {
      await ctx.db.insert("videoSessions", {
        sessionId,
        summary,
        createdAt: now,
        updatedAt: now,
      });
    } else {
      await ctx.db.patch("videoSessions", session._id, {
        summary,
        updatedAt: now,
      });
    }
    return { assets: assets.length, scenes: sceneCount };
  },
});

// --- public: what the web app subscribes to ------------------------------

/** A session as the web app sees it: no owner or grant principals. */
const publicSession = v.object({
  sessionId: v.string(),
  summary: sessionSummary,
  createdAt: v.number(),
  updatedAt: v.number(),
});

function publicSessionOf(session: Doc<"videoSessions">) {
  const { sessionId, summary, createdAt, updatedAt } = session;
  return { sessionId, summary, createdAt, updatedAt };
}

/**
 * The caller's own sessions (`ownerId` is their principal), newest first.
 * No identity: an empty page. Sessions shared with the caller are listed by
 * `access:myGrants`.
 *
 * Worst case per page: one index range, MAX_PAGE_ROWS (200) session
 * documents of < 1 KB (a summary counts a handful of kinds): < 0.2 MB.
 */
export const mine = query({
  args: { paginationOpts: paginationOptsValidator },
  returns: paginationResultValidator(publicSession),
  handler: async (ctx, { paginationOpts }) => {
    const principal = await principalOf(ctx);
    if (principal === null) return emptyPage<Infer<typeof publicSession>>();
    const page = await ctx.db
      .query("videoSessions")
      .withIndex("by_owner", (q) => q.eq("ownerId", principal))
      .order("desc")
      // Deleted (or deleting) sessions are not listed (convex/LIFECYCLE.md);
      // rows read stay bounded by `maximumRowsRead`.
      .filter((q) => q.eq(q.field("deletedAt"), undefined))
      .paginate(bounded(paginationOpts));
    return mapPage(page, publicSessionOf);
  },
});

/** `live` lists at most this many scenes (with `moreScenes` when there are more). */
export const MAX_LIVE_SCENES = 200;

/**
 * The uploader's progress on an asset, as a reader sees it: the failure as a
 * code (the raw text stays internal, in `assets:getByKey`), no run id.
 */
const liveUpload = v.object({
  status: uploadStatus,
  attempt: v.number(),
  bytesSent: v.number(),
  bytesTotal: v.number(),
  error: v.optional(
    v.union(v.literal("upload_failed"), v.literal("upload_stalled")),
  ),
  nextRetryAt: v.optional(v.number()),
  updatedAt: v.number(),
});

function liveUploadOf(
  upload: NonNullable<Doc<"assets">["upload"]>,
): Infer<typeof liveUpload> {
  const { status, attempt, bytesSent, bytesTotal, nextRetryAt } = upload;
  const error =
    status !== "failed"
      ? undefined
      : upload.error === STALLED_ERROR
        ? ("upload_stalled" as const)
        : ("upload_failed" as const);
  return {
    status,
    attempt,
    bytesSent,
    bytesTotal,
    error,
    nextRetryAt,
    updatedAt: upload.updatedAt,
  };
}

const liveAsset = v.object({
  assetId: v.id("assets"),
  key: v.string(),
  kind: v.optional(v.string()),
  sceneId: v.optional(v.string()),
  version: v.optional(v.number()),
  status: assetStatus,
  size: v.optional(v.number()),
  contentType: v.optional(v.string()),
  eventTime: v.number(),
  updatedAt: v.number(),
  deletedAt: v.optional(v.number()),
  error: v.optional(assetProblem),
  upload: v.optional(liveUpload),
});

function liveAssetOf(asset: Doc<"assets">): Infer<typeof liveAsset> {
  return {
    assetId: asset._id,
    key: asset.key,
    kind: asset.kind,
    sceneId: asset.sceneId,
    version: asset.version,
    status: asset.status,
    size: asset.size,
    contentType: asset.contentType,
    eventTime: asset.eventTime,
    updatedAt: asset.updatedAt,
    deletedAt: asset.deletedAt,
    error: problemOf(asset),
    upload: asset.upload === undefined ? undefined : liveUploadOf(asset.upload),
  };
}

const liveScene = v.object({
  sceneId: v.string(),
  currentVersion: v.optional(v.number()),
  // The kinds the current version has a file for (video, source, ...).
  kinds: v.array(v.string()),
  versions: v.number(),
  updatedAt: v.number(),
});

function liveSceneOf(scene: Doc<"scenes">): Infer<typeof liveScene> {
  return {
    sceneId: scene.sceneId,
    currentVersion: scene.currentVersion,
    kinds: SCENE_KINDS.filter((kind) => scene.files[kind] !== undefined),
    versions: scene.versions.length,
    updatedAt: scene.updatedAt,
  };
}

/**
 * A session's live status, for its owner or a grantee: the summary (counts
 * by status and kind, bytes, scenes, and upload progress: filesDone/
 * filesTotal, bytesDone/bytesTotal), its scenes with their current version
 * (the first MAX_LIVE_SCENES in scene-id order), and a page of its assets,
 * newest first, each with its status, error code and the uploader's
 * progress (`upload`: status, attempt, bytes, error code, nextRetryAt). The page fields are at
 * the top level, so `usePaginatedQuery` pages the assets; `useQuery` gets
 * the session and scenes too.
 *
 * Throws ConvexError `forbidden` (no identity: `reason: "unauthenticated"`;
 * no permission, whether or not the session exists) or `not_found`.
 *
 * Worst case: 4 index ranges of 4,096 (session, session grant, scenes,
 * assets); 1 session + the caller's grants on it + MAX_LIVE_SCENES + 1
 * scenes (~3 KB each at most: 100 versions, six 1 KB keys) + MAX_PAGE_ROWS
 * assets (≤ 7 KB each). Measured with the largest documents
 * (tests/convex/publicLimits.test.ts): 3.3 MB and 308 documents for a first
 * page of 100 assets, 4.0 MB and 408 documents for a reactive page grown to
 * MAX_PAGE_ROWS — of 16 MiB and 32,000.
 */
export const live = query({
  args: { sessionId: v.string(), paginationOpts: paginationOptsValidator },
  returns: v.object({
    ...paginationResultValidator(liveAsset).fields,
    session: publicSession,
    role,
    scenes: v.array(liveScene),
    moreScenes: v.boolean(),
  }),
  handler: async (ctx, { sessionId, paginationOpts }) => {
    const { session, permission } = await readableSession(
      ctx,
      sessionId,
      Date.now(),
    );
    const scenes = await ctx.db
      .query("scenes")
      .withIndex("by_session_scene", (q) => q.eq("sessionId", sessionId))
      .take(MAX_LIVE_SCENES + 1);
    const assets = await ctx.db
      .query("assets")
      .withIndex("by_session", (q) => q.eq("sessionId", sessionId))
      .order("desc")
      // Files on their way out of S3, or removed by a cleanup, are not
      // listed (an obsolete version's, convex/LIFECYCLE.md).
      .filter((q) =>
        q.and(
          q.neq(q.field("status"), "cleanup_pending"),
          q.neq(q.field("status"), "cleanup_failed"),
          q.eq(q.field("deleteReason"), undefined),
        ),
      )
      .paginate(bounded(paginationOpts));
    return {
      ...mapPage(assets, liveAssetOf),
      session: publicSessionOf(session),
      role: roleOf(permission),
      scenes: scenes.slice(0, MAX_LIVE_SCENES).map(liveSceneOf),
      moreScenes: scenes.length > MAX_LIVE_SCENES,
    };
  },
});

/** A current file as a reader sees it: its stored URL only when it may be handed to them. */
export const publicFile = v.object({
  assetId: v.id("assets"),
  key: v.string(),
  eventTime: v.number(),
  size: v.optional(v.number()),
  contentType: v.optional(v.string()),
  // "ready": `url` may be used until `urlExpiresAt` (absent: public, no
  // expiry). "request": ask `access:requestUrl` (none stored, about to
  // expire, or living longer than the kind — or the caller's grant — allows).
  urlState: v.union(v.literal("ready"), v.literal("request")),
  url: v.optional(v.string()),
  urlExpiresAt: v.optional(v.number()),
});

const publicScene = v.object({
  sessionId: v.string(),
  sceneId: v.string(),
  currentVersion: v.optional(v.number()),
  versions: v.array(sceneVersion),
  updatedAt: v.number(),
  files: v.object({
    video: v.optional(publicFile),
    source: v.optional(publicFile),
    metadata: v.optional(publicFile),
    manifest: v.optional(publicFile),
    thumbnail: v.optional(publicFile),
    subtitle: v.optional(publicFile),
  }),
});

/**
 * A scene of a session the caller may read: its current version, version
 * history, and each current file with its stored URL when that URL may be
 * handed to this caller (R7.2: the kind's lifetime, `URL_EXPIRES_<KIND>` in
 * Convex's environment, and the end of the caller's grant). A URL shown here
 * is not audited per read (a query cannot write); `access:requestUrl` is the
 * audited way to get one (convex/PUBLIC_API.md).
 *
 * Throws ConvexError `forbidden` or `not_found` (no such scene).
 *
 * Worst case: 3 index ranges (session, session grant, scene) + 6 document
 * reads (one per file) of 4,096; measured 0.05 MB with the largest assets.
 */
export const sceneView = query({
  args: { sessionId: v.string(), sceneId: v.string() },
  returns: publicScene,
  handler: async (ctx, { sessionId, sceneId }) => {
    const now = Date.now();
    const { permission } = await readableSession(ctx, sessionId, now);
    const scene = await sceneBy(ctx, sessionId, sceneId);
    if (scene === null) fail({ code: "not_found" });
    const grantEnd =
      permission.via === "grant" ? permission.expiresAt : undefined;
    const files: Infer<typeof publicScene>["files"] = {};
    for (const kind of SCENE_KINDS) {
      const file = scene.files[kind];
      if (file === undefined) continue;
      const asset = await ctx.db.get("assets", file.assetId);
      // A pointer always names an available asset (applyEvents moves both in
      // one mutation); skip one that is not, rather than show a dead link.
      if (asset === null || asset.status !== "available") continue;
      files[kind] = {
        assetId: file.assetId,
        key: file.key,
        eventTime: file.eventTime,
        size: asset.size,
        contentType: asset.contentType,
        ...shownUrl(
          asset,
          now,
          readerTtlMs(asset.kind, now, undefined, grantEnd),
        ),
      };
    }
    return {
      sessionId,
      sceneId,
      currentVersion: scene.currentVersion,
      versions: scene.versions,
      updatedAt: scene.updatedAt,
      files,
    };
  },
});

// --- public: deleting a session (convex/LIFECYCLE.md) -----------------------

async function ownedSession(ctx: QueryCtx, sessionId: string) {
  const principal = await requirePrincipal(ctx);
  const session = await sessionBy(ctx, sessionId);
  // Only the owner; a grantee, a stranger and a session never seen all get
  // `forbidden` (existence is not revealed).
  if (session === null || session.ownerId !== principal) fail(FORBIDDEN);
  return { principal, session };
}

/**
 * Deletes the caller's session (R4.1): hidden from every public function at
 * once, each asset marked `cleanup_pending` with who, when and why, page by
 * page (MARK_PAGE per mutation, the rest in scheduled ones; progress in the
 * answer and in `sessions:deletion`). S3 is touched only after
 * CLEANUP_GRACE_SECONDS (Convex's environment, default a day); until then
 * `sessions:restore` undoes it. Calling it again reports the progress.
 *
 * Throws ConvexError `forbidden` (not the owner). Worst case: 3 index
 * ranges, 500 assets read and written (≤ 3.5 MB each way), the session
 * thrice (tests/convex/lifecycleLimits.test.ts).
 */
const deleteSession = mutation({
  args: { sessionId: v.string(), reason: v.optional(v.string()) },
  returns: deletionProgress,
  handler: async (ctx, { sessionId, reason }) => {
    const { principal, session } = await ownedSession(ctx, sessionId);
    return startDeletion(ctx, session, {
      actor: principal,
      reason: (reason ?? "deleted by owner").slice(0, 500),
      grace: graceSeconds(),
    });
  },
});

/**
 * Undoes the caller's deletion while its grace lasts. Throws `forbidden`,
 * or ConvexError `grace_expired` / `not_deleted`. Worst case as `delete`.
 */
export const restore = mutation({
  args: { sessionId: v.string() },
  returns: deletionProgress,
  handler: async (ctx, { sessionId }) => {
    const { session } = await ownedSession(ctx, sessionId);
    return startRestore(ctx, session);
  },
});

/** Where the caller's session's deletion is (null: never deleted). Owner only; 1 index range. */
export const deletion = query({
  args: { sessionId: v.string() },
  returns: v.union(deletionProgress, v.null()),
  handler: async (ctx, { sessionId }) => {
    const { session } = await ownedSession(ctx, sessionId);
    return session.deletion ? progressOf(session) : null;
  },
});

// `delete` is a reserved word: registered under that name by export alias.
export { deleteSession as delete };
