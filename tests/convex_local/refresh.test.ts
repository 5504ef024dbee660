// @vitest-environment node
/**
 * The subscription hub's refresh, in process (a real Deployment on the fixture
 * functions, a recording subscriber): commits that arrive while a refresh
 * waits for its turn share it, bounded by `refreshDeferMs`, and the results
 * pushed still hold every commit.
 */
import { describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { ANONYMOUS } from "../../convex_local/auth";
import { Deployment } from "../../convex_local/runtime";
import { SubscriptionHub, type Subscriber } from "../../convex_local/subscriptions";

const FIXTURES = fileURLToPath(new URL("./fixtures/convex", import.meta.url));

async function settle(deployment: Deployment): Promise<void> {
  // A deferred refresh queues itself again: wait until the queue stays empty.
  for (let i = 0; i < 50 && (deployment.queue.depth > 0 || i < 3); i++) {
    await deployment.queue.idle();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function burst(refreshDeferMs: number) {
  const deployment = await Deployment.load({ functionsDir: FIXTURES, accelerate: true, captureConsole: false });
  const hub = new SubscriptionHub(deployment, FIXTURES, (e) => { throw e; }, refreshDeferMs);
  const pushed: string[] = [];
  const subscriber: Subscriber = {
    prepare: () => {},
    emit: () => {
      pushed.push(entry.body!);
      return true;
    },
  };
  const entry = hub.acquire(subscriber, "live:list", [{ group: "b" }], ANONYMOUS);
  hub.schedule(subscriber);
  await settle(deployment);
  const add = deployment.resolve("live:add")!;
  const before = hub.stats();
  void deployment.execute(add, { group: "b", name: "n0" }, null, () => {
    // Right after the first commit, inside its queue task (its refresh is queued now):
    // three more writes arrive on the next event-loop turn, as HTTP requests read meanwhile do.
    setImmediate(() => {
      for (const name of ["n1", "n2", "n3"]) void deployment.execute(add, { group: "b", name }, null);
    });
  });
  await settle(deployment);
  const after = hub.stats();
  return { reruns: after.reruns - before.reruns, deferrals: after.deferrals - before.deferrals, last: pushed[pushed.length - 1] };
}

describe("SubscriptionHub refresh", () => {
  it("lets writes that arrive while a refresh waits for its turn share it", async () => {
    const shared = await burst(25);
    expect(shared.deferrals).toBeGreaterThan(0);
    expect(shared.reruns).toBe(1);
    expect(shared.last).toContain('["n0","n1","n2","n3"]');
  });

  it("refreshes after the first commit when deferring is off (CONVEX_LOCAL_REFRESH_DEFER_MS=0)", async () => {
    const apart = await burst(0);
    expect(apart.deferrals).toBe(0);
    expect(apart.reruns).toBe(2);
    expect(apart.last).toContain('["n0","n1","n2","n3"]');
  });
});
