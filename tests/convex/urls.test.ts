import { describe, expect, test } from "vitest";
import { internal } from "../../convex/_generated/api";
import type { Id } from "../../convex/_generated/dataModel";
import type { S3Event } from "../../convex/events";
import { BUCKET, T0, backend, created, removed, type Backend } from "./support";

const apply = (t: Backend, events: S3Event[]) =>
  t.mutation(internal.assets.applyEvents, { events });
const record = (t: Backend, key: string) =>
  t.query(internal.assets.getByKey, { bucket: BUCKET, key });
const expiring = (
  t: Backend,
  before: number,
  cursor: string | null = null,
  numItems = 100,
  bucket = BUCKET,
) =>
  t.query(internal.urls.expiring, {
    bucket,
    before,
    paginationOpts: { cursor, numItems },
  });

const HOUR = 3_600_000;
const VIDEO = "sessions/s1/scenes/a/v1/video.mp4";
const layout = { sessionId: "s1", sceneId: "a", version: 1, kind: "video" };

describe("expiring", () => {
  test("lists available assets whose URL expires before the time, soonest first", async () => {
    const t = backend();
    await apply(t, [
      created("late.mp4", { url: "u-late", urlExpiresAt: T0 + 3 * HOUR }),
      created("soon.mp4", { url: "u-soon", urlExpiresAt: T0 + HOUR }),
      created("sooner.mp4", { url: "u-sooner", urlExpiresAt: T0 + HOUR / 2 }),
      created("public.mp4", { url: "https://cdn/public.mp4" }),
      created("none.mp4"),
      created("gone.mp4", { url: "u-gone", urlExpiresAt: T0 }),
      removed("gone.mp4", { eventTime: T0 + 1 }),
      created("elsewhere.mp4", { bucket: "other", url: "u", urlExpiresAt: T0 }),
    ]);
    const { page, isDone } = await expiring(t, T0 + 2 * HOUR);
    expect(isDone).toBe(true);
    expect(page.map((row) => row.key)).toEqual(["sooner.mp4", "soon.mp4"]);
    expect(page[0]).toMatchObject({
      bucket: BUCKET,
      urlExpiresAt: T0 + HOUR / 2,
    });
    const other = await expiring(t, T0 + 2 * HOUR, null, 100, "other");
    expect(other.page.map((row) => row.key)).toEqual(["elsewhere.mp4"]);
  });

  test("pages through many", async () => {
    const t = backend();
    await apply(
      t,
      Array.from({ length: 25 }, (_, i) =>
        created(`k${i}`, { url: `u${i}`, urlExpiresAt: T0 + i }),
      ),
    );
    const keys: string[] = [];
    let cursor: string | null = null;
    for (;;) {
      const result = await expiring(t, T0 + 20, cursor, 7);
      keys.push(...result.page.map((row) => row.key));
      if (result.isDone) break;
      cursor = result.continueCursor;
    }
    expect(keys).toEqual(Array.from({ length: 20 }, (_, i) => `k${i}`));
  });
});

