/**
 * Optional durability: the committed documents in one JSON file, so a
 * restarted server keeps its data ("Convex stopped, then restarted").
 *
 * The file is replaced atomically (write a temp file, fsync, rename) at most
 * once per debounce window after a commit, and on shutdown. Each document's
 * JSON is cached by object identity (committed documents are never mutated in
 * place; a patch stores a new object), so a save re-encodes only what changed.
 *
 * Not kept: file storage blobs and the timers of scheduled functions.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { convexToJson, jsonToConvex, type Value } from "convex/values";
import type { DatabaseFakeInternals } from "./accelerate";

const FORMAT = "convex_local.state";
const VERSION = 1;

interface StateHeader {
  format: string;
  version: number;
  nextDocId: number;
  lastCreationTime: number;
  lastCommitTs: string;
}

type Tm = { _lastCommitTs: bigint };

/** Load `path` into a fresh database. A missing file means an empty deployment. */
export function loadState(path: string, db: DatabaseFakeInternals, tm: Tm): number {
  if (!existsSync(path)) return 0;
  let state: StateHeader & { documents: Record<string, unknown>[] };
  try {
    state = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new Error(`state file ${path} is not valid JSON (${(e as Error).message}); move it away to start empty`);
  }
  if (state.format !== FORMAT || state.version !== VERSION || !Array.isArray(state.documents)) {
    throw new Error(`state file ${path} is not a ${FORMAT} v${VERSION} file; move it away to start empty`);
  }
  for (const json of state.documents) {
    const doc = jsonToConvex(json as never) as Record<string, Value> & { _id: string };
    db._documents[doc._id] = doc as never;
  }
  db._nextDocId = state.nextDocId;
  db._lastCreationTime = state.lastCreationTime;
  tm._lastCommitTs = BigInt(state.lastCommitTs);
  return state.documents.length;
}

export class StateSaver {
  private readonly cache = new WeakMap<object, string>();
  private timer: NodeJS.Timeout | null = null;
  private savedCommitTs: bigint | null = null;

  constructor(
    private readonly path: string,
    private readonly source: () => { db: DatabaseFakeInternals; lastCommitTs: bigint },
    private readonly debounceMs: number,
    private readonly onError: (e: Error) => void,
  ) {}

  /** Note that something may have committed; saves within `debounceMs`. */
  touch(): void {
    if (this.timer !== null) return;
    const { lastCommitTs } = this.source();
    if (lastCommitTs === this.savedCommitTs) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      try {
        this.saveNow();
      } catch (e) {
        this.onError(e as Error);
      }
    }, this.debounceMs);
    this.timer.unref();
  }

  /** Force the next save even if no commit happened (after a reset). */
  invalidate(): void {
    this.savedCommitTs = null;
  }

  saveNow(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const { db, lastCommitTs } = this.source();
    if (lastCommitTs === this.savedCommitTs) return;
    const docs: string[] = [];
    for (const id of Object.keys(db._documents)) {
      const doc = db._documents[id];
      let json = this.cache.get(doc);
      if (json === undefined) {
        json = JSON.stringify(convexToJson(doc as never));
        this.cache.set(doc, json);
      }
      docs.push(json);
    }
    const header: StateHeader = {
      format: FORMAT,
      version: VERSION,
      nextDocId: db._nextDocId,
      lastCreationTime: db._lastCreationTime,
      lastCommitTs: lastCommitTs.toString(),
    };
    const head = JSON.stringify(header);
    const text = `${head.slice(0, -1)},"documents":[\n${docs.join(",\n")}\n]}\n`;
    const tmp = `${this.path}.tmp-${process.pid}`;
    const fd = openSync(tmp, "w");
    try {
      writeSync(fd, text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.path);
    this.savedCommitTs = lastCommitTs;
  }
}
