/**
 * Stored URLs kept valid: the refresher (`consumer/url_refresh.py`) pages
 * the assets whose presigned URL expires soon, signs new ones and writes them
 * back here.
 *
 * `store` touches URL fields only (scenes point at assets and read their URL
 * there), and only on an available asset whose stored URL is older than the
 * new one: a deleted asset is never resurrected, and a URL written meanwhile
 * by `applyEvents` (a newer object) is never replaced by an older signature.
 * A URL made under another URL configuration (`urlConfig`, R8.3) is replaced
 * whatever its expiry: after a change of configuration (presigned → public,
 * one public base → another, public → presigned) the refresher pages
 * `outOfConfig` and brings every record in line.
 *
 * `pendingRequests` / `fulfilRequests` are the sync service's side of
 * `access:requestUrl`: URLs the web app asked for that Convex could not serve
 * from the stored one, signed where the AWS credentials are.
 */
import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { ConvexError, Infer, v } from "convex/values";
import { Doc } from "./_generated/dataModel";
import {
  MutationCtx,
  internalMutation,
  internalQuery,
} from "./_generated/server";
import { MAX_URL_CONFIG_LENGTH } from "./events";

export const MAX_URL_UPDATES = 500;

export const expiringUrl = v.object({
  assetId: v.id("assets"),
  bucket: v.string(),
  key: v.string(),
  kind: v.optional(v.string()),
  urlExpiresAt: v.number(),
});

/**
 * A bucket's available assets whose stored URL expires before `before` (ms),
 * soonest first. Per bucket: each sync service signs for its own bucket.
 */
export const expiring = internalQuery({
  args: {
    bucket: v.string(),
    before: v.number(),
    paginationOpts: paginationOptsValidator,
  },
  returns: paginationResultValidator(expiringUrl),
  handler: async (ctx, { bucket, before, paginationOpts }) => {
    // A range from 0: a record without an expiry (public URL, tombstone)
    // sorts below every number and stays out.
    const page = await ctx.db
      .query("assets")
      .withIndex("by_url_expiry", (q) =>
        q
          .eq("bucket", bucket)
          .gte("urlExpiresAt", 0)
          .lt("urlExpiresAt", before),
      )
      .paginate(paginationOpts);
    return {
      ...page,
      page: page.page
        .filter((asset) => asset.status === "available")
        .map((asset) => ({
          assetId: asset._id,
          bucket: asset.bucket,
          key: asset.key,
          kind: asset.kind,
          urlExpiresAt: asset.urlExpiresAt!,
        })),
    };
  },
});

export const urlUpdate = v.union(
  v.object({
    assetId: v.id("assets"),
    url: v.string(),
    // Absent: a URL that does not expire (public base).
    urlExpiresAt: v.optional(v.number()),
    // The configuration that made it (R8.3). Absent: unknown (an older
    // sync service), which the record then says too.
    urlConfig: v.optional(v.string()),
  }),
  v.object({ assetId: v.id("assets"), urlError: v.string() }),
);
export type UrlUpdate = Infer<typeof urlUpdate>;

export const storeResult = v.union(
  v.literal("stored"),
  v.literal("error_recorded"),
  // The asset is deleted or gone: nothing written.
  v.literal("gone"),
  // The asset already holds a URL at least as fresh: nothing written.
  v.literal("newer"),
);

/** Writes refreshed URLs (or why one could not be made); one result per update. */
export const store = internalMutation({
  args: { updates: v.array(urlUpdate) },
  returns: v.array(storeResult),
  handler: async (ctx, { updates }) => {
    if (updates.length > MAX_URL_UPDATES) {
      throw new ConvexError({
        code: "BatchTooLarge",
        max: MAX_URL_UPDATES,
        got: updates.length,
      });
    }
    const now = Date.now();
    const results: Infer<typeof storeResult>[] = [];
    for (const update of updates) {
      const asset = await ctx.db.get("assets", update.assetId);
      if (asset === null || asset.status !== "available") {
        results.push("gone");
      } else if ("urlError" in update) {
        // Keep the last good URL; say why it was not renewed.
        await ctx.db.patch("assets", asset._id, {
          urlError: update.urlError,
          updatedAt: now,
        });
        results.push("error_recorded");
      } else {
        checkUrlConfig(update.urlConfig);
        results.push(await storeUrl(ctx, asset, update, now));
      }
    }
    return results;
  },
});

type SignedUrl = { url: string; urlExpiresAt?: number; urlConfig?: string };

/** Stores the URL on the available asset when it should replace the stored one. */
async function storeUrl(
  ctx: MutationCtx,
  asset: Doc<"assets">,
  signed: SignedUrl,
  now: number,
): Promise<"stored" | "newer"> {
  if (!replaces(signed, asset)) return "newer";
  await ctx.db.patch("assets", asset._id, {
    url: signed.url,
    urlExpiresAt: signed.urlExpiresAt,
    urlConfig: signed.urlConfig,
    urlError: undefined,
    updatedAt: now,
  });
  return "stored";
}

