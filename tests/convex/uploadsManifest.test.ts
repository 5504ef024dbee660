// Manifest references: `uploads:setManifest` and the `manifests` of the last
// `uploads:report` of an upload_dir.
import { ConvexError, type Value } from "convex/values";
import { afterEach, describe, expect, test, vi } from "vitest";
import { internal } from "../../convex/_generated/api";
import type { UploadUpdate } from "../../convex/model/uploads";
import { MAX_REPORT_MANIFESTS } from "../../convex/model/uploadsManifest";
import { BUCKET, T0, backend, type Backend } from "./support";
import {
  RUN,
  LATER_RUN,
  EARLIER_RUN,
  SESSION,
  dir,
  VIDEO,
  MANIFEST,
  done,
  report,
  apply,
  session,
  s3Created,
  everything,
} from "./uploadsSupport";

afterEach(() => {
  vi.useRealTimers();
});

describe("setManifest", () => {
  const args = {
    sessionId: SESSION,
    sceneId: "intro",
    version: 1,
    bucket: BUCKET,
    key: MANIFEST,
    runId: RUN,
  };
  const sceneDoc = (t: Backend) =>
    t.run((ctx) => ctx.db.query("scenes").first());

  test("references the manifest from the scene before S3 has said anything; idempotent", async () => {
    const t = backend();
    await t.mutation(internal.uploads.setManifest, args);
    expect(await sceneDoc(t)).toMatchObject({
      sessionId: SESSION,
      sceneId: "intro",
      files: {},
      versions: [],
      uploads: [
        { version: 1, runId: RUN, manifest: { bucket: BUCKET, key: MANIFEST } },
      ],
    });
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
    const before = await everything(t);
    await t.mutation(internal.uploads.setManifest, args);
    // An earlier run's manifest loses to the one held.
    await t.mutation(internal.uploads.setManifest, {
      ...args,
      runId: EARLIER_RUN,
      key: dir("old-manifest.json"),
    });
    expect(await everything(t)).toEqual(before);

    // The daemon's events then fill the same scene: counted once.
    await apply(t, [s3Created(VIDEO), s3Created(MANIFEST)]);
    const scene = await sceneDoc(t);
    expect(scene).toMatchObject({
      currentVersion: 1,
      uploads: [{ version: 1, runId: RUN }],
    });
    expect(scene!.files.manifest!.key).toBe(MANIFEST);
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
    await t.mutation(internal.sessions.rebuild, { sessionId: SESSION });
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
  });

  test("per version; a later run replaces its version's entry", async () => {
    const t = backend();
    await apply(t, [s3Created(VIDEO)]);
    await t.mutation(internal.uploads.setManifest, { ...args, version: 2 });
    await t.mutation(internal.uploads.setManifest, args);
    await t.mutation(internal.uploads.setManifest, {
      ...args,
      version: 2,
      runId: LATER_RUN,
      key: dir("manifest.json", "intro", 2),
    });
    expect(
      (await sceneDoc(t))!.uploads!.map((u) => [
        u.version,
        u.runId,
        u.manifest.key,
      ]),
    ).toEqual([
      [1, RUN, MANIFEST],
      [2, LATER_RUN, dir("manifest.json", "intro", 2)],
    ]);
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
  });
});

describe("report with manifests (the last report of an upload_dir)", () => {
  const ref = { sceneId: "intro", version: 1, bucket: BUCKET, key: MANIFEST };
  const withManifests = (
    t: Backend,
    updates: UploadUpdate[],
    manifests: (typeof ref)[],
    runId = RUN,
  ) =>
    t.mutation(internal.uploads.report, {
      sessionId: SESSION,
      runId,
      updates,
      manifests,
    });

  test("writes the finals and the reference in one call, as report + setManifest do", async () => {
    vi.useFakeTimers({ toFake: ["Date"] });
    vi.setSystemTime(T0);
    const t = backend();
    const answer = await withManifests(t, [done(VIDEO), done(MANIFEST)], [ref]);
    expect(answer.results).toEqual(["applied", "applied"]);
    expect(answer.manifests).toEqual(["applied"]);
    expect(answer.session).toMatchObject({ filesDone: 2, filesTotal: 2 });

    const twoCalls = backend();
    await report(twoCalls, [done(VIDEO), done(MANIFEST)]);
    await twoCalls.mutation(internal.uploads.setManifest, {
      sessionId: SESSION,
      runId: RUN,
      ...ref,
    });
    const strip = (rows: Awaited<ReturnType<typeof everything>>) =>
      JSON.parse(
        JSON.stringify(rows, (k, v) =>
          ["_id", "_creationTime", "assetId"].includes(k) ? undefined : v,
        ),
      );
    expect(strip(await everything(t))).toEqual(
      strip(await everything(twoCalls)),
    );
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
  });

  test("replayed, or an earlier run's, writes nothing; a later run's replaces it", async () => {
    const t = backend();
    await withManifests(t, [done(MANIFEST)], [ref]);
    const before = await everything(t);
    const again = await withManifests(t, [done(MANIFEST)], [ref]);
    expect(again).toMatchObject({
      results: ["ignored"],
      manifests: ["ignored"],
    });
    const earlier = await withManifests(
      t,
      [],
      [{ ...ref, key: dir("old-manifest.json") }],
      EARLIER_RUN,
    );
    expect(earlier.manifests).toEqual(["ignored"]);
    expect(await everything(t)).toEqual(before);

    await withManifests(t, [], [ref], LATER_RUN);
    const scene = await t.run((ctx) => ctx.db.query("scenes").first());
    expect(scene!.uploads).toMatchObject([{ version: 1, runId: LATER_RUN }]);
    expect((await session(t))!.summary).toMatchObject({ scenes: 1 });
  });

  test("a bad reference refuses the whole call, naming it; nothing written", async () => {
    const t = backend();
    const before = await everything(t);
    const refused = await withManifests(
      t,
      [done(VIDEO)],
      [ref, { ...ref, version: -1 }],
    ).then(
      () => null,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(ConvexError);
    expect((refused as ConvexError<Record<string, Value>>).data).toMatchObject({
      code: "bad_request",
      manifest: 1,
    });
    expect(await everything(t)).toEqual(before);
  });

  test(`more than MAX_REPORT_MANIFESTS (${MAX_REPORT_MANIFESTS}) is BatchTooLarge`, async () => {
    const t = backend();
    const refs = Array.from({ length: MAX_REPORT_MANIFESTS + 1 }, (_, i) => ({
      ...ref,
      version: i,
    }));
    await expect(withManifests(t, [], refs)).rejects.toThrow(/BatchTooLarge/);
  });
});
