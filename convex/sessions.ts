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
 */
import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { ConvexError, Infer, v } from "convex/values";
import { Doc } from "./_generated/dataModel";
import { QueryCtx, internalMutation, internalQuery } from "./_generated/server";
import {
  SCENE_KINDS,
  currentFiles,
  sceneBy,
  withVersion,
  writeScene,
} from "./model/scenes";
import { count, emptySummary, sessionBy, stateOf } from "./model/sessions";
import schema, { sceneFile } from "./schema";

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
const sceneView = v.object({
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
export type SceneView = Infer<typeof sceneView>;

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
  returns: v.union(sceneView, v.null()),
  handler: async (ctx, { sessionId, sceneId }) => {
    const found = await sceneBy(ctx, sessionId, sceneId);
    return found === null ? null : viewOf(ctx, found);
  },
});

/** A session's scenes in scene-id order, each as `scene` returns it. */
export const scenes = internalQuery({
  args: { sessionId: v.string(), paginationOpts: paginationOptsValidator },
  returns: paginationResultValidator(sceneView),
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