// A URL of another configuration replaces the stored one (the configuration
// changed: R8.3). Within one configuration, a URL without expiry replaces an
// expiring one (a public URL is back); between two expiring URLs the later
// expiry wins.
function replaces(signed: SignedUrl, asset: Doc<"assets">): boolean {
  if (asset.url === undefined) return true;
  if (signed.urlConfig !== undefined && signed.urlConfig !== asset.urlConfig)
    return true;
  if (asset.urlExpiresAt === undefined) return false;
  return (
    signed.urlExpiresAt === undefined ||
    signed.urlExpiresAt > asset.urlExpiresAt
  );
}

function checkUrlConfig(urlConfig: string | undefined) {
  if (
    urlConfig !== undefined &&
    (urlConfig === "" || urlConfig.length > MAX_URL_CONFIG_LENGTH)
  ) {
    throw new ConvexError({
      code: "BadUrlConfig",
      max: MAX_URL_CONFIG_LENGTH,
    });
  }
}

// --- R8.3: records made under another URL configuration -----------------

/** `outOfConfig` returns at most this many rows per page. */
export const MAX_CONFIG_PAGE = 500;

export const outOfConfigRow = v.object({
  assetId: v.id("assets"),
  bucket: v.string(),
  key: v.string(),
  kind: v.optional(v.string()),
  // Absent: a record whose URL's configuration is unknown (made before
  // urlConfig was recorded, or no URL could be made).
  urlConfig: v.optional(v.string()),
});

// Our cursor: which of the two ranges, and Convex's cursor inside it.
type ConfigCursor = { range: "below" | "above"; cursor: string | null };

function parseConfigCursor(cursor: string | null): ConfigCursor {
  if (cursor === null) return { range: "below", cursor: null };
  const range = cursor.slice(0, 2);
  if (range !== "b:" && range !== "a:")
    throw new ConvexError({ code: "BadCursor" });
  const inner = cursor.slice(2);
  return {
    range: range === "b:" ? "below" : "above",
    cursor: inner === "" ? null : inner,
  };
}

function configCursor({ range, cursor }: ConfigCursor): string {
  return (range === "below" ? "b:" : "a:") + (cursor ?? "");
}

/**
 * A bucket's available records whose URL was made under a configuration
 * other than `current` — or under none recorded — for the refresher to
 * re-sign and `store` with `urlConfig: current` (R8.3).
 *
 * "Not equal" is two index ranges of `by_url_config` (bucket, status
 * "available", urlConfig): everything below `current` (records without
 * urlConfig sort first), then everything above it. A page reads one range
 * (Convex allows one paginated query per function), so the cursor names
 * the range: follow `continueCursor` until `isDone`. Deleted and failed
 * records are outside both ranges, so a sweep reads only what it has to
 * fix: ⌈N / numItems⌉ + 2 pages for N records out of line, each one index
 * range and at most numItems (≤ MAX_CONFIG_PAGE) records of ≤ 7 KB
 * (measured: 3.6 MB of 16 MiB for 500 of the largest). Records `store` brings in line leave the ranges, and
 * a cursor continues after its last row either way; a record that could
 * not be re-signed (its urlError recorded) is met again on the next sweep.
 */
export const outOfConfig = internalQuery({
  args: {
    bucket: v.string(),
    current: v.string(),
    paginationOpts: paginationOptsValidator,
  },
  returns: paginationResultValidator(outOfConfigRow),
  handler: async (ctx, { bucket, current, paginationOpts }) => {
    if (!(
      paginationOpts.numItems >= 1 && paginationOpts.numItems <= MAX_CONFIG_PAGE
    )) {
      throw new ConvexError({ code: "BadLimit", max: MAX_CONFIG_PAGE });
    }
    const at = parseConfigCursor(paginationOpts.cursor);
    const page = await ctx.db
      .query("assets")
      .withIndex("by_url_config", (q) => {
        const available = q.eq("bucket", bucket).eq("status", "available");
        return at.range === "below"
          ? available.lt("urlConfig", current)
          : available.gt("urlConfig", current);
      })
      .paginate({ numItems: paginationOpts.numItems, cursor: at.cursor });
    const rows = page.page.map((asset) => ({
      assetId: asset._id,
      bucket: asset.bucket,
      key: asset.key,
      kind: asset.kind,
      urlConfig: asset.urlConfig,
    }));
    if (!page.isDone) {
      return {
        page: rows,
        isDone: false,
        continueCursor: configCursor({
          range: at.range,
          cursor: page.continueCursor,
        }),
      };
    }
    // The range below is done: the next page starts the range above.
    return at.range === "below"
      ? {
          page: rows,
          isDone: false,
          continueCursor: configCursor({ range: "above", cursor: null }),
        }
      : {
          page: rows,
          isDone: true,
          continueCursor: configCursor({
            range: "above",
            cursor: page.continueCursor,
          }),
        };
  },
});

// --- signing requests from the web app (access:requestUrl) ------------------

/** `pendingRequests` returns at most this many, and `fulfilRequests` takes at most this many. */
export const MAX_REQUESTS = 500;

