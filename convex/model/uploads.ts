/**
 * The uploader's side of an asset record: what one upload report says, how
 * it is checked, and how it moves a record and its session's summary.
 *
 * The order of reports and how they combine with S3 events is stated once,
 * in `../ordering.ts` (rules U1–U5 and S); this module applies it. Helpers
 * for `convex/uploads.ts`; no Convex functions are registered here.
 */
import { ConvexError, Infer, v } from "convex/values";
import { Doc } from "../_generated/dataModel";
import { MutationCtx } from "../_generated/server";
import {
  UploadPosition,
  UploadStatus,
  UploadVerdict,
  judgeUpload,
} from "../ordering";
import { uploadState, uploadStatus } from "../schema";
import { MAX_KEY_BYTES } from "../events";
import { Summary, count, deltaFor, stateOf } from "./sessions";

/** One `uploads:report` call holds at most this many updates (one flush). */
export const MAX_REPORT_UPDATES = 500;
/**
 * A failure's text is cut to this many characters. With MAX_RUN_ID_LENGTH
 * and MAX_UPLOAD_ETAG it bounds the stored `upload` at ~0.45 KB, which every
 * asset read of `applyEvents` carries: measured, 1,000 of the largest events
 * over records holding the largest `upload` read 15.9 MB of 16 MiB
 * (tests/convex/uploadsLimits.test.ts).
 */
export const MAX_UPLOAD_ERROR = 200;
/** Run ids are short labels (a ULID is 26 characters, a UUID 36). */
export const MAX_RUN_ID_LENGTH = 40;
/** An S3 ETag is 32 hex digits, plus "-<parts>" for a multipart upload. */
export const MAX_UPLOAD_ETAG = 64;
/**
 * Largest update accepted, as UTF-8 JSON, after the error is cut: a 1 KB
 * key and room for every other field. Keeps MAX_REPORT_UPDATES of them at
 * 1.5 MB of arguments, and the stored `upload` under 0.5 KB.
 */
export const MAX_UPDATE_BYTES = 3 * 1024;
/** `uploads:sweepStale` handles at most this many records per call. */
export const MAX_SWEEP = 500;
/** The error an upload swept by `uploads:sweepStale` records (R6.2). */
export const STALLED_ERROR = "upload stalled";
/** `lastEventName` of a record no S3 event has reached yet (revision 0). */
export const UPLOAD_EVENT_NAME = "s3convex:Upload";

// Anything below this is seconds, not milliseconds (as convex/events.ts).
const MIN_TIME_MS = 1e11;
const utf8 = new TextEncoder();

/** One file's state in one flush of the uploader (convex/UPLOADS.md). */
export const uploadUpdate = v.object({
  bucket: v.string(),
  key: v.string(),
  status: uploadStatus,
  bytesSent: v.number(),
  bytesTotal: v.number(),
  attempt: v.number(),
  // failed only
  error: v.optional(v.string()),
  nextRetryAt: v.optional(v.number()),
  // any status
  contentType: v.optional(v.string()),
  // available only: what was written
  size: v.optional(v.number()),
  etag: v.optional(v.string()),
  checksumSha256: v.optional(v.string()),
  checksumCrc64nvme: v.optional(v.string()),
  versionId: v.optional(v.string()),
  uploadedAt: v.optional(v.number()),
  // What the key layout says (ASSET_KEY_LAYOUT, `s3convex.core.layout`), as
  // the daemon puts on its events; sessionId defaults to the report's.
  sessionId: v.optional(v.string()),
  sceneId: v.optional(v.string()),
  version: v.optional(v.number()),
  kind: v.optional(v.string()),
});

export type UploadUpdate = Infer<typeof uploadUpdate>;
type UploadState = Infer<typeof uploadState>;

export function badRequest(reason: string, index?: number): never {
  throw new ConvexError({ code: "bad_request", reason, index });
}

export function checkRunId(runId: string): void {
  if (runId.trim() === "" || runId.length > MAX_RUN_ID_LENGTH) {
    badRequest(`runId must be 1–${MAX_RUN_ID_LENGTH} characters`);
  }
}

export function checkKey(bucket: string, key: string): string | null {
  if (bucket === "") return "bucket is empty";
  if (key === "") return "key is empty";
  if (utf8.encode(key).length > MAX_KEY_BYTES) {
    return `key is longer than ${MAX_KEY_BYTES} bytes`;
  }
  return null;
}

