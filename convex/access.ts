/**
 * Who may read an asset, and the audit of every decision (R7).
 *
 * A principal may read an asset when it owns the asset's session
 * (`videoSessions.ownerId`) or holds an active grant — on the whole session or
 * on that one asset. Grants are revoked, never deleted; every read decision,
 * grant, revocation and change of owner writes one `accessAudit` row.
 *
 * `authorize` is what `consumer/access.py` (AssetAccess) calls: one mutation
 * decides, picks the URL to hand out and writes the audit row, so no URL
 * ever leaves without its row. The caller signs a fresh URL beforehand (that
 * is local computation, no request) with the lifetime its kind allows; the
 * stored URL is handed out instead when it lives at least `minRemainingMs`
 * and at most `maxTtlMs` more — a public URL, which never expires, always.
 *
 * The decision, the URL choice and the audit write are helpers in
 * `convex/model/access.ts`; this module holds the functions.
 *
 * The web app's side (convex/PUBLIC_API.md) is public and takes the
 * principal from the verified JWT (`convex/model/identity.ts`), never from
 * an argument: `requestUrl` decides, audits and hands out a stored URL or
 * records a signing request for the sync service; `urlRequest` tells the
 * requester when it is done; `myGrants` and `whoami` tell a user what they
 * hold and who they are.
 */
import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { ConvexError, Infer, v } from "convex/values";
import { internal } from "./_generated/api";
import { Doc, Id } from "./_generated/dataModel";
import {
  MutationCtx,
  internalMutation,
  internalQuery,
  mutation,
  query,
} from "./_generated/server";
import {
  AuthorizeResult,
  activeGrant,
  assetBy,
  audit,
  authorizeResult,
  checkPrincipal,
  deny,
  grantScope,
  permission,
  usableStored,
} from "./model/access";
import { principalOf } from "./model/identity";
import { goneOf, sessionGone } from "./model/lifecycle";
import {
  FORBIDDEN,
  UNAUTHENTICATED,
  bounded,
  emptyPage,
  fail,
  publicError,
  requirePrincipal,
} from "./model/public";
import { emptySummary, sessionBy } from "./model/sessions";
import { SEVEN_DAYS_MS, minRemainingMs, readerTtlMs } from "./model/urlPolicy";
import schema from "./schema";

export const MAX_TTL_MS = SEVEN_DAYS_MS;

const grantDoc = schema.doc("grants");
const auditDoc = schema.doc("accessAudit");

// --- deciding ---------------------------------------------------------------

/** Whether the principal may read the asset (no audit: for display, not for handing out URLs). */
export const check = internalQuery({
  args: { principal: v.string(), bucket: v.string(), key: v.string() },
  returns: v.object({
    allowed: v.boolean(),
    via: v.optional(v.union(v.literal("owner"), v.literal("grant"))),
    reason: v.optional(v.string()),
  }),
  handler: async (ctx, { principal, bucket, key }) => {
    const asset = await assetBy(ctx, bucket, key);
    const decision = await permission(
      ctx,
      principal,
      bucket,
      key,
      asset?.sessionId,
      Date.now(),
    );
    return decision.allowed
      ? { allowed: true, via: decision.via }
      : { allowed: false, reason: decision.reason };
  },
});

/**
 * Decides whether `principal` may read the asset, picks the URL to hand out
 * and records the decision. Permission is checked before existence is
 * revealed: a stranger learns "denied", not "gone".
 */
