/**
 * Asset records: one per (bucket, key), moved forward by S3 events.
 *
 * `applyEvents` is the only writer of what S3 says (`uploads:report` writes
 * the uploader's side, `upload`, and a record's status before S3 has said
 * anything: ./ordering.ts, rule S). It is idempotent because HTTP mutations
 * carry no idempotency key and SQS redelivers: replaying a batch finds every
 * event at or behind its record's position and writes nothing.
 *
 * All functions but `view` are internal: the sync service calls them with a
 * deploy key. `view` is the web app's, and answers only a caller who may
 * read the asset (convex/PUBLIC_API.md).
 */
import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { ConvexError, Infer, ObjectType, v } from "convex/values";
import { Doc, Id } from "./_generated/dataModel";
import {
  MutationCtx,
  internalMutation,
  internalQuery,
  query,
} from "./_generated/server";
import {
  MAX_BATCH_EVENTS,
  S3Event,
  findProblem,
  s3EventValidator,
} from "./events";
import {
  assetProblem,
  bounded,
  mapPage,
  problemOf,
  readableAsset,
  role,
  roleOf,
} from "./model/public";
import { BatchChanges, stateOf } from "./model/sessions";
import { trackChanges } from "./model/tracking";
import { EventPosition, judge } from "./ordering";
import { readerTtlMs, shownUrl } from "./model/urlPolicy";
import schema, {
  assetStatus,
  checksums,
  eventType,
  objectFields,
} from "./schema";

export const applyResultValidator = v.object({
  status: v.union(
    v.literal("applied"),
    v.literal("stale"),
    v.literal("duplicate"),
    v.literal("error"),
  ),
  reason: v.optional(v.string()),
  assetId: v.optional(v.id("assets")),
});

export type ApplyResult = Infer<typeof applyResultValidator>;

const assetDoc = schema.doc("assets");
const versionDoc = schema.doc("assetVersions");

export const MAX_HISTORY = 1_000;

/** Applies S3 events in order; one result per event, in input order. */
export const applyEvents = internalMutation({
  // `commit`: the caller's id for this mutation, kept in each history row
  // it writes (at most 256 characters; the sync service logs it per flush).
  args: { events: v.array(s3EventValidator), commit: v.optional(v.string()) },
  returns: v.array(applyResultValidator),
  handler: async (ctx, { events, commit }) => {
    if (events.length > MAX_BATCH_EVENTS) {
      throw new ConvexError({
        code: "BatchTooLarge",
        max: MAX_BATCH_EVENTS,
        got: events.length,
      });
    }
    const now = Date.now();
    const results: ApplyResult[] = [];
    const changes: BatchChanges = { applied: [], staleCreated: [] };
    // Sequential on purpose: a later event for the same key must see what the
    // earlier one wrote.
    for (const event of events) {
      const problem = findProblem(event);
      results.push(
        problem === null
          ? await applyOne(ctx, event, now, changes, commit?.slice(0, 256))
          : { status: "error", reason: problem },
      );
    }
    // Sessions, scenes and summaries move in the same transaction, once per batch.
    await trackChanges(ctx, changes, now);
    return results;
  },
});

