import { afterEach, describe, expect, test, vi } from "vitest";
import { internal } from "../../convex/_generated/api";
import type { S3Event } from "../../convex/events";
import { BUCKET, T0, backend, created, removed, type Backend } from "./support";

const apply = (t: Backend, events: S3Event[]) =>
  t.mutation(internal.assets.applyEvents, { events });

const MIN = 60_000;
const HOUR = 60 * MIN;
const VIDEO = "sessions/s1/scenes/a/v1/video.mp4";
const SOURCE = "sessions/s1/scenes/a/v1/scene.py";
const LOOSE = "uploads/loose.bin";
const layout = (kind: string) => ({
  sessionId: "s1",
  sceneId: "a",
  version: 1,
  kind,
});

afterEach(() => {
  vi.useRealTimers();
});

/** A backend at T0 holding a video (stored URL valid 1 h) and a source file of session s1. */
async function seeded(): Promise<Backend> {
  vi.useFakeTimers({ now: T0 });
  const t = backend();
  await apply(t, [
    created(VIDEO, {
      ...layout("video"),
      url: "stored-video",
      urlExpiresAt: T0 + HOUR,
    }),
    created(SOURCE, {
      ...layout("source"),
      url: "stored-source",
      urlExpiresAt: T0 + HOUR,
    }),
    created(LOOSE, {
      kind: "other",
      url: "stored-loose",
      urlExpiresAt: T0 + HOUR,
    }),
  ]);
  await t.mutation(internal.access.setOwner, {
    sessionId: "s1",
    ownerId: "alice",
    actor: "platform",
  });
  return t;
}

const fresh = (ttl: number) => ({ url: `fresh-${ttl}`, expiresAt: T0 + ttl });

function authorize(
  t: Backend,
  principal: string,
  key: string,
  maxTtlMs = HOUR,
) {
  return t.mutation(internal.access.authorize, {
    principal,
    bucket: BUCKET,
    key,
    maxTtlMs,
    fresh: fresh(maxTtlMs),
  });
}

function auditRows(t: Backend) {
  return t.run((ctx) => ctx.db.query("accessAudit").collect());
}