export const authorize = internalMutation({
  args: {
    principal: v.string(),
    bucket: v.string(),
    key: v.string(),
    // The longest the handed-out URL may still live (the kind's sensitivity).
    maxTtlMs: v.number(),
    // A stored URL closer than this to its expiry is not handed out.
    minRemainingMs: v.optional(v.number()),
    fresh: v.optional(v.object({ url: v.string(), expiresAt: v.number() })),
    // The session the key's layout names; decides only for a key never seen.
    sessionId: v.optional(v.string()),
  },
  returns: authorizeResult,
  handler: async (ctx, args): Promise<AuthorizeResult> => {
    const {
      principal,
      bucket,
      key,
      maxTtlMs,
      minRemainingMs = 60_000,
      fresh,
      sessionId,
    } = args;
    checkPrincipal(principal);
    if (!(maxTtlMs > 0 && maxTtlMs <= MAX_TTL_MS)) {
      throw new ConvexError({ code: "BadTtl", max: MAX_TTL_MS });
    }
    const now = Date.now();
    const asset = await assetBy(ctx, bucket, key);
    const row = { action: "read" as const, principal, bucket, key, at: now };
    if (asset === null) {
      const decision = await permission(
        ctx,
        principal,
        bucket,
        key,
        sessionId,
        now,
      );
      // Unknown to us and not granted: the same answer as for a known asset.
      if (!decision.allowed) return deny(ctx, row, decision.reason);
      return {
        outcome: "not_found",
        auditId: await audit(ctx, { ...row, outcome: "not_found" }),
      };
    }
    const about = { ...row, sessionId: asset.sessionId, kind: asset.kind };
    const decision = await permission(
      ctx,
      principal,
      bucket,
      key,
      asset.sessionId,
      now,
    );
    if (!decision.allowed) return deny(ctx, about, decision.reason);
    const grantId = decision.via === "grant" ? decision.grantId : undefined;
    // Deleted, on its way out of S3 (its own removal or its session's,
    // convex/LIFECYCLE.md) or lost: never a URL, whatever is stored.
    const gone = goneOf(asset) ?? (await sessionGone(ctx, asset.sessionId));
    if (gone !== null) {
      const auditId = await audit(ctx, {
        ...about,
        outcome: "gone",
        reason: gone.reason,
        grantId,
      });
      return { outcome: "gone", ...gone, auditId };
    }
    if (asset.status !== "available") {
      const reason = unavailableReason(asset);
      const auditId = await audit(ctx, {
        ...about,
        outcome: "unavailable",
        reason,
        grantId,
      });
      return { outcome: "unavailable", reason, auditId };
    }
    const stored = usableStored(asset, now, maxTtlMs, minRemainingMs);
    const chosen =
      stored ?? (fresh ? { ...fresh, urlSource: "fresh" as const } : null);
    if (chosen === null) {
      const reason = asset.urlError
        ? `no usable URL: ${asset.urlError}`
        : "no usable URL stored and none signed";
      const auditId = await audit(ctx, {
        ...about,
        outcome: "unavailable",
        reason,
        grantId,
      });
      return { outcome: "unavailable", reason, auditId };
    }
    const auditId = await audit(ctx, {
      ...about,
      outcome: "granted",
      reason: decision.via,
      grantId,
      urlSource: chosen.urlSource,
      expiresAt: chosen.expiresAt,
    });
    return {
      outcome: "granted",
      url: chosen.url,
      expiresAt: chosen.expiresAt,
      urlSource: chosen.urlSource,
      kind: asset.kind,
      auditId,
    };
  },
});

// Failed, or still with the uploader (pending/uploading: convex/uploads.ts),
// so there is no object to sign a URL for yet.
function unavailableReason(asset: Doc<"assets">): string {
  return asset.status === "failed"
    ? `asset failed: ${asset.error ?? "no reason recorded"}`
    : `asset is ${asset.status}: not in S3 yet`;
}

// --- managing access ----------------------------------------------------------

/** Makes `ownerId` the owner of the session (creating the session if it is not known yet). */
export const setOwner = internalMutation({
  args: { sessionId: v.string(), ownerId: v.string(), actor: v.string() },
  returns: v.null(),
  handler: async (ctx, { sessionId, ownerId, actor }) => {
    checkPrincipal(ownerId, "ownerId");
    checkPrincipal(actor, "actor");
    const now = Date.now();
    const session = await sessionBy(ctx, sessionId);
    if (session?.ownerId === ownerId) return null; // a retried call: nothing changes
    if (session === null) {
      await ctx.db.insert("videoSessions", {
        sessionId,
        ownerId,
        summary: emptySummary(),
        createdAt: now,
        updatedAt: now,
      });
    } else {
      await ctx.db.patch("videoSessions", session._id, {
        ownerId,
        updatedAt: now,
      });
    }
    await audit(ctx, {
      action: "setOwner",
      principal: ownerId,
      outcome: "done",
      sessionId,
      actor,
      reason: session?.ownerId
        ? `previous owner ${session.ownerId}`
        : undefined,
      at: now,
    });
    return null;
  },
});

