/**
 * The local Convex server as a child process, for the tests: start it, wait
 * for its `{"event":"listening"}` line, stop it with a signal.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = fileURLToPath(new URL("../..", import.meta.url));
export const SERVER = join(REPO, "convex_local/server.ts");
export const FIXTURES = fileURLToPath(new URL("./fixtures/convex", import.meta.url));
export const ADMIN_KEY = "test-admin-key|0123456789abcdef";

export interface Running {
  url: string;
  port: number;
  child: ChildProcess;
  stderr: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export function startServer(env: Record<string, string> = {}): Promise<Running> {
  const child = spawn(process.execPath, ["--import", "tsx", SERVER], {
    cwd: REPO,
    env: {
      ...process.env,
      CONVEX_LOCAL_ADMIN_KEY: ADMIN_KEY,
      CONVEX_LOCAL_PORT: "0",
      CONVEX_LOCAL_FUNCTIONS_DIR: FIXTURES,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    let stdout = "";
    child.stdout!.on("data", (d) => {
      stdout += d.toString();
      if (!stdout.includes("\n")) return;
      const { event, url } = JSON.parse(stdout.split("\n")[0]);
      if (event !== "listening") reject(new Error(`unexpected first line ${stdout}`));
      resolve({
        url,
        port: Number(new URL(url).port),
        child,
        stderr: () => stderr,
        stop: (signal = "SIGTERM") => {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          return exited;
        },
      });
    });
    void exited.then((code) => reject(new Error(`server exited ${code} before listening: ${stderr}`)));
  });
}

export async function post(
  url: string,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<{ status: number; json: any }> {
  const res = await fetch(url + path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text === "" ? undefined : JSON.parse(text) };
}

/** Poll `check` until it returns something truthy; that is the result. */
export async function waitFor<T>(check: () => T | undefined | null | false | 0 | "", timeoutMs = 10_000, what = "condition"): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value as T;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
