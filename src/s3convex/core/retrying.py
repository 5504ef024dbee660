"""The one retry loop of this project: :func:`with_retries` under a :class:`RetryBudget`.

Every place that tries the same work again — a Convex call of an operator command, the
daemon's hold of a Convex batch during an outage, a poller's next ReceiveMessage after SQS
failed — calls this function with its own budget, so "how often, how long, how far apart" is
plain data and the waits are the same jittered, capped exponential curve
(:func:`~s3convex.core.backoff.backoff_delay`) the SQS release of a failed message uses.
Only :class:`~s3convex.core.errors.RetryableError` is tried again; a service's ``retry_after``
(Convex's ``Retry-After``) is the least wait.

One owner per unit of work, so retries never multiply: whoever retries a piece of work makes
exactly one attempt of what is inside per try (the daemon's applier asks the Convex client for
:data:`ONE_ATTEMPT`, whatever budget the client has). An S3 or SQS request is retried by botocore
itself ("standard" mode, see :mod:`s3convex.adapters.aws`) and by nothing here — except that a
poller, whose work is to poll until stopped, polls again after a failed ReceiveMessage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from s3convex.core.backoff import backoff_delay
from s3convex.core.errors import RetryableError

T = TypeVar("T")

OnRetry = Callable[[int, float, RetryableError], None]  # (attempt that failed, wait, error)


@dataclass(frozen=True, slots=True)
class RetryBudget:
    """How often and how long one unit of work may be tried.

    ``attempts``: tries in all, the first included (None: no limit). ``seconds``: no retry
    starts later than this after the first failure (None: no limit). The wait before retry
    *n* is drawn from [½, 1] × min(``cap``, ``base`` × 2ⁿ⁻¹), or the service's ``retry_after``
    if that is longer.
    """

    attempts: int | None = 1
    seconds: float | None = None
    base: float = 0.1
    cap: float = 2.0

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts counts the first try: at least 1")

    def allows(self, attempt: int, waited: float) -> bool:
        """May try ``attempt + 1`` start ``waited`` seconds after the first failure?"""
        if self.attempts is not None and attempt >= self.attempts:
            return False
        return self.seconds is None or waited <= self.seconds


ONE_ATTEMPT = RetryBudget(attempts=1)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    budget: RetryBudget,
    *,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``await call()``, tried again after a :class:`RetryableError` while ``budget`` allows;
    the last error is raised as it is. ``on_retry`` hears of each retry before its wait (to log
    it); any other error propagates at once."""
    first_failure: float | None = None
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except RetryableError as exc:
            now = clock()
            first_failure = now if first_failure is None else first_failure
            delay = max(backoff_delay(attempt, base=budget.base, cap=budget.cap), exc.retry_after)
            if not budget.allows(attempt, now - first_failure + delay):
                raise
            if on_retry is not None:
                on_retry(attempt, delay, exc)
            await sleep(delay)
