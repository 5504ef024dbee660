/**
 * The public API's worst cases, measured under Convex's transaction limits
 * (`transactionLimits: true`): 16 MiB read, 32,000 documents, 4,096 index
 * ranges per query or mutation; 16,000 documents and 16 MiB written per
 * mutation. Each test builds the largest documents the schema and the
 * function bounds allow, runs the function as a nested call so the
 * enclosing transaction reports what it used, and holds the comment on the
 * function to it.
 */
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import type { Id } from "../../convex/_generated/dataModel";
import { MAX_EVENT_BYTES, type S3Event } from "../../convex/events";
import { MAX_PAGE_ITEMS, MAX_PAGE_ROWS } from "../../convex/model/public";
import { MAX_SCENE_VERSIONS, SCENE_KINDS } from "../../convex/model/scenes";
import { MAX_LIVE_SCENES } from "../../convex/sessions";
import {
  MAX_CONFIG_PAGE,
  MAX_REQUESTS,
  MAX_SIGNED_URL_LENGTH,
} from "../../convex/urls";
import { BUCKET, T0, backend, created, type Backend } from "./support";
import { ALICE, BOB, HOUR } from "./identities";

const MiB = 1 << 20;
const LIMITS = {
  bytesRead: 16 * MiB,
  documentsRead: 32_000,
  databaseQueries: 4_096,
};
const utf8 = new TextEncoder();

beforeEach(() => {
  vi.useFakeTimers({ now: T0 });
});
afterEach(() => {
  vi.useRealTimers();
});

/** An event of session s1 as large as an event may be (long key, URL, metadata). */
function largest(i: number, fields: Partial<S3Event> = {}): S3Event {
  const key = `sessions/s1/${String(i).padStart(5, "0")}/${"k".repeat(990)}`;
  const event = created(key, {
    contentType: "video/mp4",
    metadata: Object.fromEntries(
      Array.from({ length: 16 }, (_, j) => [`field-${j}`, "v".repeat(110)]),
    ),
    checksums: { sha256: "x".repeat(44) },
    url: `https://media.s3.amazonaws.com/${key}?X-Amz-Security-Token=`,
    urlExpiresAt: T0 + HOUR,
    urlConfig: "presigned:3600",
    sessionId: "s1",
    kind: "other",
    source: `sqs:${"m".repeat(36)}`,
    ...fields,
  });
  const room = MAX_EVENT_BYTES - utf8.encode(JSON.stringify(event)).length;
  return { ...event, url: event.url + "t".repeat(room) };
}

async function applyAll(t: Backend, events: S3Event[]) {
  for (let i = 0; i < events.length; i += 500) {
    const results = await t.mutation(internal.assets.applyEvents, {
      events: events.slice(i, i + 500),
    });
    expect(results.every((r) => r.status === "applied")).toBe(true);
  }
}

/** Runs `fn` inside a transaction of the caller and reports what it used. */
function measured<T>(
  t: Backend,
  who: object,
  fn: (ctx: Parameters<Parameters<Backend["run"]>[0]>[0]) => Promise<T>,
) {
  return t.withIdentity(who).run(async (ctx) => {
    const result = await fn(ctx);
    return { result, used: await ctx.meta.getTransactionMetrics() };
  });
}

type Used = Awaited<ReturnType<typeof measured>>["used"];

function withinLimits(used: Used) {
  expect(used.bytesRead.used).toBeLessThan(LIMITS.bytesRead);
  expect(used.documentsRead.used).toBeLessThan(LIMITS.documentsRead);
  expect(used.databaseQueries.used).toBeLessThan(LIMITS.databaseQueries);
}

/** A session owned by Alice and granted to Bob, with assets as large as events allow. */
async function bigSession(assets: number) {
  const t = backend();
  await applyAll(
    t,
    Array.from({ length: assets }, (_, i) => largest(i)),
  );
  await t.mutation(internal.access.setOwner, {
    sessionId: "s1",
    ownerId: ALICE.tokenIdentifier,
    actor: "platform",
  });
  // Bob's grant read through, after many of his revoked ones on the way.
  for (let i = 0; i < 5; i++) {
    const scope = { sessionId: "s1" };
    await t.mutation(internal.access.grant, {
      principal: BOB.tokenIdentifier,
      scope,
      actor: "a",
    });
    await t.mutation(internal.access.revoke, {
      principal: BOB.tokenIdentifier,
      scope,
      actor: "a",
    });
  }
  await t.mutation(internal.access.grant, {
    principal: BOB.tokenIdentifier,
    scope: { sessionId: "s1" },
    actor: "a",
    expiresAt: T0 + 24 * HOUR,
  });
  return t;
}

