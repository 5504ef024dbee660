import { describe, expect, test } from "vitest";
import { internal } from "../../convex/_generated/api";
import type { Doc } from "../../convex/_generated/dataModel";
import { prefixEnd } from "../../convex/assets";
import type { S3Event } from "../../convex/events";
import { BUCKET, T0, backend, created, removed, type Backend } from "./support";

const apply = (t: Backend, events: S3Event[]) =>
  t.mutation(internal.assets.applyEvents, { events });

type Page = { page: Doc<"assets">[]; isDone: boolean; continueCursor: string };

/** Follows cursors to the end, checking that no page is larger than asked. */
async function allPages(
  fetchPage: (cursor: string | null) => Promise<Page>,
  numItems: number,
): Promise<Doc<"assets">[][]> {
  const pages: Doc<"assets">[][] = [];
  let cursor: string | null = null;
  for (;;) {
    const result = await fetchPage(cursor);
    expect(result.page.length).toBeLessThanOrEqual(numItems);
    pages.push(result.page);
    if (result.isDone) return pages;
    cursor = result.continueCursor;
    expect(pages.length).toBeLessThan(50);
  }
}

describe("getByKey", () => {
  test("finds the record for exactly that bucket and key", async () => {
    const t = backend();
    await apply(t, [
      created("a.mp4", { size: 1 }),
      created("a.mp4", { bucket: "other", size: 2 }),
    ]);
    expect(
      await t.query(internal.assets.getByKey, { bucket: BUCKET, key: "a.mp4" }),
    ).toMatchObject({ size: 1 });
    expect(
      await t.query(internal.assets.getByKey, {
        bucket: "other",
        key: "a.mp4",
      }),
    ).toMatchObject({ size: 2 });
    expect(
      await t.query(internal.assets.getByKey, { bucket: BUCKET, key: "a.mp" }),
    ).toBeNull();
  });
});

describe("history", () => {
  test("lists applied changes newest first, for that key only", async () => {
    const t = backend();
    await apply(t, [
      created("a", { sequencer: "01", size: 1 }),
      created("a/b", { sequencer: "01" }),
      created("a", { sequencer: "03", size: 3 }),
      created("a", { sequencer: "02", size: 2 }), // stale: no row
    ]);
    await apply(t, [removed("a", { sequencer: "04", eventTime: T0 + 4 })]);
    await apply(t, [created("a", { sequencer: "05", size: 5 })]);

    const rows = await t.query(internal.assets.history, {
      bucket: BUCKET,
      key: "a",
    });
    expect(rows.map((r) => [r.revision, r.type, r.sequencer])).toEqual([
      [4, "created", "05"],
      [3, "removed", "04"],
      [2, "created", "03"],
      [1, "created", "01"],
    ]);
    const two = await t.query(internal.assets.history, {
      bucket: BUCKET,
      key: "a",
      limit: 2,
    });
    expect(two.map((r) => r.revision)).toEqual([4, 3]);
    expect(
      await t.query(internal.assets.history, { bucket: BUCKET, key: "none" }),
    ).toEqual([]);
  });

  test.each([0, -1, 1.5, 1_001])("refuses limit %s", async (limit) => {
    const t = backend();
    await expect(
      t.query(internal.assets.history, { bucket: BUCKET, key: "a", limit }),
    ).rejects.toMatchObject({ data: { code: "BadLimit" } });
  });
});

