/**
 * The wire format of Convex's sync protocol (the `convex` npm package,
 * src/browser/sync/protocol.ts; convex-backend
 * crates/convex/sync_types/src/types/json.rs): client messages parsed and
 * checked, server messages rendered as JSON text.
 *
 * Timestamps are u64 nanoseconds sent as base64 of their 8 little-endian
 * bytes. Values are Convex-encoded JSON (`convexToJson`).
 */

export class ProtocolError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export interface StateVersion {
  querySet: number;
  identity: number;
  ts: bigint;
}

export type QuerySetModification =
  | { type: "Add"; queryId: number; udfPath: string; args: unknown; journal: string | null; componentPath?: string }
  | { type: "Remove"; queryId: number };

export interface FunctionCallMessage {
  type: "Mutation" | "Action";
  requestId: number;
  udfPath: string;
  args: unknown;
  componentPath?: string;
}

export type ClientMessage =
  | { type: "Connect"; sessionId: string; connectionCount: number; maxObservedTimestamp: bigint | null; clientTs: number | null }
  | { type: "ModifyQuerySet"; baseVersion: number; newVersion: number; modifications: QuerySetModification[] }
  | FunctionCallMessage
  | { type: "Authenticate"; tokenType: "Admin"; value: string; baseVersion: number; actingAs: Record<string, unknown> | null }
  | { type: "Authenticate"; tokenType: "User"; value: string; baseVersion: number }
  | { type: "Authenticate"; tokenType: "None"; baseVersion: number }
  | { type: "Event"; eventType: string; event: unknown };

export function encodeTs(ts: bigint): string {
  const bytes = Buffer.alloc(8);
  bytes.writeBigUInt64LE(ts);
  return bytes.toString("base64");
}

export function decodeTs(encoded: string): bigint {
  const bytes = Buffer.from(encoded, "base64");
  if (bytes.length !== 8) throw new ProtocolError("WSMessageInvalidJson", "u64 must be 8 bytes");
  return bytes.readBigUInt64LE();
}

const bad = (why: string) => new ProtocolError("WSMessageInvalidJson", `Received Invalid JSON on websocket: ${why}`);

function field<T>(m: Record<string, unknown>, name: string, check: (v: unknown) => v is T, what: string): T {
  const v = m[name];
  if (!check(v)) throw bad(`${v === undefined ? "missing" : "invalid"} field \`${name}\`, expected ${what}`);
  return v;
}
const isU32 = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;
const isString = (v: unknown): v is string => typeof v === "string";
const optional = <T>(check: (v: unknown) => v is T) => (v: unknown): v is T | undefined | null => v === undefined || v === null || check(v);

