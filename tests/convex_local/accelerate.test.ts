// @vitest-environment node
/**
 * The index acceleration must not change a single query result. Every check
 * runs the same query twice on the same database state — once through the
 * indexes, once through convex-test's original code — and compares
 * documents, order, cursors, page status and errors. Random workloads cover
 * eq/range/order/filter/limit/pagination, pending writes inside a mutation,
 * nested transactions, rollbacks, deletes and index-key changes.
 */
import { describe, expect, it } from "vitest";
import { convexTest } from "convex-test";
import { makeFunctionReference } from "convex/server";
import { fileURLToPath } from "node:url";
import { accelerate, type Acceleration } from "../../convex_local/accelerate";
import { discoverFunctions, loadSchema } from "../../convex_local/modules";
import { captureConvexGlobal } from "../../convex_local/runtime";
import { SortedIndex, comparePrefix } from "../../convex_local/sorted_index";
import { applyOps, encodeSpec, runQuery, type Op, type PageSpec, type QuerySpec } from "./fixtures/convex/probe_lib";

/* eslint-disable @typescript-eslint/no-explicit-any */

const FIXTURES = fileURLToPath(new URL("./fixtures/convex", import.meta.url));
const nestedProbe = makeFunctionReference<"mutation">("items:nestedProbe");
const pageProbe = makeFunctionReference<"query">("items:pageProbe");
const nestedFail = makeFunctionReference<"mutation">("items:nestedFail");

function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

async function setup(): Promise<{ t: any; acc: Acceleration }> {
  const fns = discoverFunctions(FIXTURES);
  const schema = await loadSchema(fns);
  const t: any = convexTest({ schema: schema as any, modules: fns.modules });
  const acc = accelerate(captureConvexGlobal(t).components[""].db);
  (globalThis as any).__convexLocalAcceleration = acc;
  return { t, acc };
}

// --- random data -----------------------------------------------------------

const GROUPS = ["a", "b", "c"];
const NAMES = ["", "x", "y", "yy", "z", "é"];
const TAGS = [undefined, "t1", "t2", "t3"];

function gen(rand: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  const num = () => (rand() < 0.15 ? int(-3, 12) + 0.5 : int(-3, 12));
  const fieldValue = (field: string): unknown => {
    switch (field) {
      case "group":
        return pick(GROUPS);
      case "name":
        return pick(NAMES);
      case "n":
        return num();
      case "tag":
        return pick(TAGS);
      case "nested.a":
        return rand() < 0.3 ? undefined : int(0, 5);
      case "x":
        return int(0, 9);
      default:
        throw new Error(field);
    }
  };
  const item = (): Record<string, unknown> => {
    const value: Record<string, unknown> = { group: pick(GROUPS), name: pick(NAMES), n: num() };
    const tag = pick(TAGS);
    if (tag !== undefined) value.tag = tag;
    if (rand() < 0.6) value.nested = { a: int(0, 5) };
    return value;
  };
  const ops = (count: number): Op[] =>
    Array.from({ length: count }, (): Op => {
      const r = rand();
      if (r < 0.45) return { op: "insert", table: "items", value: item() };
      if (r < 0.5) return { op: "insertOther", x: int(0, 9) };
      if (r < 0.75) {
        // Patches move documents between index ranges, and remove optional fields.
        const value: Record<string, unknown> = {};
        if (rand() < 0.5) value.group = pick(GROUPS);
        if (rand() < 0.5) value.n = num();
        if (rand() < 0.4) value.tag = pick(TAGS);
        if (rand() < 0.3) value.nested = rand() < 0.5 ? undefined : { a: int(0, 5) };
        return { op: "patch", pick: int(0, 1000), value };
      }
      if (r < 0.85) return { op: "replace", pick: int(0, 1000), value: item() };
      return { op: "delete", pick: int(0, 1000) };
    });
  const INDEXES: [string, string[]][] = [
    ["by_group", ["group"]],
    ["by_group_n", ["group", "n"]],
    ["by_name", ["name"]],
    ["by_tag", ["tag"]],
    ["by_nested", ["nested.a"]],
  ];
  const query = (): QuerySpec => {
    const r = rand();
    const read: QuerySpec["read"] = pick([
      { kind: "collect" },
      { kind: "take", n: int(1, 7) },
      { kind: "first" },
      { kind: "unique" },
    ] as QuerySpec["read"][]);
    const order = rand() < 0.5 ? "asc" : "desc";
    const filterNAbove = rand() < 0.25 ? int(-2, 8) : undefined;
    if (r < 0.1) return { table: "items", index: null, eq: [], order, read, filterNAbove };
    if (r < 0.15) return { table: "items", index: "by_creation_time", eq: [], order, read, filterNAbove };
    if (r < 0.22) {
      const spec: QuerySpec = { table: "others", index: "by_x", eq: [], order, read };
      if (rand() < 0.5) spec.eq = [int(0, 9)];
      else if (rand() < 0.5) spec.lower = { op: rand() < 0.5 ? "gt" : "gte", value: int(0, 9) };
      return spec;
    }
    const [index, fields] = pick(INDEXES);
    const eqCount = int(0, fields.length);
    const spec: QuerySpec = {
      table: "items",
      index,
      eq: fields.slice(0, eqCount).map(fieldValue),
      order,
      read,
      filterNAbove,
    };
    if (eqCount < fields.length) {
      const next = fields[eqCount];
      if (rand() < 0.5) spec.lower = { op: rand() < 0.5 ? "gt" : "gte", value: fieldValue(next) };
      if (rand() < 0.5) spec.upper = { op: rand() < 0.5 ? "lt" : "lte", value: fieldValue(next) };
    }
    return spec;
  };
  const page = (cursor: string | null = null): PageSpec => ({
    query: { ...query(), read: { kind: "collect" } },
    numItems: int(1, 6),
    cursor,
    maximumRowsRead: rand() < 0.2 ? int(1, 8) : undefined,
  });
  return { ops, query, page, int, rand };
}

