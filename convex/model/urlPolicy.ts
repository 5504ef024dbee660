/**
 * How long a URL handed to a reader may still live (R7.2), for the public
 * API: the kind's lifetime, shortened by what the caller asks for and by the
 * expiry of the grant it reads through.
 *
 * The internal path (`access:authorize`) gets the kind's lifetime from the
 * sync service (`URL_EXPIRES_<KIND>`, `consumer/access.py`). The public path
 * has no such caller to trust, so Convex reads the same variables from its
 * own environment (`npx convex env set URL_EXPIRES_SOURCE 300`), with the
 * same defaults; keep both sides equal.
 *
 * Helpers only; no Convex functions are registered here.
 */
import { Doc } from "../_generated/dataModel";
import { usableStored } from "./access";

export const SEVEN_DAYS_MS = 7 * 24 * 3600 * 1000;

/** A stored URL closer than this to its expiry is not handed out (as `consumer/access.py`). */
export const MIN_REMAINING_MS = 60_000;

/** The sync service's defaults for `URL_EXPIRES_<KIND>`, in seconds (README, Configuration). */
export const DEFAULT_EXPIRES_S = {
  video: 3600,
  source: 300,
  metadata: 900,
  manifest: 900,
  thumbnail: 3600,
  subtitle: 3600,
  other: 900,
} as const;
type Kind = keyof typeof DEFAULT_EXPIRES_S;

function kindOf(kind: string | undefined): Kind {
  return kind !== undefined && Object.hasOwn(DEFAULT_EXPIRES_S, kind)
    ? (kind as Kind)
    : "other";
}

/**
 * The longest a URL of this kind may live when handed out, in ms. A value
 * that is not whole seconds in (0, 7 days] is a deployment mistake: it fails
 * loudly rather than quietly handing out longer-lived URLs.
 */
export function kindMaxTtlMs(kind: string | undefined): number {
  const name = kindOf(kind);
  const variable = `URL_EXPIRES_${name.toUpperCase()}`;
  const raw = process.env[variable];
  if (raw === undefined || raw.trim() === "")
    return DEFAULT_EXPIRES_S[name] * 1000;
  const seconds = Number(raw);
  if (
    !Number.isInteger(seconds) ||
    seconds < 1 ||
    seconds * 1000 > SEVEN_DAYS_MS
  ) {
    throw new Error(
      `${variable} must be whole seconds between 1 and ${SEVEN_DAYS_MS / 1000}`,
    );
  }
  return seconds * 1000;
}

/**
 * The lifetime a URL handed to this reader may have: the kind's, shortened
 * to `wishMs` when the caller asks for less, and to the grant's end when it
 * reads through an expiring grant (a URL outliving the grant would keep the
 * access the grant no longer gives). At least 1 s.
 */
export function readerTtlMs(
  kind: string | undefined,
  now: number,
  wishMs?: number,
  grantExpiresAt?: number,
): number {
  let ttl = kindMaxTtlMs(kind);
  if (wishMs !== undefined) ttl = Math.min(ttl, wishMs);
  if (grantExpiresAt !== undefined) ttl = Math.min(ttl, grantExpiresAt - now);
  return Math.max(1000, Math.floor(ttl));
}

/**
 * How close to its expiry a URL of this lifetime may be handed out: a
 * minute, or half the lifetime when that is shorter (a 30 s grant remainder
 * would otherwise never find a URL that is both short and not expiring).
 */
export function minRemainingMs(ttlMs: number): number {
  return Math.min(MIN_REMAINING_MS, Math.floor(ttlMs / 2));
}

/** A URL as stored (on an asset or a fulfilled request). */
export type StoredUrl = Pick<Doc<"assets">, "url" | "urlExpiresAt">;

/**
 * The URL a public query may show this reader: the stored one when it would
 * be handed out under the reader's lifetime (public: always; presigned: not
 * about to expire and not living longer than allowed), otherwise none — the
 * reader then asks `access:requestUrl`, which is audited.
 */
export function shownUrl(stored: StoredUrl, now: number, ttlMs: number) {
  const usable = usableStored(stored, now, ttlMs, minRemainingMs(ttlMs));
  return usable === null
    ? { urlState: "request" as const }
    : {
        url: usable.url,
        urlExpiresAt: usable.expiresAt,
        urlState: "ready" as const,
      };
}
