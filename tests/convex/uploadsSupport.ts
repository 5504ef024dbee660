/**
 * What the upload tests share (tests/convex/uploads*.test.ts): run ids, the
 * key layout, the uploader's updates and the daemon's events for the same
 * objects, and short calls of the functions under test.
 */
import type { S3Event } from "../../convex/events";
import type { UploadUpdate } from "../../convex/model/uploads";
import { internal } from "../../convex/_generated/api";
import { BUCKET, T0, created, type Backend } from "./support";

// Run ids sort by start time (convex/UPLOADS.md): a ULID-like prefix.
export const RUN = "01JT0000000000000000000001";
export const LATER_RUN = "01JT0000000000000000000002";
export const EARLIER_RUN = "01JT0000000000000000000000";

export const SESSION = "s1";
export const dir = (file: string, sceneId = "intro", version = 1) =>
  `sessions/${SESSION}/scenes/${sceneId}/v${version}/${file}`;
export const VIDEO = dir("video.mp4");
export const SOURCE = dir("scene.py");
export const MANIFEST = dir("manifest.json");

const KIND_OF: Record<string, string> = {
  mp4: "video",
  py: "source",
  json: "metadata",
};

/** What the key layout says about a key, as both writers send it. */
export function layoutOf(key: string) {
  const m = /^sessions\/([^/]+)\/scenes\/([^/]+)\/v(\d+)\/(.+)$/.exec(key);
  if (m === null) return { sessionId: key.split("/")[1], kind: "metadata" };
  const [, sessionId, sceneId, version, file] = m;
  const kind =
    file === "manifest.json"
      ? "manifest"
      : (KIND_OF[file.split(".").pop()!] ?? "other");
  return { sessionId, sceneId, version: Number(version), kind };
}

export function upd(
  key: string,
  status: UploadUpdate["status"],
  fields: Partial<UploadUpdate> = {},
): UploadUpdate {
  return {
    bucket: BUCKET,
    key,
    status,
    bytesSent: 0,
    bytesTotal: 1_000,
    attempt: 1,
    contentType: key.endsWith(".mp4") ? "video/mp4" : "text/plain",
    ...layoutOf(key),
    ...fields,
  };
}

export const ETAG = "9e107d9d372bb6826bd81d3542a419d6";

/** The uploader's `available` for the object the daemon's `s3Created` describes. */
export const done = (key: string, fields: Partial<UploadUpdate> = {}) =>
  upd(key, "available", {
    bytesSent: fields.bytesTotal ?? 1_000,
    size: 1_000,
    etag: ETAG,
    uploadedAt: T0,
    ...fields,
  });

export function s3Created(key: string, fields: Partial<S3Event> = {}): S3Event {
  return created(key, {
    sequencer: "0055AED6DCD90281E5",
    size: 1_000,
    etag: ETAG,
    contentType: key.endsWith(".mp4") ? "video/mp4" : "text/plain",
    url: `https://cdn.example/${key}`,
    source: "sqs:m-1",
    ...layoutOf(key),
    ...fields,
  });
}

export const report = (
  t: Backend,
  updates: UploadUpdate[],
  runId = RUN,
  sessionId = SESSION,
) => t.mutation(internal.uploads.report, { sessionId, runId, updates });
export const apply = (t: Backend, events: S3Event[]) =>
  t.mutation(internal.assets.applyEvents, { events });
export const record = (t: Backend, key: string) =>
  t.query(internal.assets.getByKey, { bucket: BUCKET, key });
export const history = (t: Backend, key: string) =>
  t.query(internal.assets.history, { bucket: BUCKET, key });
export const session = (t: Backend, sessionId = SESSION) =>
  t.query(internal.sessions.get, { sessionId });

/** Every row of every table the upload path may write. */
export function everything(t: Backend) {
  return t.run(async (ctx) => ({
    assets: await ctx.db.query("assets").collect(),
    versions: await ctx.db.query("assetVersions").collect(),
    sessions: await ctx.db.query("videoSessions").collect(),
    scenes: await ctx.db.query("scenes").collect(),
    audit: await ctx.db.query("accessAudit").collect(),
  }));
}
