/**
 * Settings, all from the environment (see README.md for the table).
 * `ConfigError` carries a one-line message; server.ts prints it and exits 2.
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

export class ConfigError extends Error {}

export interface Faults {
  rate503: number;
  rate429: number;
  latencyMs: number;
  failAfterCommit: number;
}

export interface Config {
  port: number;
  adminKey: string;
  functionsDir: string;
  statePath: string | null;
  saveDebounceMs: number;
  /** How long a subscription refresh may yield to executions queued behind it (subscriptions.ts). */
  refreshDeferMs: number;
  accelerate: boolean;
  log: boolean;
  udf404OnBadPath: boolean;
  functionErrorStatus: number;
  faults: Faults;
  instanceName: string;
}

/** See SubscriptionHub: commits queued together share one refresh, for at most this long. */
export const DEFAULT_REFRESH_DEFER_MS = 25;

const REPO_ROOT = resolve(fileURLToPath(new URL(".", import.meta.url)), "..");

function fraction(env: NodeJS.ProcessEnv, name: string): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return 0;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || n > 1) throw new ConfigError(`${name} must be a number between 0 and 1, got ${JSON.stringify(raw)}`);
  return n;
}

function nonNegativeInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new ConfigError(`${name} must be a non-negative integer, got ${JSON.stringify(raw)}`);
  return n;
}

function flag(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (["1", "true", "yes", "on"].includes(raw.toLowerCase())) return true;
  if (["0", "false", "no", "off"].includes(raw.toLowerCase())) return false;
  throw new ConfigError(`${name} must be 1 or 0, got ${JSON.stringify(raw)}`);
}

function functionErrorStatus(env: NodeJS.ProcessEnv): number {
  const raw = env.CONVEX_LOCAL_FUNCTION_ERROR_STATUS;
  if (raw === undefined || raw === "" || raw === "200") return 200;
  if (raw === "560") return 560;
  throw new ConfigError(`CONVEX_LOCAL_FUNCTION_ERROR_STATUS must be 200 or 560, got ${JSON.stringify(raw)}`);
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): Config {
  const adminKey = env.CONVEX_LOCAL_ADMIN_KEY ?? "";
  if (adminKey.trim() === "") {
    throw new ConfigError("CONVEX_LOCAL_ADMIN_KEY is required (the key clients send as `Authorization: Convex <key>`)");
  }
  const port = nonNegativeInt(env, "CONVEX_LOCAL_PORT", 0);
  if (port > 65535) throw new ConfigError(`CONVEX_LOCAL_PORT must be 0..65535, got ${port}`);
  return {
    port,
    adminKey,
    functionsDir: resolve(env.CONVEX_LOCAL_FUNCTIONS_DIR || resolve(REPO_ROOT, "convex")),
    statePath: env.CONVEX_LOCAL_STATE ? resolve(env.CONVEX_LOCAL_STATE) : null,
    saveDebounceMs: nonNegativeInt(env, "CONVEX_LOCAL_SAVE_DEBOUNCE_MS", 250),
    refreshDeferMs: nonNegativeInt(env, "CONVEX_LOCAL_REFRESH_DEFER_MS", DEFAULT_REFRESH_DEFER_MS),
    accelerate: flag(env, "CONVEX_LOCAL_ACCELERATE", true),
    log: flag(env, "CONVEX_LOCAL_LOG", false),
    udf404OnBadPath: flag(env, "CONVEX_LOCAL_UDF_404_ON_BAD_PATH", false),
    functionErrorStatus: functionErrorStatus(env),
    faults: {
      rate503: fraction(env, "CONVEX_LOCAL_FAULT_503"),
      rate429: fraction(env, "CONVEX_LOCAL_FAULT_429"),
      latencyMs: nonNegativeInt(env, "CONVEX_LOCAL_LATENCY_MS", 0),
      failAfterCommit: fraction(env, "CONVEX_LOCAL_FAULT_AFTER_COMMIT"),
    },
    instanceName: env.CONVEX_LOCAL_INSTANCE_NAME || "convex-local",
  };
}