async function applyOne(
  ctx: MutationCtx,
  event: S3Event,
  now: number,
  changes: BatchChanges,
  commit?: string,
): Promise<ApplyResult> {
  const asset = await ctx.db
    .query("assets")
    .withIndex("by_bucket_key", (q) =>
      q.eq("bucket", event.bucket).eq("key", event.key),
    )
    .unique();

  let assetId: Id<"assets">;
  let revision: number;
  if (asset === null) {
    revision = 1;
    const fields = {
      bucket: event.bucket,
      key: event.key,
      ...objectFieldsOf(event),
      ...(event.type === "created"
        ? { ...available(), ...urlErrorOf(event, null) }
        : tombstone(event)),
      ...positionOf(event, now),
      revision,
      createdAt: now,
    };
    assetId = await ctx.db.insert("assets", fields);
    changes.applied.push({
      before: null,
      after: stateOf({ ...fields, _id: assetId }),
    });
  } else {
    // The S3 removal event of our own cleanup (convex/lifecycle.ts), after
    // the tombstone it wrote: a duplicate, so history holds one removal.
    const cleaned =
      asset.status === "deleted" &&
      asset.deleteReason !== undefined &&
      event.type === "removed";
    const verdict = cleaned
      ? "duplicate"
      : judge(recordPosition(asset), eventPosition(event));
    if (verdict !== "applied") {
      // A version's history still learns that this file existed then.
      if (verdict === "stale" && event.type === "created")
        changes.staleCreated.push(event);
      return { status: verdict, assetId: asset._id };
    }
    revision = asset.revision + 1;
    const fields = {
      // A removal keeps the last known metadata so the UI can show what went.
      ...(event.type === "created"
        ? {
            ...objectFieldsOf(event),
            ...available(),
            ...urlErrorOf(event, asset),
          }
        : tombstone(event)),
      ...positionOf(event, now),
      revision,
    };
    await ctx.db.patch("assets", asset._id, fields);
    assetId = asset._id;
    changes.applied.push({
      before: stateOf(asset),
      after: stateOf({ ...asset, ...fields }),
    });
  }

  await ctx.db.insert("assetVersions", {
    assetId,
    revision,
    bucket: event.bucket,
    key: event.key,
    type: event.type,
    eventName: event.eventName,
    eventTime: event.eventTime,
    sequencer: event.sequencer,
    size: event.size,
    etag: event.etag,
    versionId: event.versionId,
    contentType: event.contentType,
    source: event.source,
    correlation: event.correlation,
    commit,
    appliedAt: now,
  });
  return { status: "applied", assetId };
}

type ObjectFields = ObjectType<typeof objectFields>;
const OBJECT_FIELD_NAMES = Object.keys(objectFields) as (keyof ObjectFields)[];

// Every object field is named, absent ones as undefined, so a patch clears
// what the new object no longer has instead of mixing two objects.
function objectFieldsOf(event: S3Event): ObjectFields {
  return Object.fromEntries(
    OBJECT_FIELD_NAMES.map((name) => [name, event[name]]),
  ) as ObjectFields;
}

function available() {
  return {
    status: "available" as const,
    deletedAt: undefined,
    error: undefined,
    urlError: undefined,
    // A new object at the key ends any lifecycle of the old one
    // (convex/LIFECYCLE.md): the worker never removes a non-pending record.
    deletedBy: undefined,
    deleteReason: undefined,
    cleanup: undefined,
    missingSince: undefined,
  };
}

// No URL could be made for this write: keep the last good one (same key, so
// it still reaches the object) and say why it was not renewed.
function urlErrorOf(event: S3Event, asset: Doc<"assets"> | null) {
  if (event.url !== undefined || event.urlError === undefined) return {};
  const kept = asset?.status === "available" ? asset : undefined;
  return {
    url: kept?.url,
    urlExpiresAt: kept?.urlExpiresAt,
    urlConfig: kept?.urlConfig,
    urlError: event.urlError,
  };
}

function tombstone(event: S3Event) {
  return {
    status: "deleted" as const,
    deletedAt: event.eventTime,
    // An upload's failure says nothing about a deleted object.
    error: undefined,
    // A link to a deleted object only leads to a 404.
    url: undefined,
    urlExpiresAt: undefined,
    urlConfig: undefined,
  };
}

function positionOf(event: S3Event, now: number) {
  return {
    sequencer: event.sequencer,
    eventTime: event.eventTime,
    lastEventName: event.eventName,
    lastEvent: {
      type: event.type,
      etag: event.etag,
      size: event.size,
      versionId: event.versionId,
    },
    updatedAt: now,
  };
}

