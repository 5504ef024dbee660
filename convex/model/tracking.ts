/**
 * `trackChanges`: how `applyEvents` moves sessions and scenes, inside its own
 * mutation, by the changes one batch applied — each touched scene once
 * (`./scenes.ts`), then each touched session's summary once (`./sessions.ts`).
 *
 * Cost per batch, in index ranges: one lookup per touched scene and per
 * touched session, plus one scan of a scene's files when a change removed a
 * file of its current version (to fall back to the next one). With the
 * asset lookups that is at most 4 per event — inside Convex's 4,096 for
 * MAX_BATCH_EVENTS; measured in tests/convex/sessions.test.ts.
 */
import { MutationCtx } from "../_generated/server";
import { SceneWork, sceneKey, updateScene } from "./scenes";
import {
  BatchChanges,
  Summary,
  count,
  deltaFor,
  moveSummaries,
} from "./sessions";

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
  for (const { before, after } of changes) {
    // A record known only from the uploader was never placed in a scene:
    // for scenes its first S3 event is its first sight.
    const change = { before: before?.provisional ? null : before, after };
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
  }
  await moveSummaries(ctx, deltas, now);
}
