/**
 * R8.3 — stored URLs follow the URL configuration. Each record says which
 * configuration made its URL (`urlConfig`); after a change the refresher
 * pages `urls:outOfConfig` (everything not equal to the current one, in two
 * index ranges) and `urls:store`s a URL of the new configuration, which
 * replaces the old one whatever their expiries.
 */
import { describe, expect, test } from "vitest";
import { internal } from "../../convex/_generated/api";
import type { Id } from "../../convex/_generated/dataModel";
import type { S3Event } from "../../convex/events";
import { BUCKET, T0, backend, created, removed, type Backend } from "./support";

const HOUR = 3_600_000;
const PRESIGNED = "presigned:3600";
const CDN_A = "public:https://cdn-a.example";
const CDN_B = "public:https://cdn-b.example";

const apply = (t: Backend, events: S3Event[]) =>
  t.mutation(internal.assets.applyEvents, { events });
const record = (t: Backend, key: string) =>
  t.query(internal.assets.getByKey, { bucket: BUCKET, key });
const outOfConfig = (
  t: Backend,
  current: string,
  numItems = 100,
  cursor: string | null = null,
  bucket = BUCKET,
) =>
  t.query(internal.urls.outOfConfig, {
    bucket,
    current,
    paginationOpts: { cursor, numItems },
  });
const store = (
  t: Backend,
  updates: {
    assetId: Id<"assets">;
    url: string;
    urlExpiresAt?: number;
    urlConfig?: string;
  }[],
) => t.mutation(internal.urls.store, { updates });
const expiring = async (t: Backend) =>
  (
    await t.query(internal.urls.expiring, {
      bucket: BUCKET,
      before: T0 + 100 * HOUR,
      paginationOpts: { cursor: null, numItems: 100 },
    })
  ).page.map((row) => row.key);

/** Every row of a full sweep, and how many pages it took. */
async function sweep(t: Backend, current: string, numItems: number) {
  const rows: { assetId: Id<"assets">; key: string; urlConfig?: string }[] = [];
  let cursor: string | null = null;
  let pages = 0;
  for (;;) {
    const result = await outOfConfig(t, current, numItems, cursor);
    pages += 1;
    expect(result.page.length).toBeLessThanOrEqual(numItems);
    rows.push(...result.page);
    if (result.isDone) return { rows, pages };
    cursor = result.continueCursor;
    expect(pages).toBeLessThan(100);
  }
}

const presigned = (key: string) =>
  created(key, {
    url: `signed/${key}`,
    urlExpiresAt: T0 + HOUR,
    urlConfig: PRESIGNED,
  });
const publicA = (key: string) =>
  created(key, { url: `https://cdn-a.example/${key}`, urlConfig: CDN_A });

describe("transitions", () => {
  test("presigned → public: listed, replaced, out of the expiry sweep", async () => {
    const t = backend();
    await apply(t, [presigned("a.mp4"), presigned("b.mp4")]);
    const { rows } = await sweep(t, CDN_A, 10);
    expect(rows.map((r) => [r.key, r.urlConfig])).toEqual([
      ["a.mp4", PRESIGNED],
      ["b.mp4", PRESIGNED],
    ]);
    expect(
      await store(
        t,
        rows.map((r) => ({
          assetId: r.assetId,
          url: `https://cdn-a.example/${r.key}`,
          urlConfig: CDN_A,
        })),
      ),
    ).toEqual(["stored", "stored"]);
    const a = await record(t, "a.mp4");
    expect(a).toMatchObject({
      url: "https://cdn-a.example/a.mp4",
      urlConfig: CDN_A,
    });
    expect(a?.urlExpiresAt).toBeUndefined();
    expect((await sweep(t, CDN_A, 10)).rows).toEqual([]);
    expect(await expiring(t)).toEqual([]);
  });

  test("public → another public base: replaced although neither expires", async () => {
    const t = backend();
    await apply(t, [publicA("a.mp4")]);
    const [row] = (await outOfConfig(t, CDN_B)).page;
    expect(row).toMatchObject({ key: "a.mp4", urlConfig: CDN_A });
    // Without a configuration the old rule holds: a public URL is not replaced.
    expect(
      await store(t, [
        { assetId: row.assetId, url: "https://cdn-b.example/a.mp4" },
      ]),
    ).toEqual(["newer"]);
    expect(
      await store(t, [
        {
          assetId: row.assetId,
          url: "https://cdn-b.example/a.mp4",
          urlConfig: CDN_B,
        },
      ]),
    ).toEqual(["stored"]);
    expect(await record(t, "a.mp4")).toMatchObject({
      url: "https://cdn-b.example/a.mp4",
      urlConfig: CDN_B,
    });
    expect((await sweep(t, CDN_B, 10)).rows).toEqual([]);
  });

  test("public → presigned: replaced by an expiring URL, which the expiry sweep then keeps fresh", async () => {
    const t = backend();
    await apply(t, [publicA("a.mp4")]);
    expect(await expiring(t)).toEqual([]);
    // "public:…" sorts above "presigned:…": the first page (the range
    // below) is empty and the cursor leads on to the range above.
    const first = await outOfConfig(t, PRESIGNED);
    expect(first).toMatchObject({ page: [], isDone: false });
    const [row] = (await sweep(t, PRESIGNED, 10)).rows;
    expect(
      await store(t, [
        {
          assetId: row.assetId,
          url: "signed/a.mp4",
          urlExpiresAt: T0 + HOUR,
          urlConfig: PRESIGNED,
        },
      ]),
    ).toEqual(["stored"]);
    expect(await record(t, "a.mp4")).toMatchObject({
      urlExpiresAt: T0 + HOUR,
      urlConfig: PRESIGNED,
    });
    expect(await expiring(t)).toEqual(["a.mp4"]);
    expect((await sweep(t, PRESIGNED, 10)).rows).toEqual([]);
  });

  test("within one configuration nothing changes: the later expiry still wins", async () => {
    const t = backend();
    await apply(t, [presigned("a.mp4")]);
    const a = (await record(t, "a.mp4"))!._id;
    expect(
      await store(t, [
        {
          assetId: a,
          url: "older",
          urlExpiresAt: T0 + HOUR - 1,
          urlConfig: PRESIGNED,
        },
      ]),
    ).toEqual(["newer"]);
    expect(
      await store(t, [
        {
          assetId: a,
          url: "later",
          urlExpiresAt: T0 + 2 * HOUR,
          urlConfig: PRESIGNED,
        },
      ]),
    ).toEqual(["stored"]);
  });
});

