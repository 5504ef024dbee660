/**
 * `access:requestUrl` — the audited way for the web app to get a URL — and
 * the sync service's side of it (`urls:pendingRequests`, `urls:fulfilRequests`):
 * fresh stored URL → ready; none fit → a pending request the sync service
 * signs; gone, forbidden, anonymous; every decision (but anonymous) audited.
 */
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import type { Id } from "../../convex/_generated/dataModel";
import { BUCKET, T0, created, removed, type Backend } from "./support";
import {
  ALICE,
  BOB,
  HOUR,
  LOOSE,
  MALLORY,
  MIN,
  SOURCE,
  THUMB,
  VIDEO,
  apply,
  assetId,
  auditRows,
  layout,
  page,
  seeded,
} from "./identities";

beforeEach(() => {
  vi.useFakeTimers({ now: T0 });
});
afterEach(() => {
  vi.useRealTimers();
  vi.unstubAllEnvs();
});

async function request(
  t: Backend,
  who: object | null,
  key: string,
  maxTtlMs?: number,
) {
  return (who ? t.withIdentity(who) : t).mutation(api.access.requestUrl, {
    assetId: await assetId(t, key),
    maxTtlMs,
  });
}

const pending = (t: Backend, limit?: number) =>
  t.query(internal.urls.pendingRequests, { bucket: BUCKET, limit });

const fulfil = (
  t: Backend,
  fulfilments: (
    | {
        requestId: Id<"urlRequests">;
        url: string;
        urlExpiresAt?: number;
        urlConfig?: string;
      }
    | { requestId: Id<"urlRequests">; urlError: string }
  )[],
) => t.mutation(internal.urls.fulfilRequests, { fulfilments });

const lastAudit = async (t: Backend) => (await auditRows(t)).at(-1);

describe("requestUrl: served at once", () => {
  test("the owner gets the stored URL when it fits the kind's lifetime; audited as granted", async () => {
    const t = await seeded();
    expect(await request(t, ALICE, VIDEO)).toEqual({
      status: "ready",
      url: "stored-video",
      expiresAt: T0 + HOUR,
      urlSource: "stored",
      kind: "video",
    });
    expect(await lastAudit(t)).toMatchObject({
      action: "read",
      principal: ALICE.tokenIdentifier,
      channel: "public",
      outcome: "granted",
      reason: "owner",
      key: VIDEO,
      sessionId: "s1",
      kind: "video",
      urlSource: "stored",
      expiresAt: T0 + HOUR,
      at: T0,
    });
    expect(await pending(t)).toEqual([]);
  });

  test("a public URL is handed out whatever the lifetime", async () => {
    const t = await seeded();
    expect(await request(t, ALICE, THUMB, 5_000)).toMatchObject({
      status: "ready",
      url: "https://cdn.example/thumb.png",
      urlSource: "stored",
    });
  });

  test("a session grantee is served and audited with the grant", async () => {
    const t = await seeded();
    const grant = await t.mutation(internal.access.grant, {
      principal: BOB.tokenIdentifier,
      scope: { sessionId: "s1" },
      actor: ALICE.tokenIdentifier,
    });
    expect(await request(t, BOB, VIDEO)).toMatchObject({ status: "ready" });
    expect(await lastAudit(t)).toMatchObject({
      outcome: "granted",
      reason: "grant",
      grantId: grant._id,
    });
  });
});

