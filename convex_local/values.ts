/**
 * Output value formats of Convex's HTTP API (convex-backend
 * crates/value/src/export.rs, `ValueFormat`):
 *
 * - `json` (alias `convex_clean_json`, and the default): int64 → decimal
 *   string, bytes → base64 string, NaN/±Infinity → "NaN"/"Infinity"/"-Infinity",
 *   floats as serde_json prints f64 (a whole number keeps its ".0").
 * - `convex_encoded_json` (alias `convex_json`): the invertible encoding
 *   (`{"$integer": b64}`, `{"$bytes": b64}`, `{"$float": b64}`).
 * - `export_json`: int64 as a bare integer, floats with ".0", bytes as
 *   `{"$bytes"}`, non-finite floats as `{"$float"}`.
 *
 * Objects come out with their fields sorted (the backend stores them in a
 * BTreeMap). Anything else is a 400 BadFormat, raised by the caller.
 */
import { convexToJson, type Value } from "convex/values";

export type ValueFormat = "clean" | "encoded" | "export";

export function parseFormat(format: unknown): ValueFormat | null {
  switch (format) {
    case undefined:
    case null:
    case "json":
    case "convex_clean_json":
      return "clean";
    case "convex_encoded_json":
    case "convex_json":
      return "encoded";
    case "export_json":
      return "export";
    default:
      return null;
  }
}

/** serde_json's rendering of a finite f64 (shortest round-trip, ".0" kept). */
export function formatFloat(n: number): string {
  if (Object.is(n, -0)) return "-0.0";
  if (Number.isInteger(n) && Math.abs(n) < 1e16) return `${n}.0`;
  // JS and ryu both print the shortest round-trip digits; ryu writes the
  // exponent without "+" and keeps a ".0" on whole mantissas ("1.0e21" → "1e21").
  return String(n).replace("e+", "e");
}

function base64(buf: ArrayBuffer): string {
  return Buffer.from(buf).toString("base64");
}

/** Serialize a Convex value in the given format, as JSON text. */
export function exportValue(value: Value | undefined, format: ValueFormat): string {
  const out: string[] = [];
  write(value === undefined ? null : value, format, out);
  return out.join("");
}

function write(v: Value, format: ValueFormat, out: string[]): void {
  if (v === null) {
    out.push("null");
  } else if (typeof v === "boolean") {
    out.push(v ? "true" : "false");
  } else if (typeof v === "string") {
    out.push(JSON.stringify(v));
  } else if (typeof v === "number") {
    if (Number.isFinite(v)) out.push(formatFloat(v));
    else if (format === "clean") out.push(Number.isNaN(v) ? '"NaN"' : v > 0 ? '"Infinity"' : '"-Infinity"');
    else out.push(JSON.stringify(convexToJson(v)));
  } else if (typeof v === "bigint") {
    if (format === "clean") out.push(`"${v.toString()}"`);
    else if (format === "export") out.push(v.toString());
    else out.push(JSON.stringify(convexToJson(v)));
  } else if (v instanceof ArrayBuffer) {
    out.push(format === "clean" ? JSON.stringify(base64(v)) : JSON.stringify({ $bytes: base64(v) }));
  } else if (Array.isArray(v)) {
    out.push("[");
    v.forEach((item, i) => {
      if (i > 0) out.push(",");
      write(item, format, out);
    });
    out.push("]");
  } else if (typeof v === "object") {
    out.push("{");
    let first = true;
    for (const key of Object.keys(v).sort()) {
      const item = (v as Record<string, Value | undefined>)[key];
      if (item === undefined) continue;
      if (!first) out.push(",");
      first = false;
      out.push(JSON.stringify(key), ":");
      write(item, format, out);
    }
    out.push("}");
  } else {
    // Not a Convex value (a function returned something odd): let convexToJson
    // raise its own error, which the caller reports as a function error.
    out.push(JSON.stringify(convexToJson(v)));
  }
}
