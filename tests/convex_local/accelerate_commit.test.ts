// @vitest-environment node
/**
 * The commit path of the index acceleration: a patch or replace moves a
 * document only in the indexes whose key it changed, and every index still
 * answers exactly like convex-test's own, unaccelerated code. Plus the
 * compiled schema check: it passes exactly what convex-test passes, and every
 * rejection is still convex-test's (same message).
 */
import { describe, expect, it } from "vitest";
import { convexTest } from "convex-test";
import { CommitTsPlaceholder, compareValues, type Value } from "convex/values";
import { fileURLToPath } from "node:url";
import { accelerate, type Acceleration, type IndexEntry } from "../../convex_local/accelerate";
import type { Doc } from "../../convex_local/convex_test_internals";
import { discoverFunctions, loadSchema } from "../../convex_local/modules";
import { captureConvexGlobal } from "../../convex_local/runtime";
import { compareKeyValues } from "../../convex_local/sorted_index";
import { compileValidator } from "../../convex_local/validation";
import { runQuery, type QuerySpec } from "./fixtures/convex/probe_lib";

/* eslint-disable @typescript-eslint/no-explicit-any */

const FIXTURES = fileURLToPath(new URL("./fixtures/convex", import.meta.url));
const PROJECT = fileURLToPath(new URL("../../convex", import.meta.url));

async function setup(dir = FIXTURES, withAcceleration = true): Promise<{ t: any; acc: Acceleration | null; db: any }> {
  const fns = discoverFunctions(dir);
  const schema = await loadSchema(fns);
  const t: any = convexTest({ schema: schema as any, modules: fns.modules });
  const db = captureConvexGlobal(t).components[""].db;
  return { t, acc: withAcceleration ? accelerate(db) : null, db };
}

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

/** The entry object holding `id` in an index (identity tells whether it was rebuilt). */
function entryOf(acc: Acceleration, index: string, id: string): IndexEntry<Doc> | undefined {
  for (const entry of acc.tables.index(index)!.entries.entries()) if (entry.doc._id === id) return entry;
  return undefined;
}

const SPECS: QuerySpec[] = [
  { table: "items", index: null, eq: [], order: "asc", read: { kind: "collect" } },
  { table: "items", index: "by_group", eq: ["a"], order: "asc", read: { kind: "collect" } },
  { table: "items", index: "by_group", eq: ["b"], order: "desc", read: { kind: "collect" } },
  { table: "items", index: "by_group_n", eq: ["a"], lower: { op: "gte", value: 100 }, order: "asc", read: { kind: "collect" } },
  { table: "items", index: "by_group_n", eq: ["b", 5000], order: "asc", read: { kind: "unique" } },
  { table: "items", index: "by_name", eq: ["moved"], order: "asc", read: { kind: "collect" } },
  { table: "items", index: "by_name", eq: ["x"], order: "asc", read: { kind: "take", n: 5 } },
  { table: "items", index: "by_tag", eq: [undefined], order: "asc", read: { kind: "first" } },
  { table: "items", index: "by_nested", eq: [3], order: "desc", read: { kind: "collect" } },
];

async function expectSameAnswers(t: any, acc: Acceleration): Promise<void> {
  for (const spec of SPECS) {
    const [fast, slow] = await both(acc, () => t.query(async (ctx: any) => runQuery(ctx.db, spec)));
    expect(fast).toEqual(slow);
  }
}

