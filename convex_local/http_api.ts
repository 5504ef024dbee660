/**
 * Convex's public HTTP API over the local deployment, plus `/_local/*`
 * controls for tests. Semantics follow convex-backend
 * crates/local_backend/src/public_api.rs (handlers), authentication.rs
 * (Authorization header), crates/udf/src/validation.rs (visibility and
 * "Could not find public function"), crates/common/src/http/extract.rs
 * (BadJsonBody) and crates/value/src/export.rs (formats). README.md lists
 * where this stand-in differs.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { timingSafeEqual } from "node:crypto";
import type { Value } from "convex/values";
import { ANONYMOUS, callerIdentity, type AuthVerifier, type Caller } from "./auth";
import { decodeArgs, resolveCallable } from "./calls";
import type { Config, Faults } from "./config";
import {
  FunctionError,
  SystemError,
  badRequest,
  describeThrown,
  functionErrorMessage,
  internalServerError,
  newRequestId,
  occFailure,
  overloaded,
  rateLimited,
} from "./errors";
import type { Deployment, FunctionKind, ResolvedFunction } from "./runtime";
import { exportValue, parseFormat } from "./values";

const MAX_BODY_BYTES = 32 * 1024 * 1024;
export const SERVER_VERSION = "convex-local/1 (convex-test 0.0.60)";

export interface ApiContext {
  config: Config;
  faults: Faults;
  deployment: Deployment;
  /** JWT verification for `Authorization: Bearer` (auth.config.ts). */
  auth: AuthVerifier;
  /** The WebSocket side, for `/_local/stats`. */
  sync?: { stats(): Record<string, unknown> | object };
  /** Called after each request that ran a function (persistence hook). */
  afterExecute?: () => void;
  afterReset?: () => void;
  random?: () => number;
  log?: (line: Record<string, unknown>) => void;
}

interface Reply {
  status: number;
  body: string;
  contentType?: string;
  headers?: Record<string, string>;
  fn?: string;
}

const json = (status: number, value: unknown, headers?: Record<string, string>): Reply => ({
  status,
  body: JSON.stringify(value),
  headers,
});

function systemReply(e: SystemError): Reply {
  return json(e.status, { code: e.code, message: e.message }, e.headers);
}

// --- request plumbing --------------------------------------------------------

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) tooLarge = true;
      else if (!tooLarge) chunks.push(chunk);
    });
    req.on("end", () =>
      tooLarge
        ? reject(badRequest("BadJsonBody", "Failed to buffer the request body: length limit exceeded"))
        : resolve(Buffer.concat(chunks)),
    );
    req.on("error", reject);
  });
}

function isJsonContentType(header: string | undefined): boolean {
  if (!header) return false;
  const mime = header.split(";")[0].trim().toLowerCase();
  const [type, subtype = ""] = mime.split("/");
  return type === "application" && (subtype === "json" || subtype.endsWith("+json"));
}

