/**
 * The public queries the web app subscribes to: each answers only a caller
 * who may read (owner or active grant, the principal being the verified
 * token's tokenIdentifier), and a stranger learns nothing — not the data,
 * not whether it exists, not who owns it.
 */
import { afterEach, beforeEach, describe, expect, test, vi } from "vitest";
import { api, internal } from "../../convex/_generated/api";
import { MAX_PAGE_ITEMS } from "../../convex/model/public";
import { BUCKET, T0, created, removed, type Backend } from "./support";
import {
  ALICE,
  ALICE_ELSEWHERE,
  BOB,
  HOUR,
  LOOSE,
  MALLORY,
  MIN,
  SCENE_B,
  SOURCE,
  THUMB,
  VIDEO,
  apply,
  assetId,
  auditRows,
  errorOf,
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

const FORBIDDEN = { code: "forbidden" };
const UNAUTHENTICATED = { code: "forbidden", reason: "unauthenticated" };

function grant(
  t: Backend,
  who: { tokenIdentifier: string },
  scope: object,
  expiresAt?: number,
) {
  return t.mutation(internal.access.grant, {
    principal: who.tokenIdentifier,
    scope: scope as { sessionId: string },
    actor: ALICE.tokenIdentifier,
    expiresAt,
  });
}

function revoke(t: Backend, who: { tokenIdentifier: string }, scope: object) {
  return t.mutation(internal.access.revoke, {
    principal: who.tokenIdentifier,
    scope: scope as { sessionId: string },
    actor: ALICE.tokenIdentifier,
  });
}

describe("whoami", () => {
  test("names the principal to store as owner or grantee: the tokenIdentifier", async () => {
    const t = await seeded();
    expect(await t.withIdentity(ALICE).query(api.access.whoami, {})).toEqual({
      principal: `https://auth.example.com|user_alice`,
      issuer: ALICE.issuer,
      subject: ALICE.subject,
    });
    expect(await t.query(api.access.whoami, {})).toBeNull();
  });
});

describe("sessions:mine", () => {
  test("lists the caller's own sessions, newest first, without owner principals", async () => {
    const t = await seeded();
    await t.mutation(internal.access.setOwner, {
      sessionId: "s3",
      ownerId: ALICE.tokenIdentifier,
      actor: "platform",
    });
    const result = await t.withIdentity(ALICE).query(api.sessions.mine, {
      paginationOpts: page(),
    });
    expect(result.isDone).toBe(true);
    expect(result.page.map((s) => s.sessionId)).toEqual(["s3", "s1"]);
    expect(result.page[1].summary).toMatchObject({ available: 4, scenes: 2 });
    expect(JSON.stringify(result)).not.toContain("auth.example.com");

    const bobs = await t.withIdentity(BOB).query(api.sessions.mine, {
      paginationOpts: page(),
    });
    expect(bobs.page.map((s) => s.sessionId)).toEqual(["s2"]);
  });

  test("anonymous callers and strangers get an empty page", async () => {
    const t = await seeded();
    expect(
      await t.query(api.sessions.mine, { paginationOpts: page() }),
    ).toEqual({ page: [], isDone: true, continueCursor: "" });
    const mallory = await t.withIdentity(MALLORY).query(api.sessions.mine, {
      paginationOpts: page(),
    });
    expect(mallory.page).toEqual([]);
    // Same subject, another issuer: another principal, nothing of Alice's.
    const elsewhere = await t
      .withIdentity(ALICE_ELSEWHERE)
      .query(api.sessions.mine, { paginationOpts: page() });
    expect(elsewhere.page).toEqual([]);
  });

  test("pages through many sessions, never more than the page cap", async () => {
    const t = await seeded();
    for (let i = 0; i < 25; i++) {
      await t.mutation(internal.access.setOwner, {
        sessionId: `many-${String(i).padStart(2, "0")}`,
        ownerId: ALICE.tokenIdentifier,
        actor: "platform",
      });
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 20; pages++) {
      const result: {
        page: { sessionId: string }[];
        isDone: boolean;
        continueCursor: string;
      } = await t.withIdentity(ALICE).query(api.sessions.mine, {
        paginationOpts: page(7, cursor),
      });
      expect(result.page.length).toBeLessThanOrEqual(7);
      seen.push(...result.page.map((s) => s.sessionId));
      if (result.isDone) break;
      cursor = result.continueCursor;
    }
    expect(seen).toHaveLength(26);
    expect(new Set(seen).size).toBe(26);
    // A caller asking for a huge page gets at most MAX_PAGE_ITEMS.
    const big = await t.withIdentity(ALICE).query(api.sessions.mine, {
      paginationOpts: page(1_000_000),
    });
    expect(big.page.length).toBeLessThanOrEqual(MAX_PAGE_ITEMS);
  });
});

describe("sessions:live", () => {
  const live = (
    t: Backend,
    who: object | null,
    sessionId = "s1",
    numItems = 10,
    cursor: string | null = null,
  ) =>
    (who ? t.withIdentity(who) : t).query(api.sessions.live, {
      sessionId,
      paginationOpts: page(numItems, cursor),
    });

  test("the owner sees the summary, the scenes with their current version, and a page of assets", async () => {
    const t = await seeded();
    await apply(t, [
      removed(SOURCE, { ...layout("source"), eventTime: T0 + 5 }),
    ]);
    const result = await live(t, ALICE);
    expect(result.role).toBe("owner");
    expect(result.session).toMatchObject({
      sessionId: "s1",
      summary: { available: 3, deleted: 1, scenes: 2 },
    });
    expect(result.session).not.toHaveProperty("ownerId");
    expect(result.scenes).toEqual([
      expect.objectContaining({
        sceneId: "a",
        currentVersion: 1,
        kinds: ["video", "thumbnail"],
      }),
      expect.objectContaining({
        sceneId: "b",
        currentVersion: 2,
        kinds: ["video"],
      }),
    ]);
    expect(result.moreScenes).toBe(false);
    // Newest first; every asset of the session, with its status.
    expect(result.page.map((a) => [a.key, a.status])).toEqual([
      [SCENE_B, "available"],
      [THUMB, "available"],
      [SOURCE, "deleted"],
      [VIDEO, "available"],
    ]);
    expect(result.page[2]).toMatchObject({ deletedAt: T0 + 5 });
    expect(result.isDone).toBe(true);
  });

  test("an asset whose URL could not be made shows an error code, not the error text", async () => {
    const t = await seeded();
    await apply(t, [
      created(VIDEO, {
        ...layout("video"),
        eventTime: T0 + 1,
        urlError: "AccessDenied: arn:aws:iam::123456789012:role/secret",
      }),
    ]);
    const result = await live(t, ALICE);
    expect(result.page.find((a) => a.key === VIDEO)).toMatchObject({
      error: "url_failed",
    });
    expect(JSON.stringify(result)).not.toMatch(/AccessDenied|arn:aws/);
  });

  test("pages the assets with cursors", async () => {
    const t = await seeded();
    const keys: string[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 10; pages++) {
      const result = await live(t, ALICE, "s1", 2, cursor);
      expect(result.page.length).toBeLessThanOrEqual(2);
      keys.push(...result.page.map((a) => a.key));
      if (result.isDone) break;
      cursor = result.continueCursor;
    }
    expect(keys).toEqual([SCENE_B, THUMB, SOURCE, VIDEO]);
  });

  test("a stranger gets forbidden and nothing else, for a session that exists or not", async () => {
    const t = await seeded();
    for (const sessionId of ["s1", "no-such-session"]) {
      const data = await errorOf(live(t, MALLORY, sessionId));
      expect(data).toEqual(FORBIDDEN);
    }
    expect(await errorOf(live(t, ALICE_ELSEWHERE))).toEqual(FORBIDDEN);
    // The owner of another session is a stranger here too.
    expect(await errorOf(live(t, BOB))).toEqual(FORBIDDEN);
  });

  test("anonymous callers get forbidden, marked unauthenticated", async () => {
    const t = await seeded();
    expect(await errorOf(live(t, null))).toEqual(UNAUTHENTICATED);
  });

  test("a session grant makes it visible; revoking makes it forbidden again", async () => {
    const t = await seeded();
    expect(await errorOf(live(t, BOB))).toEqual(FORBIDDEN);
    await grant(t, BOB, { sessionId: "s1" });
    const seen = await live(t, BOB);
    expect(seen.role).toBe("grantee");
    expect(seen.page).toHaveLength(4);
    await revoke(t, BOB, { sessionId: "s1" });
    expect(await errorOf(live(t, BOB))).toEqual(FORBIDDEN);
  });

  test("an asset grant does not open the whole session", async () => {
    const t = await seeded();
    await grant(t, BOB, { bucket: BUCKET, key: VIDEO });
    expect(await errorOf(live(t, BOB))).toEqual(FORBIDDEN);
  });

  test("a grantee of a session never seen yet gets not_found", async () => {
    const t = await seeded();
    await grant(t, BOB, { sessionId: "later" });
    expect(await errorOf(live(t, BOB, "later"))).toEqual({ code: "not_found" });
  });

  test("an expiring grant ends on time, and the scheduled write wakes subscriptions", async () => {
    const t = await seeded();
    const given = await grant(t, BOB, { sessionId: "s1" }, T0 + HOUR);
    expect((await live(t, BOB)).role).toBe("grantee");
    vi.advanceTimersByTime(HOUR);
    await t.finishInProgressScheduledFunctions();
    expect(await errorOf(live(t, BOB))).toEqual(FORBIDDEN);
    const stored = await t.run((ctx) => ctx.db.get("grants", given._id));
    expect(stored?.expiredAt).toBe(T0 + HOUR);
  });
});

describe("sessions:sceneView", () => {
  const view = (
    t: Backend,
    who: object | null,
    sceneId = "a",
    sessionId = "s1",
  ) =>
    (who ? t.withIdentity(who) : t).query(api.sessions.sceneView, {
      sessionId,
      sceneId,
    });

  test("shows each current file with its stored URL when the kind's lifetime allows it", async () => {
    const t = await seeded();
    const scene = await view(t, ALICE);
    expect(scene).toMatchObject({
      sessionId: "s1",
      sceneId: "a",
      currentVersion: 1,
    });
    // Video: a 1 h URL, and videos may live 1 h.
    expect(scene.files.video).toMatchObject({
      key: VIDEO,
      urlState: "ready",
      url: "stored-video",
      urlExpiresAt: T0 + HOUR,
      contentType: "video/mp4",
    });
    // Source: sources may live 5 min; the stored URL lives 1 h → ask for one.
    expect(scene.files.source).toMatchObject({
      key: SOURCE,
      urlState: "request",
    });
    expect(scene.files.source).not.toHaveProperty("url");
    // Public URL: no expiry, always shown.
    expect(scene.files.thumbnail).toMatchObject({
      urlState: "ready",
      url: "https://cdn.example/thumb.png",
    });
  });

  test("the kind's lifetime comes from Convex's environment", async () => {
    const t = await seeded();
    vi.stubEnv("URL_EXPIRES_SOURCE", "7200");
    expect((await view(t, ALICE)).files.source).toMatchObject({
      urlState: "ready",
      url: "stored-source",
    });
    vi.stubEnv("URL_EXPIRES_VIDEO", "1800");
    expect((await view(t, ALICE)).files.video).toMatchObject({
      urlState: "request",
    });
  });

  test("a URL about to expire is not shown", async () => {
    const t = await seeded();
    vi.setSystemTime(T0 + HOUR - 30_000);
    expect((await view(t, ALICE)).files.video).toMatchObject({
      urlState: "request",
    });
  });

  test("a grantee is not shown a URL that outlives the grant", async () => {
    const t = await seeded();
    await grant(t, BOB, { sessionId: "s1" }, T0 + 10 * MIN);
    const scene = await view(t, BOB);
    expect(scene.files.video).toMatchObject({ urlState: "request" });
    expect(scene.files.thumbnail).toMatchObject({ urlState: "ready" });
  });

  test("forbidden for strangers and anonymous callers, not_found for an unknown scene", async () => {
    const t = await seeded();
    expect(await errorOf(view(t, MALLORY))).toEqual(FORBIDDEN);
    expect(await errorOf(view(t, MALLORY, "nope"))).toEqual(FORBIDDEN);
    expect(await errorOf(view(t, null))).toEqual(UNAUTHENTICATED);
    expect(await errorOf(view(t, ALICE, "nope"))).toEqual({
      code: "not_found",
    });
  });
});

describe("assets:view", () => {
  const view = async (
    t: Backend,
    who: object | null,
    key: string,
    numItems = 10,
    cursor: string | null = null,
  ) =>
    (who ? t.withIdentity(who) : t).query(api.assets.view, {
      assetId: await assetId(t, key),
      paginationOpts: page(numItems, cursor),
    });

  test("the owner sees the record and its history, newest first, without internal fields", async () => {
    const t = await seeded();
    await apply(t, [
      created(VIDEO, {
        ...layout("video"),
        eventTime: T0 + 1,
        size: 200,
        url: "v2",
        urlExpiresAt: T0 + HOUR,
        source: "sqs:secret-id",
      }),
      created(VIDEO, {
        ...layout("video"),
        eventTime: T0 + 2,
        size: 300,
        url: "v3",
        urlExpiresAt: T0 + HOUR,
      }),
    ]);
    const result = await view(t, ALICE, VIDEO, 2);
    expect(result.role).toBe("owner");
    expect(result.asset).toMatchObject({
      key: VIDEO,
      status: "available",
      size: 300,
      revision: 3,
      urlState: "ready",
      url: "v3",
    });
    expect(result.asset).not.toHaveProperty("bucket");
    expect(result.page.map((r) => r.size)).toEqual([300, 200]);
    expect(result.isDone).toBe(false);
    const rest = await view(t, ALICE, VIDEO, 2, result.continueCursor);
    expect(rest.page.map((r) => r.size)).toEqual([100]);
    expect(JSON.stringify([result, rest])).not.toContain("sqs:secret-id");
  });

  test("an asset grant shows that asset only; a revoked one shows nothing again", async () => {
    const t = await seeded();
    expect(await errorOf(view(t, BOB, LOOSE))).toEqual(FORBIDDEN);
    await grant(t, BOB, { bucket: BUCKET, key: LOOSE });
    expect((await view(t, BOB, LOOSE)).role).toBe("grantee");
    expect(await errorOf(view(t, BOB, VIDEO))).toEqual(FORBIDDEN);
    // The owner of s1 has no say over an asset outside any session.
    expect(await errorOf(view(t, ALICE, LOOSE))).toEqual(FORBIDDEN);
    await revoke(t, BOB, { bucket: BUCKET, key: LOOSE });
    expect(await errorOf(view(t, BOB, LOOSE))).toEqual(FORBIDDEN);
  });

  test("a deleted asset is gone, with when; a stranger still only learns forbidden", async () => {
    const t = await seeded();
    await apply(t, [removed(VIDEO, { ...layout("video"), eventTime: T0 + 7 })]);
    expect(await errorOf(view(t, ALICE, VIDEO))).toEqual({
      code: "gone",
      deletedAt: T0 + 7,
    });
    expect(await errorOf(view(t, MALLORY, VIDEO))).toEqual(FORBIDDEN);
    expect(await errorOf(view(t, null, VIDEO))).toEqual(UNAUTHENTICATED);
  });

  test("an asset id of someone else's session is forbidden", async () => {
    const t = await seeded();
    const bobs = await t.query(internal.assets.getByKey, {
      bucket: BUCKET,
      key: "sessions/s2/scenes/x/v1/video.mp4",
    });
    const data = await errorOf(
      t.withIdentity(ALICE).query(api.assets.view, {
        assetId: bobs!._id,
        paginationOpts: page(),
      }),
    );
    expect(data).toEqual(FORBIDDEN);
  });
});

describe("access:myGrants", () => {
  test("lists the caller's grants, active and revoked, never who granted them", async () => {
    const t = await seeded();
    await grant(t, BOB, { sessionId: "s1" });
    await grant(t, BOB, { bucket: BUCKET, key: LOOSE }, T0 + HOUR);
    await revoke(t, BOB, { bucket: BUCKET, key: LOOSE });
    await grant(t, MALLORY, { sessionId: "s1" });
    const result = await t.withIdentity(BOB).query(api.access.myGrants, {
      paginationOpts: page(),
    });
    expect(result.page).toHaveLength(2);
    expect(result.page).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ scope: { sessionId: "s1" }, active: true }),
        expect.objectContaining({
          scope: { bucket: BUCKET, key: LOOSE },
          assetId: await assetId(t, LOOSE),
          active: false,
          revokedAt: T0,
          expiresAt: T0 + HOUR,
        }),
      ]),
    );
    const text = JSON.stringify(result);
    expect(text).not.toContain("user_alice");
    expect(text).not.toContain("user_mallory");
    expect(
      await t.query(api.access.myGrants, { paginationOpts: page() }),
    ).toMatchObject({ page: [], isDone: true });
  });
});

describe("queries write nothing", () => {
  test("no audit row for a query, granted or denied", async () => {
    const t = await seeded();
    const before = (await auditRows(t)).length;
    await t
      .withIdentity(ALICE)
      .query(api.sessions.live, { sessionId: "s1", paginationOpts: page() });
    await errorOf(
      t
        .withIdentity(MALLORY)
        .query(api.sessions.live, { sessionId: "s1", paginationOpts: page() }),
    );
    expect((await auditRows(t)).length).toBe(before);
  });
});
