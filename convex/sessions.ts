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
 * Cost per batch, in index ranges: one lookup per touched scene and per
 * touched session, plus one scan of a scene's files when a change removed a
 * file of its current version (to fall back to the next one). With the
 * asset lookups that is at most 4 per event — inside Convex's 4,096 for
 * MAX_BATCH_EVENTS; measured in tests/convex/sessions.test.ts.
 */
import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { ConvexError, Infer, v } from "convex/values";
import { Doc, Id } from "./_generated/dataModel";
import {
  MutationCtx,
  QueryCtx,
  internalMutation,
  internalQuery,
} from "./_generated/server";
import schema, {
  sceneFile,
  sceneFiles,
  sceneVersion,
  sessionSummary,
} from "./schema";

/** Kinds a scene keeps a pointer for; `other` files are only listed. */
export const SCENE_KINDS = [
  "video",
  "source",
  "metadata",
  "manifest",
  "thumbnail",
  "subtitle",
] as const;
/** History keeps the newest versions; a scene's document stays small. */
export const MAX_SCENE_VERSIONS = 100;
export const MAX_VERSION_FILES = 200;

type SceneFile = Infer<typeof sceneFile>;
type SceneFiles = Infer<typeof sceneFiles>;
type SceneVersion = Infer<typeof sceneVersion>;
type Summary = Infer<typeof sessionSummary>;
type SceneKind = (typeof SCENE_KINDS)[number];

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

/** Moves sessions and scenes by the changes one batch applied. */
export async function trackChanges(
  ctx: MutationCtx,
  { applied: changes, staleCreated }: BatchChanges,
  now: number,
): Promise<void> {
  const scenes = new Map<string, SceneWork>();
  const work = (key: string) => {
    let entry = scenes.get(key);
    if (entry === undefined) {
      const [sessionId, sceneId] = JSON.parse(key) as [string, string];
      entry = { sessionId, sceneId, changes: [], sightings: [] };
      scenes.set(key, entry);
    }
    return entry;
  };
  for (const change of changes) {
    const keys = new Set([sceneKey(change.before), sceneKey(change.after)]);
    for (const key of keys) if (key !== null) work(key).changes.push(change);
  }
  for (const event of staleCreated) {
    const key = sceneKey(event);
    if (key !== null) work(key).sightings.push(event);
  }
  const newScenes = new Map<string, number>();
  for (const entry of scenes.values()) {
    if (await updateScene(ctx, entry, now)) {
      newScenes.set(entry.sessionId, (newScenes.get(entry.sessionId) ?? 0) + 1);
    }
  }

  const deltas = new Map<string, Summary>();
  for (const { before, after } of changes) {
    if (before?.sessionId !== undefined) {
      count(deltaFor(deltas, before.sessionId), before, -1);
    }
    if (after.sessionId !== undefined) {
      const delta = deltaFor(deltas, after.sessionId);
      count(delta, after, +1);
      delta.lastEventAt = Math.max(delta.lastEventAt ?? 0, after.eventTime);
    }
  }
  for (const [sessionId, delta] of deltas) {
    delta.scenes = newScenes.get(sessionId) ?? 0;
    const session = await sessionBy(ctx, sessionId);
    if (session === null) {
      await ctx.db.insert("videoSessions", {
        sessionId,
        summary: addSummaries(emptySummary(), delta),
        createdAt: now,
        updatedAt: now,
      });
    } else {
      await ctx.db.patch("videoSessions", session._id, {
        summary: addSummaries(session.summary, delta),
        updatedAt: now,
      });
    }
  }
}

// --- scenes ---------------------------------------------------------------

type Sighting = BatchChanges["staleCreated"][number];
type SceneWork = {
  sessionId: string;
  sceneId: string;
  changes: TrackedChange[];
  sightings: Sighting[];
};

function sceneKey(
  state: { sessionId?: string; sceneId?: string } | null,
): string | null {
  if (state?.sessionId === undefined || state.sceneId === undefined)
    return null;
  return JSON.stringify([state.sessionId, state.sceneId]);
}

function inScene(state: AssetState | null, sessionId: string, sceneId: string) {
  return (
    state !== null && state.sessionId === sessionId && state.sceneId === sceneId
  );
}

