import { describe, expect, test } from "vitest";
import { internal } from "../../convex/_generated/api";
import { MAX_MOVED_IDS, type ReplayRun } from "../../convex/operations";
import { T0, backend, type Backend } from "./support";

function run(fields: Partial<ReplayRun> = {}): ReplayRun {
  return {
    runId: "run-1",
    kind: "replay",
    status: "running",
    operator: "ops@example",
    host: "bastion",
    source: "http://sqs/000000000000/events-dlq",
    target: "http://sqs/000000000000/events",
    filters: { keys: ["renders/*"], limit: 10 },
    examined: 0,
    selected: 0,
    moved: 0,
    sendFailed: 0,
    deleteFailed: 0,
    movedIds: [],
    movedIdsTruncated: false,
    startedAt: T0,
    ...fields,
  };
}

const finished: Partial<ReplayRun> = {
  status: "completed",
  examined: 7,
  selected: 3,
  moved: 3,
  movedIds: [{ from: "d1", to: "s1" }],
  finishedAt: T0 + 5_000,
};

const record = (t: Backend, r: ReplayRun) =>
  t.mutation(internal.operations.recordReplayRun, r);

const rows = (t: Backend) =>
  t.run((ctx) => ctx.db.query("replayRuns").collect());

describe("recordReplayRun", () => {
  test("start then outcome leaves one row holding the outcome", async () => {
    const t = backend();
    const started = await record(t, run());
    const done = await record(t, run(finished));
    expect(done).toEqual(started);
    const all = await rows(t);
    expect(all).toHaveLength(1);
    expect(all[0]).toMatchObject({ status: "completed", moved: 3, finishedAt: T0 + 5_000 });
    expect(all[0].filters).toEqual({ keys: ["renders/*"], limit: 10 });
  });

  test("a retried call writes nothing new", async () => {
    const t = backend();
    await record(t, run(finished));
    await record(t, run(finished));
    expect(await rows(t)).toHaveLength(1);
  });

  test("a late retry of the start never overwrites the outcome", async () => {
    const t = backend();
    await record(t, run());
    await record(t, run(finished));
    await record(t, run()); // the first call's retry, arriving last
    const [row] = await rows(t);
    expect(row.status).toBe("completed");
    expect(row.moved).toBe(3);
  });

  test("an outcome replaces the row entirely: fields it lacks are cleared", async () => {
    const t = backend();
    await record(t, run({ status: "failed", error: "boom", finishedAt: T0 + 1 }));
    await record(t, run(finished));
    const [row] = await rows(t);
    expect(row.error).toBeUndefined();
  });

  test.each([
    [{ runId: " " }, "runId"],
    [{ moved: -1 }, "moved"],
    [{ examined: 1.5 }, "examined"],
    [{ status: "completed" as const }, "finishedAt"],
    [{ finishedAt: T0 + 1 }, "finishedAt"],
    [{ status: "completed" as const, finishedAt: T0 - 1 }, "before startedAt"],
    [
      {
        movedIds: Array.from({ length: MAX_MOVED_IDS + 1 }, (_, i) => ({
          from: `d${i}`,
          to: `s${i}`,
        })),
      },
      "movedIds",
    ],
  ])("rejects %o", async (fields, reason) => {
    const t = backend();
    await expect(record(t, run(fields))).rejects.toThrow(reason);
    expect(await rows(t)).toHaveLength(0);
  });
});

describe("listReplayRuns / getReplayRun", () => {
  test("newest first, limited; one run by id", async () => {
    const t = backend();
    for (let i = 0; i < 5; i++) {
      await record(t, run({ runId: `run-${i}`, startedAt: T0 + i }));
    }
    const latest = await t.query(internal.operations.listReplayRuns, { limit: 3 });
    expect(latest.map((r) => r.runId)).toEqual(["run-4", "run-3", "run-2"]);
    expect(
      await t.query(internal.operations.getReplayRun, { runId: "run-1" }),
    ).toMatchObject({ startedAt: T0 + 1 });
    expect(
      await t.query(internal.operations.getReplayRun, { runId: "nope" }),
    ).toBeNull();
  });

  test("rejects a limit out of range", async () => {
    const t = backend();
    await expect(
      t.query(internal.operations.listReplayRuns, { limit: 0 }),
    ).rejects.toThrow("BadLimit");
    await expect(
      t.query(internal.operations.listReplayRuns, { limit: 101 }),
    ).rejects.toThrow("BadLimit");
  });
});