describe("store", () => {
  async function seeded() {
    const t = backend();
    const [{ assetId }] = await apply(t, [
      created(VIDEO, { ...layout, url: "old", urlExpiresAt: T0 + HOUR }),
    ]);
    return { t, assetId: assetId as Id<"assets"> };
  }

  test("replaces an older URL on the asset and on the scene that points at it", async () => {
    const { t, assetId } = await seeded();
    const results = await t.mutation(internal.urls.store, {
      updates: [{ assetId, url: "new", urlExpiresAt: T0 + 2 * HOUR }],
    });
    expect(results).toEqual(["stored"]);
    expect(await record(t, VIDEO)).toMatchObject({
      url: "new",
      urlExpiresAt: T0 + 2 * HOUR,
    });
    const scene = await t.query(internal.sessions.scene, {
      sessionId: "s1",
      sceneId: "a",
    });
    expect(scene!.files.video).toMatchObject({
      url: "new",
      urlExpiresAt: T0 + 2 * HOUR,
    });
  });

  test("touches nothing but URL fields: the record's position and history stay", async () => {
    const { t, assetId } = await seeded();
    const before = await record(t, VIDEO);
    await t.mutation(internal.urls.store, {
      updates: [{ assetId, url: "new", urlExpiresAt: T0 + 2 * HOUR }],
    });
    const after = await record(t, VIDEO);
    const { url, urlExpiresAt, updatedAt, ...rest } = after!;
    const { url: u0, urlExpiresAt: e0, updatedAt: t0, ...rest0 } = before!;
    expect(rest).toEqual(rest0);
    expect(
      await t.query(internal.assets.history, { bucket: BUCKET, key: VIDEO }),
    ).toHaveLength(1);
  });

  test("never resurrects a deleted asset", async () => {
    const { t, assetId } = await seeded();
    await apply(t, [removed(VIDEO, { ...layout, eventTime: T0 + 5 })]);
    const results = await t.mutation(internal.urls.store, {
      updates: [{ assetId, url: "new", urlExpiresAt: T0 + 2 * HOUR }],
    });
    expect(results).toEqual(["gone"]);
    const asset = await record(t, VIDEO);
    expect(asset).toMatchObject({ status: "deleted" });
    expect(asset!.url).toBeUndefined();
  });

  test("never replaces a fresher URL written meanwhile", async () => {
    const { t, assetId } = await seeded();
    await apply(t, [
      created(VIDEO, {
        ...layout,
        eventTime: T0 + 5,
        url: "newer-object",
        urlExpiresAt: T0 + 5 * HOUR,
      }),
    ]);
    const results = await t.mutation(internal.urls.store, {
      updates: [{ assetId, url: "refreshed", urlExpiresAt: T0 + 2 * HOUR }],
    });
    expect(results).toEqual(["newer"]);
    expect((await record(t, VIDEO))!.url).toBe("newer-object");
  });

  test("a failure is recorded and the last good URL kept", async () => {
    const { t, assetId } = await seeded();
    const results = await t.mutation(internal.urls.store, {
      updates: [{ assetId, urlError: "presign GetObject: NoCredentialsError" }],
    });
    expect(results).toEqual(["error_recorded"]);
    expect(await record(t, VIDEO)).toMatchObject({
      url: "old",
      urlExpiresAt: T0 + HOUR,
      urlError: "presign GetObject: NoCredentialsError",
    });
    await t.mutation(internal.urls.store, {
      updates: [{ assetId, url: "new", urlExpiresAt: T0 + 2 * HOUR }],
    });
    expect((await record(t, VIDEO))!.urlError).toBeUndefined();
  });

  test("a public URL replaces a presigned fallback", async () => {
    const { t, assetId } = await seeded();
    await t.mutation(internal.urls.store, {
      updates: [{ assetId, url: "https://cdn/video.mp4" }],
    });
    const asset = await record(t, VIDEO);
    expect(asset!.url).toBe("https://cdn/video.mp4");
    expect(asset!.urlExpiresAt).toBeUndefined();
    expect((await expiring(t, T0 + 10 * HOUR)).page).toEqual([]);
  });
});

describe("applyEvents and URL errors", () => {
  test("an event without a URL but with urlError keeps the last good URL", async () => {
    const t = backend();
    await apply(t, [
      created(VIDEO, { ...layout, url: "good", urlExpiresAt: T0 + HOUR }),
    ]);
    await apply(t, [
      created(VIDEO, {
        ...layout,
        eventTime: T0 + 5,
        size: 7,
        urlError: "cannot sign",
      }),
    ]);
    expect(await record(t, VIDEO)).toMatchObject({
      size: 7,
      url: "good",
      urlExpiresAt: T0 + HOUR,
      urlError: "cannot sign",
    });
    const scene = await t.query(internal.sessions.scene, {
      sessionId: "s1",
      sceneId: "a",
    });
    expect(scene!.files.video!.url).toBe("good");
    // The next good write clears the error.
    await apply(t, [
      created(VIDEO, { ...layout, eventTime: T0 + 9, url: "better" }),
    ]);
    const asset = await record(t, VIDEO);
    expect(asset!.urlError).toBeUndefined();
    expect(asset!.url).toBe("better");
  });

  test("after a removal there is no good URL to keep", async () => {
    const t = backend();
    await apply(t, [
      created(VIDEO, { url: "good", urlExpiresAt: T0 + HOUR }),
      removed(VIDEO, { eventTime: T0 + 1 }),
      created(VIDEO, { eventTime: T0 + 2, urlError: "cannot sign" }),
    ]);
    const asset = await record(t, VIDEO);
    expect(asset).toMatchObject({
      status: "available",
      urlError: "cannot sign",
    });
    expect(asset!.url).toBeUndefined();
  });
});