describe("requestUrl: pending, then signed by the sync service", () => {
  test("no stored URL fits: a pending request, signed, then served as fresh", async () => {
    const t = await seeded();
    // A source may live 5 minutes; the stored one lives an hour.
    const first = await request(t, ALICE, SOURCE);
    expect(first).toEqual({ status: "pending", requestId: expect.any(String) });
    const requestId = (first as { requestId: Id<"urlRequests"> }).requestId;
    expect(await lastAudit(t)).toMatchObject({
      outcome: "pending",
      reason: "owner",
      requestId,
      channel: "public",
    });
    const status = () =>
      t.withIdentity(ALICE).query(api.access.urlRequest, { requestId });
    expect(await status()).toMatchObject({
      status: "pending",
      requestedAt: T0,
    });

    // Asking again while waiting: the same request, no second row.
    expect(await request(t, ALICE, SOURCE)).toEqual(first);
    const queue = await pending(t);
    expect(queue).toEqual([
      {
        requestId,
        assetId: await assetId(t, SOURCE),
        bucket: BUCKET,
        key: SOURCE,
        kind: "source",
        ttlMs: 5 * MIN,
        requestedAt: T0,
      },
    ]);

    vi.setSystemTime(T0 + 2_000);
    const signed = {
      requestId,
      url: "signed-source",
      urlExpiresAt: T0 + 2_000 + 5 * MIN,
      urlConfig: "presigned:3600",
    };
    // The asset's URL lives longer: it keeps it, the request holds the new one.
    expect(await fulfil(t, [signed])).toEqual(["done"]);
    // Idempotent: a retried call writes nothing.
    expect(await fulfil(t, [signed])).toEqual(["already"]);
    expect(await pending(t)).toEqual([]);
    expect(await status()).toMatchObject({
      status: "done",
      fulfilledAt: T0 + 2_000,
    });

    expect(await request(t, ALICE, SOURCE)).toEqual({
      status: "ready",
      url: "signed-source",
      expiresAt: T0 + 2_000 + 5 * MIN,
      urlSource: "fresh",
      kind: "source",
    });
    expect(await lastAudit(t)).toMatchObject({
      outcome: "granted",
      urlSource: "fresh",
      requestId,
      expiresAt: T0 + 2_000 + 5 * MIN,
    });
    const asset = await t.query(internal.assets.getByKey, {
      bucket: BUCKET,
      key: SOURCE,
    });
    expect(asset?.url).toBe("stored-source");
  });

  test("a signed URL fresher than the stored one replaces it for every reader", async () => {
    const t = await seeded();
    vi.setSystemTime(T0 + HOUR - 30_000); // the stored video URL is about to expire
    const first = await request(t, ALICE, VIDEO);
    expect(first.status).toBe("pending");
    const requestId = (first as { requestId: Id<"urlRequests"> }).requestId;
    expect(
      await fulfil(t, [
        {
          requestId,
          url: "resigned-video",
          urlExpiresAt: T0 + 2 * HOUR - 30_000,
          urlConfig: "presigned:3600",
        },
      ]),
    ).toEqual(["stored"]);
    const asset = await t.query(internal.assets.getByKey, {
      bucket: BUCKET,
      key: VIDEO,
    });
    expect(asset).toMatchObject({
      url: "resigned-video",
      urlConfig: "presigned:3600",
    });
    // The subscribed scene shows it to the owner now.
    const scene = await t
      .withIdentity(ALICE)
      .query(api.sessions.sceneView, { sessionId: "s1", sceneId: "a" });
    expect(scene.files.video).toMatchObject({
      urlState: "ready",
      url: "resigned-video",
    });
    expect(await request(t, ALICE, VIDEO)).toMatchObject({
      status: "ready",
      urlSource: "stored",
    });
  });

  test("the lifetime asked for is the shortest of kind, wish and grant", async () => {
    const t = await seeded();
    await t.mutation(internal.access.grant, {
      principal: BOB.tokenIdentifier,
      scope: { sessionId: "s1" },
      actor: ALICE.tokenIdentifier,
      expiresAt: T0 + 10 * MIN,
    });
    // Video may live 1 h, but Bob's grant ends in 10 minutes.
    expect((await request(t, BOB, VIDEO)).status).toBe("pending");
    // Alice wants a 2-minute URL.
    expect((await request(t, ALICE, VIDEO, 2 * MIN)).status).toBe("pending");
    const ttls = Object.fromEntries(
      (await pending(t)).map((r) => [r.requestedAt, r.ttlMs]),
    );
    expect(Object.values(ttls).sort()).toEqual([2 * MIN]);
    const rows = await t.run((ctx) => ctx.db.query("urlRequests").collect());
    expect(rows.map((r) => r.ttlMs).sort((a, b) => a - b)).toEqual([
      2 * MIN,
      10 * MIN,
    ]);
  });

  test("a failed signing is recorded without its text reaching the client; asking again retries", async () => {
    const t = await seeded();
    const first = (await request(t, ALICE, SOURCE)) as {
      requestId: Id<"urlRequests">;
    };
    expect(
      await fulfil(t, [
        {
          requestId: first.requestId,
          urlError: "SignatureDoesNotMatch: secret detail",
        },
      ]),
    ).toEqual(["failed"]);
    const status = await t
      .withIdentity(ALICE)
      .query(api.access.urlRequest, { requestId: first.requestId });
    expect(status).toMatchObject({ status: "failed" });
    expect(JSON.stringify(status)).not.toContain("secret detail");
    vi.setSystemTime(T0 + 5_000);
    const again = await request(t, ALICE, SOURCE);
    expect(again).toEqual({ status: "pending", requestId: first.requestId });
    expect(await pending(t)).toMatchObject([
      { requestId: first.requestId, requestedAt: T0 + 5_000 },
    ]);
  });

  test("a signed URL longer than a fulfilment may carry fails the request, not the batch", async () => {
    const t = await seeded();
    const first = (await request(t, ALICE, SOURCE)) as {
      requestId: Id<"urlRequests">;
    };
    expect(
      await fulfil(t, [
        {
          requestId: first.requestId,
          url: "u".repeat(5_000),
          urlExpiresAt: T0 + MIN,
        },
      ]),
    ).toEqual(["failed"]);
  });

  test("a request whose asset was deleted meanwhile closes as gone", async () => {
    const t = await seeded();
    const first = (await request(t, ALICE, SOURCE)) as {
      requestId: Id<"urlRequests">;
    };
    await apply(t, [
      removed(SOURCE, { ...layout("source"), eventTime: T0 + 1 }),
    ]);
    expect(
      await fulfil(t, [
        { requestId: first.requestId, url: "x", urlExpiresAt: T0 + MIN },
      ]),
    ).toEqual(["gone"]);
    const asset = await t.query(internal.assets.getByKey, {
      bucket: BUCKET,
      key: SOURCE,
    });
    expect(asset?.url).toBeUndefined();
  });

  test("only the requester may read a request's status", async () => {
    const t = await seeded();
    const first = (await request(t, ALICE, SOURCE)) as {
      requestId: Id<"urlRequests">;
    };
    await expect(
      t
        .withIdentity(MALLORY)
        .query(api.access.urlRequest, { requestId: first.requestId }),
    ).rejects.toMatchObject({ data: { code: "forbidden" } });
    await expect(
      t.query(api.access.urlRequest, { requestId: first.requestId }),
    ).rejects.toMatchObject({
      data: { code: "forbidden", reason: "unauthenticated" },
    });
  });

  test("pendingRequests pages a bucket's oldest first, bounded", async () => {
    const t = await seeded();
    await request(t, ALICE, SOURCE);
    vi.setSystemTime(T0 + 1);
    await request(t, ALICE, VIDEO, 2 * MIN);
    expect((await pending(t, 1)).map((r) => r.key)).toEqual([SOURCE]);
    expect((await pending(t)).map((r) => r.key)).toEqual([SOURCE, VIDEO]);
    expect(
      await t.query(internal.urls.pendingRequests, { bucket: "other" }),
    ).toEqual([]);
    await expect(pending(t, 501)).rejects.toThrow(/BadLimit/);
  });
});