const isCount = (n: number) => Number.isSafeInteger(n) && n >= 0;
const isTime = (n: number) => Number.isFinite(n) && n >= MIN_TIME_MS;

const OBJECT_FIELDS = [
  "size",
  "etag",
  "checksumSha256",
  "checksumCrc64nvme",
  "versionId",
  "uploadedAt",
] as const;

/**
 * The update as it is ordered and stored: sessionId filled in, the error
 * cut, bytesSent at most bytesTotal (a retried part counted twice must not
 * fail a flush) and all of it for an available file. Throws `bad_request`
 * (with the update's index) for what a consistent uploader never sends.
 */
export function normalise(
  update: UploadUpdate,
  sessionId: string,
  index: number,
): UploadUpdate {
  const fail = (reason: string) => badRequest(reason, index);
  const keyProblem = checkKey(update.bucket, update.key);
  if (keyProblem !== null) fail(keyProblem);
  if (update.sessionId !== undefined && update.sessionId !== sessionId) {
    fail(`sessionId ${update.sessionId} is not the report's ${sessionId}`);
  }
  for (const field of ["bytesSent", "bytesTotal", "attempt"] as const) {
    if (!isCount(update[field])) fail(`${field} is not a non-negative integer`);
  }
  if (update.etag !== undefined && update.etag.length > MAX_UPLOAD_ETAG) {
    fail(`etag is longer than ${MAX_UPLOAD_ETAG} characters`);
  }
  if (update.size !== undefined && !isCount(update.size)) {
    fail("size is not a non-negative integer");
  }
  if (
    update.version !== undefined &&
    !(Number.isSafeInteger(update.version) && update.version >= 0)
  ) {
    fail("version is not a non-negative integer");
  }
  for (const field of ["nextRetryAt", "uploadedAt"] as const) {
    const value = update[field];
    if (value !== undefined && !isTime(value)) {
      fail(`${field} is not a time in milliseconds`);
    }
  }
  if (
    update.status !== "failed" &&
    (update.error !== undefined || update.nextRetryAt !== undefined)
  ) {
    fail("error and nextRetryAt belong to a failed update");
  }
  if (update.status !== "available") {
    const named = OBJECT_FIELDS.find((field) => update[field] !== undefined);
    if (named !== undefined) fail(`${named} belongs to an available update`);
  }
  const normal: UploadUpdate = {
    ...update,
    sessionId,
    error: update.error?.slice(0, MAX_UPLOAD_ERROR),
    bytesSent:
      update.status === "available"
        ? update.bytesTotal
        : Math.min(update.bytesSent, update.bytesTotal),
  };
  if (utf8.encode(JSON.stringify(normal)).length > MAX_UPDATE_BYTES) {
    fail(`update is larger than ${MAX_UPDATE_BYTES} bytes`);
  }
  return normal;
}

/**
 * Everything a report says beyond its position, in a fixed order: two
 * reports at the same position are the same report exactly when this is.
 */
type ReportContent = Omit<
  UploadUpdate,
  "bucket" | "key" | "status" | "bytesSent" | "attempt"
>;

function contentOf(c: ReportContent): string {
  return JSON.stringify([
    c.bytesTotal,
    c.error,
    c.nextRetryAt,
    c.contentType,
    c.size,
    c.etag,
    c.checksumSha256,
    c.checksumCrc64nvme,
    c.versionId,
    c.uploadedAt,
    c.sessionId,
    c.sceneId,
    c.version,
    c.kind,
  ]);
}

/** cyrb53: a fast, fixed 53-bit hash; only ties between contradicting reports depend on it. */
function hash53(text: string): string {
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  const n = 4294967296 * (2097151 & h2) + (h1 >>> 0);
  return n.toString(16).padStart(14, "0");
}

export function digestOf(content: ReportContent): string {
  return hash53(contentOf(content));
}

export function positionOf(
  upload: Pick<UploadState, keyof UploadPosition>,
): UploadPosition {
  const { runId, attempt, status, bytesSent, digest } = upload;
  return { runId, attempt, status, bytesSent, digest };
}

function stateFrom(
  runId: string,
  update: UploadUpdate,
  now: number,
): UploadState {
  return {
    runId,
    attempt: update.attempt,
    status: update.status,
    bytesSent: update.bytesSent,
    bytesTotal: update.bytesTotal,
    error: update.error,
    nextRetryAt: update.nextRetryAt,
    etag: update.etag,
    uploadedAt: update.uploadedAt,
    digest: digestOf(update),
    updatedAt: now,
  };
}

