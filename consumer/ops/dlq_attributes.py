"""Message attributes of DLQ messages: cleaned for sending, to and from JSON, and the replay count.

A received message's attributes carry fields SendMessage refuses, and binary values that JSON
cannot hold; these functions turn them into what SendMessage accepts and what an export file
can carry (and back, checked). :func:`with_replay_count` gives a replayed message all the
attributes it had plus ``s3convex.replay-count`` + 1, within SQS's limit of 10 attributes.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from s3convex.consumer.ack import (
    FAILED_AT_ATTRIBUTE,
    REASON_ATTRIBUTE,
    RECEIVES_ATTRIBUTE,
    SOURCE_ID_ATTRIBUTE,
)

log = logging.getLogger(__name__)

REPLAY_COUNT_ATTRIBUTE = "s3convex.replay-count"
SQS_MAX_ATTRIBUTES = 10
# When attributes must make room for the replay count, ours go first, least useful first.
_DROPPABLE = (FAILED_AT_ATTRIBUTE, RECEIVES_ATTRIBUTE, SOURCE_ID_ATTRIBUTE, REASON_ATTRIBUTE)


def clean_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """Keep only what SendMessage accepts (ReceiveMessage adds empty list fields)."""
    return {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in attributes.items()
        if isinstance(value, dict)
    }


def attributes_to_json(attributes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in attributes.items():
        value = dict(value)
        if isinstance(value.get("BinaryValue"), bytes | bytearray):
            value["BinaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
        out[name] = value
    return out


def attributes_from_json(attributes: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in attributes.items():
        if not isinstance(value, dict) or not isinstance(value.get("DataType"), str):
            raise ValueError(f"attribute {name!r} needs a DataType")
        value = {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        if "BinaryValue" in value:
            value["BinaryValue"] = base64.b64decode(value["BinaryValue"], validate=True)
        elif not isinstance(value.get("StringValue"), str):
            raise ValueError(f"attribute {name!r} needs a StringValue or BinaryValue")
        out[name] = value
    return out


def with_replay_count(attributes: dict[str, Any]) -> dict[str, Any]:
    """The attributes a replayed message carries: all it had, ``s3convex.replay-count`` + 1.

    SQS allows 10 attributes; when the message already has 10, the consumer's diagnostic
    attributes make room, least useful first (failed-at, then receive-count, ...). A message
    carrying 10 attributes of someone else's keeps them all and gets no count.
    """
    current = attributes.get(REPLAY_COUNT_ATTRIBUTE, {}).get("StringValue", "0")
    count = (int(current) if str(current).isdigit() else 0) + 1
    kept = {k: v for k, v in attributes.items() if k != REPLAY_COUNT_ATTRIBUTE}
    for name in _DROPPABLE:
        if len(kept) < SQS_MAX_ATTRIBUTES:
            break
        kept.pop(name, None)
    if len(kept) >= SQS_MAX_ATTRIBUTES:
        log.warning("no room for the replay count attribute", extra={"attributes": sorted(kept)})
        return kept
    return {**kept, REPLAY_COUNT_ATTRIBUTE: {"DataType": "Number", "StringValue": str(count)}}
