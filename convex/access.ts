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
 */
import {
  paginationOptsValidator,
  paginationResultValidator,
} from "convex/server";
import { ConvexError, Infer, v } from "convex/values";
import { Doc, Id } from "./_generated/dataModel";
import {
  MutationCtx,
  QueryCtx,
  internalMutation,
  internalQuery,
} from "./_generated/server";
import schema from "./schema";
import { emptySummary, sessionBy } from "./model/sessions";

export const MAX_TTL_MS = 7 * 24 * 3600 * 1000;
const MAX_PRINCIPAL_LENGTH = 256;

const grantDoc = schema.doc("grants");
const auditDoc = schema.doc("accessAudit");

/** A grant covers a whole session, or exactly one asset. */
export const grantScope = v.union(
  v.object({ sessionId: v.string() }),
  v.object({ bucket: v.string(), key: v.string() }),
);
type GrantScope = Infer<typeof grantScope>;

function checkPrincipal(principal: string, field = "principal") {
  if (principal.trim() === "" || principal.length > MAX_PRINCIPAL_LENGTH) {
    throw new ConvexError({
      code: "BadPrincipal",
      field,
      max: MAX_PRINCIPAL_LENGTH,
    });
  }
}

// --- deciding ---------------------------------------------------------------

type Permission =
  | { allowed: true; via: "owner" }
  | { allowed: true; via: "grant"; grantId: Id<"grants"> }
  | { allowed: false; reason: string };

function active(grant: Doc<"grants">, now: number): boolean {
  return (
    grant.revokedAt === undefined &&
    (grant.expiresAt === undefined || grant.expiresAt > now)
  );
}

async function activeGrant(
  ctx: QueryCtx,
  principal: string,
  scope: GrantScope,
  now: number,
): Promise<Doc<"grants"> | null> {
  const grants =
    "sessionId" in scope
      ? ctx.db
          .query("grants")
          .withIndex("by_principal_session", (q) =>
            q.eq("principal", principal).eq("sessionId", scope.sessionId),
          )
      : ctx.db
          .query("grants")
          .withIndex("by_principal_asset", (q) =>
            q
              .eq("principal", principal)
              .eq("bucket", scope.bucket)
              .eq("key", scope.key),
          );
  for await (const grant of grants) {
    // Session grants have no bucket/key and asset grants no session: the
    // index range may also hold the other shape.
    const sameShape =
      "sessionId" in scope
        ? grant.bucket === undefined
        : grant.sessionId === undefined;
    if (sameShape && active(grant, now)) return grant;
  }
  return null;
}

async function permission(
  ctx: QueryCtx,
  principal: string,
  bucket: string,
  key: string,
  sessionId: string | undefined,
  now: number,
): Promise<Permission> {
  if (sessionId !== undefined) {
    const session = await sessionBy(ctx, sessionId);
    if (session?.ownerId === principal) return { allowed: true, via: "owner" };
    const grant = await activeGrant(ctx, principal, { sessionId }, now);
    if (grant !== null)
      return { allowed: true, via: "grant", grantId: grant._id };
  }
  const grant = await activeGrant(ctx, principal, { bucket, key }, now);
  if (grant !== null)
    return { allowed: true, via: "grant", grantId: grant._id };
  return {
    allowed: false,
    reason:
      sessionId === undefined
        ? "no grant on this asset (it belongs to no session)"
        : `not the owner of session ${sessionId} and no grant`,
  };
}

async function assetBy(ctx: QueryCtx, bucket: string, key: string) {
  return ctx.db
    .query("assets")
    .withIndex("by_bucket_key", (q) => q.eq("bucket", bucket).eq("key", key))
    .unique();
}

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

export const authorizeResult = v.union(
  v.object({
    outcome: v.literal("granted"),
    url: v.string(),
    // Absent: a public URL, which does not expire.
    expiresAt: v.optional(v.number()),
    urlSource: v.union(v.literal("stored"), v.literal("fresh")),
    kind: v.optional(v.string()),
    auditId: v.id("accessAudit"),
  }),
  v.object({
    outcome: v.literal("denied"),
    reason: v.string(),
    auditId: v.id("accessAudit"),
  }),
  v.object({
    outcome: v.literal("gone"),
    deletedAt: v.number(),
    auditId: v.id("accessAudit"),
  }),
  v.object({ outcome: v.literal("not_found"), auditId: v.id("accessAudit") }),
  v.object({
    outcome: v.literal("unavailable"),
    reason: v.string(),
    auditId: v.id("accessAudit"),
  }),
);
export type AuthorizeResult = Infer<typeof authorizeResult>;

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

/** Audits a denied read and answers it. */
async function deny(
  ctx: MutationCtx,
  row: Omit<AuditRow, "outcome" | "reason">,
  reason: string,
): Promise<AuthorizeResult> {
  const auditId = await audit(ctx, { ...row, outcome: "denied", reason });
  return { outcome: "denied", reason, auditId };
}

function usableStored(
  asset: Doc<"assets">,
  now: number,
  maxTtlMs: number,
  minRemainingMs: number,
) {
  if (asset.url === undefined) return null;
  if (asset.urlExpiresAt === undefined) {
    return {
      url: asset.url,
      expiresAt: undefined,
      urlSource: "stored" as const,
    };
  }
  const remaining = asset.urlExpiresAt - now;
  if (remaining < minRemainingMs || remaining > maxTtlMs) return null;
  return {
    url: asset.url,
    expiresAt: asset.urlExpiresAt,
    urlSource: "stored" as const,
  };
}

// --- managing access ----------------------------------------------------------

type AuditRow = Omit<Doc<"accessAudit">, "_id" | "_creationTime">;

function audit(ctx: MutationCtx, row: AuditRow) {
  return ctx.db.insert("accessAudit", row);
}

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