/** Grants read access; an identical active grant is returned instead of a second one. */
export const grant = internalMutation({
  args: {
    principal: v.string(),
    scope: grantScope,
    actor: v.string(),
    expiresAt: v.optional(v.number()),
  },
  returns: grantDoc,
  handler: async (ctx, { principal, scope, actor, expiresAt }) => {
    checkPrincipal(principal);
    checkPrincipal(actor, "actor");
    const now = Date.now();
    if (expiresAt !== undefined && !(expiresAt > now)) {
      throw new ConvexError({
        code: "BadExpiry",
        reason: "expiresAt is not in the future",
      });
    }
    const existing = await activeGrant(ctx, principal, scope, now);
    if (existing !== null && existing.expiresAt === expiresAt) return existing;
    const grantId = await ctx.db.insert("grants", {
      principal,
      ...scope,
      grantedBy: actor,
      createdAt: now,
      expiresAt,
    });
    if (expiresAt !== undefined) {
      // Queries cannot see time pass: this write at the grant's end makes
      // every subscription that read the grant run again (and find it over).
      await ctx.scheduler.runAt(expiresAt, internal.access.expireGrant, {
        grantId,
      });
    }
    await audit(ctx, {
      action: "grant",
      principal,
      outcome: "done",
      ...scope,
      grantId,
      actor,
      expiresAt,
      at: now,
    });
    return (await ctx.db.get("grants", grantId))!;
  },
});

/** Marks a grant whose time is up (scheduled by `grant`); no audit row: nothing was decided. */
export const expireGrant = internalMutation({
  args: { grantId: v.id("grants") },
  returns: v.null(),
  handler: async (ctx, { grantId }) => {
    const grant = await ctx.db.get("grants", grantId);
    const now = Date.now();
    if (
      grant !== null &&
      grant.expiredAt === undefined &&
      grant.expiresAt !== undefined &&
      grant.expiresAt <= now
    ) {
      await ctx.db.patch("grants", grantId, { expiredAt: now });
    }
    return null;
  },
});

/** Revokes every active grant of the principal on the scope; returns how many. */
export const revoke = internalMutation({
  args: { principal: v.string(), scope: grantScope, actor: v.string() },
  returns: v.number(),
  handler: async (ctx, { principal, scope, actor }) => {
    checkPrincipal(actor, "actor");
    const now = Date.now();
    let revoked = 0;
    for (;;) {
      const grant = await activeGrant(ctx, principal, scope, now);
      if (grant === null) break;
      await ctx.db.patch("grants", grant._id, {
        revokedAt: now,
        revokedBy: actor,
      });
      await audit(ctx, {
        action: "revoke",
        principal,
        outcome: "done",
        ...scope,
        grantId: grant._id,
        actor,
        at: now,
      });
      revoked += 1;
    }
    return revoked;
  },
});

/** A principal's grants, active and revoked (session grants by session, then asset grants). */
export const grantsOf = internalQuery({
  args: { principal: v.string(), paginationOpts: paginationOptsValidator },
  returns: paginationResultValidator(grantDoc),
  handler: (ctx, { principal, paginationOpts }) =>
    ctx.db
      .query("grants")
      .withIndex("by_principal_session", (q) => q.eq("principal", principal))
      .order("desc")
      .paginate(paginationOpts),
});