async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  if (!isJsonContentType(req.headers["content-type"])) {
    req.resume();
    throw badRequest("BadJsonBody", "Expected request with `Content-Type: application/json`");
  }
  const raw = (await readBody(req)).toString("utf8");
  let body: unknown;
  try {
    body = JSON.parse(raw);
  } catch (e) {
    throw badRequest("BadJsonBody", `Failed to deserialize the JSON body into the target type: ${(e as Error).message}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw badRequest("BadJsonBody", "Failed to deserialize the JSON body into the target type: invalid type, expected a map");
  }
  return body as Record<string, unknown>;
}

function keysEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function adminKeyMatches(given: string, adminKey: string): boolean {
  return keysEqual(given, adminKey);
}

/** ExtractAuthenticationToken + Application::authenticate: the admin key or a user JWT. */
async function authenticate(req: IncomingMessage, adminKey: string, auth: AuthVerifier): Promise<Caller> {
  const header = req.headers.authorization;
  if (header === undefined) return ANONYMOUS;
  if (header.length < 7) throw badRequest("InvalidHeaderFailure", "Invalid authentication header");
  const scheme = header.slice(0, 7).toLowerCase();
  if (scheme === "convex ") {
    if (!keysEqual(header.slice(7), adminKey)) {
      throw new SystemError(401, "BadAdminKey", "The provided admin key was invalid for this instance");
    }
    return { kind: "admin", actingAs: null };
  }
  if (scheme === "bearer ") return auth.verify(header.slice(7).trim());
  throw badRequest("InvalidAdminKey", "Invalid admin key");
}

function requireAdmin(req: IncomingMessage, adminKey: string): void {
  const header = req.headers.authorization;
  if (header !== undefined && header.length < 7) throw badRequest("InvalidHeaderFailure", "Invalid authentication header");
  const scheme = header?.slice(0, 7).toLowerCase();
  if (scheme === "convex ") {
    if (keysEqual(header!.slice(7), adminKey)) return;
    throw new SystemError(401, "BadAdminKey", "The provided admin key was invalid for this instance");
  }
  if (header !== undefined && scheme !== "bearer ") throw badRequest("InvalidAdminKey", "Invalid admin key");
  throw new SystemError(401, "Unauthenticated", "This endpoint requires `Authorization: Convex <admin key>`");
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// --- /api --------------------------------------------------------------------

/** parse_export_path / parse_udf_path: "dir/module:export", ".js" optional. */
function parseFunctionPath(path: string): string {
  const bad = (why: string) =>
    badRequest("BadConvexFunctionIdentifier", `${path} is not a valid path to a Convex function. ${why}`);
  const parts = path.split(":");
  if (parts.length > 2) throw bad("Found multiple ':' in the path.");
  const [modulePath, exportName] = parts;
  if (modulePath === "" || modulePath.startsWith("/") || modulePath.endsWith("/") || modulePath.includes("//")) {
    throw bad("Module path is invalid.");
  }
  if (exportName !== undefined && !/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(exportName)) {
    throw bad("Function name is invalid.");
  }
  return path;
}

/** "/api/run/dir/module/fn" → "dir/module:fn" (public_function_post_with_path). */
function pathFromRunUrl(rest: string): string {
  const missing = () =>
    badRequest("MissingIdentifier", "Path or function name not provided in path, e.g. /api/run/messages/list");
  let parts: string[];
  try {
    parts = rest.split("/").map((p) => decodeURIComponent(p));
  } catch {
    throw missing();
  }
  if (parts.length < 2) throw missing();
  const fn = parts.pop()!;
  return parseFunctionPath(`${parts.join("/")}:${fn}`);
}

function resolveFor(udfPath: string, expected: FunctionKind | null, caller: Caller, ctx: ApiContext): ResolvedFunction {
  const found = resolveCallable(ctx.deployment, udfPath, expected, caller.kind === "admin");
  if (found.ok) return found.fn;
  if (ctx.config.udf404OnBadPath) {
    throw new SystemError(404, found.reason === "notFound" ? "FunctionPathNotFound" : "FunctionPathWrongType", found.message);
  }
  throw new FunctionError(found.message);
}

function injectedFault(kind: FunctionKind, ctx: ApiContext): SystemError | null {
  const random = ctx.random ?? Math.random;
  const { rate429, rate503 } = ctx.faults;
  if (rate429 > 0 && random() < rate429) return withFaultHeader(rateLimited(kind), "429");
  if (rate503 > 0 && random() < rate503) return withFaultHeader(kind === "mutation" ? occFailure() : overloaded(), "503");
  return null;
}

function withFaultHeader(e: SystemError, fault: string): SystemError {
  return new SystemError(e.status, e.code, e.message, { "x-convex-local-fault": fault });
}

async function handleFunctionCall(
  req: IncomingMessage,
  route: { expected: FunctionKind | null; runPath: string | null },
  ctx: ApiContext,
): Promise<Reply> {
  const body = await readJsonBody(req);
  if (route.runPath === null && typeof body.path !== "string") {
    throw badRequest(
      "BadJsonBody",
      `Failed to deserialize the JSON body into the target type: ${body.path === undefined ? "missing field `path`" : "invalid type for `path`, expected a string"}`,
    );
  }
  if (!("args" in body)) throw badRequest("BadJsonBody", "Failed to deserialize the JSON body into the target type: missing field `args`");
  if (body.format !== undefined && body.format !== null && typeof body.format !== "string") {
    throw badRequest("BadJsonBody", "Failed to deserialize the JSON body into the target type: invalid type for `format`, expected a string");
  }
  if (ctx.faults.latencyMs > 0) await sleep(ctx.faults.latencyMs);
  const caller = await authenticate(req, ctx.config.adminKey, ctx.auth);
  const udfPath = route.runPath !== null ? pathFromRunUrl(route.runPath) : parseFunctionPath(body.path as string);
  const requestId = newRequestId();

  let fn: ResolvedFunction;
  let args: Value;
  try {
    fn = resolveFor(udfPath, route.expected, caller, ctx);
    args = decodeArgs(body.args);
  } catch (e) {
    if (e instanceof FunctionError) return functionErrorReply(e, [], requestId, body.format, ctx, udfPath);
    throw e;
  }

  const fault = injectedFault(fn.kind, ctx);
  if (fault !== null) throw fault;

  const outcome = await ctx.deployment.execute(fn, args, callerIdentity(caller));
  ctx.afterExecute?.();

  const random = ctx.random ?? Math.random;
  if (fn.kind === "mutation" && outcome.ok && ctx.faults.failAfterCommit > 0 && random() < ctx.faults.failAfterCommit) {
    throw new SystemError(503, "InternalServerError", "Your request couldn't be completed. Try again later.", {
      "x-convex-local-fault": "failAfterCommit",
    });
  }

  // Like the backend, the format is checked after the function ran.
  const format = parseFormat(body.format);
  if (format === null) throw badRequest("BadFormat", `format param must be one of [\`json\`]. Got ${String(body.format)}`);

  if (!outcome.ok) return functionErrorReply(outcome.error, outcome.logLines, requestId, body.format, ctx, fn.udfPath);
  let valueText: string;
  try {
    valueText = exportValue(outcome.value as Value, format);
  } catch (e) {
    return functionErrorReply(e, outcome.logLines, requestId, body.format, ctx, fn.udfPath);
  }
  const logs = outcome.logLines.length > 0 ? `,"logLines":${JSON.stringify(outcome.logLines)}` : "";
  return { status: 200, body: `{"status":"success","value":${valueText}${logs}}`, fn: fn.udfPath };
}

function functionErrorReply(
  thrown: unknown,
  logLines: string[],
  requestId: string,
  rawFormat: unknown,
  ctx: ApiContext,
  fnName: string,
): Reply {
  const format = parseFormat(rawFormat);
  if (format === null) throw badRequest("BadFormat", `format param must be one of [\`json\`]. Got ${String(rawFormat)}`);
  const described = describeThrown(thrown, ctx.config.functionsDir);
  let dataText = "";
  if (described.hasData) {
    try {
      dataText = `,"errorData":${exportValue(described.data as Value, format)}`;
    } catch {
      dataText = "";
    }
  }
  const message = JSON.stringify(functionErrorMessage(requestId, described.message));
  const logs = logLines.length > 0 ? `,"logLines":${JSON.stringify(logLines)}` : "";
  return {
    status: ctx.config.functionErrorStatus,
    body: `{"status":"error","errorMessage":${message}${dataText}${logs}}`,
    fn: fnName,
  };
}

// --- /_local -------------------------------------------------------------------

function updateFaults(faults: Faults, body: Record<string, unknown>): void {
  const next = { ...faults };
  for (const [key, value] of Object.entries(body)) {
    if (key === "rate503" || key === "rate429" || key === "failAfterCommit") {
      if (typeof value !== "number" || !(value >= 0 && value <= 1)) throw badRequest("BadFaults", `${key} must be a number between 0 and 1`);
      next[key] = value;
    } else if (key === "latencyMs") {
      if (typeof value !== "number" || !Number.isInteger(value) || value < 0) throw badRequest("BadFaults", "latencyMs must be a non-negative integer");
      next.latencyMs = value;
    } else {
      throw badRequest("BadFaults", `unknown fault setting ${JSON.stringify(key)} (rate503, rate429, latencyMs, failAfterCommit)`);
    }
  }
  Object.assign(faults, next);
}

// --- routing -------------------------------------------------------------------

const FUNCTION_ROUTES: Record<string, FunctionKind | null> = {
  "/api/query": "query",
  "/api/mutation": "mutation",
  "/api/action": "action",
  "/api/function": null,
};

async function route(req: IncomingMessage, ctx: ApiContext): Promise<Reply> {
  const url = new URL(req.url ?? "/", "http://local");
  const path = url.pathname;
  const method = req.method ?? "GET";
  const methodNotAllowed = (): Reply => ({ status: 405, body: "", contentType: "text/plain" });

  if (path in FUNCTION_ROUTES || path.startsWith("/api/run/")) {
    if (method !== "POST") return methodNotAllowed();
    const runPath = path.startsWith("/api/run/") ? path.slice("/api/run/".length) : null;
    return handleFunctionCall(req, { expected: runPath === null ? FUNCTION_ROUTES[path] : null, runPath }, ctx);
  }
  switch (path) {
    case "/_local/health":
      return json(200, { ok: true });
    case "/_local/stats":
      requireAdmin(req, ctx.config.adminKey);
      return json(200, { ...ctx.deployment.stats(), faults: ctx.faults, ...(ctx.sync ? { sync: ctx.sync.stats() } : {}) });
    case "/_local/cpu": {
      // For benchmarks on a shared machine: CPU this process has used so far.
      requireAdmin(req, ctx.config.adminKey);
      const cpu = process.cpuUsage();
      return json(200, { cpuMicros: cpu.user + cpu.system });
    }
    case "/_local/faults":
      requireAdmin(req, ctx.config.adminKey);
      if (method === "GET") return json(200, ctx.faults);
      if (method !== "POST") return methodNotAllowed();
      updateFaults(ctx.faults, await readJsonBody(req));
      return json(200, ctx.faults);
    case "/_local/reset":
      if (method !== "POST") return methodNotAllowed();
      requireAdmin(req, ctx.config.adminKey);
      await ctx.deployment.reset();
      ctx.afterReset?.();
      return json(200, { ok: true });
    case "/version":
    case "/instance_version":
      return { status: 200, body: SERVER_VERSION, contentType: "text/plain; charset=utf-8" };
    case "/instance_name":
      return { status: 200, body: ctx.config.instanceName, contentType: "text/plain; charset=utf-8" };
    case "/":
      return { status: 200, body: "This Convex deployment is running. See https://docs.convex.dev/.", contentType: "text/plain; charset=utf-8" };
    default:
      return json(404, { code: "NotFound", message: `No route for ${method} ${path}` });
  }
}

export function createRequestHandler(ctx: ApiContext) {
  return (req: IncomingMessage, res: ServerResponse): void => {
    const started = performance.now();
    route(req, ctx)
      .catch((e: unknown): Reply => {
        if (e instanceof SystemError) return systemReply(e);
        process.stderr.write(`${JSON.stringify({ event: "internal_error", error: String((e as Error)?.stack ?? e) })}\n`);
        return systemReply(internalServerError());
      })
      .then((reply) => {
        res.writeHead(reply.status, {
          "content-type": reply.contentType ?? "application/json",
          "content-length": Buffer.byteLength(reply.body),
          ...reply.headers,
        });
        res.end(reply.body);
        ctx.log?.({
          event: "request",
          method: req.method,
          path: (req.url ?? "").split("?")[0],
          fn: reply.fn,
          status: reply.status,
          ms: Math.round((performance.now() - started) * 100) / 100,
        });
      });
  };
}
