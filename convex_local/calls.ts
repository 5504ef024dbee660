/**
 * What the HTTP API and the sync protocol share about calling a function:
 * finding it (visibility, kind), decoding its arguments, and the message of
 * a function error. Semantics: convex-backend crates/udf/src/validation.rs.
 */
import { jsonToConvex, type JSONValue, type Value } from "convex/values";
import { FunctionError, describeThrown, functionErrorMessage } from "./errors";
import type { Deployment, FunctionKind, ResolvedFunction } from "./runtime";

const KIND_NAMES: Record<FunctionKind, string> = { query: "Query", mutation: "Mutation", action: "Action" };

export type Resolution =
  | { ok: true; fn: ResolvedFunction }
  | { ok: false; reason: "notFound" | "wrongKind"; message: string };

/** Look a function up as `isAdmin` may see it (internal functions need the admin key). */
export function resolveCallable(
  deployment: Deployment,
  udfPath: string,
  expected: FunctionKind | null,
  isAdmin: boolean,
): Resolution {
  const fn = deployment.resolve(udfPath);
  if (fn === undefined || (!fn.isPublic && !isAdmin)) {
    const shown = udfPath.replace(/\.js(?=:|$)/, "");
    return {
      ok: false,
      reason: "notFound",
      message: `Could not find public function for '${shown.includes(":") ? shown : `${shown}:default`}'.`,
    };
  }
  if (expected !== null && fn.kind !== expected) {
    return {
      ok: false,
      reason: "wrongKind",
      message: `Trying to execute ${fn.udfPath} as ${KIND_NAMES[expected]}, but it is defined as ${KIND_NAMES[fn.kind]}.`,
    };
  }
  return { ok: true, fn };
}

/** UdfArgsJson: an object, or the legacy `[object]`; Convex-encoded JSON. */
export function decodeArgs(raw: unknown): Value {
  let args = raw;
  if (Array.isArray(args)) {
    if (args.length !== 1) throw new FunctionError(`Expected exactly one argument object, got ${args.length} positional arguments.`);
    args = args[0];
  }
  if (typeof args !== "object" || args === null || Array.isArray(args)) {
    throw new FunctionError("The arguments to a Convex function must be an object.");
  }
  try {
    return jsonToConvex(args as JSONValue);
  } catch (e) {
    throw new FunctionError(`Invalid argument encoding: ${(e as Error).message}`);
  }
}

/** A thrown function error as the backend reports it: message (with request id) and ConvexError data. */
export function renderFunctionError(
  thrown: unknown,
  requestId: string,
  functionsDir: string,
): { message: string; data?: unknown; hasData: boolean } {
  const described = describeThrown(thrown, functionsDir);
  return { message: functionErrorMessage(requestId, described.message), data: described.data, hasData: described.hasData };
}