describe("a committed patch touches only the indexes whose key changed", () => {
  it("moves a document whose indexed field changed and keeps an unchanged one findable, as convex-test answers", async () => {
    const { t, acc } = await setup();
    // 1,200 items: several chunks per index, so a move crosses chunks.
    const ids: string[] = await t.run(async (ctx: any) => {
      const out: string[] = [];
      for (let i = 0; i < 1200; i++) {
        out.push(await ctx.db.insert("items", { group: "a", name: "x", n: i, nested: { a: i % 6 } }));
      }
      return out;
    });
    const [moved, renamed, same] = [ids[10], ids[600], ids[1100]];
    const before = {
      byGroup: entryOf(acc!, "items.by_group", moved)!,
      byGroupN: entryOf(acc!, "items.by_group_n", moved)!,
      byName: entryOf(acc!, "items.by_name", moved)!,
      renamedByGroup: entryOf(acc!, "items.by_group", renamed)!,
      renamedByName: entryOf(acc!, "items.by_name", renamed)!,
      sameByCreation: entryOf(acc!, "items.by_creation_time", same)!,
    };

    await t.run(async (ctx: any) => {
      await ctx.db.patch(moved, { group: "b", n: 5000 }); // by_group, by_group_n change
      await ctx.db.patch(renamed, { name: "moved", tag: "t1" }); // by_name, by_tag change; by_group does not
      await ctx.db.replace(same, { group: "a", name: "x", n: 1100, nested: { a: 1100 % 6 } }); // no key changes
    });

    // Changed keys: a new entry, at the new key; unchanged: the same entry, holding the new document.
    expect(entryOf(acc!, "items.by_group", moved)).not.toBe(before.byGroup);
    expect(entryOf(acc!, "items.by_group", moved)!.key[0]).toBe("b");
    expect(entryOf(acc!, "items.by_group_n", moved)).not.toBe(before.byGroupN);
    expect(entryOf(acc!, "items.by_name", moved)).toBe(before.byName);
    expect(entryOf(acc!, "items.by_name", moved)!.doc.group).toBe("b");
    expect(entryOf(acc!, "items.by_group", renamed)).toBe(before.renamedByGroup);
    expect(entryOf(acc!, "items.by_group", renamed)!.doc.name).toBe("moved");
    expect(entryOf(acc!, "items.by_name", renamed)).not.toBe(before.renamedByName);
    expect(entryOf(acc!, "items.by_creation_time", same)).toBe(before.sameByCreation);
    const sizes = acc!.tables.stats().indexes;
    for (const index of ["items.by_group", "items.by_group_n", "items.by_name", "items.by_tag", "items.by_nested"]) {
      expect(sizes[index]).toBe(1200);
    }

    // Every index answers like convex-test: the moved item is found under "b"
    // only, the renamed one under its new name and, unchanged, under "a".
    await expectSameAnswers(t, acc!);
    const inB = await t.query(async (ctx: any) => ctx.db.query("items").withIndex("by_group", (q: any) => q.eq("group", "b")).collect());
    expect(inB.map((d: Doc) => d._id)).toEqual([moved]);
    const renamedInA = await t.query(async (ctx: any) =>
      ctx.db.query("items").withIndex("by_group_n", (q: any) => q.eq("group", "a").eq("n", 600)).unique(),
    );
    expect(renamedInA).toMatchObject({ _id: renamed, name: "moved", tag: "t1" });

    // Patch back and forth, then delete: the indexes follow, still as convex-test answers.
    await t.run(async (ctx: any) => {
      await ctx.db.patch(moved, { group: "a", n: 10 });
      await ctx.db.patch(renamed, { n: 600.5 });
      await ctx.db.delete(same);
    });
    await expectSameAnswers(t, acc!);
    expect(acc!.tables.stats().indexes["items.by_group"]).toBe(1199);
    expect(entryOf(acc!, "items.by_group", same)).toBeUndefined();
  });

  it("treats 0 and -0 as different keys, as convex-test orders them", async () => {
    const { t, acc } = await setup();
    const id: string = await t.run(async (ctx: any) => ctx.db.insert("items", { group: "a", name: "x", n: 0 }));
    await t.run(async (ctx: any) => ctx.db.insert("items", { group: "a", name: "y", n: 0 }));
    const entry = entryOf(acc!, "items.by_group_n", id);
    await t.run(async (ctx: any) => ctx.db.patch(id, { n: -0 }));
    expect(entryOf(acc!, "items.by_group_n", id)).not.toBe(entry);
    expect(Object.is(entryOf(acc!, "items.by_group_n", id)!.key[1], -0)).toBe(true);
    const spec: QuerySpec = { table: "items", index: "by_group_n", eq: ["a"], order: "asc", read: { kind: "collect" } };
    const [fast, slow] = await both(acc!, () => t.query(async (ctx: any) => runQuery(ctx.db, spec)));
    expect(fast).toEqual(slow);
  });
});

describe("pending writes: an index of a level is built on first query and kept from then on", () => {
  it("answers like convex-test when writes and queries interleave inside one mutation", async () => {
    const { t, acc } = await setup();
    await t.run(async (ctx: any) => {
      for (let i = 0; i < 300; i++) await ctx.db.insert("items", { group: "a", name: "x", n: i });
    });
    await t.run(async (ctx: any) => {
      const ids: string[] = (await ctx.db.query("items").collect()).map((d: Doc) => d._id);
      for (let step = 0; step < 120; step++) {
        const id = ids[(step * 37) % ids.length];
        if (step % 5 === 0) await ctx.db.insert("items", { group: "b", name: "y", n: step });
        else if (step % 7 === 0) await ctx.db.delete(id).catch(() => undefined);
        else await ctx.db.patch(id, step % 2 === 0 ? { group: "b" } : { name: "moved", n: -step });
        // Query some indexes only now and then: others stay unbuilt until later.
        if (step % 3 === 0 || step > 100) {
          for (const spec of SPECS) {
            const [fast, slow] = await both(acc!, () => runQuery(ctx.db, spec));
            expect(fast).toEqual(slow);
          }
        }
      }
    });
    await expectSameAnswers(t, acc!);
  });
});