describe("sessions:live", () => {
  test("the largest session: MAX_LIVE_SCENES + 1 full scenes and pages of the largest assets", async () => {
    const t = await bigSession(MAX_PAGE_ROWS + 50);
    const anyAsset = (await t.run((ctx) => ctx.db.query("assets").first()))!
      ._id;
    // Scenes as large as they get: the full version history, six files with
    // 1 KB keys (written directly: 20,000 events would only take longer).
    await t.run(async (ctx) => {
      for (let s = 0; s <= MAX_LIVE_SCENES; s++) {
        const file = {
          assetId: anyAsset,
          key: "f".repeat(1_000),
          eventTime: T0,
        };
        await ctx.db.insert("scenes", {
          sessionId: "s1",
          sceneId: `scene-${String(s).padStart(4, "0")}-${"s".repeat(200)}`,
          currentVersion: MAX_SCENE_VERSIONS,
          files: Object.fromEntries(SCENE_KINDS.map((k) => [k, file])),
          versions: Array.from({ length: MAX_SCENE_VERSIONS }, (_, v) => ({
            version: v + 1,
            firstSeenAt: T0,
            lastSeenAt: T0,
          })),
          createdAt: T0,
          updatedAt: T0,
        });
      }
    });
    const first = await measured(t, BOB, (ctx) =>
      ctx.runQuery(api.sessions.live, {
        sessionId: "s1",
        paginationOpts: { cursor: null, numItems: 10_000 },
      }),
    );
    expect(first.result.page).toHaveLength(MAX_PAGE_ITEMS);
    expect(first.result.scenes).toHaveLength(MAX_LIVE_SCENES);
    expect(first.result.moreScenes).toBe(true);
    withinLimits(first.used);
    // Session, session grant, scenes, assets.
    expect(first.used.databaseQueries.used).toBeLessThanOrEqual(4);
    console.info("sessions:live, first page", summary(first.used));

    // A reactive page grown past its size (the client passes endCursor):
    // at most MAX_PAGE_ROWS rows, then Convex asks the client to split.
    // Here the first page is asked to stretch to the end of all 250 assets.
    let cursor = first.result.continueCursor;
    for (;;) {
      const next = await t.withIdentity(BOB).query(api.sessions.live, {
        sessionId: "s1",
        paginationOpts: { cursor, numItems: MAX_PAGE_ITEMS },
      });
      cursor = next.continueCursor;
      if (next.isDone) break;
    }
    const grown = await measured(t, BOB, (ctx) =>
      ctx.runQuery(api.sessions.live, {
        sessionId: "s1",
        paginationOpts: {
          cursor: null,
          endCursor: cursor,
          numItems: MAX_PAGE_ITEMS,
        },
      }),
    );
    expect(grown.result.page.length).toBeLessThanOrEqual(MAX_PAGE_ROWS);
    expect(grown.result.pageStatus).toBe("SplitRequired");
    withinLimits(grown.used);
    expect(grown.used.bytesRead.used).toBeLessThan(6 * MiB);
    expect(grown.used.documentsRead.used).toBeLessThan(500);
    console.info("sessions:live, grown page", summary(grown.used));
  }, 60_000);
});

describe("assets:view", () => {
  test("an asset with a long history: one capped page", async () => {
    const t = await bigSession(1);
    const key = largest(0).key;
    // Many overwrites of the same key, each a history row.
    await applyAll(
      t,
      Array.from({ length: MAX_PAGE_ROWS + 50 }, (_, i) =>
        largest(0, { eventTime: T0 + 1 + i, size: i }),
      ),
    );
    const assetId = (await t.query(internal.assets.getByKey, {
      bucket: BUCKET,
      key,
    }))!._id;
    const { result, used } = await measured(t, BOB, (ctx) =>
      ctx.runQuery(api.assets.view, {
        assetId,
        paginationOpts: { cursor: null, numItems: 10_000 },
      }),
    );
    expect(result.page).toHaveLength(MAX_PAGE_ITEMS);
    withinLimits(used);
    // Asset, session, session grant, asset grant, history.
    expect(used.databaseQueries.used).toBeLessThanOrEqual(5);
    expect(used.bytesRead.used).toBeLessThan(1 * MiB);
    console.info("assets:view", summary(used));
  }, 60_000);
});