/** Audit rows, newest first: all, one principal's, or one asset's. */
export const auditLog = internalQuery({
  args: {
    principal: v.optional(v.string()),
    bucket: v.optional(v.string()),
    key: v.optional(v.string()),
    paginationOpts: paginationOptsValidator,
  },
  returns: paginationResultValidator(auditDoc),
  handler: (ctx, { principal, bucket, key, paginationOpts }) => {
    if ((bucket === undefined) !== (key === undefined)) {
      throw new ConvexError({
        code: "BadFilter",
        reason: "bucket and key go together",
      });
    }
    if (principal !== undefined && bucket !== undefined) {
      throw new ConvexError({
        code: "BadFilter",
        reason: "filter by principal or by asset",
      });
    }
    const rows =
      principal !== undefined
        ? ctx.db
            .query("accessAudit")
            .withIndex("by_principal", (q) => q.eq("principal", principal))
        : bucket !== undefined
          ? ctx.db
              .query("accessAudit")
              .withIndex("by_asset", (q) =>
                q.eq("bucket", bucket).eq("key", key!),
              )
          : ctx.db.query("accessAudit").withIndex("by_at");
    return rows.order("desc").paginate(paginationOpts);
  },
});

// --- public: the web app ----------------------------------------------------

/** What `requestUrl` answers. Errors are answered, not thrown: a throw would roll back the audit row. */
export const requestUrlResult = v.union(
  v.object({
    status: v.literal("ready"),
    url: v.string(),
    // Absent: a public URL, which does not expire.
    expiresAt: v.optional(v.number()),
    // "stored": the asset's URL; "fresh": signed by the sync service for
    // this caller's earlier request.
    urlSource: v.union(v.literal("stored"), v.literal("fresh")),
    kind: v.optional(v.string()),
  }),
  v.object({
    status: v.literal("pending"),
    requestId: v.id("urlRequests"),
  }),
  v.object({ status: v.literal("error"), error: publicError }),
);
export type RequestUrlResult = Infer<typeof requestUrlResult>;

/**
 * A URL the caller may use for the asset, decided and audited like
 * `authorize` (owner of the asset's session, or an active session or asset
 * grant; one `accessAudit` row per call, `channel: "public"`).
 *
 * The URL's lifetime is the kind's (`URL_EXPIRES_<KIND>` in Convex's
 * environment), shortened to `maxTtlMs` when given and to the end of the
 * grant it is read through. The stored URL is handed out when it fits; so is
 * the one the sync service signed for this caller's last request. Otherwise
 * a signing request is recorded (one row per asset and caller, reused) and
 * `{status: "pending", requestId}` answered: the client subscribes to
 * `urlRequest` (or to the asset) and calls again once it is done. Signing
 * stays in the sync service, which holds the AWS credentials.
 *
 * Denials are answered `{status: "error", error: {code}}` — `forbidden`,
 * `gone` with `deletedAt`, `unavailable` — with the same data the queries
 * throw as ConvexError, because a mutation that throws writes nothing, its
 * audit row included. A caller without identity gets `forbidden`
 * (`reason: "unauthenticated"`) and writes nothing: there is no principal to
 * audit, and unauthenticated writes would let anyone fill the table.
 *
 * Worst case: 5 index ranges (asset, session, session grant, asset grant,
 * the caller's request) and ~10 KB read, 2 documents written (audit row,
 * request); measured for an owner: 3 ranges, 2 writes.
 */
