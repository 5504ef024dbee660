/**
 * Which of two S3 events for the same key happened last.
 *
 * S3 delivers notifications at least once and in no particular order, and
 * several replicas of the sync service apply them concurrently, so the only
 * safe rule is one that depends on the events alone: every arrival order must
 * end on the same winner.
 *
 * 1. Sequencers, when both events carry one and they differ. AWS defines them
 *    as hex strings of varying length that compare after left-padding.
 * 2. eventTime otherwise. A sequencer can be absent (moto, reconcile) or
 *    carry no order at all: LocalStack stamps one constant on every event,
 *    so equal sequencers fall through instead of meaning "same event".
 * 3. Content, when the position ties (eventTime has millisecond resolution).
 *    Identical content is the same event delivered twice. Different content
 *    needs an arbitrary but deterministic winner; removed beats created so a
 *    put-then-delete within one millisecond does not resurrect the object.
 *
 * Mixing events with and without sequencers for one key is not a total order
 * (A<B by sequencer, B<C and C<A by time is possible); sources are expected
 * to be consistent per key.
 */

export type EventType = "created" | "removed";

export type EventPosition = {
  type: EventType;
  eventTime: number;
  sequencer?: string;
  etag?: string;
  size?: number;
  versionId?: string;
};

export type Verdict = "applied" | "stale" | "duplicate";

export function compareSequencers(a: string, b: string): number {
  const width = Math.max(a.length, b.length);
  return compareStrings(
    a.toUpperCase().padStart(width, "0"),
    b.toUpperCase().padStart(width, "0"),
  );
}

/** Negative when `a` happened before `b`, positive after, zero for the same event. */
export function compareEvents(a: EventPosition, b: EventPosition): number {
  if (a.sequencer !== undefined && b.sequencer !== undefined) {
    const bySequencer = compareSequencers(a.sequencer, b.sequencer);
    if (bySequencer !== 0) return bySequencer;
  }
  return (
    Math.sign(a.eventTime - b.eventTime) ||
    typeRank(a.type) - typeRank(b.type) ||
    compareOptional(a.etag, b.etag, compareStrings) ||
    compareOptional(a.versionId, b.versionId, compareStrings) ||
    compareOptional(a.size, b.size, (x, y) => Math.sign(x - y))
  );
}

/** What to do with `incoming` given the position a record already holds. */
export function judge(
  current: EventPosition | null,
  incoming: EventPosition,
): Verdict {
  if (current === null) return "applied";
  const order = compareEvents(incoming, current);
  return order > 0 ? "applied" : order < 0 ? "stale" : "duplicate";
}

function typeRank(type: EventType): number {
  return type === "removed" ? 1 : 0;
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// An absent value sorts first, so an event that says more wins the tie.
function compareOptional<T>(
  a: T | undefined,
  b: T | undefined,
  compare: (a: T, b: T) => number,
): number {
  if (a === undefined || b === undefined) {
    return (a === undefined ? 0 : 1) - (b === undefined ? 0 : 1);
  }
  return compare(a, b);
}
