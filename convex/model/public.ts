/**
 * What every public function shares: who the caller is, the typed errors a
 * caller may see, bounded pages, and the two authorisation shapes — a whole
 * session (owner or session grant) and one asset (owner of its session,
 * session grant or asset grant) — decided by `./access.ts` as the internal
 * path decides them.
 *
 * Errors carry a code and nothing else a stranger could learn from: no
 * internal reason, no principal, no sign of whether the thing exists when
 * the caller may not read it (permission is decided before existence, as
 * `access:authorize` does).
 *
 * Helpers only; no Convex functions are registered here.
 */
import { PaginationOptions, PaginationResult } from "convex/server";
import { ConvexError, Infer, v } from "convex/values";
import { Doc, Id } from "../_generated/dataModel";
import { QueryCtx } from "../_generated/server";
import { Permission, permission, sessionPermission } from "./access";
import { principalOf } from "./identity";
import { goneOf, sessionGone, sessionGoneOf } from "./lifecycle";

/** The `data` of every ConvexError a public function throws (and of `requestUrl`'s error answer). */
export const publicError = v.union(
  v.object({
    code: v.literal("forbidden"),
    // Present only for a caller without a verified identity: sign in first.
    reason: v.optional(v.literal("unauthenticated")),
  }),
  v.object({ code: v.literal("not_found") }),
  // Deleted, on its way out of S3 or lost (`reason`: "retention", "missing",
  // what the deleter gave; convex/LIFECYCLE.md).
  v.object({
    code: v.literal("gone"),
    deletedAt: v.number(),
    reason: v.optional(v.string()),
  }),
  // Allowed, but nothing can be handed out (the asset failed to process).
  v.object({ code: v.literal("unavailable") }),
);
export type PublicError = Infer<typeof publicError>;

export function fail(error: PublicError): never {
  throw new ConvexError(error);
}

export const UNAUTHENTICATED: PublicError = {
  code: "forbidden",
  reason: "unauthenticated",
};
export const FORBIDDEN: PublicError = { code: "forbidden" };

/** The caller's principal; a caller without identity gets `forbidden` (unauthenticated). */
export async function requirePrincipal(ctx: QueryCtx): Promise<string> {
  const principal = await principalOf(ctx);
  if (principal === null) fail(UNAUTHENTICATED);
  return principal;
}

// --- pages ----------------------------------------------------------------

/** No public page holds more than this many items. */
export const MAX_PAGE_ITEMS = 100;
/**
 * Nor reads more than this many rows: a reactive page grows past its
 * `numItems` when rows are inserted inside it (the client passes
 * `endCursor`); past this Convex answers `SplitRequired` and the client
 * (`usePaginatedQuery`) splits the page.
 */
export const MAX_PAGE_ROWS = 2 * MAX_PAGE_ITEMS;

/** The caller's pagination options, with the page size and rows read capped. */
export function bounded(
  opts: PaginationOptions,
  maxItems = MAX_PAGE_ITEMS,
): PaginationOptions {
  const asked = Number.isFinite(opts.numItems) ? Math.floor(opts.numItems) : 1;
  const maxRows = 2 * maxItems;
  return {
    ...opts,
    numItems: Math.max(1, Math.min(asked, maxItems)),
    maximumRowsRead: Math.min(opts.maximumRowsRead ?? maxRows, maxRows),
  };
}

/** What a list answers a caller without identity: nothing, and done. */
export function emptyPage<T>(): PaginationResult<T> {
  return { page: [], isDone: true, continueCursor: "" };
}

/** A page with its items mapped (the cursor fields kept as they are). */
export function mapPage<T, U>(
  page: PaginationResult<T>,
  fn: (item: T) => U,
): PaginationResult<U> {
  return { ...page, page: page.page.map(fn) };
}

// --- views ------------------------------------------------------------------

/** Why an asset shows trouble, as a code: the raw text stays internal. */
export const assetProblem = v.union(
  // status "failed": processing gave up on it.
  v.literal("processing_failed"),
  // The last attempt to make its URL failed (a stored one may still work).
  v.literal("url_failed"),
);

export function problemOf(asset: Doc<"assets">) {
  if (asset.status === "failed") return "processing_failed" as const;
  if (asset.status === "available" && asset.urlError !== undefined)
    return "url_failed" as const;
  return undefined;
}

// --- authorisation ----------------------------------------------------------

export type Allowed = Extract<Permission, { allowed: true }>;

export const role = v.union(v.literal("owner"), v.literal("grantee"));
export const roleOf = (p: Allowed) =>
  p.via === "owner" ? ("owner" as const) : ("grantee" as const);

/**
 * The session, for a caller who may read all of it. Throws `forbidden`
 * (no permission, whether or not the session exists) or `not_found` (a
 * grantee of a session never seen yet). Two index ranges.
 */
export async function readableSession(
  ctx: QueryCtx,
  sessionId: string,
  now: number,
): Promise<{
  principal: string;
  session: Doc<"videoSessions">;
  permission: Allowed;
}> {
  const principal = await requirePrincipal(ctx);
  const { session, permission } = await sessionPermission(
    ctx,
    principal,
    sessionId,
    now,
  );
  if (!permission.allowed) fail(FORBIDDEN);
  if (session === null) fail({ code: "not_found" });
  const gone = sessionGoneOf(session);
  if (gone !== null) fail({ code: "gone", ...gone });
  return { principal, session, permission };
}

/**
 * The asset, for a caller who may read it. Throws `forbidden` (no
 * permission, or no such asset: an id says nothing about its session, so
 * existence cannot be separated from permission) or `gone` with `deletedAt`
 * for a deleted one. Up to four index ranges.
 */
export async function readableAsset(
  ctx: QueryCtx,
  assetId: Id<"assets">,
  now: number,
): Promise<{ principal: string; asset: Doc<"assets">; permission: Allowed }> {
  const principal = await requirePrincipal(ctx);
  const asset = await ctx.db.get("assets", assetId);
  if (asset === null) fail(FORBIDDEN);
  const decision = await permission(
    ctx,
    principal,
    asset.bucket,
    asset.key,
    asset.sessionId,
    now,
  );
  if (!decision.allowed) fail(FORBIDDEN);
  const gone = goneOf(asset) ?? (await sessionGone(ctx, asset.sessionId));
  if (gone !== null) fail({ code: "gone", ...gone });
  return { principal, asset, permission: decision };
}