/**
 * Longest URL a request is fulfilled with (a SigV4 URL with a session token
 * is 1.5–2.5 KB): keeps MAX_REQUESTS fulfilments, each writing its request
 * and its asset, inside a mutation's 16 MiB (measured: 8.7 MB read, 6.6 MB
 * written with the largest assets, tests/convex/publicLimits.test.ts).
 */
export const MAX_SIGNED_URL_LENGTH = 4_096;

export const pendingRequest = v.object({
  requestId: v.id("urlRequests"),
  assetId: v.id("assets"),
  bucket: v.string(),
  key: v.string(),
  kind: v.optional(v.string()),
  // Sign for at most this long (seconds: floor(ttlMs / 1000), at least 1).
  ttlMs: v.number(),
  requestedAt: v.number(),
});

/**
 * A bucket's pending signing requests, oldest first (default 100, at most
 * MAX_REQUESTS). No cursor: `fulfilRequests` moves every row it is given out
 * of "pending" (done, failed or gone), so the next call starts again at the
 * head. Worst case: one index range, MAX_REQUESTS rows of < 2 KB (measured
 * 0.7 MB for 500).
 */
export const pendingRequests = internalQuery({
  args: { bucket: v.string(), limit: v.optional(v.number()) },
  returns: v.array(pendingRequest),
  handler: async (ctx, { bucket, limit = 100 }) => {
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_REQUESTS) {
      throw new ConvexError({ code: "BadLimit", max: MAX_REQUESTS });
    }
    const rows = await ctx.db
      .query("urlRequests")
      .withIndex("by_bucket_status", (q) =>
        q.eq("bucket", bucket).eq("status", "pending"),
      )
      .take(limit);
    return rows.map((row) => ({
      requestId: row._id,
      assetId: row.assetId,
      bucket: row.bucket,
      key: row.key,
      kind: row.kind,
      ttlMs: row.ttlMs,
      requestedAt: row.requestedAt,
    }));
  },
});

export const fulfilment = v.union(
  v.object({
    requestId: v.id("urlRequests"),
    url: v.string(),
    // Absent: a public URL.
    urlExpiresAt: v.optional(v.number()),
    urlConfig: v.optional(v.string()),
  }),
  v.object({ requestId: v.id("urlRequests"), urlError: v.string() }),
);

export const fulfilResult = v.union(
  // Done; the URL also replaced the asset's stored one (as `store` would).
  v.literal("stored"),
  // Done; the asset keeps its own URL (as fresh or fresher, or of another
  // lifetime), the request holds the one signed for it.
  v.literal("done"),
  // The signing error is recorded; the request is failed.
  v.literal("failed"),
  // The asset is deleted (or missing): the request is closed as gone.
  v.literal("gone"),
  // The request is not pending (already fulfilled, or unknown): nothing written.
  v.literal("already"),
);

/**
 * Stores what the sync service signed for pending requests; one result per
 * fulfilment, in order. Idempotent: a request already fulfilled is left as
 * it is ("already"), so a retried call after a timeout writes nothing twice.
 * Worst case for MAX_REQUESTS: 2 reads and up to 2 writes each (request,
 * asset) = 1,000 index ranges of 4,096 and 1,000 writes of 16,000; bytes
 * bounded by MAX_SIGNED_URL_LENGTH.
 */
export const fulfilRequests = internalMutation({
  args: { fulfilments: v.array(fulfilment) },
  returns: v.array(fulfilResult),
  handler: async (ctx, { fulfilments }) => {
    if (fulfilments.length > MAX_REQUESTS) {
      throw new ConvexError({
        code: "BatchTooLarge",
        max: MAX_REQUESTS,
        got: fulfilments.length,
      });
    }
    const now = Date.now();
    const results: Infer<typeof fulfilResult>[] = [];
    for (const item of fulfilments) {
      const request = await ctx.db.get("urlRequests", item.requestId);
      if (request === null || request.status !== "pending") {
        results.push("already");
        continue;
      }
      const asset = await ctx.db.get("assets", request.assetId);
      if (asset === null || asset.status !== "available") {
        await ctx.db.patch("urlRequests", request._id, {
          status: "gone",
          fulfilledAt: now,
        });
        results.push("gone");
      } else if (
        "urlError" in item ||
        item.url.length > MAX_SIGNED_URL_LENGTH
      ) {
        await ctx.db.patch("urlRequests", request._id, {
          status: "failed",
          fulfilledAt: now,
          error:
            "urlError" in item
              ? item.urlError.slice(0, 1000)
              : `signed URL longer than ${MAX_SIGNED_URL_LENGTH} characters`,
        });
        results.push("failed");
      } else {
        checkUrlConfig(item.urlConfig);
        const signed = {
          url: item.url,
          urlExpiresAt: item.urlExpiresAt,
          urlConfig: item.urlConfig,
        };
        await ctx.db.patch("urlRequests", request._id, {
          status: "done",
          fulfilledAt: now,
          ...signed,
        });
        // Everyone gains when the new URL is what the asset should hold.
        results.push(
          (await storeUrl(ctx, asset, signed, now)) === "stored"
            ? "stored"
            : "done",
        );
      }
    }
    return results;
  },
});
