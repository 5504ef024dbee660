/**
 * Who is calling: the admin key, nobody, or a user with a verified JWT.
 *
 * JWTs are checked against the functions directory's `auth.config.ts`, as
 * convex-backend does (crates/authentication/src/lib.rs `validate_id_token`,
 * crates/common/src/auth.rs `AuthInfo::matches_token`,
 * crates/keybroker/src/broker.rs `UserIdentity::from_custom_jwt`):
 *
 *  1. decode the payload unverified; `iss` is required;
 *  2. pick the first provider whose issuer matches `iss` (an `iss` without a
 *     scheme gets "https://", trailing slashes ignored) and, when the provider
 *     has an `applicationID`, whose id is in `aud` — else 401 NoAuthProvider
 *     (so a wrong issuer or a wrong audience is NoAuthProvider);
 *  3. verify the signature with the provider's JWKS (`jwks`: an http(s) URL
 *     or a `data:` URI; OIDC providers: discovery at
 *     `<domain>/.well-known/openid-configuration`), the configured algorithm
 *     only, then `exp`/`nbf` with 5 s leeway — else 401 InvalidAuthHeader;
 *  4. `sub` and `exp` are required.
 *
 * The identity handed to the functions (`ctx.auth.getUserIdentity()`):
 * `tokenIdentifier` = `${iss}|${sub}`, `subject`, `issuer`, plus every other
 * claim — for customJwt under its own name (nested objects flattened with
 * ".", `fva` dropped, registered claims iss/sub/aud/exp/nbf/iat/jti left
 * out), for OIDC the standard claims under UserIdentity's names (`name`,
 * `givenName`, `email`, …) and the others as they are.
 *
 * Without an auth.config file there are no providers: only the admin key and
 * anonymous calls work, and any Bearer token is NoAuthProvider.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
} from "jose";
import { SystemError } from "./errors";

export type UserIdentity = Record<string, unknown> & { tokenIdentifier: string; subject: string; issuer: string };

export type Caller =
  | { kind: "anonymous" }
  | { kind: "admin"; actingAs: UserIdentity | null }
  | { kind: "user"; identity: UserIdentity; expiresAtMs: number };

export const ANONYMOUS: Caller = { kind: "anonymous" };

/** The identity functions see for this caller (null: `getUserIdentity()` is null). */
export function callerIdentity(caller: Caller): UserIdentity | null {
  if (caller.kind === "user") return caller.identity;
  if (caller.kind === "admin") return caller.actingAs;
  return null;
}

/** Leeway on `exp`/`nbf`, as the backend's custom-JWT validation. */
export const CLOCK_TOLERANCE_S = 5;

const ALGORITHMS = ["RS256", "ES256"] as const;
type Algorithm = (typeof ALGORITHMS)[number];

interface CustomJwtProvider {
  kind: "customJwt";
  issuer: string;
  applicationID: string | null;
  algorithm: Algorithm;
  jwks: string;
  keys: JWTVerifyGetKey;
}

interface OidcProvider {
  kind: "oidc";
  domain: string;
  applicationID: string;
  keys: JWTVerifyGetKey;
}

type Provider = CustomJwtProvider | OidcProvider;

const unauthenticated = (code: string, message: string) => new SystemError(401, code, message);
const invalidHeader = (message: string) => unauthenticated("InvalidAuthHeader", message);

const withScheme = (s: string) => (s.startsWith("https://") || s.startsWith("http://") ? s : `https://${s}`);
const sameIssuer = (a: string, b: string) => withScheme(a).replace(/\/+$/, "") === withScheme(b).replace(/\/+$/, "");

/** `data:[<mediatype>][;base64],<data>` → its bytes as text. */
function dataUriText(uri: string): string {
  const comma = uri.indexOf(",");
  if (comma < 0) throw new Error("no ',' in the data URI");
  const meta = uri.slice(5, comma);
  const data = uri.slice(comma + 1);
  return meta.split(";").includes("base64") ? Buffer.from(data, "base64").toString("utf8") : decodeURIComponent(data);
}

function keysFromJwks(jwks: string): JWTVerifyGetKey {
  if (jwks.startsWith("data:")) {
    const set = JSON.parse(dataUriText(jwks)) as JSONWebKeySet;
    return createLocalJWKSet(set);
  }
  return createRemoteJWKSet(new URL(jwks));
}

