/**
 * Who may read an asset, decided from the session's owner and the grants,
 * and the audit row every decision writes: the helpers behind
 * `convex/access.ts`. No Convex functions are registered here.
 */
import { ConvexError, Infer, v } from "convex/values";
import { Doc, Id } from "../_generated/dataModel";
import { MutationCtx, QueryCtx } from "../_generated/server";
import { sessionBy } from "./sessions";

const MAX_PRINCIPAL_LENGTH = 256;

/** A grant covers a whole session, or exactly one asset. */
export const grantScope = v.union(
  v.object({ sessionId: v.string() }),
  v.object({ bucket: v.string(), key: v.string() }),
);
type GrantScope = Infer<typeof grantScope>;

export function checkPrincipal(principal: string, field = "principal") {
  if (principal.trim() === "" || principal.length > MAX_PRINCIPAL_LENGTH) {
    throw new ConvexError({
      code: "BadPrincipal",
      field,
      max: MAX_PRINCIPAL_LENGTH,
    });
  }
}

// --- deciding ---------------------------------------------------------------

export type Permission =
  | { allowed: true; via: "owner" }
  | {
      allowed: true;
      via: "grant";
      grantId: Id<"grants">;
      // The grant's end, when it has one: a URL handed out through it must
      // not outlive it (convex/model/urlPolicy.ts).
      expiresAt?: number;
    }
  | { allowed: false; reason: string };

function viaGrant(grant: Doc<"grants">): Permission {
  return {
    allowed: true,
    via: "grant",
    grantId: grant._id,
    expiresAt: grant.expiresAt,
  };
}

function active(grant: Doc<"grants">, now: number): boolean {
  return (
    grant.revokedAt === undefined &&
    (grant.expiresAt === undefined || grant.expiresAt > now)
  );
}

export async function activeGrant(
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

/**
 * Whether the principal may read the whole session: its owner, or an active
 * session grant. Two index ranges; returns the session read on the way.
 */
export async function sessionPermission(
  ctx: QueryCtx,
  principal: string,
  sessionId: string,
  now: number,
): Promise<{ session: Doc<"videoSessions"> | null; permission: Permission }> {
  const session = await sessionBy(ctx, sessionId);
  if (session?.ownerId === principal)
    return { session, permission: { allowed: true, via: "owner" } };
  const grant = await activeGrant(ctx, principal, { sessionId }, now);
  if (grant !== null) return { session, permission: viaGrant(grant) };
  return {
    session,
    permission: {
      allowed: false,
      reason: `not the owner of session ${sessionId} and no grant`,
    },
  };
}

export async function permission(
  ctx: QueryCtx,
  principal: string,
  bucket: string,
  key: string,
  sessionId: string | undefined,
  now: number,
): Promise<Permission> {
  if (sessionId !== undefined) {
    const { permission } = await sessionPermission(
      ctx,
      principal,
      sessionId,
      now,
    );
    if (permission.allowed) return permission;
  }
  const grant = await activeGrant(ctx, principal, { bucket, key }, now);
  if (grant !== null) return viaGrant(grant);
  return {
    allowed: false,
    reason:
      sessionId === undefined
        ? "no grant on this asset (it belongs to no session)"
        : `not the owner of session ${sessionId} and no grant`,
  };
}

export async function assetBy(ctx: QueryCtx, bucket: string, key: string) {
  return ctx.db
    .query("assets")
    .withIndex("by_bucket_key", (q) => q.eq("bucket", bucket).eq("key", key))
    .unique();
}

// --- answering -------------------------------------------------------------

/** What `authorize` answers; every outcome names its audit row. */
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
    // Why (convex/LIFECYCLE.md): "retention", "missing", the deleter's words.
    reason: v.optional(v.string()),
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

/** Audits a denied read and answers it. */
export async function deny(
  ctx: MutationCtx,
  row: Omit<AuditRow, "outcome" | "reason">,
  reason: string,
): Promise<AuthorizeResult> {
  const auditId = await audit(ctx, { ...row, outcome: "denied", reason });
  return { outcome: "denied", reason, auditId };
}

export function usableStored(
  asset: Pick<Doc<"assets">, "url" | "urlExpiresAt">,
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

// --- auditing --------------------------------------------------------------

type AuditRow = Omit<Doc<"accessAudit">, "_id" | "_creationTime">;

export function audit(ctx: MutationCtx, row: AuditRow) {
  return ctx.db.insert("accessAudit", row);
}
