import { describe, expect, test } from "vitest";
import { internal } from "../../convex/_generated/api";
import type { Doc } from "../../convex/_generated/dataModel";
import { MAX_BATCH_EVENTS, type S3Event } from "../../convex/events";
import {
  BUCKET,
  T0,
  backend,
  created,
  random,
  removed,
  shuffle,
  type Backend,
} from "./support";

const apply = (t: Backend, events: S3Event[]) =>
  t.mutation(internal.assets.applyEvents, { events });
const session = (t: Backend, sessionId: string) =>
  t.query(internal.sessions.get, { sessionId });
const scene = (t: Backend, sessionId: string, sceneId: string) =>
  t.query(internal.sessions.scene, { sessionId, sceneId });

const KIND_OF: Record<string, string> = {
  "video.mp4": "video",
  "video.webm": "video",
  "scene.py": "source",
  "render.json": "metadata",
  "manifest.json": "manifest",
  "poster.png": "thumbnail",
  "notes.txt": "other",
};

/** An event for `sessions/{s}/scenes/{sc}/v{n}/{file}`, with what the layout says about it. */
function file(
  type: "created" | "removed",
  [sessionId, sceneId, version, name]: [string, string, number, string],
  fields: Partial<S3Event> = {},
): S3Event {
  const key = `sessions/${sessionId}/scenes/${sceneId}/v${version}/${name}`;
  const layout = {
    sessionId,
    sceneId,
    version,
    kind: KIND_OF[name] ?? "other",
  };
  if (type === "removed") return removed(key, { ...layout, ...fields });
  return created(key, {
    ...layout,
    url: `https://cdn.example/${key}`,
    size: name.length,
    ...fields,
  });
}

const RENDER = ["video.mp4", "scene.py", "render.json", "manifest.json"];

function render(
  sessionId: string,
  sceneId: string,
  version: number,
  at: number,
) {
  return RENDER.map((name, i) =>
    file("created", [sessionId, sceneId, version, name], { eventTime: at + i }),
  );
}

/** Every row of the session model, without the times of writing (they differ by run). */
function model(t: Backend) {
  return t.run(async (ctx) => {
    const strip = <T extends Record<string, unknown>>(doc: T) => {
      const { _id, _creationTime, createdAt, updatedAt, ...rest } = doc;
      return rest;
    };
    const sessions = await ctx.db.query("videoSessions").collect();
    const scenes = await ctx.db.query("scenes").collect();
    return {
      sessions: sessions.map(strip).sort(by("sessionId")),
      scenes: scenes
        .map((s) => ({ ...strip(s), files: filesByKey(s.files) }))
        .sort(by("sessionId", "sceneId")),
    };
  });
}

// Asset ids differ between two backends; keys say the same.
function filesByKey(files: Doc<"scenes">["files"]) {
  return Object.fromEntries(
    Object.entries(files).map(([kind, f]) => [kind, f!.key]),
  );
}

function by(...fields: string[]) {
  return (a: Record<string, unknown>, b: Record<string, unknown>) => {
    for (const field of fields) {
      const x = String(a[field]);
      const y = String(b[field]);
      if (x !== y) return x < y ? -1 : 1;
    }
    return 0;
  };
}

describe("first sight", () => {
  test("a scene rendered as v1 creates its session and scene with the files' URLs", async () => {
    const t = backend();
    await apply(t, render("s1", "intro", 1, T0));

    const s = await session(t, "s1");
    expect(s).toMatchObject({
      sessionId: "s1",
      summary: {
        available: 4,
        deleted: 0,
        failed: 0,
        bytes: RENDER.join("").length,
        byKind: { video: 1, source: 1, metadata: 1, manifest: 1 },
        scenes: 1,
        lastEventAt: T0 + 3,
      },
    });
    expect(s!.ownerId).toBeUndefined();
    const sc = await scene(t, "s1", "intro");
    expect(sc).toMatchObject({
      currentVersion: 1,
      versions: [{ version: 1, firstSeenAt: T0, lastSeenAt: T0 + 3 }],
    });
    expect(sc!.files.video).toMatchObject({
      key: "sessions/s1/scenes/intro/v1/video.mp4",
      url: "https://cdn.example/sessions/s1/scenes/intro/v1/video.mp4",
    });
    expect(sc!.files.source!.key).toMatch(/scene\.py$/);
    expect(sc!.files.metadata!.key).toMatch(/render\.json$/);
    expect(sc!.files.manifest!.key).toMatch(/manifest\.json$/);
    expect(sc!.files.thumbnail).toBeUndefined();
  });

  test("keys outside the layout make no session; session-level files make no scene", async () => {
    const t = backend();
    await apply(t, [
      created("loose/video.mp4", { kind: "other" }),
      created("sessions/s2/transcript.vtt", {
        sessionId: "s2",
        kind: "subtitle",
        size: 7,
      }),
    ]);
    expect(await t.run((ctx) => ctx.db.query("scenes").collect())).toEqual([]);
    const sessions = await t.run((ctx) =>
      ctx.db.query("videoSessions").collect(),
    );
    expect(sessions.map((s) => s.sessionId)).toEqual(["s2"]);
    expect(sessions[0].summary).toMatchObject({
      available: 1,
      bytes: 7,
      byKind: { subtitle: 1 },
      scenes: 0,
    });
  });

  test("a removal of a key never seen still creates its session and scene", async () => {
    const t = backend();
    await apply(t, [file("removed", ["s1", "a", 1, "video.mp4"])]);
    expect((await session(t, "s1"))!.summary).toMatchObject({
      available: 0,
      deleted: 1,
      scenes: 1,
    });
    expect(await scene(t, "s1", "a")).toMatchObject({
      files: {},
      versions: [],
    });
    expect((await scene(t, "s1", "a"))!.currentVersion).toBeUndefined();
  });
});

