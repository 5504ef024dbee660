"""Structured JSON log lines with a correlation context, and the redaction of secrets.

``with log_context(message_id=..., bucket=..., key=...)`` binds fields to every line logged
inside it (a ``contextvars`` mapping, so concurrent tasks keep their own). Every line goes
through :func:`redact`: presigned-URL signatures, credentials and Convex keys never reach
the output, whoever logged them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "log_context", default=MappingProxyType({})
)

_SECRET_PATTERNS = [
    # SigV4 / SigV2 query signatures and credentials in presigned URLs.
    (re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+"), r"\1REDACTED"),
    (re.compile(r"(?i)((?:Signature|AWSAccessKeyId)=)[^&\s\"']+"), r"\1REDACTED"),
    # Convex admin/deploy keys: in an Authorization header, or by their own shape.
    (re.compile(r"(?i)(Authorization[\"']?\s*[:=]\s*[\"']?(?:Convex|Bearer)\s+)[^\s\"']+"), r"\1REDACTED"),
    (re.compile(r"\b(?:prod|dev|preview|project):[\w-]+\|[\w+/=-]+"), "REDACTED"),
    (re.compile(r"(?i)(deploy[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"), r"\1REDACTED"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, extra fields."""

    _RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_context.get(),
        }
        for name, value in record.__dict__.items():
            if name not in self._RESERVED and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, default=str, ensure_ascii=False))


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter at INFO (botocore credential lookups, httpx requests) is noise here.
    for noisy in ("botocore", "aiobotocore", "httpx", "httpcore", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