export const requestUrl = mutation({
  args: {
    assetId: v.id("assets"),
    // The caller may ask for a shorter-lived URL than its kind allows.
    maxTtlMs: v.optional(v.number()),
  },
  returns: requestUrlResult,
  handler: async (ctx, { assetId, maxTtlMs }): Promise<RequestUrlResult> => {
    const principal = await principalOf(ctx);
    if (principal === null) return { status: "error", error: UNAUTHENTICATED };
    if (
      maxTtlMs !== undefined &&
      !(Number.isFinite(maxTtlMs) && maxTtlMs >= 1000)
    ) {
      // A caller's mistake, not a decision: thrown, nothing written.
      throw new ConvexError({ code: "bad_request", field: "maxTtlMs" });
    }
    const now = Date.now();
    const row = {
      action: "read" as const,
      principal,
      channel: "public" as const,
      at: now,
    };
    const asset = await ctx.db.get("assets", assetId);
    if (asset === null) {
      await audit(ctx, {
        ...row,
        outcome: "denied",
        reason: `no asset ${assetId}`,
      });
      return { status: "error", error: FORBIDDEN };
    }
    const about = {
      ...row,
      bucket: asset.bucket,
      key: asset.key,
      sessionId: asset.sessionId,
      kind: asset.kind,
    };
    const decision = await permission(
      ctx,
      principal,
      asset.bucket,
      asset.key,
      asset.sessionId,
      now,
    );
    if (!decision.allowed) {
      await audit(ctx, {
        ...about,
        outcome: "denied",
        reason: decision.reason,
      });
      return { status: "error", error: FORBIDDEN };
    }
    const grantId = decision.via === "grant" ? decision.grantId : undefined;
    const granted = { ...about, reason: decision.via, grantId };
    const gone = goneOf(asset) ?? (await sessionGone(ctx, asset.sessionId));
    if (gone !== null) {
      await audit(ctx, { ...granted, outcome: "gone" });
      return { status: "error", error: { code: "gone", ...gone } };
    }
    if (asset.status !== "available") {
      await audit(ctx, {
        ...granted,
        outcome: "unavailable",
        reason: unavailableReason(asset),
      });
      return { status: "error", error: { code: "unavailable" } };
    }
    const ttl = readerTtlMs(
      asset.kind,
      now,
      maxTtlMs,
      decision.via === "grant" ? decision.expiresAt : undefined,
    );
    const minRemaining = minRemainingMs(ttl);
    const stored = usableStored(asset, now, ttl, minRemaining);
    if (stored !== null) {
      await audit(ctx, {
        ...granted,
        outcome: "granted",
        urlSource: "stored",
        expiresAt: stored.expiresAt,
      });
      return {
        status: "ready",
        url: stored.url,
        expiresAt: stored.expiresAt,
        urlSource: "stored",
        kind: asset.kind,
      };
    }
    const request = await ctx.db
      .query("urlRequests")
      .withIndex("by_asset_principal", (q) =>
        q.eq("assetId", asset._id).eq("principal", principal),
      )
      .unique();
    // Signed by the sync service for this caller: its clock may run ahead
    // of Convex's by a little, which must not turn the URL down.
    const signed =
      request?.status === "done"
        ? usableStored(request, now, ttl + CLOCK_SKEW_MS, minRemaining)
        : null;
    if (request !== null && signed !== null) {
      await audit(ctx, {
        ...granted,
        outcome: "granted",
        urlSource: "fresh",
        expiresAt: signed.expiresAt,
        requestId: request._id,
      });
      return {
        status: "ready",
        url: signed.url,
        expiresAt: signed.expiresAt,
        urlSource: "fresh",
        kind: asset.kind,
      };
    }
    const requestId = await recordRequest(
      ctx,
      request,
      asset,
      principal,
      ttl,
      now,
    );
    await audit(ctx, { ...granted, outcome: "pending", requestId });
    return { status: "pending", requestId };
  },
});

/** How far ahead of Convex the signer's clock may run (see `requestUrl`). */
export const CLOCK_SKEW_MS = 30_000;

/** A pending request for the caller: the existing one, renewed, or a new one. */
async function recordRequest(
  ctx: MutationCtx,
  request: Doc<"urlRequests"> | null,
  asset: Doc<"assets">,
  principal: string,
  ttlMs: number,
  now: number,
) {
  if (request === null) {
    return ctx.db.insert("urlRequests", {
      assetId: asset._id,
      bucket: asset.bucket,
      key: asset.key,
      kind: asset.kind,
      principal,
      ttlMs,
      status: "pending",
      requestedAt: now,
    });
  }
  if (request.status === "pending") {
    // Asked again while waiting: one request; the shorter lifetime wins.
    if (ttlMs < request.ttlMs)
      await ctx.db.patch("urlRequests", request._id, { ttlMs });
    return request._id;
  }
  await ctx.db.patch("urlRequests", request._id, {
    kind: asset.kind,
    ttlMs,
    status: "pending",
    requestedAt: now,
    fulfilledAt: undefined,
    url: undefined,
    urlExpiresAt: undefined,
    urlConfig: undefined,
    error: undefined,
  });
  return request._id;
}

