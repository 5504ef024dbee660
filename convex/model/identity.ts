/**
 * Who is calling a public function: the principal of the owner/grant model
 * (`videoSessions.ownerId`, `grants.principal`, `accessAudit.principal`),
 * derived from the JWT Convex verified against `convex/auth.config.ts`.
 *
 * The principal is the identity's `tokenIdentifier`, which Convex builds as
 * `<iss>|<sub>` from the verified token, never from anything the caller
 * sends alongside it:
 *
 * - `subject` alone is unique only within one issuer: two providers (or a
 *   migration from one to another) may both have a user `user_123`, and
 *   keying access on `sub` would let one read the other's sessions;
 * - `email` and names are mutable, often unverified and reusable after an
 *   account is deleted;
 * - `tokenIdentifier` is what Convex documents as "stable and globally
 *   unique", and the same string for every token a provider issues to that
 *   user — so it is what `access:setOwner` / `access:grant` must store for a
 *   web user (`access:whoami` tells a signed-in user theirs).
 *
 * A principal the internal path stores (`ownerId: "alice"`) can never equal
 * a tokenIdentifier (which always contains the issuer and a `|`), so the two
 * worlds cannot be confused for one another.
 *
 * Helpers only; no Convex functions are registered here.
 */
import { Auth } from "convex/server";

/** The caller's principal, or null when the request carries no verified identity. */
export async function principalOf(ctx: { auth: Auth }): Promise<string | null> {
  const identity = await ctx.auth.getUserIdentity();
  return identity?.tokenIdentifier ?? null;
}
