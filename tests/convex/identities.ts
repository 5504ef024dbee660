/**
 * Users of the public API as convex-test's `withIdentity` presents them: a
 * verified token's issuer and subject, and the tokenIdentifier Convex builds
 * from them (`<iss>|<sub>`), which is the principal (convex/model/identity.ts).
 */
import { internal } from "../../convex/_generated/api";
import type { S3Event } from "../../convex/events";
import { BUCKET, T0, backend, created, type Backend } from "./support";

export const ISSUER = "https://auth.example.com";

export function user(subject: string, issuer = ISSUER) {
  return { subject, issuer, tokenIdentifier: `${issuer}|${subject}` };
}

export const ALICE = user("user_alice");
export const BOB = user("user_bob");
export const MALLORY = user("user_mallory");
// Alice's subject at another issuer: someone else entirely.
export const ALICE_ELSEWHERE = user("user_alice", "https://other.example.org");

export const MIN = 60_000;
export const HOUR = 60 * MIN;

export const VIDEO = "sessions/s1/scenes/a/v1/video.mp4";
export const SOURCE = "sessions/s1/scenes/a/v1/scene.py";
export const THUMB = "sessions/s1/scenes/a/v1/thumb.png";
export const SCENE_B = "sessions/s1/scenes/b/v2/video.mp4";
export const LOOSE = "uploads/loose.bin";
export const BOBS = "sessions/s2/scenes/x/v1/video.mp4";

export const layout = (kind: string, sceneId = "a", version = 1) => ({
  sessionId: "s1",
  sceneId,
  version,
  kind,
});

export const apply = (t: Backend, events: S3Event[]) =>
  t.mutation(internal.assets.applyEvents, { events });

export const page = (numItems = 10, cursor: string | null = null) => ({
  cursor,
  numItems,
});

/**
 * A backend at T0 (fake timers: call vi.useFakeTimers first) with Alice's
 * session s1 — scene a (video presigned 1 h, source presigned 1 h, thumbnail
 * public), scene b — Bob's session s2, and an asset of no session.
 */
export async function seeded(): Promise<Backend> {
  const t = backend();
  const results = await apply(t, [
    created(VIDEO, {
      ...layout("video"),
      url: "stored-video",
      urlExpiresAt: T0 + HOUR,
      urlConfig: "presigned:3600",
      contentType: "video/mp4",
    }),
    created(SOURCE, {
      ...layout("source"),
      url: "stored-source",
      urlExpiresAt: T0 + HOUR,
      urlConfig: "presigned:3600",
    }),
    created(THUMB, {
      ...layout("thumbnail"),
      url: "https://cdn.example/thumb.png",
    }),
    created(SCENE_B, {
      ...layout("video", "b", 2),
      url: "stored-b",
      urlExpiresAt: T0 + HOUR,
    }),
    created(LOOSE, {
      kind: "other",
      url: "stored-loose",
      urlExpiresAt: T0 + HOUR,
    }),
    created(BOBS, {
      sessionId: "s2",
      sceneId: "x",
      version: 1,
      kind: "video",
      url: "stored-bobs",
      urlExpiresAt: T0 + HOUR,
    }),
  ]);
  if (results.some((r) => r.status !== "applied"))
    throw new Error("seed failed");
  for (const [sessionId, owner] of [
    ["s1", ALICE],
    ["s2", BOB],
  ] as const) {
    await t.mutation(internal.access.setOwner, {
      sessionId,
      ownerId: owner.tokenIdentifier,
      actor: "platform",
    });
  }
  return t;
}

export async function assetId(t: Backend, key: string, bucket = BUCKET) {
  const asset = await t.query(internal.assets.getByKey, { bucket, key });
  if (asset === null) throw new Error(`no asset ${key}`);
  return asset._id;
}

export function auditRows(t: Backend) {
  return t.run((ctx) => ctx.db.query("accessAudit").collect());
}

/** Resolves to the ConvexError data a call failed with (fails the test if it did not). */
export async function errorOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    const data = (error as { data?: unknown }).data;
    if (data === undefined) throw error;
    return data;
  }
  throw new Error("expected the call to fail");
}
