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
 *
 * Two writers, two positions. The uploader (`uploads:report`) writes the same
 * records as the S3 events, and its reports are ordered by a rule of their
 * own, `compareUploads`, which again depends on the reports alone:
 *
 * U1. runId — a later run supersedes an earlier one (run ids sort by start
 *     time: ULID / UUIDv7 / zero-padded ms prefix, convex/UPLOADS.md);
 * U2. attempt — a newer attempt may restart progress at 0;
 * U3. status, pending < uploading < failed < available — within one attempt
 *     a report never moves back (available outranks failed: the object is
 *     there, e.g. a sweep marked a slow upload failed before it finished);
 * U4. bytesSent — progress never decreases within one (runId, attempt);
 * U5. digest of the rest of the report — an arbitrary but fixed winner for
 *     reports equal above; the same digest is the same report ("ignored").
 *
 * A record keeps the greatest S3 event and the greatest report it has seen,
 * each moved only by its own rule, so each converges in any arrival order.
 * What the record says is a function of the two (`model/uploads.ts`):
 *
 * S. Once an S3 event has been applied (revision ≥ 1), S3 says what the
 *    object is — its status (available/deleted), fields and history —
 *    and a report moves only `upload`. So no report, late or new, ever
 *    turns an available (or newer-version) object back into
 *    pending/uploading/failed, and the daemon's event for an object the
 *    uploader reported first is its first and only history version.
 *    Before that (revision 0), the status and object fields are the
 *    greatest report's; such a record has no S3 position (`judge` sees
 *    null), so any S3 event for the key applies over it.
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

// --- upload reports ---------------------------------------------------------

export type UploadStatus = "pending" | "uploading" | "failed" | "available";

/** What orders two upload reports for the same key (rules U1–U5 above). */
export type UploadPosition = {
  runId: string;
  attempt: number;
  status: UploadStatus;
  bytesSent: number;
  digest: string;
};

export type UploadVerdict = "applied" | "stale" | "ignored";

const UPLOAD_RANK: Record<UploadStatus, number> = {
  pending: 0,
  uploading: 1,
  failed: 2,
  available: 3,
};

/** Negative when report `a` is behind `b`, positive ahead, zero for the same report. */
export function compareUploads(a: UploadPosition, b: UploadPosition): number {
  return (
    compareStrings(a.runId, b.runId) ||
    Math.sign(a.attempt - b.attempt) ||
    UPLOAD_RANK[a.status] - UPLOAD_RANK[b.status] ||
    Math.sign(a.bytesSent - b.bytesSent) ||
    compareStrings(a.digest, b.digest)
  );
}

/** What to do with a report given the one a record already holds. */
export function judgeUpload(
  current: UploadPosition | null,
  incoming: UploadPosition,
): UploadVerdict {
  if (current === null) return "applied";
  const order = compareUploads(incoming, current);
  return order > 0 ? "applied" : order < 0 ? "stale" : "ignored";
}
