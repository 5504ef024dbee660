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
 */
import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { ConvexError, v } from "convex/values";
import { internalMutation, internalQuery } from "./_generated/server";
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
import { emptySummary, sessionBy } from "./model/sessions";
import schema from "./schema";

export const MAX_TTL_MS = 7 * 24 * 3600 * 1000;

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
    if (asset.status === "deleted") {
      const deletedAt = asset.deletedAt ?? asset.eventTime;
      const auditId = await audit(ctx, { ...about, outcome: "gone", grantId });
      return { outcome: "gone", deletedAt, auditId };
    }
    if (asset.status === "failed") {
      const reason = `asset failed: ${asset.error ?? "no reason recorded"}`;
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
