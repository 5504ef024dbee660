import { convexTest } from "convex-test";
import schema from "../../convex/schema";
import type { S3Event } from "../../convex/events";

export const modules = import.meta.glob("../../convex/**/*.*s");

/** A fresh in-memory backend that enforces a real deployment's per-transaction limits. */
export function backend() {
  return convexTest({ schema, modules, transactionLimits: true });
}

export type Backend = ReturnType<typeof backend>;

export const BUCKET = "media";
export const T0 = Date.UTC(2026, 10, 1, 12, 0, 0);

export function created(key: string, fields: Partial<S3Event> = {}): S3Event {
  return {
    type: "created",
    bucket: BUCKET,
    key,
    eventName: "ObjectCreated:Put",
    eventTime: T0,
    size: 100,
    etag: "d41d8cd98f00b204e9800998ecf8427e",
    etagKind: "md5",
    ...fields,
  };
}

export function removed(key: string, fields: Partial<S3Event> = {}): S3Event {
  return {
    type: "removed",
    bucket: BUCKET,
    key,
    eventName: "ObjectRemoved:Delete",
    eventTime: T0,
    ...fields,
  };
}

/** Every stored row of both tables, to compare before and after. */
export function snapshot(t: Backend) {
  return t.run(async (ctx) => ({
    assets: await ctx.db.query("assets").collect(),
    versions: await ctx.db.query("assetVersions").collect(),
  }));
}

/** Deterministic PRNG (mulberry32), so a failing permutation can be replayed. */
export function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffle<T>(items: readonly T[], rand: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}
