/**
 * The two error shapes of Convex's HTTP API (convex-backend
 * crates/local_backend/src/public_api.rs, crates/common/src/http/mod.rs):
 *
 *   system error   → HTTP 4xx/5xx, body {"code": "<ShortMsg>", "message": "..."}
 *                    (ErrorMetadata → status: BadRequest 400, Unauthenticated
 *                    401, Forbidden 403, NotFound 404, RateLimited 429,
 *                    OperationalInternalServerError 500, OCC/Overloaded 503)
 *   function error → HTTP 200, body {"status":"error","errorMessage": ...,
 *                    "errorData"?: ..., "logLines"?: [...]}
 *                    (the handlers answer Ok(Json(UdfResponse::Error)); 560 is
 *                    only the JS client's/node executor's code, accepted too)
 */
import { randomBytes } from "node:crypto";

export class SystemError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (code: string, message: string) => new SystemError(400, code, message);

const INTERNAL_SERVER_ERROR_MSG = "Your request couldn't be completed. Try again later.";

export const internalServerError = () => new SystemError(500, "InternalServerError", INTERNAL_SERVER_ERROR_MSG);

/** ErrorMetadata::user_occ(None, None, None) — what a mutation gets after the backend's retries. */
export const occFailure = () =>
  new SystemError(
    503,
    "OptimisticConcurrencyControlFailure",
    "Documents read from or written to some table changed while this mutation was being run and on every subsequent retry. See https://docs.convex.dev/error#1",
  );

/** An ErrorMetadata::overloaded shape, for queries and actions. */
export const overloaded = () =>
  new SystemError(
    503,
    "CommitterFullError",
    "Too many concurrent commits in a short period of time. Spread your writes out over time or throttle them to avoid errors.",
  );

/** ErrorMetadata::rate_limited("TooManyConcurrentRequests", …). */
export const rateLimited = (kind: string) =>
  new SystemError(
    429,
    "TooManyConcurrentRequests",
    `Too many concurrent requests. Your backend is limited to 16 concurrent ${kind}s. To get more resources, upgrade to Convex Pro. If you are already on Convex Pro, please contact support.`,
  );

/** A function error, before it is rendered (the request id is added then). */
export class FunctionError extends Error {
  constructor(
    message: string,
    readonly data?: unknown,
    readonly hasData = false,
  ) {
    super(message);
  }
}

export function newRequestId(): string {
  return randomBytes(8).toString("hex");
}

/**
 * What RedactedJsError displays in a dev deployment:
 * "[Request ID: <id>] Server Error\n<message>\n<frames>".
 */
export function functionErrorMessage(requestId: string, inner: string): string {
  return `[Request ID: ${requestId}] Server Error\n${inner}`;
}

/**
 * A JS error thrown by a function, formatted like the backend's JsError:
 * "Uncaught <Name>: <message>" followed by the user-code frames.
 */
export function describeThrown(thrown: unknown, functionsDir: string): { message: string; data?: unknown; hasData: boolean } {
  if (thrown instanceof FunctionError) return { message: `${thrown.message}\n`, data: thrown.data, hasData: thrown.hasData };
  const err = thrown instanceof Error ? thrown : new Error(String(thrown));
  const isConvexError = typeof thrown === "object" && thrown !== null && Symbol.for("ConvexError") in thrown;
  const stack = err.stack ?? "";
  // convex-test validates arguments before running the handler; the backend
  // reports that as ArgumentValidationError, not as an uncaught error.
  if (stack.includes("validateFunctionArgs")) {
    return { message: `ArgumentValidationError: ${err.message}\n`, hasData: false };
  }
  const name = err.name || "Error";
  const head = err.message ? `Uncaught ${name}: ${err.message}` : `Uncaught ${name}`;
  const parent = functionsDir.replace(/\/[^/]+\/?$/, "");
  const frames = stack
    .split("\n")
    .filter((l) => l.startsWith("    at ") && l.includes(functionsDir))
    .slice(0, 10)
    .map((l) => l.replace(`file://${parent}`, "..").replace(parent, ".."));
  const message = `${head}\n${frames.map((f) => `${f}\n`).join("")}`;
  if (isConvexError) return { message, data: (err as Error & { data?: unknown }).data, hasData: true };
  return { message, hasData: false };
}
