"""What to do with a message whose work failed: a pure function of the error and receive count."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from s3convex.core.backoff import backoff_delay
from s3convex.core.errors import PermanentError, PoisonMessage, RetryableError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_receive_count: int = 5
    base_seconds: float = 2.0
    cap_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class RetryDecision:
    action: Literal["release", "dead_letter"]
    delay_seconds: int = 0
    reason: str = ""


def decide(
    error: BaseException, receive_count: int, policy: RetryPolicy, rng: random.Random | None = None
) -> RetryDecision:
    """Retryable errors release the message after a jittered backoff of its receive count;
    once that count reaches the queue's ``maxReceiveCount`` (the next receive would be
    SQS's own move to the DLQ, without our reason) we dead-letter it ourselves. Permanent
    errors and poison go to the DLQ at once."""
    if isinstance(error, PoisonMessage):
        return RetryDecision("dead_letter", reason=f"poison: {error.reason}")
    if isinstance(error, PermanentError):
        return RetryDecision("dead_letter", reason=f"permanent: {error}")
    kind = "retryable" if isinstance(error, RetryableError) else f"unexpected {type(error).__name__}"
    if receive_count >= policy.max_receive_count:
        return RetryDecision(
            "dead_letter", reason=f"gave up after {receive_count} receives: {kind}: {error}"
        )
    delay = backoff_delay(receive_count, base=policy.base_seconds, cap=policy.cap_seconds, rng=rng)
    return RetryDecision("release", delay_seconds=max(1, round(delay)), reason=f"{kind}: {error}")