/** Applies one scene's changes; true when the scene was seen for the first time. */
async function updateScene(
  ctx: MutationCtx,
  { sessionId, sceneId, changes, sightings }: SceneWork,
  now: number,
): Promise<boolean> {
  const scene = await sceneBy(ctx, sessionId, sceneId);
  let currentVersion = scene?.currentVersion;
  let files: SceneFiles = { ...(scene?.files ?? {}) };
  let versions = [...(scene?.versions ?? [])];
  for (const { version, eventTime } of sightings) {
    versions = withVersion(versions, version ?? 0, eventTime);
  }
  if (changes.length === 0) {
    // Only stale events: write only if they taught history something.
    if (
      scene !== null &&
      JSON.stringify(versions) !== JSON.stringify(scene.versions)
    ) {
      await ctx.db.patch("scenes", scene._id, { versions, updatedAt: now });
    }
    return false;
  }
  let rescan = false;
  for (const { before, after } of changes) {
    const availableHere =
      after.status === "available" && inScene(after, sessionId, sceneId);
    if (availableHere) {
      const version = after.version ?? 0;
      versions = withVersion(versions, version, after.eventTime);
      if (currentVersion === undefined || version > currentVersion) {
        currentVersion = version;
        files = {};
      }
      if (version === currentVersion) files = placeFile(files, after);
    }
    // A file of the current version went away (deleted, or moved out by a
    // layout change): the version may be empty now, or its slot needs the
    // next file of that kind. Decided once, from the stored files, below.
    const leftCurrent =
      before !== null &&
      before.status === "available" &&
      inScene(before, sessionId, sceneId) &&
      (before.version ?? 0) === currentVersion &&
      !(availableHere && (after.version ?? 0) === currentVersion);
    if (leftCurrent) rescan = true;
  }
  if (rescan)
    ({ currentVersion, files } = await currentFiles(ctx, sessionId, sceneId));
  return writeScene(
    ctx,
    scene,
    { sessionId, sceneId, currentVersion, files, versions },
    now,
  );
}

type SceneFields = Pick<
  Doc<"scenes">,
  "sessionId" | "sceneId" | "currentVersion" | "files" | "versions"
>;

/** Inserts the scene, or patches the one found; true when it was inserted. */
async function writeScene(
  ctx: MutationCtx,
  existing: Doc<"scenes"> | null,
  { sessionId, sceneId, ...state }: SceneFields,
  now: number,
): Promise<boolean> {
  if (existing === null) {
    await ctx.db.insert("scenes", {
      sessionId,
      sceneId,
      ...state,
      createdAt: now,
      updatedAt: now,
    });
    return true;
  }
  await ctx.db.patch("scenes", existing._id, { ...state, updatedAt: now });
  return false;
}

function isSceneKind(kind: string | undefined): kind is SceneKind {
  return (SCENE_KINDS as readonly string[]).includes(kind ?? "");
}

/** The file that should hold its kind's slot: the latest written, then the greater key. */
function placeFile(files: SceneFiles, state: AssetState): SceneFiles {
  if (!isSceneKind(state.kind)) return files;
  const held = files[state.kind];
  const wins =
    held === undefined ||
    held.assetId === state.assetId ||
    state.eventTime > held.eventTime ||
    (state.eventTime === held.eventTime && state.key > held.key);
  return wins ? { ...files, [state.kind]: fileOf(state) } : files;
}

function fileOf(state: AssetState): SceneFile {
  return { assetId: state.assetId, key: state.key, eventTime: state.eventTime };
}

function withVersion(
  versions: SceneVersion[],
  version: number,
  at: number,
): SceneVersion[] {
  const found = versions.find((entry) => entry.version === version);
  const next = found
    ? versions.map((entry) =>
        entry === found
          ? {
              version,
              firstSeenAt: Math.min(entry.firstSeenAt, at),
              lastSeenAt: Math.max(entry.lastSeenAt, at),
            }
          : entry,
      )
    : [...versions, { version, firstSeenAt: at, lastSeenAt: at }];
  next.sort((a, b) => a.version - b.version);
  return next.slice(-MAX_SCENE_VERSIONS);
}

/** The current version and its files, from the stored assets (newest version first). */
async function currentFiles(ctx: QueryCtx, sessionId: string, sceneId: string) {
  let currentVersion: number | undefined;
  let files: SceneFiles = {};
  const assets = ctx.db
    .query("assets")
    .withIndex("by_scene", (q) =>
      q.eq("sessionId", sessionId).eq("sceneId", sceneId),
    )
    .order("desc");
  for await (const asset of assets) {
    if (asset.status !== "available") continue;
    const version = asset.version ?? 0;
    if (currentVersion === undefined) currentVersion = version;
    if (version !== currentVersion) break;
    files = placeFile(files, stateOf(asset));
  }
  return { currentVersion, files };
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

function deltaFor(deltas: Map<string, Summary>, sessionId: string): Summary {
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

function count(summary: Summary, state: AssetState, sign: 1 | -1): void {
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

export function sceneBy(ctx: QueryCtx, sessionId: string, sceneId: string) {
  return ctx.db
    .query("scenes")
    .withIndex("by_session_scene", (q) =>
      q.eq("sessionId", sessionId).eq("sceneId", sceneId),
    )
    .unique();
}

// --- queries and repair ---------------------------------------------------

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
