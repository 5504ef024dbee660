import { defineSchema, defineTable } from "convex/server";
import { v } from "convex/values";

export const assetStatus = v.union(
  v.literal("available"),
  v.literal("deleted"),
  v.literal("failed"),
  // Known only from the uploader (convex/uploads.ts): no S3 event yet.
  v.literal("pending"),
  v.literal("uploading"),
  // Lifecycle (convex/LIFECYCLE.md): marked for removal from S3 (a session
  // deleted, or an obsolete scene version), given up on after
  // CLEANUP_MAX_ATTEMPTS, or available in Convex but not in S3.
  v.literal("cleanup_pending"),
  v.literal("cleanup_failed"),
  v.literal("missing"),
);

/** Why an asset or session is on its way out of S3 (convex/LIFECYCLE.md). */
export const cleanupCause = v.union(
  v.literal("session"),
  v.literal("retention"),
);

/**
 * An asset's removal from S3: when it may happen (`nextAttemptAt`: the end
 * of the grace period, then the backoff after a failure), how often it was
 * tried, and what it was before, for `sessions:restore`.
 */
export const cleanupState = v.object({
  cause: cleanupCause,
  requestedAt: v.number(),
  graceUntil: v.number(),
  attempts: v.number(),
  nextAttemptAt: v.number(),
  lastError: v.optional(v.string()),
  previousStatus: v.string(),
  // The cleanup run that removed it (`cleanupRuns.runId`).
  runId: v.optional(v.string()),
});

/** Where a session's deletion is (progress on the session record). */
export const sessionDeletion = v.object({
  // marking: pages of assets still being marked; pending: all marked, the
  // worker removes them once the grace has passed; deleted: none left;
  // restoring / restored: `sessions:restore` ran.
  state: v.union(
    v.literal("marking"),
    v.literal("pending"),
    v.literal("deleted"),
    v.literal("restoring"),
    v.literal("restored"),
  ),
  requestedAt: v.number(),
  graceUntil: v.number(),
  // Assets marked (or restored) so far, and the page cursor to go on from.
  marked: v.number(),
  restored: v.optional(v.number()),
  cursor: v.optional(v.string()),
  // Bumped by every delete/restore: a continuation of an older one stops.
  generation: v.number(),
});

/** Where the uploader says one file is (convex/uploads.ts, convex/UPLOADS.md). */
export const uploadStatus = v.union(
  v.literal("pending"),
  v.literal("uploading"),
  v.literal("available"),
  v.literal("failed"),
);

/**
 * The latest upload report an asset accepted: the uploader's own position,
 * kept apart from the S3 position (`sequencer`, `eventTime`, `lastEvent`).
 * Small on purpose: it rides on every asset read of `applyEvents`.
 */
export const uploadState = v.object({
  // One run id per upload_dir (R9.1): the run that reported this file last.
  runId: v.string(),
  attempt: v.number(),
  status: uploadStatus,
  bytesSent: v.number(),
  bytesTotal: v.number(),
  // Why the attempt failed (at most MAX_UPLOAD_ERROR characters) and when
  // the uploader will try again (R3.3).
  error: v.optional(v.string()),
  nextRetryAt: v.optional(v.number()),
  // What the uploader says it wrote (its `available` report).
  etag: v.optional(v.string()),
  uploadedAt: v.optional(v.number()),
  // Orders two reports equal in everything above (convex/ordering.ts).
  digest: v.string(),
  // Convex's time of the last accepted report: what `uploads:sweepStale` ages.
  updatedAt: v.number(),
});

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

