"""SQS batch calls for the operator tools: sizing, SendMessageBatch, DeleteMessageBatch, depth.

:func:`size_batches` splits messages into groups SQS accepts (≤ 10 entries, ≤ 256 KiB);
:func:`send_batch` reports the new id of each message or that SQS refused it, and raises only
when the whole call fails, so a caller never deletes what it did not send; :func:`delete_batch`
never raises (an undeleted message only comes back); :func:`queue_depth` reads the counts.
AWS errors are mapped at this boundary with :func:`~s3convex.adapters.aws.map_aws_error`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from s3convex.adapters.aws import map_aws_error

log = logging.getLogger(__name__)

SQS_MAX_BATCH_BYTES = 256 * 1024


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
    try:
        response = await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    except Exception as exc:
        raise map_aws_error(exc, "SendMessageBatch") from exc
    ids: list[str | None] = [None] * len(items)
    for success in response.get("Successful", []):
        ids[int(success["Id"])] = success["MessageId"]
    for failure in response.get("Failed", []):
        log.warning("send entry refused", extra={"code": failure.get("Code"),
                                                 "error": failure.get("Message")})
    return ids


async def delete_batch(sqs: Any, queue_url: str, receipt_handles: list[str]) -> list[bool]:
    """DeleteMessageBatch; which deletes succeeded. Never raises: an undeleted message only
    comes back and is sent again (a duplicate, which applying absorbs)."""
    entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)]
    try:
        response = await sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
    except Exception as exc:
        log.warning("delete batch failed; the messages stay and may be sent again",
                    extra={"error": str(map_aws_error(exc, "DeleteMessageBatch"))})
        return [False] * len(entries)
    ok = [True] * len(entries)
    for failure in response.get("Failed", []):
        ok[int(failure["Id"])] = False
        log.warning("delete entry failed; the message stays and may be sent again",
                    extra={"code": failure.get("Code")})
    return ok


async def queue_depth(sqs: Any, queue_url: str) -> dict[str, int]:
    """Visible, in-flight and delayed message counts (approximate, as SQS reports them)."""
    try:
        response = await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed"])
    except Exception as exc:
        raise map_aws_error(exc, "GetQueueAttributes") from exc
    attributes = response.get("Attributes", {})
    return {
        "visible": int(attributes.get("ApproximateNumberOfMessages", 0)),
        "inFlight": int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
    }
