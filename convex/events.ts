/**
 * The event shape the sync service sends to `assets:applyEvents`, already
 * decoded from S3's notification record (keys URL-decoded, times in ms).
 *
 * The argument validator rejects a malformed batch as a whole; `findProblem`
 * catches what a validator cannot express, per event, so one bad record
 * never blocks the others.
 */
import { Infer, v } from "convex/values";
import { correlationValidator, eventType, objectFields } from "./schema";

/**
 * The caller splits larger batches; this keeps a worst-case batch inside a
 * mutation's limits with headroom: 800 of the largest events over records
 * carrying the largest upload state read ~80% of the 16 MiB limit and use
 * 1,600 of 4,096 index ranges (tests/convex/uploadsLimits.test.ts,
 * limits.test.ts). At 1,000 the same batch read 15.96 MB: too close.
 * The correlation ids count toward MAX_EVENT_BYTES and land in history only:
 * with all four at their longest the worst batch reads 9.4 MiB and writes
 * 6.7 MiB (6.6 without), tests/convex/trace.test.ts.
 */
export const MAX_BATCH_EVENTS = 800;

/**
 * Largest event accepted, as UTF-8 JSON. Typical events are 1–3 KB; a long
 * non-ASCII key inside a presigned URL with a session token can approach 8.
 * The bound keeps MAX_BATCH_EVENTS worst-case events under the 16 MiB read
 * limit, since an update reads its record twice (lookup and patch):
 * measured, 1,000 updates at this size read 14.4 MB (so 800 read ~11.5 MB).
 */
export const MAX_EVENT_BYTES = 7 * 1024;

/** A URL configuration's name is a short label, not a document. */
export const MAX_URL_CONFIG_LENGTH = 256;

/** Each correlation id: S3's request ids are 16 and ~76 characters, SQS's 36. */
export const MAX_CORRELATION_ID_LENGTH = 256;

/** S3's own limit on a key. */
export const MAX_KEY_BYTES = 1024;

// Anything below this is seconds, not milliseconds (1e11 ms is March 1973).
const MIN_EVENT_TIME_MS = 1e11;

export const s3EventValidator = v.object({
  type: eventType,
  bucket: v.string(),
  key: v.string(),
  eventName: v.string(),
  eventTime: v.number(),
  sequencer: v.optional(v.string()),
  ...objectFields,
  // Why no URL could be made; the record keeps its last good URL (R1.5).
  urlError: v.optional(v.string()),
  // The record's eventSource ("aws:s3", "minio:s3"); lands in history.
  source: v.optional(v.string()),
  // What caused the event, kept in its history row for `s3convex trace`.
  correlation: v.optional(correlationValidator),
});

export type S3Event = Infer<typeof s3EventValidator>;

const utf8 = new TextEncoder();

/** Why this event cannot be applied, or null when it can. */
export function findProblem(event: S3Event): string | null {
  if (event.bucket === "") return "bucket is empty";
  if (event.key === "") return "key is empty";
  if (utf8.encode(event.key).length > MAX_KEY_BYTES) {
    return `key is longer than ${MAX_KEY_BYTES} bytes`;
  }
  if (event.eventName === "") return "eventName is empty";
  // Catches a mapping bug upstream; other names (LifecycleExpiration:*,
  // ObjectRestore:*) are the caller's to classify.
  if (
    (event.type === "created" && event.eventName.includes("ObjectRemoved")) ||
    (event.type === "removed" && event.eventName.includes("ObjectCreated"))
  ) {
    return `eventName ${event.eventName} contradicts type ${event.type}`;
  }
  if (!Number.isFinite(event.eventTime) || event.eventTime < 0) {
    return "eventTime is not a time";
  }
  if (event.eventTime < MIN_EVENT_TIME_MS) {
    return "eventTime looks like seconds; expected milliseconds since epoch";
  }
  if (
    event.sequencer !== undefined &&
    !/^[0-9A-Fa-f]+$/.test(event.sequencer)
  ) {
    return "sequencer is not hexadecimal";
  }
  if (event.type === "created" && event.size === undefined) {
    return "created event without size";
  }
  if (
    event.size !== undefined &&
    !(Number.isSafeInteger(event.size) && event.size >= 0)
  ) {
    return "size is not a non-negative integer";
  }
  if (
    event.urlConfig !== undefined &&
    (event.urlConfig === "" || event.urlConfig.length > MAX_URL_CONFIG_LENGTH)
  ) {
    return `urlConfig is empty or longer than ${MAX_URL_CONFIG_LENGTH} characters`;
  }
  for (const field of ["urlExpiresAt", "version"] as const) {
    const value = event[field];
    if (value !== undefined && !Number.isFinite(value)) {
      return `${field} is not a finite number`;
    }
  }
  for (const [name, value] of Object.entries(event.correlation ?? {})) {
    if (value !== undefined && (value === "" || value.length > MAX_CORRELATION_ID_LENGTH)) {
      return `correlation.${name} is empty or longer than ${MAX_CORRELATION_ID_LENGTH} characters`;
    }
  }
  // The correlation counts toward this bound: a worst-case batch does not grow.
  if (utf8.encode(JSON.stringify(event)).length > MAX_EVENT_BYTES) {
    return `event is larger than ${MAX_EVENT_BYTES} bytes`;
  }
  return null;
}