function eventPosition(event: S3Event): EventPosition {
  const { type, eventTime, sequencer, etag, size, versionId } = event;
  return { type, eventTime, sequencer, etag, size, versionId };
}

// Revision 0: only the uploader has written the record (convex/uploads.ts).
// It holds no S3 position, so the first S3 event for the key applies over it
// and is its first history version (rule S in ./ordering.ts).
function recordPosition(asset: Doc<"assets">): EventPosition | null {
  if (asset.revision === 0) return null;
  return {
    ...asset.lastEvent,
    eventTime: asset.eventTime,
    sequencer: asset.sequencer,
  };
}

export const getByKey = internalQuery({
  args: { bucket: v.string(), key: v.string() },
  returns: v.union(assetDoc, v.null()),
  handler: (ctx, { bucket, key }) =>
    ctx.db
      .query("assets")
      .withIndex("by_bucket_key", (q) => q.eq("bucket", bucket).eq("key", key))
      .unique(),
});

/** Applied changes for a key, newest first (default 50, at most MAX_HISTORY). */
export const history = internalQuery({
  args: { bucket: v.string(), key: v.string(), limit: v.optional(v.number()) },
  returns: v.array(versionDoc),
  handler: (ctx, { bucket, key, limit = 50 }) => {
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_HISTORY) {
      throw new ConvexError({ code: "BadLimit", max: MAX_HISTORY });
    }
    return ctx.db
      .query("assetVersions")
      .withIndex("by_bucket_key", (q) => q.eq("bucket", bucket).eq("key", key))
      .order("desc")
      .take(limit);
  },
});

const assetPage = paginationResultValidator(assetDoc);

export const listBySession = internalQuery({
  args: { sessionId: v.string(), paginationOpts: paginationOptsValidator },
  returns: assetPage,
  handler: (ctx, { sessionId, paginationOpts }) =>
    ctx.db
      .query("assets")
      .withIndex("by_session", (q) => q.eq("sessionId", sessionId))
      .paginate(paginationOpts),
});

export const listByStatus = internalQuery({
  args: { status: assetStatus, paginationOpts: paginationOptsValidator },
  returns: assetPage,
  handler: (ctx, { status, paginationOpts }) =>
    ctx.db
      .query("assets")
      .withIndex("by_status", (q) => q.eq("status", status))
      .paginate(paginationOpts),
});

/** A bucket's records in key order, optionally under a key prefix. */
export const listByBucket = internalQuery({
  args: {
    bucket: v.string(),
    prefix: v.optional(v.string()),
    paginationOpts: paginationOptsValidator,
  },
  returns: assetPage,
  handler: (ctx, { bucket, prefix = "", paginationOpts }) => {
    const end = prefixEnd(prefix);
    return ctx.db
      .query("assets")
      .withIndex("by_bucket_key", (q) => {
        const inBucket = q.eq("bucket", bucket);
        if (prefix === "") return inBucket;
        const fromPrefix = inBucket.gte("key", prefix);
        return end === null ? fromPrefix : fromPrefix.lt("key", end);
      })
      .paginate(paginationOpts);
  },
});

/**
 * The least string greater than every string starting with `prefix`, or null
 * when there is none. Convex orders strings by UTF-8 bytes, i.e. by code
 * point, so `prefix + "\uffff"` would cut off keys continuing with an emoji
 * or any other character beyond the BMP.
 */
export function prefixEnd(prefix: string): string | null {
  const codePoints = Array.from(prefix);
  while (codePoints.length > 0) {
    const last = codePoints.pop()!.codePointAt(0)!;
    if (last < 0x10ffff) {
      // Surrogates cannot appear in a UTF-8 string; step over them.
      const next = last + 1 === 0xd800 ? 0xe000 : last + 1;
      return codePoints.join("") + String.fromCodePoint(next);
    }
  }
  return null;
}

// --- public ---------------------------------------------------------------