describe("requestUrl: refused", () => {
  test("a stranger gets forbidden, no URL and no request; the denial is audited", async () => {
    const t = await seeded();
    const result = await request(t, MALLORY, VIDEO);
    expect(result).toEqual({ status: "error", error: { code: "forbidden" } });
    expect(JSON.stringify(result)).not.toMatch(/stored-video|user_alice|s1/);
    expect(await lastAudit(t)).toMatchObject({
      principal: MALLORY.tokenIdentifier,
      outcome: "denied",
      channel: "public",
      key: VIDEO,
    });
    expect(await pending(t)).toEqual([]);
  });

  test("an anonymous caller gets forbidden (unauthenticated) and writes nothing", async () => {
    const t = await seeded();
    const before = (await auditRows(t)).length;
    expect(await request(t, null, VIDEO)).toEqual({
      status: "error",
      error: { code: "forbidden", reason: "unauthenticated" },
    });
    expect((await auditRows(t)).length).toBe(before);
  });

  test("a deleted asset answers gone with deletedAt, audited; a stranger still learns only forbidden", async () => {
    const t = await seeded();
    await apply(t, [removed(VIDEO, { ...layout("video"), eventTime: T0 + 7 })]);
    expect(await request(t, ALICE, VIDEO)).toEqual({
      status: "error",
      error: { code: "gone", deletedAt: T0 + 7 },
    });
    expect(await lastAudit(t)).toMatchObject({ outcome: "gone", key: VIDEO });
    expect(await request(t, MALLORY, VIDEO)).toEqual({
      status: "error",
      error: { code: "forbidden" },
    });
  });

  test("a revoked grant refuses again", async () => {
    const t = await seeded();
    vi.stubEnv("URL_EXPIRES_OTHER", "7200");
    const scope = { bucket: BUCKET, key: LOOSE };
    await t.mutation(internal.access.grant, {
      principal: BOB.tokenIdentifier,
      scope,
      actor: "ops",
    });
    expect(await request(t, BOB, LOOSE)).toMatchObject({
      status: "ready",
      url: "stored-loose",
    });
    await t.mutation(internal.access.revoke, {
      principal: BOB.tokenIdentifier,
      scope,
      actor: "ops",
    });
    expect(await request(t, BOB, LOOSE)).toEqual({
      status: "error",
      error: { code: "forbidden" },
    });
    const outcomes = (await auditRows(t))
      .filter((r) => r.principal === BOB.tokenIdentifier && r.action === "read")
      .map((r) => r.outcome);
    expect(outcomes).toEqual(["granted", "denied"]);
  });

  test("a nonsensical lifetime is a bad request", async () => {
    const t = await seeded();
    await expect(request(t, ALICE, VIDEO, 10)).rejects.toMatchObject({
      data: { code: "bad_request", field: "maxTtlMs" },
    });
  });

  test("a failed asset is unavailable, and its error stays internal", async () => {
    const t = await seeded();
    const id = await assetId(t, VIDEO);
    await t.run((ctx) =>
      ctx.db.patch("assets", id, {
        status: "failed",
        error: "transcoder crashed at 0x7f",
      }),
    );
    const result = await request(t, ALICE, VIDEO);
    expect(result).toEqual({ status: "error", error: { code: "unavailable" } });
    expect(await lastAudit(t)).toMatchObject({
      outcome: "unavailable",
      reason: "asset failed: transcoder crashed at 0x7f",
    });
  });
});

