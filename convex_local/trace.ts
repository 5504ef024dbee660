/**
 * Stage timestamps for benchmarks: with CONVEX_LOCAL_TRACE=<file>, one JSON
 * line per function execution and per subscription refresh, so a benchmark
 * can split "commit → callback" into queue wait, execution, re-run and push.
 *
 *   {"e":"exec","path","queued","start","end","ts","keys"?}   wall-clock ms;
 *        `keys`: the `key` of each item of an `events` argument (applyEvents)
 *   {"e":"refresh","start","end","ts","reruns","changed","sent"}
 *        `sent`: Transitions written to sockets; `end` is after the last one
 *
 * Lines are buffered and written every 200 ms (and at exit), so tracing costs
 * the server little. Off (the default), every call here is a no-op.
 *
 * With CONVEX_LOCAL_CPU_PROFILE=<file> ("%p": the pid), V8's sampling profiler runs from start
 * to shutdown and writes a .cpuprofile there (Node 20 refuses --cpu-prof in
 * NODE_OPTIONS, and the launcher runs the server under tsx).
 */
import { appendFileSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector";

const path = process.env.CONVEX_LOCAL_TRACE || null;
let buffered: string[] = [];

function flush(): void {
  if (path === null || buffered.length === 0) return;
  const text = `${buffered.join("\n")}\n`;
  buffered = [];
  appendFileSync(path, text);
}

if (path !== null) {
  setInterval(flush, 200).unref();
  process.on("exit", flush);
}

export const tracing = path !== null;

/** Wall-clock milliseconds with sub-millisecond resolution (comparable across processes). */
export function wallMs(): number {
  return performance.timeOrigin + performance.now();
}

export function trace(record: Record<string, unknown>): void {
  if (path !== null) buffered.push(JSON.stringify(record));
}

/** The keys an `events` argument names (what applyEvents writes), for `exec` lines. */
export function eventKeys(args: unknown): string[] | undefined {
  const events = (args as { events?: unknown } | null)?.events;
  if (!Array.isArray(events)) return undefined;
  return events.map((e) => (e as { key?: unknown })?.key).filter((k): k is string => typeof k === "string");
}

/** Start the CPU profile if asked for; the returned function writes it (call at shutdown). */
export function startCpuProfile(): () => Promise<void> {
  // "%p" in the path becomes the process id (a benchmark may start several servers).
  const out = process.env.CONVEX_LOCAL_CPU_PROFILE?.replace("%p", String(process.pid));
  if (!out) return async () => {};
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.start");
  return () =>
    new Promise((resolve) => {
      session.post("Profiler.stop", (err, result) => {
        if (!err) writeFileSync(out, JSON.stringify(result.profile));
        session.disconnect();
        resolve();
      });
    });
}