describe("authorize", () => {
  test("the session's owner gets the stored URL when it fits the kind's lifetime", async () => {
    const t = await seeded();
    const result = await authorize(t, "alice", VIDEO, 2 * HOUR);
    expect(result).toMatchObject({
      outcome: "granted",
      url: "stored-video",
      expiresAt: T0 + HOUR,
      urlSource: "stored",
      kind: "video",
    });
    const rows = await auditRows(t);
    expect(rows.at(-1)).toMatchObject({
      action: "read",
      principal: "alice",
      outcome: "granted",
      reason: "owner",
      bucket: BUCKET,
      key: VIDEO,
      sessionId: "s1",
      kind: "video",
      urlSource: "stored",
      expiresAt: T0 + HOUR,
      at: T0,
    });
  });

  test("a stored URL living longer than the kind allows is replaced by a fresh one", async () => {
    const t = await seeded();
    const result = await authorize(t, "alice", SOURCE, 5 * MIN);
    expect(result).toMatchObject({
      outcome: "granted",
      url: "fresh-300000",
      expiresAt: T0 + 5 * MIN,
      urlSource: "fresh",
    });
    expect((await auditRows(t)).at(-1)).toMatchObject({
      urlSource: "fresh",
      expiresAt: T0 + 5 * MIN,
    });
  });

  test("a stored URL about to expire is not handed out", async () => {
    const t = await seeded();
    vi.setSystemTime(T0 + HOUR - 30_000);
    const result = await authorize(t, "alice", VIDEO, 2 * HOUR);
    expect(result).toMatchObject({ outcome: "granted", urlSource: "fresh" });
  });

  test("a public URL is handed out as stored, without expiry", async () => {
    const t = await seeded();
    await apply(t, [
      created(VIDEO, {
        ...layout("video"),
        eventTime: T0 + 1,
        url: "https://cdn/v.mp4",
      }),
    ]);
    const result = await authorize(t, "alice", VIDEO, 5 * MIN);
    expect(result).toMatchObject({
      outcome: "granted",
      url: "https://cdn/v.mp4",
      urlSource: "stored",
    });
    expect("expiresAt" in result && result.expiresAt).toBeFalsy();
  });

  test("a stranger is denied, gets no URL, and the denial is audited", async () => {
    const t = await seeded();
    const result = await authorize(t, "mallory", VIDEO);
    expect(result).toEqual({
      outcome: "denied",
      reason: "not the owner of session s1 and no grant",
      auditId: expect.any(String),
    });
    expect(JSON.stringify(result)).not.toMatch(/stored-video|fresh/);
    expect((await auditRows(t)).at(-1)).toMatchObject({
      action: "read",
      principal: "mallory",
      outcome: "denied",
      key: VIDEO,
      sessionId: "s1",
      at: T0,
    });
  });

  test("a session grant allows every asset of the session until it is revoked", async () => {
    const t = await seeded();
    const grant = await t.mutation(internal.access.grant, {
      principal: "bob",
      scope: { sessionId: "s1" },
      actor: "alice",
    });
    expect(await authorize(t, "bob", VIDEO)).toMatchObject({
      outcome: "granted",
    });
    expect((await auditRows(t)).at(-1)).toMatchObject({
      reason: "grant",
      grantId: grant._id,
    });
    expect(await authorize(t, "bob", LOOSE)).toMatchObject({
      outcome: "denied",
    });

    expect(
      await t.mutation(internal.access.revoke, {
        principal: "bob",
        scope: { sessionId: "s1" },
        actor: "alice",
      }),
    ).toBe(1);
    expect(await authorize(t, "bob", VIDEO)).toMatchObject({
      outcome: "denied",
    });
    const actions = (await auditRows(t)).map(
      (row) => `${row.action}:${row.outcome}`,
    );
    expect(actions).toEqual([
      "setOwner:done",
      "grant:done",
      "read:granted",
      "read:denied",
      "revoke:done",
      "read:denied",
    ]);
  });

  test("an asset grant allows that asset only, also outside any session", async () => {
    const t = await seeded();
    await t.mutation(internal.access.grant, {
      principal: "carol",
      scope: { bucket: BUCKET, key: LOOSE },
      actor: "ops",
    });
    expect(await authorize(t, "carol", LOOSE)).toMatchObject({
      outcome: "granted",
      url: "stored-loose",
    });
    expect(await authorize(t, "carol", VIDEO)).toMatchObject({
      outcome: "denied",
    });
    expect(await authorize(t, "alice", LOOSE)).toMatchObject({
      outcome: "denied",
      reason: "no grant on this asset (it belongs to no session)",
    });
  });

  test("an expired grant no longer allows", async () => {
    const t = await seeded();
    await t.mutation(internal.access.grant, {
      principal: "bob",
      scope: { sessionId: "s1" },
      actor: "alice",
      expiresAt: T0 + HOUR,
    });
    expect(await authorize(t, "bob", VIDEO, 2 * HOUR)).toMatchObject({
      outcome: "granted",
    });
    vi.setSystemTime(T0 + HOUR);
    expect(await authorize(t, "bob", VIDEO)).toMatchObject({
      outcome: "denied",
    });
  });

  test("a deleted asset answers gone with the time it was deleted", async () => {
    const t = await seeded();
    await apply(t, [removed(VIDEO, { ...layout("video"), eventTime: T0 + 7 })]);
    const result = await authorize(t, "alice", VIDEO);
    expect(result).toEqual({
      outcome: "gone",
      deletedAt: T0 + 7,
      auditId: expect.any(String),
    });
    expect((await auditRows(t)).at(-1)).toMatchObject({
      outcome: "gone",
      key: VIDEO,
    });
    // A stranger does not learn that it existed.
    expect(await authorize(t, "mallory", VIDEO)).toMatchObject({
      outcome: "denied",
    });
  });

  test("a key never seen: not found for its session's owner, denied for others", async () => {
    const t = await seeded();
    const key = "sessions/s1/scenes/a/v9/video.mp4";
    const ask = (principal: string) =>
      t.mutation(internal.access.authorize, {
        principal,
        bucket: BUCKET,
        key,
        maxTtlMs: HOUR,
        sessionId: "s1",
      });
    expect(await ask("alice")).toMatchObject({ outcome: "not_found" });
    expect(await ask("mallory")).toMatchObject({ outcome: "denied" });
  });

  test("no stored URL and none signed: unavailable, with the recorded URL error", async () => {
    const t = await seeded();
    await apply(t, [removed(VIDEO, { eventTime: T0 + 1 })]);
    await apply(t, [
      created(VIDEO, {
        ...layout("video"),
        eventTime: T0 + 2,
        urlError: "presign failed",
      }),
    ]);
    const result = await t.mutation(internal.access.authorize, {
      principal: "alice",
      bucket: BUCKET,
      key: VIDEO,
      maxTtlMs: HOUR,
    });
    expect(result).toMatchObject({
      outcome: "unavailable",
      reason: "no usable URL: presign failed",
    });
  });

  test("refuses a lifetime above seven days and a blank principal", async () => {
    const t = await seeded();
    await expect(authorize(t, "alice", VIDEO, 8 * 24 * HOUR)).rejects.toThrow(
      /BadTtl/,
    );
    await expect(authorize(t, " ", VIDEO)).rejects.toThrow(/BadPrincipal/);
  });
});

