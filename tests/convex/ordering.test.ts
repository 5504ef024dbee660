import { describe, expect, test } from "vitest";
import {
  EventPosition,
  compareEvents,
  compareSequencers,
  judge,
} from "../../convex/ordering";
import { random, shuffle } from "./support";

const put = (fields: Partial<EventPosition> = {}): EventPosition => ({
  type: "created",
  eventTime: 1_000_000_000_000,
  etag: "aaa",
  size: 1,
  ...fields,
});

describe("compareSequencers", () => {
  test("pads the shorter one before comparing", () => {
    // Unpadded, "FF" > "0100" as strings; padded it is "00FF" < "0100".
    expect(compareSequencers("FF", "0100")).toBeLessThan(0);
    expect(compareSequencers("0100", "FF")).toBeGreaterThan(0);
    expect(compareSequencers("A", "000A")).toBe(0);
  });

  test("orders real-looking sequencers", () => {
    expect(
      compareSequencers("0055AED6DCD90281E5", "0055AED6DCD90281E6"),
    ).toBeLessThan(0);
    expect(compareSequencers("0055AED6DCD90281E5", "0055AED6DCD90281E5")).toBe(
      0,
    );
  });

  test("ignores hex letter case", () => {
    expect(compareSequencers("00ab", "00AB")).toBe(0);
    expect(compareSequencers("00ab", "00AC")).toBeLessThan(0);
  });
});

describe("compareEvents", () => {
  test("a differing sequencer wins over eventTime", () => {
    const early = put({ sequencer: "01", eventTime: 5 });
    const late = put({ sequencer: "02", eventTime: 1 });
    expect(compareEvents(late, early)).toBeGreaterThan(0);
    expect(compareEvents(early, late)).toBeLessThan(0);
  });

  test("an equal sequencer carries no order: eventTime decides", () => {
    const constant = "0055AED6DCD90281E5";
    const a = put({ sequencer: constant, eventTime: 1 });
    const b = put({ sequencer: constant, eventTime: 2, etag: "bbb" });
    expect(compareEvents(b, a)).toBeGreaterThan(0);
    expect(compareEvents(a, b)).toBeLessThan(0);
  });

  test("a missing sequencer on either side falls back to eventTime", () => {
    expect(
      compareEvents(
        put({ eventTime: 2 }),
        put({ sequencer: "FF", eventTime: 1 }),
      ),
    ).toBeGreaterThan(0);
    expect(
      compareEvents(
        put({ sequencer: "FF", eventTime: 1 }),
        put({ eventTime: 2 }),
      ),
    ).toBeLessThan(0);
  });

  test("identical content at the same position is the same event", () => {
    expect(
      compareEvents(put({ sequencer: "01" }), put({ sequencer: "01" })),
    ).toBe(0);
    expect(compareEvents(put(), put())).toBe(0);
  });

  test("ties break on content: removed, then etag, versionId, size", () => {
    const del: EventPosition = { type: "removed", eventTime: put().eventTime };
    expect(compareEvents(del, put())).toBeGreaterThan(0);
    expect(
      compareEvents(put({ etag: "bbb" }), put({ etag: "aaa" })),
    ).toBeGreaterThan(0);
    expect(compareEvents(put({ etag: undefined }), put())).toBeLessThan(0);
    expect(
      compareEvents(put({ versionId: "v2" }), put({ versionId: "v1" })),
    ).toBeGreaterThan(0);
    expect(compareEvents(put({ size: 10 }), put({ size: 9 }))).toBeGreaterThan(
      0,
    );
    // etag outranks size
    expect(
      compareEvents(put({ etag: "b", size: 1 }), put({ etag: "a", size: 9 })),
    ).toBeGreaterThan(0);
  });

  test("is antisymmetric and sorts to one order whatever the input order", () => {
    const events: EventPosition[] = [];
    for (const eventTime of [1, 2]) {
      for (const etag of [undefined, "a", "b"]) {
        for (const size of [undefined, 1, 2]) {
          events.push(put({ sequencer: "00CAFE", eventTime, etag, size }));
        }
        events.push({
          type: "removed",
          eventTime,
          sequencer: "00CAFE",
          versionId: etag,
        });
      }
    }
    for (const a of events) {
      for (const b of events) {
        expect(Math.sign(compareEvents(a, b))).toBe(
          -Math.sign(compareEvents(b, a)) || 0,
        );
      }
    }
    const rand = random(7);
    const reference = [...events].sort(compareEvents);
    for (let i = 0; i < 20; i++) {
      expect(shuffle(events, rand).sort(compareEvents)).toEqual(reference);
    }
  });
});

describe("judge", () => {
  test("applies the first event for a key", () => {
    expect(judge(null, put())).toBe("applied");
  });

  test("applies newer, drops older, recognises the same", () => {
    const current = put({ sequencer: "10" });
    expect(judge(current, put({ sequencer: "11" }))).toBe("applied");
    expect(judge(current, put({ sequencer: "0F" }))).toBe("stale");
    expect(judge(current, put({ sequencer: "10" }))).toBe("duplicate");
  });
});