/** An asset as its reader sees it: no bucket, no delivery ids, no raw error text. */
const publicAsset = v.object({
  assetId: v.id("assets"),
  key: v.string(),
  status: assetStatus,
  kind: v.optional(v.string()),
  sessionId: v.optional(v.string()),
  sceneId: v.optional(v.string()),
  version: v.optional(v.number()),
  size: v.optional(v.number()),
  etag: v.optional(v.string()),
  contentType: v.optional(v.string()),
  versionId: v.optional(v.string()),
  metadata: v.optional(v.record(v.string(), v.string())),
  checksums: v.optional(checksums),
  revision: v.number(),
  eventTime: v.number(),
  createdAt: v.number(),
  updatedAt: v.number(),
  // As on `sessions:sceneView`: the stored URL only when it may be handed to
  // this reader; otherwise "request" (ask `access:requestUrl`).
  urlState: v.union(v.literal("ready"), v.literal("request")),
  url: v.optional(v.string()),
  urlExpiresAt: v.optional(v.number()),
  error: v.optional(assetProblem),
});

const publicVersion = v.object({
  revision: v.number(),
  type: eventType,
  eventName: v.string(),
  eventTime: v.number(),
  size: v.optional(v.number()),
  etag: v.optional(v.string()),
  versionId: v.optional(v.string()),
  contentType: v.optional(v.string()),
  appliedAt: v.number(),
});

function publicVersionOf(row: Doc<"assetVersions">) {
  const { revision, type, eventName, eventTime, size, etag } = row;
  const { versionId, contentType, appliedAt } = row;
  return {
    revision,
    type,
    eventName,
    eventTime,
    size,
    etag,
    versionId,
    contentType,
    appliedAt,
  };
}

/**
 * One asset and a page of its history (newest change first), for the owner
 * of its session or a grantee of the session or of the asset. The page
 * fields are at the top level (`usePaginatedQuery` pages the history).
 *
 * Throws ConvexError `forbidden` (no identity: `reason: "unauthenticated"`;
 * no permission, or no such asset) or `gone` with `deletedAt`.
 *
 * Worst case: 5 index ranges (asset, session, session grant, asset grant,
 * history); 1 asset (≤ 7 KB) + the caller's grants + MAX_PAGE_ROWS history
 * rows (~1.3 KB: a 1 KB key) ≈ 0.3 MB. Measured for a page of 100 with the
 * largest rows: 0.14 MB, 108 documents (tests/convex/publicLimits.test.ts).
 */
export const view = query({
  args: { assetId: v.id("assets"), paginationOpts: paginationOptsValidator },
  returns: v.object({
    ...paginationResultValidator(publicVersion).fields,
    asset: publicAsset,
    role,
  }),
  handler: async (ctx, { assetId, paginationOpts }) => {
    const now = Date.now();
    const { asset, permission } = await readableAsset(ctx, assetId, now);
    const grantEnd =
      permission.via === "grant" ? permission.expiresAt : undefined;
    const history = await ctx.db
      .query("assetVersions")
      .withIndex("by_asset", (q) => q.eq("assetId", asset._id))
      .order("desc")
      .paginate(bounded(paginationOpts));
    return {
      ...mapPage(history, publicVersionOf),
      asset: {
        assetId: asset._id,
        key: asset.key,
        status: asset.status,
        kind: asset.kind,
        sessionId: asset.sessionId,
        sceneId: asset.sceneId,
        version: asset.version,
        size: asset.size,
        etag: asset.etag,
        contentType: asset.contentType,
        versionId: asset.versionId,
        metadata: asset.metadata,
        checksums: asset.checksums,
        revision: asset.revision,
        eventTime: asset.eventTime,
        createdAt: asset.createdAt,
        updatedAt: asset.updatedAt,
        ...(asset.status === "available"
          ? shownUrl(
              asset,
              now,
              readerTtlMs(asset.kind, now, undefined, grantEnd),
            )
          : { urlState: "request" as const }),
        error: problemOf(asset),
      },
      role: roleOf(permission),
    };
  },
});