/** What caused an applied event; each id at most 256 characters (convex/events.ts). */
export const correlationValidator = v.object({
  // x-amz-request-id and x-amz-id-2 from the S3 record's responseElements.
  s3RequestId: v.optional(v.string()),
  s3HostId: v.optional(v.string()),
  sqsMessageId: v.optional(v.string()),
  // The uploader's run (x-amz-meta-s3convex-run-id), when it wrote the object.
  uploadRunId: v.optional(v.string()),
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
  // Which URL configuration made `url` (R8.3), as the sync service names it:
  // e.g. "public:https://cdn.example" or "presigned:3600". Absent: unknown
  // (a record older than this field, or no URL). `urls:outOfConfig` lists
  // the records whose value is not the current one.
  urlConfig: v.optional(v.string()),
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
/** A cleanup run as its worker reports it (`lifecycle:recordRun`'s arguments). */
export const cleanupRunFields = {
  runId: v.string(),
  operator: v.string(),
  host: v.optional(v.string()),
  dryRun: v.boolean(),
  sessionId: v.optional(v.string()),
  status: v.union(
    v.literal("running"),
    v.literal("completed"),
    v.literal("failed"),
  ),
  examined: v.number(),
  deleted: v.number(),
  bytesDeleted: v.number(),
  failed: v.number(),
  gaveUp: v.number(),
  skipped: v.number(),
  // The first few failures, key and S3's code.
  errors: v.array(v.object({ key: v.string(), code: v.string() })),
  error: v.optional(v.string()),
};

export const appliedEvent = v.object({
  type: eventType,
  etag: v.optional(v.string()),
  size: v.optional(v.number()),
  versionId: v.optional(v.string()),
});

/** Counts by status over a session's assets, kept by applyEvents (R3.4). */
export const sessionSummary = v.object({
  available: v.number(),
  deleted: v.number(),
  failed: v.number(),
  // Optional only for summaries written before uploads existed; every write
  // since fills them (convex/model/sessions.ts).
  pending: v.optional(v.number()),
  uploading: v.optional(v.number()),
  // Lifecycle statuses (convex/LIFECYCLE.md); absent on older summaries.
  cleanup_pending: v.optional(v.number()),
  cleanup_failed: v.optional(v.number()),
  missing: v.optional(v.number()),
  // Available assets only.
  bytes: v.number(),
  byKind: v.record(v.string(), v.number()),
  scenes: v.number(),
  lastEventAt: v.optional(v.number()),
  // Upload progress over the assets the uploader reported on, deleted ones
  // left out: done = available (convex/UPLOADS.md).
  filesDone: v.optional(v.number()),
  filesTotal: v.optional(v.number()),
  bytesDone: v.optional(v.number()),
  bytesTotal: v.optional(v.number()),
});

/**
 * A scene's pointer to one of its current version's files. The URL stays on
 * the asset (one copy, kept fresh by the refresher); `sessions:scene` joins it.
 */
export const sceneFile = v.object({
  assetId: v.id("assets"),
  key: v.string(),
  // Picks among several files of one kind: the latest written wins.
  eventTime: v.number(),
});

export const sceneFiles = v.object({
  video: v.optional(sceneFile),
  source: v.optional(sceneFile),
  metadata: v.optional(sceneFile),
  manifest: v.optional(sceneFile),
  thumbnail: v.optional(sceneFile),
  subtitle: v.optional(sceneFile),
});

/** An upload_dir of a scene version as the uploader reported it (`uploads:setManifest`). */
export const sceneUpload = v.object({
  version: v.number(),
  runId: v.string(),
  // The version's manifest.json (R5.3).
  manifest: v.object({ bucket: v.string(), key: v.string() }),
  updatedAt: v.number(),
});

/** One version of a scene as history keeps it (times are S3 event times). */
export const sceneVersion = v.object({
  version: v.number(),
  firstSeenAt: v.number(),
  lastSeenAt: v.number(),
});

export const auditAction = v.union(
  v.literal("read"),
  v.literal("grant"),
  v.literal("revoke"),
  v.literal("setOwner"),
);

export const auditOutcome = v.union(
  v.literal("granted"),
  v.literal("denied"),
  v.literal("gone"),
  v.literal("not_found"),
  v.literal("unavailable"),
  v.literal("done"),
  // Allowed, but no URL could be handed out yet: a signing request was
  // recorded for the sync service (`access:requestUrl`, `urlRequests`).
  v.literal("pending"),
);

/** Where an audited decision came from. */
export const auditChannel = v.union(
  // The sync service with the deploy key: the principal is its claim.
  v.literal("internal"),
  // The public API: the principal is the verified JWT's tokenIdentifier.
  v.literal("public"),
);

export const urlRequestStatus = v.union(
  v.literal("pending"),
  // Signed: `url` holds a URL made for this request.
  v.literal("done"),
  // Signing failed (the reason stays internal, in `error`).
  v.literal("failed"),
  // The asset was deleted before it could be signed.
  v.literal("gone"),
);

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
    // Who asked for the removal and why ("session deleted", "retention"),
    // and the cleanup's progress (convex/LIFECYCLE.md).
    deletedBy: v.optional(v.string()),
    deleteReason: v.optional(v.string()),
    cleanup: v.optional(cleanupState),
    // When S3 was seen not to hold an object Convex thought available.
    missingSince: v.optional(v.number()),
    error: v.optional(v.string()),
    // What the uploader last reported (convex/uploads.ts). `revision` 0: no
    // S3 event applied yet, the position fields above are placeholders and
    // `status` is the upload's.
    upload: v.optional(uploadState),
  })
    .index("by_bucket_key", ["bucket", "key"])
    .index("by_session", ["sessionId"])
    .index("by_session_status", ["sessionId", "status"])
    .index("by_status", ["status"])
    // A scene's files, every version (convex/sessions.ts).
    .index("by_scene", ["sessionId", "sceneId", "version"])
    // Stored presigned URLs by expiry, for the refresher (convex/urls.ts).
    .index("by_url_expiry", ["bucket", "urlExpiresAt"])
    // Available records by the URL configuration that made their URL, for
    // the sweep that brings them in line after a change (R8.3, convex/urls.ts).
    .index("by_url_config", ["bucket", "status", "urlConfig"])
    // Uploads by the time of their last progress, for `uploads:sweepStale`.
    .index("by_upload_progress", ["status", "upload.updatedAt"])
    // Pending removals by when they are due, overall and per session
    // (convex/lifecycle.ts).
    .index("by_cleanup_due", ["bucket", "status", "cleanup.nextAttemptAt"])
    .index("by_session_cleanup_due", [
      "sessionId",
      "status",
      "cleanup.nextAttemptAt",
    ]),

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
    // What caused it (S3 request, SQS message, upload run) and the mutation
    // that committed it, for `s3convex trace` (convex/trace.ts).
    correlation: v.optional(correlationValidator),
    commit: v.optional(v.string()),
    appliedAt: v.number(),
  })
    .index("by_asset", ["assetId", "revision"])
    .index("by_bucket_key", ["bucket", "key", "revision"]),

  // One per session, created on first sight of any of its keys; its summary
  // is rewritten once per applyEvents batch (convex/sessions.ts).
  videoSessions: defineTable({
    sessionId: v.string(),
    // Who may read every asset of the session (convex/access.ts).
    ownerId: v.optional(v.string()),
    // The latest upload run that reported on the session (convex/uploads.ts).
    runId: v.optional(v.string()),
    summary: sessionSummary,
    // Set by `sessions:delete` (cleared by `sessions:restore`): the public
    // API answers `gone` from then on (convex/LIFECYCLE.md).
    deletedAt: v.optional(v.number()),
    deletedBy: v.optional(v.string()),
    deleteReason: v.optional(v.string()),
    deletion: v.optional(sessionDeletion),
    createdAt: v.number(),
    updatedAt: v.number(),
  })
    .index("by_session", ["sessionId"])
    .index("by_owner", ["ownerId"]),

  // One per (session, scene): the current version's files, and every version
  // seen (convex/sessions.ts).
  scenes: defineTable({
    sessionId: v.string(),
    sceneId: v.string(),
    // Highest version with an available file; absent when none is left.
    currentVersion: v.optional(v.number()),
    files: sceneFiles,
    versions: v.array(sceneVersion),
    // Per version, the run that uploaded it and its manifest (newest
    // MAX_SCENE_VERSIONS; `uploads:setManifest`).
    uploads: v.optional(v.array(sceneUpload)),
    createdAt: v.number(),
    updatedAt: v.number(),
  }).index("by_session_scene", ["sessionId", "sceneId"]),

  // Read access beyond the session's owner (convex/access.ts): a whole
  // session, or one asset.
  grants: defineTable({
    principal: v.string(),
    sessionId: v.optional(v.string()),
    bucket: v.optional(v.string()),
    key: v.optional(v.string()),
    grantedBy: v.string(),
    createdAt: v.number(),
    expiresAt: v.optional(v.number()),
    revokedAt: v.optional(v.number()),
    revokedBy: v.optional(v.string()),
    // Set by the scheduled `access:expireGrant` at `expiresAt`: the write
    // makes every subscribed query that read this grant run again, so an
    // expired grant stops showing data without waiting for another change.
    expiredAt: v.optional(v.number()),
  })
    .index("by_principal_session", ["principal", "sessionId"])
    .index("by_principal_asset", ["principal", "bucket", "key"]),

  // Every access decision and every change to who may read (convex/access.ts).
  accessAudit: defineTable({
    action: auditAction,
    principal: v.string(),
    outcome: auditOutcome,
    reason: v.optional(v.string()),
    bucket: v.optional(v.string()),
    key: v.optional(v.string()),
    sessionId: v.optional(v.string()),
    kind: v.optional(v.string()),
    // For a granted read: which URL was handed out and until when it works.
    urlSource: v.optional(v.union(v.literal("stored"), v.literal("fresh"))),
    expiresAt: v.optional(v.number()),
    grantId: v.optional(v.id("grants")),
    // For a public read: the signing request it recorded or was served from.
    requestId: v.optional(v.id("urlRequests")),
    actor: v.optional(v.string()),
    // Absent: internal (rows written before the public API existed).
    channel: v.optional(auditChannel),
    at: v.number(),
  })
    .index("by_at", ["at"])
    .index("by_principal", ["principal", "at"])
    .index("by_asset", ["bucket", "key", "at"]),

  // URLs the web app asked for that Convex could not serve from the stored
  // one (`access:requestUrl`): the sync service, which holds the AWS
  // credentials, signs them (`urls:pendingRequests`, `urls:fulfilRequests`).
  // One row per (asset, principal), reused by later requests, so retries
  // never grow the table.
  urlRequests: defineTable({
    assetId: v.id("assets"),
    // The asset's, copied so the signer needs no second read.
    bucket: v.string(),
    key: v.string(),
    kind: v.optional(v.string()),
    principal: v.string(),
    // The longest the signed URL may live: the kind's lifetime, the caller's
    // wish and a grant's expiry, whichever is shortest.
    ttlMs: v.number(),
    status: urlRequestStatus,
    requestedAt: v.number(),
    fulfilledAt: v.optional(v.number()),
    url: v.optional(v.string()),
    urlExpiresAt: v.optional(v.number()),
    urlConfig: v.optional(v.string()),
    // Why signing failed; internal, never returned by a public function.
    error: v.optional(v.string()),
  })
    .index("by_asset_principal", ["assetId", "principal"])
    .index("by_bucket_status", ["bucket", "status", "requestedAt"]),

  // Messages the sync service sent to the DLQ, one row per key each names
  // (convex/trace.ts): the failure episodes `s3convex trace` shows.
  deadLetters: defineTable({
    bucket: v.string(),
    key: v.string(),
    sqsMessageId: v.string(),
    // The DLQ's id for the copy; `replayRuns.movedIds[].from` when replayed.
    dlqMessageId: v.optional(v.string()),
    s3RequestId: v.optional(v.string()),
    reason: v.string(),
    receiveCount: v.number(),
    failedAt: v.number(),
  })
    .index("by_bucket_key", ["bucket", "key", "failedAt"])
    // A retried write finds its row here (convex/trace.ts).
    .index("by_message", ["sqsMessageId", "bucket", "key"]),

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

  // Audit trail of cleanup runs (the daemon's worker, `s3convex cleanup`),
  // one row per run (convex/lifecycle.ts).
  cleanupRuns: defineTable({
    ...cleanupRunFields,
    startedAt: v.number(),
    finishedAt: v.optional(v.number()),
  })
    .index("by_run_id", ["runId"])
    .index("by_started_at", ["startedAt"]),
});