describe("outOfConfig", () => {
  test("lists records of every other configuration and of none, but not deleted ones or other buckets", async () => {
    const t = backend();
    await apply(t, [
      presigned("in-line.mp4"),
      created("legacy.mp4", { url: "signed/legacy", urlExpiresAt: T0 + HOUR }),
      created("never-signed.mp4", { urlError: "presign failed" }),
      publicA("public.mp4"),
      created("short.mp4", {
        url: "s",
        urlExpiresAt: T0 + HOUR,
        urlConfig: "presigned:60",
      }),
      created("alpha.mp4", { url: "x", urlConfig: "a-config" }),
      presigned("deleted.mp4"),
      removed("deleted.mp4", { eventTime: T0 + 1 }),
      created("elsewhere.mp4", { bucket: "other", url: "x", urlConfig: CDN_A }),
    ]);
    const { rows } = await sweep(t, PRESIGNED, 100);
    // Below the current value first (no configuration sorts first), then above.
    expect(rows.map((r) => r.key)).toEqual([
      "legacy.mp4",
      "never-signed.mp4",
      "alpha.mp4",
      "short.mp4",
      "public.mp4",
    ]);
    expect((await sweep(t, CDN_A, 100)).rows.map((r) => r.key)).not.toContain(
      "public.mp4",
    );
  });

  test("a removal clears the record's configuration; a failed re-sign keeps it", async () => {
    const t = backend();
    await apply(t, [presigned("a.mp4"), presigned("b.mp4")]);
    await apply(t, [
      removed("a.mp4", { eventTime: T0 + 1 }),
      created("b.mp4", { eventTime: T0 + 1, urlError: "presign failed" }),
    ]);
    const a = await record(t, "a.mp4");
    expect(a).toMatchObject({ status: "deleted" });
    expect(a?.urlConfig).toBeUndefined();
    expect(await record(t, "b.mp4")).toMatchObject({
      url: "signed/b.mp4",
      urlConfig: PRESIGNED,
      urlError: "presign failed",
    });
  });

  test("a sweep visits each record once in a bounded number of pages, while the refresher fixes them", async () => {
    const t = backend();
    const below = Array.from({ length: 13 }, (_, i) =>
      created(`below-${i}`, { url: "u", urlConfig: "aaa" }),
    );
    const above = Array.from({ length: 17 }, (_, i) => publicA(`above-${i}`));
    const fine = Array.from({ length: 9 }, (_, i) => presigned(`fine-${i}`));
    await apply(t, [...below, ...above, ...fine]);
    const numItems = 4;
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    for (;;) {
      const result = await outOfConfig(t, PRESIGNED, numItems, cursor);
      pages += 1;
      seen.push(...result.page.map((r) => r.key));
      // Brings the page in line before asking for the next one.
      if (result.page.length > 0) {
        expect(
          await store(
            t,
            result.page.map((r) => ({
              assetId: r.assetId,
              url: "new",
              urlExpiresAt: T0 + HOUR,
              urlConfig: PRESIGNED,
            })),
          ),
        ).toEqual(result.page.map(() => "stored"));
      }
      if (result.isDone) break;
      cursor = result.continueCursor;
      expect(pages).toBeLessThan(50);
    }
    expect(seen.sort()).toEqual([...below, ...above].map((e) => e.key).sort());
    // ⌈13/4⌉ + ⌈17/4⌉ pages of rows, plus at most one closing page per range.
    expect(pages).toBeLessThanOrEqual(
      Math.ceil(13 / 4) + Math.ceil(17 / 4) + 2,
    );
    expect((await sweep(t, PRESIGNED, 100)).rows).toEqual([]);
  });

  test("refuses pages above its bound and cursors it did not make", async () => {
    const t = backend();
    await expect(outOfConfig(t, PRESIGNED, 501)).rejects.toThrow(/BadLimit/);
    await expect(outOfConfig(t, PRESIGNED, 10, "garbage")).rejects.toThrow(
      /BadCursor/,
    );
  });

  test("urlConfig is checked: empty or overlong is refused", async () => {
    const t = backend();
    const [result] = await apply(t, [
      created("a", { url: "u", urlConfig: "" }),
    ]);
    expect(result).toMatchObject({
      status: "error",
      reason: expect.stringMatching(/urlConfig/),
    });
    await apply(t, [presigned("b")]);
    const b = (await record(t, "b"))!._id;
    await expect(
      store(t, [{ assetId: b, url: "u", urlConfig: "x".repeat(257) }]),
    ).rejects.toThrow(/BadUrlConfig/);
  });
});
