/**
 * Retention of obsolete scene versions (R4.3, convex/LIFECYCLE.md): `plan`
 * pages scenes and names the versions a policy (keep the current version and
 * `keep` older ones, and/or drop those older than `maxAgeDays`) makes
 * obsolete; `mark` marks one such version's files `cleanup_pending` (reason
 * `retention`), and the cleanup worker removes them as it removes a deleted
 * session's (convex/lifecycle.ts). Internal: the sync service's deploy key
 * (consumer/retention.py).
 */
import { ConvexError, v } from "convex/values";
import { Doc } from "./_generated/dataModel";
import { internalMutation, internalQuery } from "./_generated/server";
import { isMarkable, moveStatuses, pendingFields } from "./model/lifecycle";
import { sceneBy } from "./model/scenes";

export const MAX_RETENTION_SCENES = 100;

/**
 * A scene's obsolete versions under the policy: never the current version
 * nor a newer one (still arriving), and only when the scene has a current
 * version to keep. `keep`: the current version plus this many older ones
 * stay. `maxAgeMs`: versions last seen longer ago go. With both, a version
 * goes only when both say so (the conservative reading: deleting is final).
 */
export function obsoleteVersions(
  scene: Pick<Doc<"scenes">, "currentVersion" | "versions">,
  { keep, maxAgeMs }: { keep?: number; maxAgeMs?: number },
  now: number,
): number[] {
  const current = scene.currentVersion;
  if (current === undefined || (keep === undefined && maxAgeMs === undefined))
    return [];
  const older = scene.versions
    .filter((entry) => entry.version < current)
    .sort((a, b) => b.version - a.version);
  return older
    .filter((entry, index) => {
      const beyondKeep = keep === undefined || index >= keep;
      const tooOld =
        maxAgeMs === undefined || entry.lastSeenAt < now - maxAgeMs;
      return beyondKeep && tooOld;
    })
    .map((entry) => entry.version)
    .sort((a, b) => a - b);
}

const policy = {
  keep: v.optional(v.number()),
  maxAgeDays: v.optional(v.number()),
};

function policyOf({ keep, maxAgeDays }: { keep?: number; maxAgeDays?: number }) {
  if (keep !== undefined && !(Number.isInteger(keep) && keep >= 0))
    throw new ConvexError({ code: "bad_request", field: "keep" });
  if (maxAgeDays !== undefined && !(maxAgeDays > 0))
    throw new ConvexError({ code: "bad_request", field: "maxAgeDays" });
  if (keep === undefined && maxAgeDays === undefined)
    throw new ConvexError({ code: "bad_request", field: "policy" });
  return {
    keep,
    maxAgeMs: maxAgeDays === undefined ? undefined : maxAgeDays * 86_400_000,
  };
}

/**
 * A page of scenes with the versions the policy makes obsolete (the files
 * of each: `sessions:versionFiles`). Worst case: 1 index range,
 * MAX_RETENTION_SCENES scenes (~3 KB each: 0.3 MB).
 */
export const plan = internalQuery({
  args: {
    ...policy,
    sessionId: v.optional(v.string()),
    cursor: v.union(v.string(), v.null()),
    numItems: v.number(),
  },
  returns: v.object({
    scenes: v.array(
      v.object({
        sessionId: v.string(),
        sceneId: v.string(),
        currentVersion: v.optional(v.number()),
        obsolete: v.array(v.number()),
        // The current version's manifest.json: what it names is never obsolete.
        manifest: v.optional(v.object({ bucket: v.string(), key: v.string() })),
      }),
    ),
    continueCursor: v.string(),
    isDone: v.boolean(),
  }),
  handler: async (ctx, args) => {
    const rules = policyOf(args);
    const now = Date.now();
    const numItems = Math.max(1, Math.min(MAX_RETENTION_SCENES, args.numItems));
    const page = await (args.sessionId === undefined
      ? ctx.db.query("scenes")
      : ctx.db
          .query("scenes")
          .withIndex("by_session_scene", (q) =>
            q.eq("sessionId", args.sessionId!),
          )
    ).paginate({ numItems, cursor: args.cursor });
    return {
      scenes: page.page
        .map((scene) => ({
          sessionId: scene.sessionId,
          sceneId: scene.sceneId,
          currentVersion: scene.currentVersion,
          obsolete: obsoleteVersions(scene, rules, now),
          manifest: currentManifest(scene),
        }))
        .filter((scene) => scene.obsolete.length > 0),
      continueCursor: page.continueCursor,
      isDone: page.isDone,
    };
  },
});

function currentManifest(scene: Doc<"scenes">) {
  return scene.uploads?.find((u) => u.version === scene.currentVersion)
    ?.manifest;
}

/** Files one `mark` call marks at most: one version's (`MAX_VERSION_FILES`). */
export const MAX_RETENTION_FILES = 200;

/**
 * Marks one obsolete version's files `cleanup_pending` (reason `retention`),
 * re-deciding under the same policy from the scene as it is now, so a plan
 * that went stale (a new version arrived, an old one became current again)
 * marks nothing it should not. Files named by `protectedKeys` (what the
 * current manifest references, read from S3 by the planner) and the
 * scene's current pointers are never marked. Grace: none by default, the
 * version was already replaced (`graceSeconds` to give one).
 *
 * Worst case: 2 index ranges, the scene (~3 KB) + MAX_RETENTION_FILES
 * assets read and written (≤ 7 KB: 1.4 MB each way) + the session.
 */
export const mark = internalMutation({
  args: {
    ...policy,
    sessionId: v.string(),
    sceneId: v.string(),
    version: v.number(),
    actor: v.string(),
    protectedKeys: v.optional(v.array(v.string())),
    graceSeconds: v.optional(v.number()),
  },
  returns: v.object({
    marked: v.number(),
    bytes: v.number(),
    refused: v.optional(v.string()),
  }),
  handler: async (ctx, args) => {
    const rules = policyOf(args);
    const now = Date.now();
    const scene = await sceneBy(ctx, args.sessionId, args.sceneId);
    if (scene === null) return { marked: 0, bytes: 0, refused: "no_scene" };
    if (!obsoleteVersions(scene, rules, now).includes(args.version))
      return { marked: 0, bytes: 0, refused: "not_obsolete" };
    const keep = new Set(args.protectedKeys ?? []);
    for (const file of Object.values(scene.files)) if (file) keep.add(file.key);
    const manifest = currentManifest(scene);
    if (manifest) keep.add(manifest.key);
    const files = await ctx.db
      .query("assets")
      .withIndex("by_scene", (q) =>
        q
          .eq("sessionId", args.sessionId)
          .eq("sceneId", args.sceneId)
          .eq("version", args.version),
      )
      .take(MAX_RETENTION_FILES);
    const grace = args.graceSeconds ?? 0;
    const changes: { before: Doc<"assets">; after: Doc<"assets"> }[] = [];
    let bytes = 0;
    for (const asset of files) {
      if (!isMarkable(asset.status) || keep.has(asset.key)) continue;
      const fields = pendingFields(asset, {
        cause: "retention",
        actor: args.actor,
        reason: "retention",
        now,
        graceUntil: now + grace * 1000,
      });
      await ctx.db.patch("assets", asset._id, fields);
      changes.push({ before: asset, after: { ...asset, ...fields } });
      bytes += asset.size ?? 0;
    }
    await moveStatuses(ctx, changes, now);
    return { marked: changes.length, bytes };
  },
});