describe("check", () => {
  test("says whether and why, without writing an audit row", async () => {
    const t = await seeded();
    const before = (await auditRows(t)).length;
    const ask = (principal: string) =>
      t.query(internal.access.check, { principal, bucket: BUCKET, key: VIDEO });
    expect(await ask("alice")).toEqual({ allowed: true, via: "owner" });
    expect(await ask("bob")).toEqual({
      allowed: false,
      reason: "not the owner of session s1 and no grant",
    });
    expect((await auditRows(t)).length).toBe(before);
  });
});

describe("managing access", () => {
  test("setOwner creates an unknown session, changes the owner, and is audited", async () => {
    vi.useFakeTimers({ now: T0 });
    const t = backend();
    await t.mutation(internal.access.setOwner, {
      sessionId: "s9",
      ownerId: "alice",
      actor: "platform",
    });
    await t.mutation(internal.access.setOwner, {
      sessionId: "s9",
      ownerId: "alice",
      actor: "platform",
    });
    expect(
      await t.query(internal.sessions.get, { sessionId: "s9" }),
    ).toMatchObject({
      ownerId: "alice",
      summary: { available: 0, scenes: 0 },
    });
    await t.mutation(internal.access.setOwner, {
      sessionId: "s9",
      ownerId: "bob",
      actor: "platform",
    });
    const rows = await auditRows(t);
    // The retried call changed nothing and wrote no second row.
    expect(rows.map((r) => [r.action, r.principal, r.reason])).toEqual([
      ["setOwner", "alice", undefined],
      ["setOwner", "bob", "previous owner alice"],
    ]);
    // Events later fill the summary of the session created ahead of them.
    await apply(t, [
      created("sessions/s9/intro.mp4", { sessionId: "s9", kind: "video" }),
    ]);
    expect(
      await t.query(internal.sessions.get, { sessionId: "s9" }),
    ).toMatchObject({
      ownerId: "bob",
      summary: { available: 1 },
    });
  });

  test("granting twice returns the same grant; revoking what is not granted revokes nothing", async () => {
    const t = await seeded();
    const args = {
      principal: "bob",
      scope: { sessionId: "s1" },
      actor: "alice",
    };
    const first = await t.mutation(internal.access.grant, args);
    const second = await t.mutation(internal.access.grant, args);
    expect(second._id).toBe(first._id);
    expect(
      await t.mutation(internal.access.revoke, {
        ...args,
        scope: { bucket: BUCKET, key: VIDEO },
      }),
    ).toBe(0);
    const grants = await t.query(internal.access.grantsOf, {
      principal: "bob",
      paginationOpts: { cursor: null, numItems: 10 },
    });
    expect(grants.page).toHaveLength(1);
  });

  test("refuses a grant that has already expired", async () => {
    const t = await seeded();
    await expect(
      t.mutation(internal.access.grant, {
        principal: "bob",
        scope: { sessionId: "s1" },
        actor: "alice",
        expiresAt: T0 - 1,
      }),
    ).rejects.toThrow(/BadExpiry/);
  });

  test("the audit log reads newest first, by principal or by asset", async () => {
    const t = await seeded();
    await authorize(t, "alice", VIDEO);
    vi.setSystemTime(T0 + 1);
    await authorize(t, "mallory", VIDEO);
    vi.setSystemTime(T0 + 2);
    await authorize(t, "alice", SOURCE);
    const page = (args: object) =>
      t.query(internal.access.auditLog, {
        ...args,
        paginationOpts: { cursor: null, numItems: 10 },
      });
    expect((await page({ principal: "alice" })).page.map((r) => r.key)).toEqual(
      [
        SOURCE,
        VIDEO,
        undefined, // setOwner
      ],
    );
    expect(
      (await page({ bucket: BUCKET, key: VIDEO })).page.map((r) => r.principal),
    ).toEqual(["mallory", "alice"]);
    expect((await page({})).page).toHaveLength(4);
    await expect(page({ bucket: BUCKET })).rejects.toThrow(/BadFilter/);
  });
});
