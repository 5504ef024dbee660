// @vitest-environment node
/**
 * The storage shortcuts of the cleanup path answer exactly like convex-test:
 *
 *  - `fast_syscalls.ts` (cached document sizes and JSON for get / paginate /
 *    patch / insert): the same script on two instances, one with the fast
 *    syscalls, gives the same values, errors and transaction metrics;
 *  - `SortedIndex`'s insert hint and removal by identity keep the order a
 *    plain sorted array has, under sequential and random writes.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import { convexTest } from "convex-test";
import { compareValues, type Value } from "convex/values";
import { fileURLToPath } from "node:url";
import { accelerate } from "../../convex_local/accelerate";
import { installFastSyscalls, type SyscallGlobal } from "../../convex_local/fast_syscalls";
import { discoverFunctions, loadSchema } from "../../convex_local/modules";
import { captureConvexGlobal } from "../../convex_local/runtime";
import { SortedIndex, type IndexEntry, type IndexKey } from "../../convex_local/sorted_index";

/* eslint-disable @typescript-eslint/no-explicit-any */

const FIXTURES = fileURLToPath(new URL("./fixtures/convex", import.meta.url));

async function instance(fast: boolean): Promise<any> {
  const fns = discoverFunctions(FIXTURES);
  const schema = await loadSchema(fns);
  const t: any = convexTest({ schema: schema as any, modules: fns.modules, transactionLimits: true } as any);
  const global = captureConvexGlobal(t);
  accelerate(global.components[""].db);
  if (fast) installFastSyscalls(global as unknown as SyscallGlobal);
  return t;
}

/** Runs `step` on both instances; answers (or error messages) must be equal. */
async function same(ts: any[], step: (ctx: any) => Promise<unknown>): Promise<unknown> {
  const outcomes = [];
  for (const t of ts) {
    try {
      outcomes.push({ ok: await t.run(step) });
    } catch (e) {
      outcomes.push({ error: String((e as Error).message) });
    }
  }
  expect(outcomes[0]).toEqual(outcomes[1]);
  return outcomes[0];
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe("fast syscalls", () => {
  it("answer, fail and count like convex-test's own", async () => {
    let now = Date.UTC(2026, 11, 1);
    vi.spyOn(Date, "now").mockImplementation(() => now); // same _creationTime on both
    const ts = [await instance(true), await instance(false)];
    const inserted = (await same(ts, async (ctx) => {
      const ids = [];
      for (let i = 0; i < 700; i++) {
        ids.push(await ctx.db.insert("items", { group: i % 3 ? "a" : "b", name: `n${i}`, n: i, nested: { a: i % 5 }, ...(i % 7 ? { tag: "é✓" } : {}) }));
      }
      return { ids, used: await ctx.meta.getTransactionMetrics() };
    })) as { ok: { ids: string[] } };
    const ids = inserted.ok.ids;
    now += 1000;
    // Reads of committed documents (twice: the second from the cache), a missing one, patches.
    await same(ts, async (ctx) => {
      const out = [];
      for (const id of ids.slice(0, 300)) out.push(await ctx.db.get(id), await ctx.db.get(id));
      await ctx.db.delete(ids[299]);
      out.push(await ctx.db.get(ids[299]));
      for (const id of ids.slice(0, 200)) {
        const doc = await ctx.db.get(id);
        await ctx.db.patch(id, { n: doc.n + 1000, tag: undefined, nested: { a: 9 }, name: "ü".repeat(doc.n % 4) });
        out.push(await ctx.db.get(id));
      }
      return { out, used: await ctx.meta.getTransactionMetrics() };
    });
    // A patched document's size (from the old size) is the size of the new one.
    await same(ts, async (ctx) => {
      for (const id of ids.slice(0, 200)) await ctx.db.get(id);
      return await ctx.meta.getTransactionMetrics();
    });
    // Pages walked with cursors; filtered and descending too.
    for (const order of ["asc", "desc"] as const) {
      let cursor: string | null = null;
      for (let pages = 0; pages < 20; pages++) {
        const page: any = await same(ts, async (ctx) => {
          const result = await ctx.db
            .query("items")
            .withIndex("by_group_n", (q: any) => q.eq("group", "a").gte("n", 10))
            .order(order)
            .filter((q: any) => q.neq(q.field("n"), 50))
            .paginate({ numItems: 97, cursor });
          return { result, used: await ctx.meta.getTransactionMetrics() };
        });
        cursor = page.ok.result.continueCursor;
        if (page.ok.result.isDone) break;
      }
    }
    // Errors: a second paginate, an id of another table, a patch of a removed document.
    await same(ts, async (ctx) => {
      await ctx.db.query("items").paginate({ numItems: 1, cursor: null });
      return await ctx.db.query("items").paginate({ numItems: 1, cursor: null });
    });
    await same(ts, async (ctx) => ctx.db.get("others", ids[0]));
    await same(ts, async (ctx) => ctx.db.patch(ids[299], { n: 1 }));
    await same(ts, async (ctx) => ctx.db.insert("items", { group: 1 }));
    // Both databases end up alike.
    await same(ts, async (ctx) => ctx.db.query("items").collect());
  });
});

describe("SortedIndex shortcuts", () => {
  const cmp = (a: IndexKey, b: IndexKey) => {
    for (let i = 0; i < a.length; i++) {
      const c = compareValues(a[i] as Value, b[i] as Value);
      if (c !== 0) return c;
    }
    return 0;
  };

  it("keep a sorted array's order with hinted inserts and removals by identity", () => {
    const index = new SortedIndex<number>();
    const reference: IndexEntry<number>[] = [];
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    let next = 0;
    for (let step = 0; step < 6000; step++) {
      const r = random();
      if (r < 0.45 || reference.length === 0) {
        // Runs of ascending keys in one group (the hint's case), and random keys.
        const group = r < 0.3 ? "deleted" : ["a", "cleanup_pending", "z"][Math.floor(random() * 3)];
        const entry = { key: [group, r < 0.3 ? next++ : Math.floor(random() * 1e6), step], doc: step };
        index.insert(entry);
        reference.push(entry);
        reference.sort((x, y) => cmp(x.key, y.key));
      } else {
        const victim = reference.splice(Math.floor(random() * reference.length), 1)[0];
        expect(random() < 0.8 ? index.removeEntry(victim) : index.remove(victim.key)).toBe(true);
      }
      if (step % 500 === 0 || step === 5999) {
        expect([...index.entries()].map((e) => e.doc)).toEqual(reference.map((e) => e.doc));
        expect(index.size).toBe(reference.length);
      }
    }
    const gone = { key: ["nope", 0, 0], doc: -1 };
    expect(index.removeEntry(gone)).toBe(false);
  });
});
