/**
 * A scene version's manifest.json referenced from its scene record (R5.3):
 * the scene's `uploads` entry for that version, with the run that uploaded
 * it (R9.1). Shared by `uploads:setManifest` and the `manifests` of
 * `uploads:report` (the uploader's final report carries the reference, one
 * mutation instead of two at the end of an upload_dir). Helpers for
 * `convex/uploads.ts`; no Convex functions are registered here.
 */
import { Infer, v } from "convex/values";
import { MutationCtx } from "../_generated/server";
import { MAX_SCENE_VERSIONS, sceneBy } from "./scenes";
import { deltaFor } from "./sessions";
import { Deltas, checkKey } from "./uploads";

/**
 * One report carries at most this many manifest references. The uploader
 * sends one per upload_dir, with that run's final report; the bound keeps a
 * report's worst case near the updates' own: each reference reads and
 * writes one scene record of at most ~0.11 MB (MAX_SCENE_VERSIONS entries
 * of a 1 KB key); measured, 10 over the largest scenes added 2.2 MB read and
 * 1.1 MB written to the largest 500 updates (tests/convex/uploadsLimits.test.ts).
 */
export const MAX_REPORT_MANIFESTS = 10;
/** As `uploads:setManifest` checks ids. */
const MAX_SCENE_ID_LENGTH = 256;

/** A reference in a report: the report's session and run are its own. */
export const manifestRef = v.object({
  sceneId: v.string(),
  version: v.number(),
  bucket: v.string(),
  key: v.string(),
});

export type ManifestRefArgs = Infer<typeof manifestRef>;

type Held = {
  runId: string;
  manifest: { bucket: string; key: string };
};

/** A later run wins; within one run, the greater bucket/key (a fixed winner). */
function ahead(a: Held, b: Held): boolean {
  const order = (x: Held) => [x.runId, x.manifest.bucket, x.manifest.key];
  const [p, q] = [order(a), order(b)];
  for (let i = 0; i < p.length; i++) {
    if (p[i] !== q[i]) return p[i] > q[i];
  }
  return false;
}

/** What is wrong with a reference, or null (checked before anything is written). */
export function manifestProblem(ref: ManifestRefArgs): string | null {
  if (ref.sceneId.trim() === "" || ref.sceneId.length > MAX_SCENE_ID_LENGTH) {
    return `sceneId must be 1–${MAX_SCENE_ID_LENGTH} characters`;
  }
  const keyProblem = checkKey(ref.bucket, ref.key);
  if (keyProblem !== null) return keyProblem;
  if (!(Number.isSafeInteger(ref.version) && ref.version >= 0)) {
    return "version is not a non-negative integer";
  }
  return null;
}

/**
 * Records the reference in the scene's `uploads` (newest MAX_SCENE_VERSIONS
 * versions), creating the scene record — counted in `deltas` as a scene of
 * the session — if the daemon has not yet. Of two runs the later one's is
 * kept, so the order of calls does not matter; the same reference again
 * writes nothing ("ignored"). One index range, one scene read, ≤ 1 written.
 */
export async function referManifest(
  ctx: MutationCtx,
  sessionId: string,
  runId: string,
  ref: ManifestRefArgs,
  now: number,
  deltas: Deltas,
): Promise<"applied" | "ignored"> {
  const { sceneId, version, bucket, key } = ref;
  const entry = { version, runId, manifest: { bucket, key }, updatedAt: now };
  const scene = await sceneBy(ctx, sessionId, sceneId);
  if (scene === null) {
    await ctx.db.insert("scenes", {
      sessionId,
      sceneId,
      files: {},
      versions: [],
      uploads: [entry],
      createdAt: now,
      updatedAt: now,
    });
    deltaFor(deltas, sessionId).scenes += 1;
    return "applied";
  }
  const uploads = scene.uploads ?? [];
  const held = uploads.find((u) => u.version === version);
  if (held !== undefined && !ahead(entry, held)) return "ignored";
  const next = [...uploads.filter((u) => u.version !== version), entry]
    .sort((a, b) => a.version - b.version)
    .slice(-MAX_SCENE_VERSIONS);
  await ctx.db.patch("scenes", scene._id, { uploads: next, updatedAt: now });
  return "applied";
}