/**
 * Where the caller's signing request stands — no URL: once it is "done",
 * `requestUrl` again hands the URL out (and audits it). "failed": the sync
 * service could not sign (why stays internal); calling `requestUrl` again
 * retries. Only the requester may ask: anyone else gets `forbidden`.
 *
 * Worst case: one document read.
 */
export const urlRequest = query({
  args: { requestId: v.id("urlRequests") },
  returns: v.object({
    status: v.union(
      v.literal("pending"),
      v.literal("done"),
      v.literal("failed"),
      v.literal("gone"),
    ),
    requestedAt: v.number(),
    fulfilledAt: v.optional(v.number()),
  }),
  handler: async (ctx, { requestId }) => {
    const principal = await requirePrincipal(ctx);
    const request = await ctx.db.get("urlRequests", requestId);
    if (request === null || request.principal !== principal) fail(FORBIDDEN);
    const { status, requestedAt, fulfilledAt } = request;
    return { status, requestedAt, fulfilledAt };
  },
});

/** A grant as its holder sees it: the scope and dates, never who granted or revoked it. */
const myGrant = v.object({
  grantId: v.id("grants"),
  scope: grantScope,
  // For an asset grant: the asset, for `assets:view` / `requestUrl` (absent
  // while no object was ever seen at that key).
  assetId: v.optional(v.id("assets")),
  active: v.boolean(),
  createdAt: v.number(),
  expiresAt: v.optional(v.number()),
  revokedAt: v.optional(v.number()),
});

function myGrantOf(
  grant: Doc<"grants">,
  assetId: Id<"assets"> | undefined,
  now: number,
): Infer<typeof myGrant> {
  return {
    grantId: grant._id,
    assetId,
    scope:
      grant.sessionId !== undefined
        ? { sessionId: grant.sessionId }
        : { bucket: grant.bucket!, key: grant.key! },
    active:
      grant.revokedAt === undefined &&
      (grant.expiresAt === undefined || grant.expiresAt > now),
    createdAt: grant.createdAt,
    expiresAt: grant.expiresAt,
    revokedAt: grant.revokedAt,
  };
}

/**
 * The caller's grants, active and past: what was shared with them (session
 * grants first, by session id descending, then single assets, newest
 * first). No identity: an empty page.
 *
 * Worst case per page: 1 + MAX_PAGE_ROWS index ranges (the grants, then one
 * asset lookup per asset grant), MAX_PAGE_ROWS grants (< 2 KB) and as many
 * assets (≤ 7 KB): < 2 MB.
 */
export const myGrants = query({
  args: { paginationOpts: paginationOptsValidator },
  returns: paginationResultValidator(myGrant),
  handler: async (ctx, { paginationOpts }) => {
    const principal = await principalOf(ctx);
    if (principal === null) return emptyPage<Infer<typeof myGrant>>();
    const now = Date.now();
    const page = await ctx.db
      .query("grants")
      .withIndex("by_principal_session", (q) => q.eq("principal", principal))
      .order("desc")
      .paginate(bounded(paginationOpts));
    return {
      ...page,
      page: await Promise.all(
        page.page.map(async (grant) => {
          const asset =
            grant.bucket !== undefined && grant.key !== undefined
              ? await assetBy(ctx, grant.bucket, grant.key)
              : null;
          return myGrantOf(grant, asset?._id, now);
        }),
      ),
    };
  },
});

/**
 * The caller's principal — the string `setOwner` and `grant` take for this
 * user — or null without identity. Reads nothing.
 */
export const whoami = query({
  args: {},
  returns: v.union(
    v.null(),
    v.object({
      principal: v.string(),
      issuer: v.string(),
      subject: v.string(),
    }),
  ),
  handler: async (ctx) => {
    const identity = await ctx.auth.getUserIdentity();
    if (identity === null) return null;
    return {
      principal: identity.tokenIdentifier,
      issuer: identity.issuer,
      subject: identity.subject,
    };
  },
});
