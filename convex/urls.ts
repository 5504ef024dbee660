/**
 * Stored URLs kept valid: the refresher (`consumer/url_refresh.py`) pages
 * the assets whose presigned URL expires soon, signs new ones and writes them
 * back here.
 *
 * `store` touches URL fields only (scenes point at assets and read their URL
 * there), and only on an available asset whose stored URL is older than the
 * new one: a deleted asset is never resurrected, and a URL written meanwhile
 * by `applyEvents` (a newer object) is never replaced by an older signature.
 */
import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { ConvexError, Infer, v } from "convex/values";
import { Doc } from "./_generated/dataModel";
import { internalMutation, internalQuery } from "./_generated/server";

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
      } else if (!fresher(update.urlExpiresAt, asset)) {
        results.push("newer");
      } else {
        await ctx.db.patch("assets", asset._id, {
          url: update.url,
          urlExpiresAt: update.urlExpiresAt,
          urlError: undefined,
          updatedAt: now,
        });
        results.push("stored");
      }
    }
    return results;
  },
});

// A URL without expiry replaces an expiring one (a public URL is back);
// between two expiring URLs the later expiry wins.
function fresher(expiresAt: number | undefined, asset: Doc<"assets">): boolean {
  if (asset.url === undefined || asset.urlExpiresAt === undefined)
    return asset.url === undefined;
  return expiresAt === undefined || expiresAt > asset.urlExpiresAt;
}
