import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export const assetStatus = v.union(
  v.literal("available"),
  v.literal("deleted"),
  v.literal("failed"),
);

export const eventType = v.union(v.literal("created"), v.literal("removed"));

export const etagKind = v.union(
  v.literal("md5"),
  v.literal("multipart"),
  v.literal("unknown"),
);

export const checksums = v.object({
  sha256: v.optional(v.string()),
  sha1: v.optional(v.string()),
  crc32: v.optional(v.string()),
  crc32c: v.optional(v.string()),
  crc64nvme: v.optional(v.string()),
});

export const encryption = v.object({
  sse: v.optional(v.string()),
  kmsKeyId: v.optional(v.string()),
});

/**
 * What the object looks like according to the event that described it.
 * Shared by the event validator and the asset record, so "replace all
 * metadata" means exactly these fields.
 */
export const objectFields = {
  size: v.optional(v.number()),
  etag: v.optional(v.string()),
  etagKind: v.optional(etagKind),
  contentType: v.optional(v.string()),
  versionId: v.optional(v.string()),
  metadata: v.optional(v.record(v.string(), v.string())),
  checksums: v.optional(checksums),
  encryption: v.optional(encryption),
  storageClass: v.optional(v.string()),
  url: v.optional(v.string()),
  urlExpiresAt: v.optional(v.number()),
  sessionId: v.optional(v.string()),
  sceneId: v.optional(v.string()),
  // video/source/metadata/manifest/thumbnail/subtitle/other; kept open so the
  // classifier can grow a kind without a schema migration.
  kind: v.optional(v.string()),
  version: v.optional(v.number()),
};

/**
 * The content of the last applied event, which orders ties between events
 * at the same position. Kept apart from the object fields because a
 * tombstone keeps the deleted object's etag/size while the removal that made
 * it carried none.
 */
export const appliedEvent = v.object({
  type: eventType,
  etag: v.optional(v.string()),
  size: v.optional(v.number()),
  versionId: v.optional(v.string()),
});

export default defineSchema({
  assets: defineTable({
    bucket: v.string(),
    key: v.string(),
    status: assetStatus,
    ...objectFields,
    urlError: v.optional(v.string()),
    // Position of the last applied event: sequencer first, eventTime after.
    sequencer: v.optional(v.string()),
    eventTime: v.number(),
    lastEventName: v.string(),
    lastEvent: appliedEvent,
    // Count of applied changes; orders history without trusting clocks.
    revision: v.number(),
    createdAt: v.number(),
    updatedAt: v.number(),
    deletedAt: v.optional(v.number()),
    error: v.optional(v.string()),
  })
    .index("by_bucket_key", ["bucket", "key"])
    .index("by_session", ["sessionId"])
    .index("by_session_status", ["sessionId", "status"])
    .index("by_status", ["status"]),

  assetVersions: defineTable({
    assetId: v.id("assets"),
    revision: v.number(),
    bucket: v.string(),
    key: v.string(),
    type: eventType,
    eventName: v.string(),
    eventTime: v.number(),
    sequencer: v.optional(v.string()),
    size: v.optional(v.number()),
    etag: v.optional(v.string()),
    versionId: v.optional(v.string()),
    contentType: v.optional(v.string()),
    // Correlation with the delivery that carried the event, e.g. "sqs:<id>".
    source: v.optional(v.string()),
    appliedAt: v.number(),
  })
    .index("by_asset", ["assetId", "revision"])
    .index("by_bucket_key", ["bucket", "key", "revision"]),

  // Audit trail of `s3convex replay` runs, one row per run (convex/operations.ts).
  replayRuns: defineTable({
    runId: v.string(),
    kind: v.union(v.literal("replay"), v.literal("import")),
    status: v.union(
      v.literal("running"),
      v.literal("completed"),
      v.literal("interrupted"),
      v.literal("failed"),
    ),
    operator: v.string(),
    host: v.optional(v.string()),
    source: v.string(),
    target: v.string(),
    // What selected the messages (absent: no such filter); `file` for imports.
    filters: v.object({
      keys: v.optional(v.array(v.string())),
      events: v.optional(v.array(v.string())),
      reasons: v.optional(v.array(v.string())),
      messageIds: v.optional(v.array(v.string())),
      olderThanSeconds: v.optional(v.number()),
      newerThanSeconds: v.optional(v.number()),
      limit: v.optional(v.number()),
      ratePerSecond: v.optional(v.number()),
      file: v.optional(v.string()),
    }),
    examined: v.number(),
    selected: v.number(),
    moved: v.number(),
    sendFailed: v.number(),
    deleteFailed: v.number(),
    movedIds: v.array(v.object({ from: v.string(), to: v.string() })),
    movedIdsTruncated: v.boolean(),
    error: v.optional(v.string()),
    startedAt: v.number(),
    finishedAt: v.optional(v.number()),
  })
    .index("by_run_id", ["runId"])
    .index("by_started_at", ["startedAt"]),
});
