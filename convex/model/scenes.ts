/**
 * The scene side of the session model: which version is current, which file
 * holds each kind's slot, the version history, and the one write of a scene
 * document.
 *
 * Helpers for `convex/sessions.ts` and `./tracking.ts`; no Convex functions
 * are registered here.
 */
import { Infer } from "convex/values";
import { Doc } from "../_generated/dataModel";
import { MutationCtx, QueryCtx } from "../_generated/server";
import { sceneFile, sceneFiles, sceneVersion } from "../schema";
import { AssetState, BatchChanges, TrackedChange, stateOf } from "./sessions";

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

type SceneFile = Infer<typeof sceneFile>;
type SceneFiles = Infer<typeof sceneFiles>;
type SceneVersion = Infer<typeof sceneVersion>;
type SceneKind = (typeof SCENE_KINDS)[number];

type Sighting = BatchChanges["staleCreated"][number];
export type SceneWork = {
  sessionId: string;
  sceneId: string;
  changes: TrackedChange[];
  sightings: Sighting[];
};

export function sceneKey(
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
export async function updateScene(
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
export async function writeScene(
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

export function withVersion(
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
export async function currentFiles(
  ctx: QueryCtx,
  sessionId: string,
  sceneId: string,
) {
  let currentVersion: number | undefined;
  let files: SceneFiles = {};
  const assets = ctx.db
    .query("assets")
    .withIndex("by_scene", (q) =>
      q.eq("sessionId", sessionId).eq("sceneId", sceneId),
    )
    .order("desc");
  for await (const asset of assets) {
    // Revision 0: known only from the uploader, not in S3's history yet.
    if (asset.status !== "available" || asset.revision === 0) continue;
    const version = asset.version ?? 0;
    if (currentVersion === undefined) currentVersion = version;
    if (version !== currentVersion) break;
    files = placeFile(files, stateOf(asset));
  }
  return { currentVersion, files };
}

// --- lookups --------------------------------------------------------------

export function sceneBy(ctx: QueryCtx, sessionId: string, sceneId: string) {
  return ctx.db
    .query("scenes")
    .withIndex("by_session_scene", (q) =>
      q.eq("sessionId", sessionId).eq("sceneId", sceneId),
    )
    .unique();
}
