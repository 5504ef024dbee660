/**
 * Who may call the public functions: tokens of the one JWT issuer named by
 * the deployment's environment (AUTH_ISSUER, AUTH_JWKS, AUTH_APPLICATION_ID,
 * AUTH_ALGORITHM, AUTH_SKIP_AUDIENCE — see convex/model/authConfig.ts and
 * convex/PUBLIC_API.md). None set: no provider, and the internal functions,
 * called with the deploy key, work as before.
 *
 * Convex evaluates this file when functions are pushed, with the
 * deployment's environment variables: change them, then deploy again.
 */
import type { AuthConfig } from "convex/server";
import { authProvidersFrom } from "./model/authConfig";

export default {
  providers: authProvidersFrom(process.env),
} satisfies AuthConfig;