// --- comparisons -----------------------------------------------------------

/** Runs `run` with the acceleration on, then off; returns both results. */
async function both<T>(acc: Acceleration, run: () => Promise<T>): Promise<[T, T]> {
  acc.queries = true;
  const fast = await run();
  acc.queries = false;
  try {
    return [fast, await run()];
  } finally {
    acc.queries = true;
  }
}

/** Walks every page of a paginated query in both modes, comparing each page. */
async function walkBoth(t: any, acc: Acceleration, spec: PageSpec): Promise<number> {
  let cursor: string | null = spec.cursor;
  for (let pages = 0; pages < 500; pages++) {
    const [fast, slow] = await both(acc, () => t.query(pageProbe, { spec: encodeSpec({ ...spec, cursor }) }));
    expect(fast).toEqual(slow);
    const result = fast as { isDone?: boolean; continueCursor?: string; error?: string };
    if (result.error !== undefined) throw new Error(`paginate failed in both modes: ${result.error}`);
    if (result.isDone) return pages + 1;
    cursor = result.continueCursor!;
  }
  throw new Error("pagination did not finish");
}

describe("index acceleration gives convex-test's exact results", () => {
  it("agrees on random queries with pending writes, nesting, rollbacks and pagination", async () => {
    const { t, acc } = await setup();
    const g = gen(prng(20261125));
    let compared = 0;
    for (let round = 0; round < 40; round++) {
      const rollback = g.rand() < 0.3;
      const firstOps = g.ops(g.int(3, 20));
      const nestedOps = g.ops(g.int(0, 6));
      const queries = Array.from({ length: 12 }, () => g.query());
      const nestedQueries = Array.from({ length: 5 }, () => g.query());
      const pages = Array.from({ length: 3 }, () => g.page());
      try {
        await t.run(async (ctx: any) => {
          await applyOps(ctx.db, firstOps);
          // Pending writes at the top level.
          for (const spec of queries) {
            const [fast, slow] = await both(acc, () => runQuery(ctx.db, spec));
            expect(fast).toEqual(slow);
            compared++;
          }
          // Pending writes on two levels: a nested mutation's on top of ours.
          const pairs = await ctx.runMutation(nestedProbe, {
            ops: JSON.stringify(nestedOps),
            queries: nestedQueries.map(encodeSpec),
          });
          for (const [fast, slow] of pairs) {
            expect(fast).toEqual(slow);
            compared++;
          }
          // A nested mutation that writes and fails: its level is rolled back.
          await expect(ctx.runMutation(nestedFail, { ops: JSON.stringify(g.ops(g.int(1, 6))) })).rejects.toThrow(/nested rollback/);
          for (const spec of nestedQueries) {
            const [fast, slow] = await both(acc, () => runQuery(ctx.db, spec));
            expect(fast).toEqual(slow);
            compared++;
          }
          // Pagination (one per function: each page in its own nested query).
          for (const spec of pages) {
            const [first, firstSlow] = await both(acc, () => ctx.runQuery(pageProbe, { spec: encodeSpec(spec) }));
            expect(first).toEqual(firstSlow);
            const next = first as { continueCursor?: string; isDone?: boolean };
            if (next.continueCursor && !next.isDone) {
              const spec2 = { ...spec, cursor: next.continueCursor };
              const [second, secondSlow] = await both(acc, () => ctx.runQuery(pageProbe, { spec: encodeSpec(spec2) }));
              expect(second).toEqual(secondSlow);
            }
            compared++;
          }
          if (rollback) throw new Error("roll back this round");
        });
      } catch (e) {
        if ((e as Error).message !== "roll back this round") throw e;
      }
      // Committed state, nothing pending: the lazy index views.
      for (let i = 0; i < 8; i++) {
        const spec = g.query();
        const [fast, slow] = await both(acc, () => t.query(async (ctx: any) => runQuery(ctx.db, spec)));
        expect(fast).toEqual(slow);
        compared++;
      }
      await walkBoth(t, acc, g.page());
      compared++;
    }
    expect(compared).toBeGreaterThan(900);
    const counts = acc.tables.stats().tables;
    expect(counts.items).toBeGreaterThan(20);
  }, 120_000);

  it("agrees on large ranges: chunk splits, cursors deep inside, desc walks, end cursors", async () => {
    const { t, acc } = await setup();
    const g = gen(prng(7));
    // 1,500 items (several index chunks) in batches, then churn.
    for (let b = 0; b < 3; b++) {
      const ops: Op[] = Array.from({ length: 500 }, () => g.ops(1)[0]).map((op) =>
        op.op === "delete" || op.op === "replace" ? { op: "insert", table: "items", value: { group: "a", name: "x", n: g.int(0, 50) } } : op,
      );
      await t.run(async (ctx: any) => applyOps(ctx.db, ops));
    }
    await t.run(async (ctx: any) => applyOps(ctx.db, g.ops(200)));
    const sizes = acc.tables.stats().indexes;
    expect(sizes["items.by_group"]).toBeGreaterThan(1000);

    for (const order of ["asc", "desc"] as const) {
      const spec: PageSpec = {
        query: { table: "items", index: "by_group_n", eq: ["a"], order, read: { kind: "collect" } },
        numItems: 61,
        cursor: null,
      };
      expect(await walkBoth(t, acc, spec)).toBeGreaterThan(5);
      const full: PageSpec = { query: { table: "items", index: null, eq: [], order, read: { kind: "collect" } }, numItems: 200, cursor: null };
      expect(await walkBoth(t, acc, full)).toBeGreaterThan(5);
    }
    // endCursor: the page a reactive client re-requests between two cursors.
    const spec: PageSpec = {
      query: { table: "items", index: "by_group", eq: ["b"], order: "asc", read: { kind: "collect" } },
      numItems: 40,
      cursor: null,
    };
    const first = (await t.query(pageProbe, { spec: encodeSpec(spec) })) as { continueCursor: string };
    const second = (await t.query(pageProbe, { spec: encodeSpec({ ...spec, cursor: first.continueCursor }) })) as { continueCursor: string };
    const [fast, slow] = await both(acc, () =>
      t.query(pageProbe, { spec: encodeSpec({ ...spec, cursor: first.continueCursor, endCursor: second.continueCursor }) }),
    );
    expect(fast).toEqual(slow);
    expect((fast as { page: unknown[] }).page.length).toBe(40);
    for (let i = 0; i < 60; i++) {
      const q = g.query();
      const [f, s] = await both(acc, () => t.query(async (ctx: any) => runQuery(ctx.db, q)));
      expect(f).toEqual(s);
    }
  }, 120_000);

  it("reports errors the same way (undeclared index, bad range order)", async () => {
    const { t, acc } = await setup();
    await t.run(async (ctx: any) => applyOps(ctx.db, gen(prng(1)).ops(30)));
    const bad = [
      (db: any) => db.query("items").withIndex("by_nothing").collect(),
      (db: any) => db.query("items").withIndex("by_group_n", (q: any) => q.eq("n", 1)).collect(),
      (db: any) => db.query("items").withIndex("by_group_n", (q: any) => q.gt("group", "a").eq("n", 1)).collect(),
    ];
    for (const run of bad) {
      const [fast, slow] = await both(acc, () =>
        t.query(async (ctx: any) => {
          try {
            return await run(ctx.db);
          } catch (e) {
            return { error: (e as Error).message };
          }
        }),
      );
      expect(fast).toEqual(slow);
      expect(fast).toHaveProperty("error");
    }
  });
});

describe("SortedIndex", () => {
  it("keeps order and positions through random inserts and removes", () => {
    const rand = prng(99);
    const index = new SortedIndex<number>();
    let model: number[][] = [];
    for (let step = 0; step < 6000; step++) {
      if (model.length === 0 || rand() < 0.6) {
        const key = [Math.floor(rand() * 50), step];
        index.insert({ key, doc: step });
        model.push(key);
      } else {
        const victim = model[Math.floor(rand() * model.length)];
        expect(index.remove(victim)).toBe(true);
        model = model.filter((k) => k !== victim);
      }
    }
    model.sort((a, b) => comparePrefix(a, b));
    expect(index.size).toBe(model.length);
    expect([...index.entries()].map((e) => e.key)).toEqual(model);
    const read = index.reader();
    for (let i = model.length - 1; i >= 0; i -= 7) expect(read(i).key).toEqual(model[i]);
    for (let v = -1; v <= 51; v++) {
      const expected = model.findIndex((k) => k[0] >= v);
      expect(index.firstWhere((k) => comparePrefix(k, [v]) >= 0)).toBe(expected === -1 ? model.length : expected);
    }
    expect(index.remove([1000, 0])).toBe(false);
  });
});