/**
 * What a record no S3 event has reached yet (revision 0) says, from its
 * greatest report. Every field is named, absent ones as undefined, so a
 * patch clears what the newer report no longer says.
 */
function provisionalFields(update: UploadUpdate) {
  const written = update.status === "available";
  const checksums =
    written &&
    (update.checksumSha256 !== undefined ||
      update.checksumCrc64nvme !== undefined)
      ? { sha256: update.checksumSha256, crc64nvme: update.checksumCrc64nvme }
      : undefined;
  return {
    status: update.status as UploadStatus,
    size: written ? (update.size ?? update.bytesTotal) : undefined,
    etag: written ? update.etag : undefined,
    versionId: written ? update.versionId : undefined,
    checksums,
    contentType: update.contentType,
    sessionId: update.sessionId,
    sceneId: update.sceneId,
    version: update.version,
    kind: update.kind,
    error:
      update.status === "failed"
        ? (update.error ?? "upload failed")
        : undefined,
    deletedAt: undefined,
  };
}

/** Sessions' summary deltas of one mutation, by session id. */
export type Deltas = Map<string, Summary>;

function track(
  deltas: Deltas,
  before: Doc<"assets"> | null,
  after: Omit<Doc<"assets">, "_creationTime">,
): void {
  if (before?.sessionId !== undefined) {
    count(deltaFor(deltas, before.sessionId), stateOf(before), -1);
  }
  if (after.sessionId !== undefined) {
    count(deltaFor(deltas, after.sessionId), stateOf(after), +1);
  }
}

/**
 * Applies one normalised update to its record (upsert by bucket and key):
 * only when it is ahead of the report the record holds (U1–U5); the status
 * and object fields move only while no S3 event has (rule S).
 */
export async function applyUpdate(
  ctx: MutationCtx,
  runId: string,
  update: UploadUpdate,
  now: number,
  deltas: Deltas,
): Promise<UploadVerdict> {
  const asset = await ctx.db
    .query("assets")
    .withIndex("by_bucket_key", (q) =>
      q.eq("bucket", update.bucket).eq("key", update.key),
    )
    .unique();
  const upload = stateFrom(runId, update, now);
  const verdict = judgeUpload(
    asset?.upload === undefined ? null : positionOf(asset.upload),
    positionOf(upload),
  );
  if (verdict !== "applied") return verdict;

  if (asset === null) {
    const fields = {
      bucket: update.bucket,
      key: update.key,
      ...provisionalFields(update),
      upload,
      // Placeholders until an S3 event gives the record a position.
      eventTime: now,
      lastEventName: UPLOAD_EVENT_NAME,
      lastEvent: { type: "created" as const },
      revision: 0,
      createdAt: now,
      updatedAt: now,
    };
    const assetId = await ctx.db.insert("assets", fields);
    track(deltas, null, { ...fields, _id: assetId });
    return verdict;
  }
  const fields =
    asset.revision === 0
      ? { ...provisionalFields(update), upload, updatedAt: now }
      : { upload, updatedAt: now };
  await ctx.db.patch("assets", asset._id, fields);
  track(deltas, asset, { ...asset, ...fields });
  return verdict;
}

/**
 * Marks a stalled upload failed (R6.2). Only records no S3 event has
 * reached are `uploading`, so the status is the upload's to change.
 */
export async function failStalled(
  ctx: MutationCtx,
  asset: Doc<"assets">,
  now: number,
  deltas: Deltas,
): Promise<void> {
  const previous = asset.upload!;
  const content: ReportContent = {
    bytesTotal: previous.bytesTotal,
    error: STALLED_ERROR,
    contentType: asset.contentType,
    sessionId: asset.sessionId,
    sceneId: asset.sceneId,
    version: asset.version,
    kind: asset.kind,
  };
  const upload: UploadState = {
    ...previous,
    status: "failed",
    error: STALLED_ERROR,
    nextRetryAt: undefined,
    digest: digestOf(content),
    updatedAt: now,
  };
  const fields = {
    status: "failed" as const,
    error: STALLED_ERROR,
    upload,
    updatedAt: now,
  };
  await ctx.db.patch("assets", asset._id, fields);
  track(deltas, asset, { ...asset, ...fields });
}
