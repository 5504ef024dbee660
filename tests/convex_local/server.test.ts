// @vitest-environment node
/**
 * The local Convex server as a subprocess, spoken to over HTTP the way the
 * Python service will: response shapes and status codes of Convex's HTTP
 * API, auth, fault injection, serialization, reset and persistence.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ADMIN_KEY as KEY, FIXTURES, REPO, SERVER, type Running, startServer as start } from "./server_process";

async function call(
  url: string,
  path: string,
  body: unknown,
  { key, headers = {} }: { key?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; text: string; json: any; headers: Headers; ms: number }> {
  const started = performance.now();
  const res = await fetch(url + path, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(key !== undefined ? { authorization: `Convex ${key}` } : {}),
      ...headers,
    },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any = undefined;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, text, json, headers: res.headers, ms: performance.now() - started };
}

const item = (name: string, n = 1) => ({ group: "g", name, n });

describe("convex_local server", () => {
  let server: Running;
  beforeAll(async () => {
    server = await start();
  }, 30_000);
  afterAll(async () => {
    expect(await server.stop()).toBe(0);
  });

  it("answers health, version and root like a deployment", async () => {
    expect(await (await fetch(`${server.url}/_local/health`)).json()).toEqual({ ok: true });
    const version = await fetch(`${server.url}/version`);
    expect(version.status).toBe(200);
    expect(version.headers.get("content-type")).toMatch(/^text\/plain/);
    expect(await version.text()).toMatch(/convex-local/);
    expect((await fetch(`${server.url}/nowhere`)).status).toBe(404);
    expect((await fetch(`${server.url}/api/query`)).status).toBe(405);
  });

  it("runs public functions without a key: success shape, clean JSON values", async () => {
    const added = await call(server.url, "/api/mutation", { path: "items:add", args: item("alpha", 2), format: "json" });
    expect(added.status).toBe(200);
    expect(added.json.status).toBe("success");
    expect(typeof added.json.value).toBe("string");
    expect(added.json).not.toHaveProperty("logLines");
    const got = await call(server.url, "/api/query", { path: "items:byName", args: { name: "alpha" }, format: "json" });
    expect(got.json).toMatchObject({ status: "success", value: { _id: added.json.value, group: "g", name: "alpha", n: 2 } });
    // Floats keep ".0" like serde_json; fields come out sorted.
    expect(got.text).toMatch(/^\{"status":"success","value":\{"_creationTime":[0-9.]+,"_id":"[^"]+","group":"g","n":2\.0,"name":"alpha"\}\}$/);
    const viaRun = await call(server.url, "/api/run/items/byName", { args: { name: "alpha" } });
    expect(viaRun.json.value._id).toBe(added.json.value);
    const viaFunction = await call(server.url, "/api/function", { path: "items:byName", args: { name: "alpha" }, format: "json" });
    expect(viaFunction.json.value._id).toBe(added.json.value);
    const legacyArgs = await call(server.url, "/api/query", { path: "items.js:byName", args: [{ name: "alpha" }], format: "json" });
    expect(legacyArgs.json.value._id).toBe(added.json.value);
  });

  it("exports values in the json, convex_encoded_json and export_json formats", async () => {
    const args = { echo: { $integer: Buffer.from(new BigInt64Array([5n]).buffer).toString("base64") } };
    const clean = await call(server.url, "/api/query", { path: "items:values", args, format: "json" });
    expect(clean.json.value).toEqual({
      bytes: "AQID",
      echo: "5",
      float: 10,
      fraction: 0.5,
      inf: "Infinity",
      int: "7",
      nan: "NaN",
      nested: { a: ["1", "x", null], z: 1 },
    });
    expect(clean.text).toContain('"float":10.0');
    const encoded = await call(server.url, "/api/query", { path: "items:values", args, format: "convex_encoded_json" });
    expect(encoded.json.value.int).toEqual({ $integer: Buffer.from(new BigInt64Array([7n]).buffer).toString("base64") });
    expect(encoded.json.value.bytes).toEqual({ $bytes: "AQID" });
    expect(encoded.json.value.nan).toHaveProperty("$float");
    const exported = await call(server.url, "/api/query", { path: "items:values", args, format: "export_json" });
    expect(exported.text).toContain('"int":7,');
    const badFormat = await call(server.url, "/api/query", { path: "items:values", args: {}, format: "yaml" });
    expect(badFormat.status).toBe(400);
    expect(badFormat.json.code).toBe("BadFormat");
  });

  it("keeps internal functions for the admin key", async () => {
    const anonymous = await call(server.url, "/api/mutation", { path: "items:addInternal", args: item("i"), format: "json" });
    expect(anonymous.status).toBe(200);
    expect(anonymous.json.status).toBe("error");
    expect(anonymous.json.errorMessage).toContain("Could not find public function for 'items:addInternal'");
    const admin = await call(server.url, "/api/mutation", { path: "items:addInternal", args: item("i"), format: "json" }, { key: KEY });
    expect(admin.json.status).toBe("success");
    for (const path of ["items:addInternal", "items:add"]) {
      const wrong = await call(server.url, "/api/mutation", { path, args: item("w"), format: "json" }, { key: "nope" });
      expect(wrong.status).toBe(401);
      expect(wrong.json).toEqual({ code: "BadAdminKey", message: expect.any(String) });
    }
    const bearer = await call(server.url, "/api/query", { path: "items:count", args: {} }, { headers: { authorization: "Bearer abc.def.ghi" } });
    expect(bearer.status).toBe(401);
    const garbage = await call(server.url, "/api/query", { path: "items:count", args: {} }, { headers: { authorization: "Basic Zm9vOmJhcg==" } });
    expect(garbage.status).toBe(400);
    expect(garbage.json.code).toBe("InvalidAdminKey");
  });

  it("reports function errors with status 200, errorData only for ConvexError, and rolls back", async () => {
    const before = await call(server.url, "/api/query", { path: "items:count", args: {}, format: "json" }, { key: KEY });
    const thrown = await call(server.url, "/api/mutation", { path: "items:fail", args: {}, format: "json" });
    expect(thrown.status).toBe(200);
    expect(thrown.json.status).toBe("error");
    expect(thrown.json.errorMessage).toMatch(/^\[Request ID: [0-9a-f]+\] Server Error\nUncaught Error: boom\n/);
    expect(thrown.json).not.toHaveProperty("errorData");
    const after = await call(server.url, "/api/query", { path: "items:count", args: {}, format: "json" }, { key: KEY });
    expect(after.json.value).toBe(before.json.value);

    const data = await call(server.url, "/api/mutation", { path: "items:failWithData", args: {}, format: "json" });
    expect(data.status).toBe(200);
    expect(data.json.errorMessage).toContain("Uncaught ConvexError");
    expect(data.json.errorData).toEqual({ code: "Nope", count: "3", ratio: 1 });

    const unknown = await call(server.url, "/api/query", { path: "items:nothing", args: {}, format: "json" });
    expect(unknown.json.errorMessage).toContain("Could not find public function for 'items:nothing'");
    const noModule = await call(server.url, "/api/query", { path: "nothing:here", args: {}, format: "json" });
    expect(noModule.json.status).toBe("error");
    const wrongKind = await call(server.url, "/api/query", { path: "items:add", args: item("k"), format: "json" });
    expect(wrongKind.json.errorMessage).toContain("Trying to execute items:add as Query, but it is defined as Mutation.");
    const badArgs = await call(server.url, "/api/mutation", { path: "items:add", args: { group: "g" }, format: "json" });
    expect(badArgs.status).toBe(200);
    expect(badArgs.json.errorMessage).toContain("ArgumentValidationError");
    const badEncoding = await call(server.url, "/api/mutation", { path: "items:add", args: { group: { $nope: 1 } }, format: "json" });
    expect(badEncoding.json.status).toBe("error");
  });

  it("answers malformed requests with 400 system errors", async () => {
    const badJson = await call(server.url, "/api/query", "{not json");
    expect(badJson.status).toBe(400);
    expect(badJson.json.code).toBe("BadJsonBody");
    const noContentType = await fetch(`${server.url}/api/query`, { method: "POST", body: JSON.stringify({ path: "items:count", args: {} }) });
    expect(noContentType.status).toBe(400);
    expect((await noContentType.json()).code).toBe("BadJsonBody");
    const noArgs = await call(server.url, "/api/query", { path: "items:count" });
    expect(noArgs.status).toBe(400);
    expect(noArgs.json.code).toBe("BadJsonBody");
    const noPath = await call(server.url, "/api/query", { args: {} });
    expect(noPath.json.code).toBe("BadJsonBody");
    const badPath = await call(server.url, "/api/query", { path: "a:b:c", args: {} });
    expect(badPath.status).toBe(400);
    expect(badPath.json.code).toBe("BadConvexFunctionIdentifier");
    const shortRun = await call(server.url, "/api/run/items", { args: {} });
    expect(shortRun.status).toBe(400);
    expect(shortRun.json.code).toBe("MissingIdentifier");
  });

  it("returns console output as logLines", async () => {
    const res = await call(server.url, "/api/query", { path: "items:chatty", args: {}, format: "json" });
    expect(res.json).toEqual({ status: "success", value: "done", logLines: ["[LOG] 'hello' 42", "[WARN] { a: 1 }"] });
  });

  it("runs actions, whose mutations commit", async () => {
    const res = await call(server.url, "/api/action", { path: "items:addViaAction", args: { name: "from-action" }, format: "json" });
    expect(res.json.status).toBe("success");
    const got = await call(server.url, "/api/query", { path: "items:byName", args: { name: "from-action" }, format: "json" });
    expect(got.json.value._id).toBe(res.json.value);
  });

  it("serializes concurrent mutations: none lost, each applied once", async () => {
    const before = (await call(server.url, "/api/query", { path: "items:count", args: {} }, { key: KEY })).json.value;
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => call(server.url, "/api/mutation", { path: "items:add", args: item(`c${i}`, i), format: "json" })),
    );
    expect(results.every((r) => r.json.status === "success")).toBe(true);
    expect(new Set(results.map((r) => r.json.value)).size).toBe(40);
    const after = (await call(server.url, "/api/query", { path: "items:count", args: {} }, { key: KEY })).json.value;
    expect(after).toBe(before + 40);
  });

  it("injects faults at runtime: 503/429 execute nothing, latency, failAfterCommit commits", async () => {
    const count = async () => (await call(server.url, "/api/query", { path: "items:count", args: {} }, { key: KEY })).json.value;
    expect((await call(server.url, "/_local/faults", { rate503: 1 })).status).toBe(401);
    expect((await call(server.url, "/_local/faults", { rate503: 1 }, { key: "wrong" })).status).toBe(401);
    expect((await call(server.url, "/_local/faults", { bogus: 1 }, { key: KEY })).status).toBe(400);
    const start = await count();
    try {
      expect((await call(server.url, "/_local/faults", { rate503: 1 }, { key: KEY })).json.rate503).toBe(1);
      const occ = await call(server.url, "/api/mutation", { path: "items:add", args: item("f503"), format: "json" });
      expect(occ.status).toBe(503);
      expect(occ.json.code).toBe("OptimisticConcurrencyControlFailure");
      expect(occ.headers.get("x-convex-local-fault")).toBe("503");
      const busy = await call(server.url, "/api/query", { path: "items:byName", args: { name: "x" }, format: "json" });
      expect(busy.status).toBe(503);
      await call(server.url, "/_local/faults", { rate503: 0, rate429: 1 }, { key: KEY });
      const limited = await call(server.url, "/api/mutation", { path: "items:add", args: item("f429"), format: "json" });
      expect(limited.status).toBe(429);
      expect(limited.json.code).toBe("TooManyConcurrentRequests");
      await call(server.url, "/_local/faults", { rate429: 0 }, { key: KEY });
      expect(await count()).toBe(start);

      await call(server.url, "/_local/faults", { latencyMs: 150 }, { key: KEY });
      const slow = await call(server.url, "/api/query", { path: "items:count", args: {} }, { key: KEY });
      expect(slow.ms).toBeGreaterThanOrEqual(145);
      await call(server.url, "/_local/faults", { latencyMs: 0, failAfterCommit: 1 }, { key: KEY });
      const lost = await call(server.url, "/api/mutation", { path: "items:add", args: item("committed-anyway"), format: "json" });
      expect(lost.status).toBe(503);
      expect(lost.headers.get("x-convex-local-fault")).toBe("failAfterCommit");
      // Queries are not affected by failAfterCommit.
      const found = await call(server.url, "/api/query", { path: "items:byName", args: { name: "committed-anyway" }, format: "json" });
      expect(found.json.value.name).toBe("committed-anyway");
    } finally {
      await call(server.url, "/_local/faults", { rate503: 0, rate429: 0, latencyMs: 0, failAfterCommit: 0 }, { key: KEY });
    }
    expect(await count()).toBe(start + 1);
  });

  it("resets the database on request (admin only)", async () => {
    expect((await call(server.url, "/_local/reset", {})).status).toBe(401);
    expect((await call(server.url, "/_local/reset", {}, { key: KEY })).json).toEqual({ ok: true });
    const count = await call(server.url, "/api/query", { path: "items:count", args: {} }, { key: KEY });
    expect(count.json.value).toBe(0);
  });
});

describe("convex_local server startup and state", () => {
  it("refuses to start without an admin key, in one line, exit 2", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", SERVER], {
      cwd: REPO,
      env: { ...process.env, CONVEX_LOCAL_ADMIN_KEY: "", CONVEX_LOCAL_FUNCTIONS_DIR: FIXTURES },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    let stdout = "";
    child.stderr!.on("data", (d) => (stderr += d));
    child.stdout!.on("data", (d) => (stdout += d));
    const code = await new Promise((r) => child.once("exit", r));
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain("CONVEX_LOCAL_ADMIN_KEY");
  }, 30_000);

  it("applies env faults from the start and logs requests without the key", async () => {
    const server = await start({ CONVEX_LOCAL_FAULT_503: "1", CONVEX_LOCAL_LOG: "1" });
    try {
      const res = await call(server.url, "/api/mutation", { path: "items:add", args: item("x"), format: "json" }, { key: KEY });
      expect(res.status).toBe(503);
    } finally {
      expect(await server.stop()).toBe(0);
    }
    expect(server.stderr()).toContain('"event":"request"');
    expect(server.stderr()).not.toContain("test-admin-key");
  }, 30_000);

  it("keeps its data across a restart with CONVEX_LOCAL_STATE", async () => {
    const dir = mkdtempSync(join(tmpdir(), "convex-local-"));
    const state = join(dir, "state.json");
    try {
      const first = await start({ CONVEX_LOCAL_STATE: state });
      const ids: string[] = [];
      for (const name of ["p1", "p2", "p3"]) {
        ids.push((await call(first.url, "/api/mutation", { path: "items:add", args: item(name), format: "json" })).json.value);
      }
      expect(await first.stop("SIGTERM")).toBe(0);
      expect(existsSync(state)).toBe(true);
      expect(JSON.parse(readFileSync(state, "utf8")).documents).toHaveLength(3);

      const second = await start({ CONVEX_LOCAL_STATE: state, CONVEX_LOCAL_SAVE_DEBOUNCE_MS: "50" });
      try {
        const got = await call(second.url, "/api/query", { path: "items:byName", args: { name: "p2" }, format: "json" });
        expect(got.json.value._id).toBe(ids[1]);
        const fresh = await call(second.url, "/api/mutation", { path: "items:add", args: item("p4"), format: "json" });
        expect(ids).not.toContain(fresh.json.value);
        // Saved after the debounce, without a shutdown.
        await new Promise((r) => setTimeout(r, 400));
        expect(JSON.parse(readFileSync(state, "utf8")).documents).toHaveLength(4);
      } finally {
        // SIGKILL: whatever was saved by the debounce must be enough.
        await second.stop("SIGKILL");
      }
      const third = await start({ CONVEX_LOCAL_STATE: state });
      try {
        const count = await call(third.url, "/api/query", { path: "items:count", args: {} }, { key: KEY });
        expect(count.json.value).toBe(4);
      } finally {
        expect(await third.stop("SIGINT")).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it("refuses a corrupt state file instead of starting empty", async () => {
    const dir = mkdtempSync(join(tmpdir(), "convex-local-"));
    const state = join(dir, "state.json");
    try {
      (await import("node:fs")).writeFileSync(state, "{ truncated");
      await expect(start({ CONVEX_LOCAL_STATE: state })).rejects.toThrow(/exited 2/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);
});