/** OIDC discovery, once, then the provider's JWKS (jose caches and refreshes keys). */
function keysFromDiscovery(domain: string): JWTVerifyGetKey {
  let keys: Promise<JWTVerifyGetKey> | null = null;
  const discover = async (): Promise<JWTVerifyGetKey> => {
    const url = `${withScheme(domain).replace(/\/+$/, "")}/.well-known/openid-configuration`;
    const res = await fetch(url, { headers: { accept: "application/json" } });
    if (!res.ok) throw new SystemError(400, "AuthProviderDiscoveryFailed", `Auth provider discovery of ${domain} failed: ${res.status}`);
    const meta = (await res.json()) as { jwks_uri?: unknown };
    if (typeof meta.jwks_uri !== "string") throw new SystemError(400, "AuthProviderDiscoveryFailed", `Auth provider discovery of ${domain} failed: no jwks_uri`);
    return createRemoteJWKSet(new URL(meta.jwks_uri));
  };
  return (async (header, token) => {
    keys ??= discover().catch((e) => {
      keys = null;
      throw e;
    });
    return (await keys)(header, token);
  }) as JWTVerifyGetKey;
}

/** Read one provider entry of auth.config; a reason string when it is unusable. */
function parseProvider(raw: unknown): Provider | string {
  if (typeof raw !== "object" || raw === null) return "not an object";
  const p = raw as Record<string, unknown>;
  const appId = p.applicationID;
  if (p.type === "customJwt") {
    if (typeof p.issuer !== "string" || p.issuer === "") return "customJwt provider without an issuer";
    if (typeof p.jwks !== "string" || p.jwks === "") return "customJwt provider without jwks";
    if (!ALGORITHMS.includes(p.algorithm as Algorithm)) return `customJwt algorithm must be RS256 or ES256, got ${String(p.algorithm)}`;
    if (appId !== undefined && typeof appId !== "string") return "applicationID must be a string";
    let keys: JWTVerifyGetKey;
    try {
      keys = keysFromJwks(p.jwks);
    } catch (e) {
      return `cannot read jwks: ${(e as Error).message}`;
    }
    return {
      kind: "customJwt",
      issuer: withScheme(p.issuer),
      applicationID: appId === undefined || appId === "" ? null : appId,
      algorithm: p.algorithm as Algorithm,
      jwks: p.jwks,
      keys,
    };
  }
  if (p.type === undefined || p.type === "oidc") {
    if (typeof p.domain !== "string" || p.domain === "") return "OIDC provider without a domain";
    if (typeof appId !== "string" || appId === "") return "OIDC provider without an applicationID";
    return { kind: "oidc", domain: p.domain, applicationID: appId, keys: keysFromDiscovery(p.domain) };
  }
  return `unknown provider type ${JSON.stringify(p.type)}`;
}

const AUTH_CONFIG_FILES = ["auth.config.ts", "auth.config.js", "auth.config.mts", "auth.config.mjs"];
const REGISTERED = new Set(["iss", "sub", "aud", "exp", "nbf", "iat", "jti"]);
const OIDC_CORE = new Set([...REGISTERED, "auth_time", "nonce", "acr", "amr", "azp", "at_hash", "c_hash"]);
const OIDC_STANDARD: Record<string, string> = {
  name: "name",
  given_name: "givenName",
  family_name: "familyName",
  nickname: "nickname",
  preferred_username: "preferredUsername",
  profile: "profileUrl",
  picture: "pictureUrl",
  website: "websiteUrl",
  email: "email",
  email_verified: "emailVerified",
  gender: "gender",
  birthdate: "birthday",
  zoneinfo: "timezone",
  locale: "language",
  phone_number: "phoneNumber",
  phone_number_verified: "phoneNumberVerified",
  address: "address",
  updated_at: "updatedAt",
};

function flattenClaims(prefix: string, value: Record<string, unknown>, out: Record<string, unknown>): void {
  for (const [key, v] of Object.entries(value)) {
    const name = prefix === "" ? key : `${prefix}.${key}`;
    if (typeof v === "object" && v !== null && !Array.isArray(v)) flattenClaims(name, v as Record<string, unknown>, out);
    else out[name] = v;
  }
}

export class AuthVerifier {
  private constructor(
    private readonly providers: Provider[],
    /** Where the providers came from, for messages ("none" when no file). */
    readonly source: string | null,
  ) {}

  static none(): AuthVerifier {
    return new AuthVerifier([], null);
  }

  /**
   * Load `<functionsDir>/auth.config.*` (importing it, so it reads
   * process.env now). Unusable providers are skipped and reported through
   * `warn`, as a missing environment variable must not stop the server.
   */
  static async load(functionsDir: string, warn: (record: Record<string, unknown>) => void): Promise<AuthVerifier> {
    const file = AUTH_CONFIG_FILES.map((f) => join(functionsDir, f)).find((f) => existsSync(f));
    if (file === undefined) return AuthVerifier.none();
    const mod = (await import(pathToFileURL(file).href)) as { default?: { providers?: unknown } };
    const raw = mod.default?.providers;
    if (raw !== undefined && !Array.isArray(raw)) throw new Error(`${file}: \`providers\` must be an array`);
    const providers: Provider[] = [];
    (raw ?? []).forEach((entry: unknown, i: number) => {
      const parsed = parseProvider(entry);
      if (typeof parsed === "string") warn({ event: "auth_provider_skipped", file, index: i, reason: parsed });
      else providers.push(parsed);
    });
    return new AuthVerifier(providers, file);
  }