describe("compareKeyValues", () => {
  it("has compareValues' sign on strings (surrogates, BMP above them, prefixes), numbers (zeros, NaN) and mixed types", () => {
    const strings = ["", "a", "ab", "b", "é", "\u{e000}", "\u{ffff}", "\u{1f600}", "\u{1f601}", "a\u{1f600}", "a\u{e000}", "\ud800", "A", "aa"];
    const numbers = [0, -0, 1, -1, 0.5, NaN, -NaN, Infinity, -Infinity, Number.MIN_VALUE, 1e300];
    const others: (Value | undefined)[] = [undefined, null, true, false, 1n, 0n, [1], { a: 1 }, new ArrayBuffer(1)];
    const all: (Value | undefined)[] = [...strings, ...numbers, ...others];
    for (const a of all) {
      for (const b of all) {
        expect([a, b, Math.sign(compareKeyValues(a, b))]).toEqual([a, b, Math.sign(compareValues(a as Value, b as Value))]);
      }
    }
  });
});

// --- compiled schema validation ----------------------------------------------

/** Documents near the schema's edges: valid ones and one-field mutations of them. */
function variants(doc: Record<string, unknown>): unknown[] {
  const out: unknown[] = [doc, { ...doc, extra: 1 }, [], null, "text", { ...doc, constructor: 1 }];
  for (const k of Object.keys(doc)) {
    const { [k]: _dropped, ...missing } = doc;
    out.push(missing);
    for (const bad of [null, 1, -0, "s", true, 10n, new ArrayBuffer(2), [1], { a: 1 }, undefined, new CommitTsPlaceholder(), new Date(0)]) {
      out.push({ ...doc, [k]: bad });
    }
  }
  return out;
}

/** convex-test's verdict (its `_validate`, unpatched) and the patched one, as messages. */
function verdicts(plain: any, patched: any, table: string, value: unknown): [string, string] {
  const run = (db: any) => {
    try {
      db._validate(table, value);
      return "ok";
    } catch (e) {
      return `${(e as Error).name}: ${(e as Error).message}`;
    }
  };
  return [run(plain), run(patched)];
}

describe("compiled schema validation", () => {
  it("passes exactly what convex-test passes and rejects with convex-test's errors", async () => {
    const plain = (await setup(FIXTURES, false)).db;
    const patched = (await setup(FIXTURES, true)).db;
    const docs: [string, Record<string, unknown>][] = [
      ["items", { group: "a", name: "x", n: 1 }],
      ["items", { group: "a", name: "x", n: 1, tag: "t", nested: { a: 2 } }],
      ["others", { x: 3 }],
    ];
    let checked = 0;
    let rejected = 0;
    for (const [table, doc] of docs) {
      for (const value of variants(doc)) {
        const [expected, actual] = verdicts(plain, patched, table, value);
        expect(actual).toBe(expected);
        checked++;
        if (expected !== "ok") rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(50);
    expect(checked - rejected).toBeGreaterThan(5);
  });

  it("agrees with convex-test on the project's schema (unions, literals, ids, nested objects, records)", async () => {
    const plain = (await setup(PROJECT, false)).db;
    const patched = (await setup(PROJECT, true)).db;
    const asset = {
      bucket: "b",
      key: "k",
      status: "available",
      size: 1,
      etag: "e",
      etagKind: "md5",
      metadata: { a: "b" },
      eventTime: 1,
      lastEventName: "ObjectCreated:Put",
      lastEvent: { type: "created", size: 1 },
      revision: 1,
      createdAt: 1,
      updatedAt: 1,
    };
    const version = {
      assetId: "0001assets",
      revision: 1,
      bucket: "b",
      key: "k",
      type: "removed",
      eventName: "x",
      eventTime: 1,
      appliedAt: 1,
    };
    for (const [table, doc] of [["assets", asset], ["assetVersions", version]] as const) {
      const values = variants(doc as Record<string, unknown>);
      values.push({ ...doc, status: "deleted", deletedAt: 2 }, { ...doc, status: "nope" }, { ...doc, assetId: "0001videoSessions" });
      values.push({ ...doc, lastEvent: { type: "created", size: "1" } }, { ...doc, metadata: { a: 1 } });
      for (const value of values) {
        const [expected, actual] = verdicts(plain, patched, table, value);
        expect(actual).toBe(expected);
      }
    }
  });

  it("compiles a predicate that never passes what convex-test would reject", () => {
    const union = { type: "union", value: [{ type: "literal", value: "a" }, { type: "number" }] };
    const check = compileValidator({
      type: "object",
      value: { u: { fieldType: union, optional: false }, ids: { fieldType: { type: "array", value: { type: "id", tableName: "t" } }, optional: true } },
    });
    expect(check({ u: "a" })).toBe(true);
    expect(check({ u: 2, ids: ["1t"] })).toBe(true);
    expect(check({ u: "b" })).toBe(false);
    expect(check({ u: 2, ids: ["1other"] })).toBe(false);
    expect(check({ u: 2, more: 1 })).toBe(false);
    expect(check({})).toBe(false);
    expect(check(null)).toBe(false);
  });
});