describe("listBySession and listByStatus", () => {
  async function seed(t: Backend) {
    await apply(t, [
      ...Array.from({ length: 5 }, (_, i) =>
        created(`s1/${i}`, { sessionId: "s1" }),
      ),
      created("s2/0", { sessionId: "s2" }),
      created("loose"),
      removed("s1/3", { sequencer: "FF", eventTime: T0 + 1 }),
      removed("s2/gone", { sessionId: "s2" }),
    ]);
  }

  test("pages through one session and nothing else", async () => {
    const t = backend();
    await seed(t);
    const pages = await allPages(
      (cursor) =>
        t.query(internal.assets.listBySession, {
          sessionId: "s1",
          paginationOpts: { numItems: 2, cursor },
        }),
      2,
    );
    expect(pages.length).toBeGreaterThanOrEqual(3);
    const keys = pages.flat().map((a) => a.key);
    expect(keys.sort()).toEqual(["s1/0", "s1/1", "s1/2", "s1/3", "s1/4"]);
  });

  test("pages through one status", async () => {
    const t = backend();
    await seed(t);
    const list = async (status: "available" | "deleted" | "failed") =>
      (
        await allPages(
          (cursor) =>
            t.query(internal.assets.listByStatus, {
              status,
              paginationOpts: { numItems: 3, cursor },
            }),
          3,
        )
      )
        .flat()
        .map((a) => a.key)
        .sort();
    expect(await list("deleted")).toEqual(["s1/3", "s2/gone"]);
    expect(await list("available")).toEqual([
      "loose",
      "s1/0",
      "s1/1",
      "s1/2",
      "s1/4",
      "s2/0",
    ]);
    expect(await list("failed")).toEqual([]);
  });
});

describe("listByBucket", () => {
  // In key order as Convex sorts strings (UTF-8 bytes): the fullwidth "Ａ"
  // (U+FF21) comes before the emoji (U+1F600), beyond what "\uffff" bounds.
  const inPrefix = [
    "scenes/1/a",
    "scenes/1/b",
    "scenes/1/Ａ",
    "scenes/1/😀.mp4",
  ];
  const keys = [
    "other",
    "scenes/0",
    "scenes/1",
    "scenes/10/a",
    "scenes/2/a",
    ...inPrefix,
  ];

  async function seed() {
    const t = backend();
    await apply(t, [
      ...keys.map((key) => created(key)),
      created("scenes/1/a", { bucket: "elsewhere" }),
    ]);
    return t;
  }

  const list = (t: Backend, prefix: string | undefined, numItems: number) =>
    allPages(
      (cursor) =>
        t.query(internal.assets.listByBucket, {
          bucket: BUCKET,
          prefix,
          paginationOpts: { numItems, cursor },
        }),
      numItems,
    );

  test("returns exactly the keys under a prefix, in key order, across pages", async () => {
    const t = await seed();
    const pages = await list(t, "scenes/1/", 3);
    expect(pages.length).toBe(2);
    expect(pages.flat().map((a) => a.key)).toEqual(inPrefix);
    expect(pages.flat().every((a) => a.bucket === BUCKET)).toBe(true);
  });

  test("without a prefix, the whole bucket", async () => {
    const t = await seed();
    const all = (await list(t, undefined, 4)).flat().map((a) => a.key);
    expect(all).toEqual([
      "other",
      "scenes/0",
      "scenes/1",
      "scenes/1/a",
      "scenes/1/b",
      "scenes/1/Ａ",
      "scenes/1/😀.mp4",
      "scenes/10/a",
      "scenes/2/a",
    ]);
    expect((await list(t, "", 100)).flat()).toHaveLength(keys.length);
  });

  test("a prefix that matches nothing gives one empty, finished page", async () => {
    const t = await seed();
    expect(await list(t, "nope/", 10)).toEqual([[]]);
  });
});

describe("prefixEnd", () => {
  test("is the next string after every extension of the prefix", () => {
    expect(prefixEnd("scenes/1/")).toBe("scenes/10");
    expect(prefixEnd("a😀")).toBe("a😁");
    expect(prefixEnd("a\u{10ffff}")).toBe("b");
    expect(prefixEnd("\ud7ff")).toBe("\ue000");
    expect(prefixEnd("")).toBeNull();
    expect(prefixEnd("\u{10ffff}\u{10ffff}")).toBeNull();
  });
});