  get providerCount(): number {
    return this.providers.length;
  }

  private noProviderMessage(): string {
    if (this.providers.length === 0) {
      return "No auth provider found matching the given token (no providers configured). Check convex/auth.config.ts.";
    }
    const list = this.providers.map((p) =>
      p.kind === "oidc"
        ? `OIDC(domain=${p.domain}, app_id=${p.applicationID})`
        : `CustomJWT(issuer=${p.issuer}, app_id=${p.applicationID ?? "none"})`,
    );
    return `No auth provider found matching the given token. Check that your JWT's issuer and audience match one of your configured providers: [${list.join(", ")}]`;
  }

  /** Verify a user JWT; throws a 401 `SystemError` with the backend's code. */
  async verify(token: string): Promise<Caller & { kind: "user" }> {
    let unverified: JWTPayload;
    try {
      unverified = decodeJwt(token);
    } catch {
      throw invalidHeader(
        "Could not parse JWT payload. Check that the token is a valid JWT format with three base64-encoded parts separated by dots.",
      );
    }
    if (typeof unverified.iss !== "string") {
      throw invalidHeader(
        "Missing issuer claim ('iss') in JWT payload. The JWT must include an 'iss' claim that matches one of your configured auth providers.",
      );
    }
    const audiences = unverified.aud === undefined ? [] : Array.isArray(unverified.aud) ? unverified.aud : [unverified.aud];
    const issuer = unverified.iss;
    const provider = this.providers.find((p) => {
      const appId = p.applicationID;
      if (appId !== null && !audiences.includes(appId)) return false;
      return sameIssuer(p.kind === "oidc" ? p.domain : p.issuer, issuer);
    });
    if (provider === undefined) throw unauthenticated("NoAuthProvider", this.noProviderMessage());

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, provider.keys, {
        algorithms: provider.kind === "oidc" ? ["RS256", "EdDSA"] : [provider.algorithm],
        clockTolerance: CLOCK_TOLERANCE_S,
      }));
    } catch (e) {
      if (e instanceof SystemError) throw e;
      if (e instanceof joseErrors.JWTExpired) throw invalidHeader("Could not validate token: Token expired");
      if (e instanceof joseErrors.JWTClaimValidationFailed) throw invalidHeader(`Could not validate token: ${e.message}`);
      if (provider.kind === "customJwt" && (e instanceof joseErrors.JWKSTimeout || e instanceof TypeError || e instanceof joseErrors.JWKSInvalid)) {
        throw invalidHeader(`Could not fetch JWKS from URL '${provider.jwks}': ${(e as Error).message}. Check that the URL is correct and accessible.`);
      }
      if (provider.kind === "oidc") {
        throw unauthenticated("Unauthenticated", "Could not verify OIDC token claim. Check that the token signature is valid and the token hasn't expired.");
      }
      let kid: string | undefined;
      try {
        kid = decodeProtectedHeader(token).kid;
      } catch {
        kid = undefined;
      }
      throw invalidHeader(
        kid !== undefined
          ? `Could not decode token. The JWT's 'kid' (key ID) header is '${kid}', does this key match any key in the provider's JWKS?`
          : "Could not decode token. JWT may be missing a 'kid' (key ID) header.",
      );
    }
    if (typeof payload.sub !== "string") throw invalidHeader("Missing subject");
    if (typeof payload.exp !== "number") throw invalidHeader("Missing expiry");
    const claims: Record<string, unknown> = {};
    if (provider.kind === "customJwt") {
      const rest = Object.fromEntries(Object.entries(payload).filter(([k]) => !REGISTERED.has(k)));
      flattenClaims("", rest, claims);
      delete claims.fva;
    } else {
      for (const [k, v] of Object.entries(payload)) {
        if (OIDC_CORE.has(k)) continue;
        claims[OIDC_STANDARD[k] ?? k] = v;
      }
    }
    const identity: UserIdentity = {
      ...claims,
      tokenIdentifier: `${payload.iss}|${payload.sub}`,
      subject: payload.sub,
      issuer: payload.iss as string,
    };
    return { kind: "user", identity, expiresAtMs: payload.exp * 1000 };
  }
}
