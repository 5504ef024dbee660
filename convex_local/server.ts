/**
 * convex_local: the project's `convex/` functions behind Convex's HTTP API.
 *
 *   CONVEX_LOCAL_ADMIN_KEY=secret npx tsx infra/convex_local/server.ts
 *
 * Prints one line to stdout once listening:
 *   {"event":"listening","url":"http://127.0.0.1:PORT"}
 * The same port serves Convex's sync protocol (WebSocket, /api/<version>/sync).
 * Everything else (errors, request log with CONVEX_LOCAL_LOG=1) goes to
 * stderr. SIGTERM/SIGINT: stop accepting, finish queued work, save state,
 * exit 0. A configuration or startup problem: one line on stderr, exit 2.
 */
import { createServer, type Server } from "node:http";
import { AuthVerifier } from "./auth";
import { ConfigError, configFromEnv, type Config } from "./config";
import { createRequestHandler } from "./http_api";
import { StateSaver, loadState } from "./persistence";
import { Deployment } from "./runtime";
import { SyncServer } from "./sync_server";
import { startCpuProfile } from "./trace";

const SHUTDOWN_GRACE_MS = 10_000;

function stderrLine(record: Record<string, unknown>): void {
  process.stderr.write(`${JSON.stringify(record)}\n`);
}

async function start(config: Config): Promise<{ server: Server; shutdown: () => Promise<void> }> {
  let loaded = 0;
  const deployment = await Deployment.load({
    functionsDir: config.functionsDir,
    accelerate: config.accelerate,
    seed: config.statePath
      ? (db, tm) => {
          loaded = loadState(config.statePath!, db, tm);
        }
      : undefined,
  });
  if (config.statePath) stderrLine({ event: "state_loaded", path: config.statePath, documents: loaded });

  const saver = config.statePath
    ? new StateSaver(
        config.statePath,
        () => ({ db: deployment.db, lastCommitTs: deployment.lastCommitTs }),
        config.saveDebounceMs,
        (e) => stderrLine({ event: "state_save_failed", error: e.message }),
      )
    : null;
  // Scheduled functions commit outside requests; look for those too.
  const poll = saver ? setInterval(() => saver.touch(), 1000).unref() : null;

  const auth = await AuthVerifier.load(config.functionsDir, stderrLine);
  if (auth.source !== null) stderrLine({ event: "auth_config_loaded", path: auth.source, providers: auth.providerCount });

  const sync = new SyncServer({
    deployment,
    auth,
    adminKey: config.adminKey,
    functionsDir: config.functionsDir,
    refreshDeferMs: config.refreshDeferMs,
    afterExecute: saver ? () => saver.touch() : undefined,
    log: config.log ? stderrLine : undefined,
  });

  const handler = createRequestHandler({
    config,
    faults: { ...config.faults },
    deployment,
    auth,
    sync,
    afterExecute: saver ? () => saver.touch() : undefined,
    afterReset: saver
      ? () => {
          saver.invalidate();
          saver.touch();
        }
      : undefined,
    log: config.log ? stderrLine : undefined,
  });
  const server = createServer({ keepAliveTimeout: 30_000 }, handler);
  server.on("upgrade", sync.handleUpgrade);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, "127.0.0.1", () => resolve());
  });

  const writeProfile = startCpuProfile();
  const shutdown = async () => {
    await writeProfile();
    server.close();
    server.closeIdleConnections();
    sync.close();
    await Promise.race([deployment.queue.idle(), new Promise((r) => setTimeout(r, SHUTDOWN_GRACE_MS).unref())]);
    if (poll) clearInterval(poll);
    saver?.saveNow();
  };
  return { server, shutdown };
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = configFromEnv();
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`convex_local: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  let running: Awaited<ReturnType<typeof start>>;
  try {
    running = await start(config);
  } catch (e) {
    process.stderr.write(`convex_local: cannot start: ${(e as Error).message.split("\n")[0]}\n`);
    if (config.log) process.stderr.write(`${(e as Error).stack}\n`);
    process.exit(2);
  }
  const address = running.server.address();
  const port = typeof address === "object" && address ? address.port : config.port;
  process.stdout.write(`${JSON.stringify({ event: "listening", url: `http://127.0.0.1:${port}` })}\n`);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    stderrLine({ event: "stopping", signal });
    running
      .shutdown()
      .then(() => process.exit(0))
      .catch((e) => {
        stderrLine({ event: "shutdown_failed", error: String(e) });
        process.exit(1);
      });
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

void main();