describe("versions", () => {
  test("v2 becomes current; v1 stays in history with its times and files", async () => {
    const t = backend();
    await apply(t, render("s1", "intro", 1, T0));
    await apply(t, render("s1", "intro", 2, T0 + 60_000));

    const sc = await scene(t, "s1", "intro");
    expect(sc!.currentVersion).toBe(2);
    for (const f of Object.values(sc!.files)) expect(f!.key).toMatch(/\/v2\//);
    expect(sc!.versions).toEqual([
      { version: 1, firstSeenAt: T0, lastSeenAt: T0 + 3 },
      { version: 2, firstSeenAt: T0 + 60_000, lastSeenAt: T0 + 60_003 },
    ]);
    const v1 = await t.query(internal.sessions.versionFiles, {
      sessionId: "s1",
      sceneId: "intro",
      version: 1,
    });
    expect(v1.map((a) => a.key.split("/").pop()).sort()).toEqual(
      [...RENDER].sort(),
    );
    expect(v1.every((a) => a.status === "available" && a.url)).toBe(true);
    expect((await session(t, "s1"))!.summary).toMatchObject({
      available: 8,
      scenes: 1,
    });
  });

  test("v2 arriving before v1 ends the same as in order", async () => {
    const inOrder = backend();
    await apply(inOrder, render("s1", "intro", 1, T0));
    await apply(inOrder, render("s1", "intro", 2, T0 + 60_000));
    const reversed = backend();
    await apply(reversed, render("s1", "intro", 2, T0 + 60_000));
    await apply(reversed, render("s1", "intro", 1, T0));
    expect(await model(reversed)).toEqual(await model(inOrder));
    expect((await scene(reversed, "s1", "intro"))!.currentVersion).toBe(2);
  });

  test("a file of a new version replaces all of the old version's pointers", async () => {
    const t = backend();
    await apply(t, render("s1", "intro", 1, T0));
    await apply(t, [
      file("created", ["s1", "intro", 2, "video.mp4"], { eventTime: T0 + 10 }),
    ]);
    const sc = await scene(t, "s1", "intro");
    expect(sc!.currentVersion).toBe(2);
    // The old version's source is not presented as the new version's.
    expect(Object.keys(sc!.files)).toEqual(["video"]);
  });

  test("re-uploading a current file updates its pointer's URL", async () => {
    const t = backend();
    await apply(t, render("s1", "intro", 1, T0));
    await apply(t, [
      file("created", ["s1", "intro", 1, "video.mp4"], {
        eventTime: T0 + 100,
        url: "https://cdn.example/new",
        size: 999,
      }),
    ]);
    const sc = await scene(t, "s1", "intro");
    expect(sc!.files.video!.url).toBe("https://cdn.example/new");
    expect((await session(t, "s1"))!.summary).toMatchObject({
      available: 4,
      bytes: RENDER.join("").length - "video.mp4".length + 999,
    });
  });

  test("of several files of one kind, the latest written is pointed at; its removal promotes the next", async () => {
    const t = backend();
    await apply(t, [
      file("created", ["s1", "a", 1, "video.webm"], { eventTime: T0 + 5 }),
      file("created", ["s1", "a", 1, "video.mp4"], { eventTime: T0 }),
    ]);
    expect((await scene(t, "s1", "a"))!.files.video!.key).toMatch(
      /video\.webm$/,
    );
    await apply(t, [
      file("removed", ["s1", "a", 1, "video.webm"], { eventTime: T0 + 9 }),
    ]);
    expect((await scene(t, "s1", "a"))!.files.video!.key).toMatch(
      /video\.mp4$/,
    );
  });
});

describe("removals", () => {
  test("removing one file of the current version clears only its pointer", async () => {
    const t = backend();
    await apply(t, render("s1", "intro", 1, T0));
    await apply(t, render("s1", "intro", 2, T0 + 100));
    await apply(t, [
      file("removed", ["s1", "intro", 2, "video.mp4"], { eventTime: T0 + 200 }),
    ]);
    const sc = await scene(t, "s1", "intro");
    expect(sc!.currentVersion).toBe(2);
    expect(sc!.files.video).toBeUndefined();
    expect(sc!.files.source!.key).toMatch(/\/v2\//);
    expect((await session(t, "s1"))!.summary).toMatchObject({
      available: 7,
      deleted: 1,
    });
  });

  test("removing the whole current version falls back to the previous one", async () => {
    const t = backend();
    await apply(t, render("s1", "intro", 1, T0));
    await apply(t, render("s1", "intro", 2, T0 + 100));
    await apply(
      t,
      RENDER.map((name) =>
        file("removed", ["s1", "intro", 2, name], { eventTime: T0 + 200 }),
      ),
    );
    const sc = await scene(t, "s1", "intro");
    expect(sc!.currentVersion).toBe(1);
    expect(Object.values(sc!.files).map((f) => f!.key.split("/")[4])).toEqual(
      RENDER.map(() => "v1"),
    );
    // History keeps v2: it existed.
    expect(sc!.versions.map((v) => v.version)).toEqual([1, 2]);
  });

  test("removing every file leaves a scene with no current version", async () => {
    const t = backend();
    await apply(t, render("s1", "intro", 1, T0));
    await apply(
      t,
      RENDER.map((name) =>
        file("removed", ["s1", "intro", 1, name], { eventTime: T0 + 9 }),
      ),
    );
    const sc = await scene(t, "s1", "intro");
    expect(sc!.currentVersion).toBeUndefined();
    expect(sc!.files).toEqual({});
    expect((await session(t, "s1"))!.summary).toMatchObject({
      available: 0,
      deleted: 4,
      bytes: 0,
      byKind: {},
      scenes: 1,
    });
  });
});

describe("any arrival order converges on the same sessions and scenes", () => {
  // Two sessions, three scenes, three versions, overwrites and removals.
  function history(): S3Event[] {
    const events: S3Event[] = [];
    let at = T0;
    for (const [s, sc] of [
      ["s1", "a"],
      ["s1", "b"],
      ["s2", "a"],
    ] as const) {
      for (const version of [1, 2, 3]) {
        for (const name of [...RENDER, "poster.png", "notes.txt"]) {
          events.push(
            file("created", [s, sc, version, name], { eventTime: (at += 7) }),
          );
        }
      }
      events.push(
        file("created", [s, sc, 2, "video.mp4"], {
          eventTime: (at += 7),
          size: 4242,
        }),
      );
      for (const name of [...RENDER, "poster.png", "notes.txt"]) {
        events.push(
          file("removed", [s, sc, 3, name], { eventTime: (at += 7) }),
        );
      }
    }
    events.push(
      file("removed", ["s2", "a", 2, "poster.png"], { eventTime: (at += 7) }),
    );
    events.push(
      created("sessions/s2/summary.json", {
        sessionId: "s2",
        kind: "metadata",
      }),
    );
    return events;
  }

  test.each([1, 2, 3, 4, 5])(
    "seed %i: shuffled, duplicated, split into batches",
    async (seed) => {
      const events = history();
      const expected = backend();
      await apply(expected, events);

      const rand = random(seed);
      const delivered = shuffle(
        [...events, ...events.filter(() => rand() < 0.3)],
        rand,
      );
      const t = backend();
      for (let i = 0; i < delivered.length;) {
        const size = 1 + Math.floor(rand() * 15);
        await apply(t, delivered.slice(i, i + size));
        i += size;
      }
      expect(await model(t)).toEqual(await model(expected));

      // And what a rebuild from the asset records computes.
      for (const sessionId of ["s1", "s2"]) {
        await t.mutation(internal.sessions.rebuild, { sessionId });
      }
      expect(await model(t)).toEqual(await model(expected));
      const s1 = await scene(t, "s1", "a");
      expect(s1!.currentVersion).toBe(2);
      expect(s1!.files.video!.key).toMatch(/v2\/video\.mp4$/);
      expect(s1!.files.thumbnail!.key).toMatch(/v2\/poster\.png$/);
      const s2 = await scene(t, "s2", "a");
      expect(s2!.currentVersion).toBe(2);
      expect(s2!.files.thumbnail).toBeUndefined();
    },
  );

  test("the summary counts what the asset records say", async () => {
    const t = backend();
    await apply(t, shuffle(history(), random(9)));
    const assets = await t.run((ctx) => ctx.db.query("assets").collect());
    for (const sessionId of ["s1", "s2"]) {
      const mine = assets.filter((a) => a.sessionId === sessionId);
      const available = mine.filter((a) => a.status === "available");
      const byKind: Record<string, number> = {};
      for (const a of available) byKind[a.kind!] = (byKind[a.kind!] ?? 0) + 1;
      expect((await session(t, sessionId))!.summary).toMatchObject({
        available: available.length,
        deleted: mine.length - available.length,
        bytes: available.reduce((sum, a) => sum + a.size!, 0),
        byKind,
        scenes: sessionId === "s1" ? 2 : 1,
      });
    }
  });
});

describe("cost", () => {
  function measured(t: Backend, events: S3Event[]) {
    return t.run(async (ctx) => {
      const results = await ctx.runMutation(internal.assets.applyEvents, {
        events,
      });
      return { results, used: await ctx.meta.getTransactionMetrics() };
    });
  }

  test("a session's summary is written once per batch; a replayed batch writes nothing", async () => {
    const t = backend();
    const events = Array.from({ length: 100 }, (_, i) =>
      file("created", ["s1", `scene-${i % 5}`, 1 + (i % 3), `f${i}.json`], {
        eventTime: T0 + i,
        kind: "metadata",
      }),
    );
    const first = await measured(t, events);
    expect(first.used.documentsWritten.used).toBe(2 * 100 + 5 + 1);
    const before = await session(t, "s1");

    const replay = await measured(t, events);
    expect(replay.results.every((r) => r.status === "duplicate")).toBe(true);
    expect(replay.used.documentsWritten.used).toBe(0);
    expect(await session(t, "s1")).toEqual(before);
  });

  test("the worst batch — every event removes the current file of its own scene and session — fits", async () => {
    const t = backend();
    const n = MAX_BATCH_EVENTS;
    const at = (i: number) =>
      [`s${i}`, "scene", 1, "video.mp4"] as [string, string, number, string];
    await apply(
      t,
      Array.from({ length: n }, (_, i) => file("created", at(i))),
    );
    const { results, used } = await measured(
      t,
      Array.from({ length: n }, (_, i) =>
        file("removed", at(i), { eventTime: T0 + 1 }),
      ),
    );
    expect(results.every((r) => r.status === "applied")).toBe(true);
    // Asset lookup + scene lookup + scene rescan + session lookup, per event.
    expect(used.databaseQueries.used).toBe(4 * n);
    expect(used.databaseQueries.remaining).toBeGreaterThan(0);
    expect(used.documentsWritten.used).toBe(4 * n);
    expect(await scene(t, "s7", "scene")).toMatchObject({ files: {} });
  }, 60_000);
});

describe("listing", () => {
  test("scenes pages a session's scenes in id order, with their files' URLs", async () => {
    const t = backend();
    for (const sceneId of ["c", "a", "b"])
      await apply(t, render("s1", sceneId, 1, T0));
    await apply(t, render("s2", "z", 1, T0));
    const first = await t.query(internal.sessions.scenes, {
      sessionId: "s1",
      paginationOpts: { cursor: null, numItems: 2 },
    });
    const rest = await t.query(internal.sessions.scenes, {
      sessionId: "s1",
      paginationOpts: { cursor: first.continueCursor, numItems: 2 },
    });
    expect([...first.page, ...rest.page].map((s) => s.sceneId)).toEqual([
      "a",
      "b",
      "c",
    ]);
    expect(rest.isDone).toBe(true);
    expect(first.page[0].files.video!.url).toBe(
      "https://cdn.example/sessions/s1/scenes/a/v1/video.mp4",
    );
  });

  test("byOwner lists the sessions a principal owns", async () => {
    const t = backend();
    for (const sessionId of ["s1", "s2", "s3"]) {
      await t.mutation(internal.access.setOwner, {
        sessionId,
        ownerId: sessionId === "s2" ? "bob" : "alice",
        actor: "platform",
      });
    }
    const owned = await t.query(internal.sessions.byOwner, {
      ownerId: "alice",
      paginationOpts: { cursor: null, numItems: 10 },
    });
    expect(owned.page.map((s) => s.sessionId).sort()).toEqual(["s1", "s3"]);
  });
});