describe("sessions:sceneView and access:requestUrl", () => {
  test("a scene with every kind of file; a request recorded", async () => {
    const t = backend();
    const kinds = [
      "video",
      "source",
      "metadata",
      "manifest",
      "thumbnail",
      "subtitle",
    ];
    await applyAll(
      t,
      kinds.map((kind, i) => largest(i, { sceneId: "a", version: 1, kind })),
    );
    await t.mutation(internal.access.setOwner, {
      sessionId: "s1",
      ownerId: ALICE.tokenIdentifier,
      actor: "platform",
    });
    const scene = await measured(t, ALICE, (ctx) =>
      ctx.runQuery(api.sessions.sceneView, { sessionId: "s1", sceneId: "a" }),
    );
    expect(Object.keys(scene.result.files)).toHaveLength(6);
    // Session, session grant, scene; one read per file.
    expect(scene.used.databaseQueries.used).toBeLessThanOrEqual(3 + 6);
    expect(scene.used.bytesRead.used).toBeLessThan(100 * 1024);
    console.info("sessions:sceneView", summary(scene.used));

    const source = scene.result.files.source!;
    const asked = await measured(t, ALICE, (ctx) =>
      ctx.runMutation(api.access.requestUrl, { assetId: source.assetId }),
    );
    expect(asked.result.status).toBe("pending");
    expect(asked.used.documentsWritten.used).toBe(2); // audit row, request
    // Asset, session, session grant, asset grant, the caller's request.
    expect(asked.used.databaseQueries.used).toBeLessThanOrEqual(5);
    console.info("access:requestUrl", summary(asked.used));
  }, 60_000);
});

describe("the sync service's side", () => {
  test("MAX_REQUESTS pending requests: listed in one call, fulfilled in one mutation", async () => {
    const t = backend();
    await applyAll(
      t,
      Array.from({ length: MAX_REQUESTS }, (_, i) => largest(i)),
    );
    const assets = await t.run((ctx) => ctx.db.query("assets").collect());
    await t.run(async (ctx) => {
      for (const asset of assets) {
        await ctx.db.insert("urlRequests", {
          assetId: asset._id,
          bucket: asset.bucket,
          key: asset.key,
          kind: asset.kind,
          principal: `https://auth.example.com|${"u".repeat(200)}`,
          ttlMs: 300_000,
          status: "pending",
          requestedAt: T0,
        });
      }
    });
    const listed = await measured(t, ALICE, (ctx) =>
      ctx.runQuery(internal.urls.pendingRequests, {
        bucket: BUCKET,
        limit: MAX_REQUESTS,
      }),
    );
    expect(listed.result).toHaveLength(MAX_REQUESTS);
    withinLimits(listed.used);
    console.info("urls:pendingRequests", summary(listed.used));

    // Signed with a later expiry than the stored one: every asset is written too.
    // As long as a fulfilment's URL may be.
    const url = (key: string) =>
      `https://media.s3.amazonaws.com/${key}?X-Amz-Security-Token=`.padEnd(
        MAX_SIGNED_URL_LENGTH,
        "t",
      );
    const fulfilled = await measured(t, ALICE, (ctx) =>
      ctx.runMutation(internal.urls.fulfilRequests, {
        fulfilments: listed.result.map((r) => ({
          requestId: r.requestId as Id<"urlRequests">,
          url: url(r.key),
          urlExpiresAt: T0 + 2 * HOUR,
          urlConfig: "presigned:3600",
        })),
      }),
    );
    expect(fulfilled.result.every((r) => r === "stored")).toBe(true);
    withinLimits(fulfilled.used);
    expect(fulfilled.used.documentsWritten.used).toBe(2 * MAX_REQUESTS);
    expect(fulfilled.used.bytesWritten.used).toBeLessThan(0.75 * 16 * MiB);
    expect(fulfilled.used.bytesRead.used).toBeLessThan(0.75 * 16 * MiB);
    console.info("urls:fulfilRequests", summary(fulfilled.used));
  }, 60_000);

  test("outOfConfig: a full page of the largest records", async () => {
    const t = backend();
    await applyAll(
      t,
      Array.from({ length: MAX_CONFIG_PAGE + 10 }, (_, i) => largest(i)),
    );
    const { result, used } = await measured(t, ALICE, (ctx) =>
      ctx.runQuery(internal.urls.outOfConfig, {
        bucket: BUCKET,
        current: "public:https://cdn.example",
        paginationOpts: { cursor: null, numItems: MAX_CONFIG_PAGE },
      }),
    );
    expect(result.page).toHaveLength(MAX_CONFIG_PAGE);
    withinLimits(used);
    expect(used.databaseQueries.used).toBe(1);
    console.info("urls:outOfConfig", summary(used));
  }, 60_000);
});

function summary(used: Used) {
  return {
    MB: +(used.bytesRead.used / 1e6).toFixed(2),
    docs: used.documentsRead.used,
    ranges: used.databaseQueries.used,
    written: used.documentsWritten.used,
    MBwritten: +(used.bytesWritten.used / 1e6).toFixed(2),
  };
}
