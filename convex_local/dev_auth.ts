/**
 * DEVELOPMENT ONLY: a local JWT issuer for the local server's auth.
 *
 *   npx tsx convex_local/dev_auth.ts keys [--dir DIR] [--alg RS256|ES256] [--force]
 *       make (or reuse) a key pair; print the environment for auth.config.ts
 *   npx tsx convex_local/dev_auth.ts env [--dir DIR]
 *       print that environment again
 *   npx tsx convex_local/dev_auth.ts token <subject> [--dir DIR] [--ttl SECONDS] [--claim name=value]…
 *       print a signed token for <subject> (default lifetime 1 h)
 *
 * DIR defaults to $CONVEX_LOCAL_DEV_AUTH_DIR, else the directory of
 * $CONVEX_LOCAL_STATE, else <repo>/.state (git-ignored). The private key is
 * written there with mode 0600 and never printed. The printed lines
 * (`AUTH_ISSUER=…`, `AUTH_APPLICATION_ID=…`,
 * `AUTH_JWKS=data:…`, `AUTH_ALGORITHM=…`) are what an
 * auth.config.ts provider `{ type: "customJwt", issuer, jwks, algorithm,
 * applicationID }` reads from process.env; set them in the server's
 * environment. Tokens from this issuer must never be trusted outside a
 * local development deployment.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { SignJWT, exportJWK, generateKeyPair, importJWK, type JWK } from "jose";

export const DEV_ISSUER = "https://convex-local.dev-auth.invalid";
export const DEV_APPLICATION_ID = "convex-local-dev";
const PRIVATE_FILE = "dev-auth.private.jwk.json";
const PUBLIC_FILE = "dev-auth.json";

type Alg = "RS256" | "ES256";

interface PublicInfo {
  issuer: string;
  applicationID: string;
  algorithm: Alg;
  kid: string;
  jwks: { keys: JWK[] };
}

const REPO_ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");

export function defaultDevAuthDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.CONVEX_LOCAL_DEV_AUTH_DIR) return resolve(env.CONVEX_LOCAL_DEV_AUTH_DIR);
  if (env.CONVEX_LOCAL_STATE) return dirname(resolve(env.CONVEX_LOCAL_STATE));
  return join(REPO_ROOT, ".state");
}

/** The environment an auth.config.ts provider reads, for these keys. */
export function devAuthEnv(dir: string): Record<string, string> {
  const info = JSON.parse(readFileSync(join(dir, PUBLIC_FILE), "utf8")) as PublicInfo;
  return {
    AUTH_ISSUER: info.issuer,
    AUTH_APPLICATION_ID: info.applicationID,
    AUTH_ALGORITHM: info.algorithm,
    AUTH_JWKS: `data:application/json;base64,${Buffer.from(JSON.stringify(info.jwks)).toString("base64")}`,
  };
}

/** Create a key pair in `dir` unless one is there (or `force`); returns its environment. */
export async function createDevKeys(dir: string, options: { alg?: Alg; force?: boolean } = {}): Promise<Record<string, string>> {
  const privatePath = join(dir, PRIVATE_FILE);
  if (!options.force && existsSync(privatePath) && existsSync(join(dir, PUBLIC_FILE))) return devAuthEnv(dir);
  const alg = options.alg ?? "RS256";
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `dev-${randomBytes(6).toString("hex")}`;
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg };
  mkdirSync(dir, { recursive: true });
  writeFileSync(privatePath, `${JSON.stringify(privateJwk)}\n`, { mode: 0o600 });
  chmodSync(privatePath, 0o600); // an existing file keeps its mode on write
  const info: PublicInfo = { issuer: DEV_ISSUER, applicationID: DEV_APPLICATION_ID, algorithm: alg, kid, jwks: { keys: [publicJwk] } };
  writeFileSync(join(dir, PUBLIC_FILE), `${JSON.stringify(info, null, 2)}\n`);
  return devAuthEnv(dir);
}

export interface TokenOptions {
  /** Lifetime in seconds from now (negative: already expired). Default 3600. */
  ttlSeconds?: number;
  claims?: Record<string, unknown>;
  /** Override the issuer / audience (to make deliberately wrong tokens). */
  issuer?: string;
  audience?: string | string[];
}

/** A token for `subject` signed with the dev key in `dir`. */
export async function mintDevToken(dir: string, subject: string, options: TokenOptions = {}): Promise<string> {
  const jwk = JSON.parse(readFileSync(join(dir, PRIVATE_FILE), "utf8")) as JWK & { kid: string; alg: Alg };
  const key = await importJWK(jwk, jwk.alg);
  const now = Math.floor(Date.now() / 1000);
  const ttl = options.ttlSeconds ?? 3600;
  const iat = ttl < 0 ? now + ttl - 60 : now;
  return new SignJWT({ ...options.claims })
    .setProtectedHeader({ alg: jwk.alg, kid: jwk.kid, typ: "JWT" })
    .setIssuer(options.issuer ?? DEV_ISSUER)
    .setAudience(options.audience ?? DEV_APPLICATION_ID)
    .setSubject(subject)
    .setIssuedAt(iat)
    .setExpirationTime(now + ttl)
    .sign(key);
}

// --- CLI ---------------------------------------------------------------------

function parseClaim(text: string): [string, unknown] {
  const eq = text.indexOf("=");
  if (eq <= 0) throw new Error(`--claim expects name=value, got ${JSON.stringify(text)}`);
  const raw = text.slice(eq + 1);
  let value: unknown = raw;
  try {
    value = JSON.parse(raw);
  } catch {
    value = raw;
  }
  return [text.slice(0, eq), value];
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  let dir = defaultDevAuthDir();
  let alg: Alg = "RS256";
  let force = false;
  let ttl = 3600;
  const claims: Record<string, unknown> = {};
  const positional: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    const next = () => {
      const v = rest[++i];
      if (v === undefined) throw new Error(`${arg} needs a value`);
      return v;
    };
    if (arg === "--dir") dir = resolve(next());
    else if (arg === "--alg") {
      const v = next();
      if (v !== "RS256" && v !== "ES256") throw new Error("--alg must be RS256 or ES256");
      alg = v;
    } else if (arg === "--force") force = true;
    else if (arg === "--ttl") ttl = Number(next());
    else if (arg === "--claim") {
      const [k, v] = parseClaim(next());
      claims[k] = v;
    } else positional.push(arg);
  }
  const printEnv = (env: Record<string, string>) => {
    for (const [k, v] of Object.entries(env)) process.stdout.write(`${k}=${v}\n`);
  };
  if (command === "keys") {
    printEnv(await createDevKeys(dir, { alg, force }));
    process.stderr.write(`dev auth keys in ${dir} (private key mode 0600; development only)\n`);
  } else if (command === "env") {
    printEnv(devAuthEnv(dir));
  } else if (command === "token") {
    if (positional.length !== 1) throw new Error("usage: dev_auth.ts token <subject> [--ttl SECONDS] [--claim name=value]");
    if (!Number.isFinite(ttl)) throw new Error("--ttl must be a number of seconds");
    if (!existsSync(join(dir, PRIVATE_FILE))) throw new Error(`no dev keys in ${dir}: run \`dev_auth.ts keys\` first`);
    process.stdout.write(`${await mintDevToken(dir, positional[0], { ttlSeconds: ttl, claims })}\n`);
  } else {
    throw new Error("usage: dev_auth.ts keys|env|token <subject> [--dir DIR]");
  }
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).catch((e) => {
    process.stderr.write(`dev_auth: ${(e as Error).message}\n`);
    process.exit(2);
  });
}
