/**
 * The JWT provider `convex/auth.config.ts` registers, read from the
 * deployment's environment (`npx convex env set AUTH_ISSUER …`), so Clerk,
 * Auth0, WorkOS, Convex Auth or any OIDC-ish issuer is plugged in by
 * configuration, not code:
 *
 * | variable              | meaning                                                        |
 * |-----------------------|----------------------------------------------------------------|
 * | `AUTH_ISSUER`         | the tokens' `iss`, exactly (Auth0 ends it with `/`); unset: no provider |
 * | `AUTH_JWKS`           | the issuer's key set: an https URL or a `data:` URI             |
 * | `AUTH_APPLICATION_ID` | the `aud` tokens must carry (Clerk's template: `convex`)        |
 * | `AUTH_ALGORITHM`      | `RS256` (default) or `ES256`                                    |
 * | `AUTH_SKIP_AUDIENCE`  | `true`: accept tokens without checking `aud` — only for an issuer that mints tokens for this app alone |
 *
 * Unset `AUTH_ISSUER`: no provider, every public function sees no identity
 * (and answers nothing), and the internal functions keep working with the
 * deploy key. A half configuration fails the deploy with the variable to
 * fix instead of quietly accepting too much.
 *
 * Helpers only; no Convex functions are registered here.
 */
import type { AuthProvider } from "convex/server";

type Env = Record<string, string | undefined>;

export function authProvidersFrom(env: Env): AuthProvider[] {
  const issuer = env.AUTH_ISSUER?.trim();
  if (!issuer) return [];
  const jwks = env.AUTH_JWKS?.trim();
  if (
    !jwks ||
    !/^(https:\/\/|http:\/\/localhost[:/]|http:\/\/127\.0\.0\.1[:/]|data:)/.test(
      jwks,
    )
  ) {
    throw new Error(
      "AUTH_JWKS must be set to the issuer's JWKS (an https URL or a data: URI) when AUTH_ISSUER is set",
    );
  }
  const algorithm = env.AUTH_ALGORITHM?.trim() || "RS256";
  if (algorithm !== "RS256" && algorithm !== "ES256") {
    throw new Error("AUTH_ALGORITHM must be RS256 or ES256");
  }
  const applicationID = env.AUTH_APPLICATION_ID?.trim() || undefined;
  const skipAudience = env.AUTH_SKIP_AUDIENCE?.trim() === "true";
  if (applicationID === undefined && !skipAudience) {
    throw new Error(
      "AUTH_APPLICATION_ID must be set to the audience (aud) of the tokens, " +
        "or AUTH_SKIP_AUDIENCE=true for an issuer that mints tokens for this app only",
    );
  }
  return [
    {
      type: "customJwt",
      issuer,
      jwks,
      algorithm,
      ...(applicationID !== undefined ? { applicationID } : {}),
    },
  ];
}