describe("the web app's flow, end to end", () => {
  test("subscribe, ask, wait, ask again", async () => {
    const t = await seeded();
    vi.stubEnv("URL_EXPIRES_VIDEO", "600");
    const alice = t.withIdentity(ALICE);
    const scene = await alice.query(api.sessions.sceneView, {
      sessionId: "s1",
      sceneId: "a",
    });
    expect(scene.files.video?.urlState).toBe("request");
    const asked = await alice.mutation(api.access.requestUrl, {
      assetId: scene.files.video!.assetId,
    });
    expect(asked.status).toBe("pending");
    const [job] = await pending(t);
    expect(job.ttlMs).toBe(10 * MIN);
    await fulfil(t, [
      {
        requestId: job.requestId,
        url: "signed-10min",
        urlExpiresAt: T0 + 10 * MIN,
        urlConfig: "presigned:3600",
      },
    ]);
    expect(
      await alice.query(api.access.urlRequest, { requestId: job.requestId }),
    ).toMatchObject({ status: "done" });
    expect(
      await alice.mutation(api.access.requestUrl, {
        assetId: scene.files.video!.assetId,
      }),
    ).toMatchObject({
      status: "ready",
      url: "signed-10min",
      urlSource: "fresh",
    });
    const outcomes = (await auditRows(t))
      .filter((r) => r.channel === "public")
      .map((r) => r.outcome);
    expect(outcomes).toEqual(["pending", "granted"]);
    // The signer's clock a few seconds ahead of Convex's does not turn its URL down.
    await t.run((ctx) =>
      ctx.db.patch("urlRequests", job.requestId, {
        urlExpiresAt: T0 + 10 * MIN + 5_000,
      }),
    );
    expect(
      await alice.mutation(api.access.requestUrl, {
        assetId: scene.files.video!.assetId,
      }),
    ).toMatchObject({
      status: "ready",
      urlSource: "fresh",
    });
  });
});
