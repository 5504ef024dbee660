"""SQS batch calls, for the daemon and the operator tools: sizing, SendMessageBatch,
DeleteMessageBatch, depth.

:func:`size_batches` splits messages into groups SQS accepts (≤ 10 entries, ≤ 256 KiB);
:func:`send_batch` reports the new id of each message or that SQS refused it, and raises only
when the whole call fails, so a caller never deletes what it did not send; :func:`delete_batch`
(the daemon's ack and the DLQ tools alike) reports which deletes succeeded and never raises (an
undeleted message only comes back); :func:`queue_depth` reads the counts. ``sqs`` is a client of
:func:`~s3convex.adapters.aws.open_clients`, whose errors are mapped already.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

SQS_MAX_BATCH_BYTES = 256 * 1024
SQS_MAX_BATCH_ENTRIES = 10
# A delete refused with these means the handle no longer holds the message (already deleted,
# or received again since): expected now and then, so logged at INFO.
GONE_CODES = frozenset({"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"})


def entry_bytes(body: str, attributes: dict[str, Any]) -> int:
    """The size SQS counts against its message and batch limits."""
    size = len(body.encode())
    for name, value in attributes.items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        if "BinaryValue" in value:
            size += len(value["BinaryValue"])
        else:
            size += len(str(value.get("StringValue", "")).encode())
    return size


def size_batches(items: list[Any], size_of: Any, *, max_count: int = 10,
                 max_bytes: int = SQS_MAX_BATCH_BYTES) -> list[list[Any]]:
    """Split into SendMessageBatch-sized groups (≤ 10 entries, ≤ 256 KiB in all)."""
    batches: list[list[Any]] = []
    current: list[Any] = []
    used = 0
    for item in items:
        size = size_of(item)
        if current and (len(current) >= max_count or used + size > max_bytes):
            batches.append(current)
            current, used = [], 0
        current.append(item)
        used += size
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to send: ``ref`` is the caller's handle on it (a DlqMessage, a file line)."""

    ref: Any
    body: str
    attributes: dict[str, Any]


async def send_batch(sqs: Any, queue_url: str, items: list[Outgoing]) -> list[str | None]:
    """SendMessageBatch; the new message id of each item, or None where SQS refused it.

    A failure of the whole call raises (mapped): the caller stops before deleting anything.
    """
    entries = [{"Id": str(i), "MessageBody": item.body,
                **({"MessageAttributes": item.attributes} if item.attributes else {})}
               for i, item in enumerate(items)]
    response = await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    ids: list[str | None] = [None] * len(items)
    for success in response.get("Successful", []):
        ids[int(success["Id"])] = success["MessageId"]
    for failure in response.get("Failed", []):
        log.warning("send entry refused", extra={"code": failure.get("Code"),
                                                 "error": failure.get("Message")})
    return ids


async def delete_batch(sqs: Any, queue_url: str, receipt_handles: Sequence[str], *,
                       message_ids: Sequence[str] | None = None) -> list[bool]:
    """DeleteMessageBatch, ten handles per call; which deletes succeeded, in order.

    Never raises: an undeleted message only comes back and is handled again (a duplicate,
    which applying absorbs). ``message_ids``, parallel to the handles, name refused entries in
    the log.
    """
    if len(receipt_handles) > SQS_MAX_BATCH_ENTRIES:
        results: list[bool] = []
        for start in range(0, len(receipt_handles), SQS_MAX_BATCH_ENTRIES):
            end = start + SQS_MAX_BATCH_ENTRIES
            results += await delete_batch(sqs, queue_url, receipt_handles[start:end],
                                          message_ids=message_ids and message_ids[start:end])
        return results
    entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)]
    try:
        response = await sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
    except Exception as exc:
        log.warning("delete batch failed; the messages will come back and be handled again",
                    extra={"error": str(exc),
                           "count": len(entries)})
        return [False] * len(entries)
    ok = [True] * len(entries)
    for failure in response.get("Failed", ()):
        index = int(failure["Id"])
        ok[index] = False
        code = failure.get("Code")
        log.log(logging.INFO if code in GONE_CODES else logging.WARNING,
                "delete entry failed; the message will come back and be handled again",
                extra={"message_id": message_ids[index] if message_ids else None, "code": code})
    return ok


async def queue_depth(sqs: Any, queue_url: str) -> dict[str, int]:
    """Visible, in-flight and delayed message counts (approximate, as SQS reports them)."""
    response = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])
    attributes = response.get("Attributes", {})
    return {
        "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "inFlight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    }