/** Parse one text frame; throws `ProtocolError` (→ FatalError) when it is not a client message. */
export function parseClientMessage(text: string): ClientMessage {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw bad((e as Error).message);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw bad("expected an object");
  const m = raw as Record<string, unknown>;
  switch (m.type) {
    case "Connect": {
      const ts = field(m, "maxObservedTimestamp", optional(isString), "a string");
      const clientTs = field(m, "clientTs", optional((v): v is number => typeof v === "number"), "a number");
      return {
        type: "Connect",
        sessionId: field(m, "sessionId", isString, "a string"),
        connectionCount: field(m, "connectionCount", isU32, "a u32"),
        maxObservedTimestamp: ts === undefined || ts === null ? null : decodeTs(ts),
        clientTs: clientTs ?? null,
      };
    }
    case "ModifyQuerySet": {
      const mods = field(m, "modifications", Array.isArray, "an array") as unknown[];
      return {
        type: "ModifyQuerySet",
        baseVersion: field(m, "baseVersion", isU32, "a u32"),
        newVersion: field(m, "newVersion", isU32, "a u32"),
        modifications: mods.map((mod): QuerySetModification => {
          if (typeof mod !== "object" || mod === null) throw bad("a query set modification must be an object");
          const q = mod as Record<string, unknown>;
          if (q.type === "Remove") return { type: "Remove", queryId: field(q, "queryId", isU32, "a u32") };
          if (q.type !== "Add") throw bad(`unknown query set modification ${JSON.stringify(q.type)}`);
          const componentPath = field(q, "componentPath", optional(isString), "a string");
          const journal = field(q, "journal", optional(isString), "a string");
          return {
            type: "Add",
            queryId: field(q, "queryId", isU32, "a u32"),
            udfPath: field(q, "udfPath", isString, "a string"),
            args: q.args ?? [{}],
            journal: journal ?? null,
            ...(componentPath ? { componentPath } : {}),
          };
        }),
      };
    }
    case "Mutation":
    case "Action": {
      if (!("args" in m)) throw bad(`${m.type} lacks args`);
      const componentPath = field(m, "componentPath", optional(isString), "a string");
      return {
        type: m.type,
        requestId: field(m, "requestId", isU32, "a u32"),
        udfPath: field(m, "udfPath", isString, "a string"),
        args: m.args,
        ...(componentPath ? { componentPath } : {}),
      };
    }
    case "Authenticate": {
      const baseVersion = field(m, "baseVersion", isU32, "a u32");
      if (m.tokenType === "None") return { type: "Authenticate", tokenType: "None", baseVersion };
      const value = field(m, "value", isString, "a string");
      if (m.tokenType === "User") return { type: "Authenticate", tokenType: "User", value, baseVersion };
      if (m.tokenType === "Admin") {
        // JS sends `impersonating`, the Rust client `actingAs`.
        const acting = m.impersonating ?? m.actingAs ?? null;
        if (acting !== null && (typeof acting !== "object" || Array.isArray(acting))) throw bad("impersonating must be an object");
        return { type: "Authenticate", tokenType: "Admin", value, baseVersion, actingAs: acting as Record<string, unknown> | null };
      }
      throw bad(`unknown tokenType ${JSON.stringify(m.tokenType)}`);
    }
    case "Event":
      return { type: "Event", eventType: field(m, "eventType", isString, "a string"), event: m.event };
    default:
      throw bad(`unknown message type ${JSON.stringify(m.type)}`);
  }
}

// --- server messages ---------------------------------------------------------

export function renderVersion(v: StateVersion): string {
  return `{"querySet":${v.querySet},"identity":${v.identity},"ts":"${encodeTs(v.ts)}"}`;
}

/** `modifications`: already-rendered StateModification objects. */
export function renderTransition(start: StateVersion, end: StateVersion, modifications: string[], clientClockSkew: number | null): string {
  const skew = clientClockSkew === null ? "" : `,"clientClockSkew":${clientClockSkew}`;
  return `{"type":"Transition","startVersion":${renderVersion(start)},"endVersion":${renderVersion(end)},"modifications":[${modifications.join(",")}]${skew}}`;
}

export interface FunctionReply {
  success: boolean;
  /** Convex-encoded JSON text of the value (success) or the error message as a JSON string (failure). */
  resultJson: string;
  errorDataJson: string | null;
  logLines: string[];
}

export function renderMutationResponse(requestId: number, reply: FunctionReply, ts: bigint | null): string {
  const tsPart = reply.success && ts !== null ? `,"ts":"${encodeTs(ts)}"` : "";
  const data = reply.errorDataJson !== null ? `,"errorData":${reply.errorDataJson}` : "";
  return `{"type":"MutationResponse","requestId":${requestId},"success":${reply.success},"result":${reply.resultJson}${tsPart},"logLines":${JSON.stringify(reply.logLines)}${data}}`;
}

export function renderActionResponse(requestId: number, reply: FunctionReply): string {
  const data = reply.errorDataJson !== null ? `,"errorData":${reply.errorDataJson}` : "";
  return `{"type":"ActionResponse","requestId":${requestId},"success":${reply.success},"result":${reply.resultJson},"logLines":${JSON.stringify(reply.logLines)}${data}}`;
}

export function renderAuthError(error: string, baseVersion: number, authUpdateAttempted: boolean): string {
  return JSON.stringify({ type: "AuthError", error, baseVersion, authUpdateAttempted });
}

export function renderFatalError(error: string): string {
  return JSON.stringify({ type: "FatalError", error });
}

export const PING = '{"type":"Ping"}';
