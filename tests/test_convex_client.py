"""The async Convex client against the real local Convex server (this project's functions)."""

from __future__ import annotations

import logging
import time

import pytest
from pydantic import SecretStr

from s3convex.adapters.convex import ConvexClient, decode_value, encode_value
from s3convex.core.errors import (
    ConvexForbidden,
    ConvexFunctionError,
    ConvexRequestError,
    ConvexUnavailable,
    PermanentError,
    RetryableError,
)
from s3convex.core.retrying import RetryBudget


async def test_query_success_returns_value(convex: ConvexClient) -> None:
    assert await convex.query("assets:getByKey", {"bucket": "nobucket", "key": "nothing"}) is None


async def test_mutation_then_query_round_trip(convex: ConvexClient) -> None:
    event = {
        "type": "created", "bucket": "client-rt", "key": "a b/ü.mp4", "eventName": "ObjectCreated:Put",
        "eventTime": 1_700_000_000_000, "size": 10, "etag": "0123456789abcdef0123456789abcdef",
    }
    results = await convex.mutation("assets:applyEvents", {"events": [event]})
    assert [r["status"] for r in results] == ["applied"]
    record = await convex.query("assets:getByKey", {"bucket": "client-rt", "key": "a b/ü.mp4"})
    assert record["status"] == "available"
    assert record["size"] == 10


async def test_function_error_is_permanent(convex: ConvexClient) -> None:
    with pytest.raises(ConvexFunctionError) as info:
        await convex.mutation("assets:applyEvents", {"events": [{"type": "exploded"}]})
    assert isinstance(info.value, PermanentError)
    assert info.value.path == "assets:applyEvents"


async def test_unknown_function_is_permanent(convex: ConvexClient) -> None:
    with pytest.raises(PermanentError):
        await convex.query("assets:doesNotExist", {})


async def test_internal_function_needs_the_key(convex_server) -> None:
    # Like real Convex: without a key an internal function does not exist for the caller.
    async with ConvexClient(convex_server.url, None) as anonymous:
        with pytest.raises(ConvexFunctionError, match="Could not find public function"):
            await anonymous.query("assets:getByKey", {"bucket": "b", "key": "k"})
    async with ConvexClient(convex_server.url, SecretStr("wrong-key")) as wrong:
        with pytest.raises(ConvexRequestError) as info:
            await wrong.query("assets:getByKey", {"bucket": "b", "key": "k"})
    assert isinstance(info.value, ConvexForbidden)
    assert (info.value.status, info.value.code) == (401, "BadAdminKey")


@pytest.mark.parametrize("fault", ["rate503", "rate429"])
async def test_injected_overload_is_retried_then_succeeds(
    convex_server, convex_faults, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    convex_faults(**{fault: 0.6})
    caplog.set_level(logging.WARNING, logger="s3convex.adapters.convex")
    async with ConvexClient(
        convex_server.url, SecretStr(convex_server.admin_key),
        retry=RetryBudget(attempts=40, base=0.001, cap=0.005),
    ) as client:
        for _ in range(10):
            assert await client.query("assets:getByKey", {"bucket": "b", "key": "k"}) is None
    retries = [r for r in caplog.records if r.getMessage() == "convex call failed, retrying"]
    assert retries, "60% injected failures over 10 calls must have caused retries"


async def test_overload_past_the_budget_is_retryable(convex_server, convex_faults) -> None:
    convex_faults(rate503=1.0)
    async with ConvexClient(
        convex_server.url, SecretStr(convex_server.admin_key), retry=RetryBudget(attempts=3, base=0.001)
    ) as client:
        with pytest.raises(ConvexUnavailable) as info:
            await client.mutation("assets:applyEvents", {"events": []})
    assert isinstance(info.value, RetryableError)
    assert info.value.status == 503


async def test_timeout_is_honoured(convex_server, convex_faults) -> None:
    convex_faults(latencyMs=3000)
    async with ConvexClient(
        convex_server.url, SecretStr(convex_server.admin_key), timeout=0.3
    ) as client:
        started = time.monotonic()
        with pytest.raises(ConvexUnavailable, match="timed out"):
            await client.query("assets:getByKey", {"bucket": "b", "key": "k"})
    assert time.monotonic() - started < 2.5  # gave up long before the 3 s answer


async def test_unreachable_server_is_retryable() -> None:
    async with ConvexClient("http://127.0.0.1:9", SecretStr("k"),
                            retry=RetryBudget(attempts=2, base=0.001)) as client:
        with pytest.raises(ConvexUnavailable):
            await client.query("assets:getByKey", {"bucket": "b", "key": "k"})


async def test_deploy_key_never_reaches_logs_or_errors(
    convex_server, convex_faults, caplog: pytest.LogCaptureFixture
) -> None:
    key = convex_server.admin_key
    caplog.set_level(logging.DEBUG)
    convex_faults(rate503=1.0)
    errors: list[str] = []
    async with ConvexClient(convex_server.url, SecretStr(key),
                            retry=RetryBudget(attempts=3, base=0.001)) as client:
        try:
            await client.query("assets:getByKey", {"bucket": "b", "key": "k"})
        except ConvexUnavailable as exc:
            errors.append(repr(exc) + str(exc) + repr(exc.__cause__))
        convex_faults()
        try:
            await client.mutation("assets:applyEvents", {"events": "not a list"})
        except ConvexFunctionError as exc:
            errors.append(repr(exc) + str(exc))
    assert len(errors) == 2
    assert caplog.records, "the retries must have been logged"
    assert all(key not in text for text in [*errors, caplog.text])


def test_value_encoding_round_trips() -> None:
    value = {"n": 3, "f": 1.5, "b": b"\x00\xff", "big": 2**60, "l": [None, True, "x"]}
    assert decode_value(encode_value(value)) == value
