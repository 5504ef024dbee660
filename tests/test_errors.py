"""The error tree, the two mapping tables (botocore; httpx + Convex), the one retry loop, and a
real AccessDenied from an emulator enforcing IAM, as the daemon's library and the CLI report it.

Assertions are on types and attributes; message text is looked at only to check that the code
the service really sent appears in it and that no wrong diagnosis ("not found", "run infra up")
does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from pydantic import SecretStr

from s3convex.adapters.aws import describe, map_aws_error, open_clients
from s3convex.adapters.convex import BOUNDED_RETRY, RETRY_AFTER_CAP, ConvexClient, map_httpx_error
from s3convex.adapters.queues import resolve_queues
from s3convex.adapters.s3_store import S3ObjectStore
from s3convex.consumer.apply import ConvexApplier
from s3convex.core.asset import AssetChange
from s3convex.core.errors import (
    AccessDenied,
    AccessError,
    AssetGone,
    ConfigError,
    ConvexForbidden,
    ConvexFunctionError,
    ConvexNotFound,
    ConvexRequestError,
    ConvexUnavailable,
    Forbidden,
    NotFound,
    PermanentError,
    PoisonMessage,
    RetryableError,
    StorageError,
    StorageForbidden,
    StorageNotFound,
    StorageUnavailable,
    SyncError,
)
from s3convex.core.retrying import ONE_ATTEMPT, RetryBudget, with_retries
from s3convex.settings import AwsSettings, SqsSettings, load
from tests.backends import ROOT, free_port, iam_enforcing_moto

WRONG_DIAGNOSES = ("not found", "infra up", "does not exist")


def _no_wrong_diagnosis(text: str) -> None:
    assert not [wrong for wrong in WRONG_DIAGNOSES if wrong in text.lower()], text


# --- the tree --------------------------------------------------------------------------------


def test_every_error_carries_operation_code_and_status() -> None:
    error = StorageForbidden("User: arn:aws:iam::1:user/x is not authorized",
                             operation="GetQueueUrl events", code="AccessDenied", status=403)
    assert (error.operation, error.code, error.status) == ("GetQueueUrl events", "AccessDenied", 403)
    assert error.message == "User: arn:aws:iam::1:user/x is not authorized"
    assert all(part in str(error) for part in ("GetQueueUrl events", "AccessDenied", "403",
                                                "is not authorized"))
    # Ours, with nothing asked of a service: no operation, code or status, and none invented.
    for plain in (ConfigError("CONVEX_URL is not set"), PoisonMessage("body is not JSON"),
                  AccessDenied("denied", audit_id="a1"), StorageError("cannot delete k")):
        assert (plain.operation, plain.code, plain.status) == (None, None, None)
        assert str(plain) == plain.message


@pytest.mark.parametrize(
    ("kind", "roots"),
    [
        (StorageUnavailable, (RetryableError,)),
        (ConvexUnavailable, (RetryableError,)),
        (StorageNotFound, (StorageError, NotFound, PermanentError)),
        (StorageForbidden, (StorageError, Forbidden, PermanentError)),
        (ConvexNotFound, (ConvexRequestError, NotFound, PermanentError)),
        (ConvexForbidden, (ConvexRequestError, Forbidden, PermanentError)),
        (StorageError, (PermanentError,)),
        (ConvexRequestError, (PermanentError,)),
    ],
)
def test_kinds_sit_under_their_service_and_their_meaning(kind: type[SyncError],
                                                         roots: tuple[type[SyncError], ...]) -> None:
    error = kind("m", operation="Op", code="C", status=400)
    assert all(isinstance(error, root) for root in (SyncError, *roots))
    assert isinstance(error, RetryableError) != isinstance(error, PermanentError)
    assert (error.operation, error.code, error.status) == ("Op", "C", 400)


def test_the_end_user_access_decision_is_not_aws_access_denied() -> None:
    assert not issubclass(AccessDenied, Forbidden) and not issubclass(StorageForbidden, AccessError)


def test_retryable_errors_carry_the_wait_the_service_asked_for() -> None:
    assert StorageUnavailable("slow down").retry_after == 0.0
    assert ConvexUnavailable("busy", status=429, retry_after=2.5).retry_after == 2.5


def test_function_error_code_comes_from_error_data() -> None:
    error = ConvexFunctionError("access:authorize", "bad principal", {"code": "BadPrincipal"}, status=200)
    assert (error.path, error.operation, error.code, error.status) == (
        "access:authorize", "access:authorize", "BadPrincipal", 200)
    assert error.error_message == "bad principal"
    assert ConvexFunctionError("a:b", "threw", "not a dict").code is None


def test_a_hint_ends_the_message_and_keeps_the_facts() -> None:
    error = StorageNotFound("The specified queue does not exist.", operation="GetQueueUrl q",
                            code="AWS.SimpleQueueService.NonExistentQueue", status=400)
    assert error.with_hint("run `s3convex infra up`") is error
    assert str(error).endswith("run `s3convex infra up`")
    assert "AWS.SimpleQueueService.NonExistentQueue" in str(error) and error.hint


def test_a_bare_status_is_not_repeated_as_a_code() -> None:
    error = StorageNotFound("Not Found", operation="HeadObject b/k", code="404", status=404)
    assert str(error).count("404") == 1


def test_errors_survive_pickling_with_their_attributes() -> None:
    for error in (
        StorageForbidden("denied", operation="HeadObject b/k", code="AccessDenied", status=403),
        ConvexUnavailable("busy", operation="assets:applyEvents", status=503, retry_after=1.0),
        ConvexFunctionError("a:b", "threw", {"code": "X"}, status=560),
        AssetGone("gone", deleted_at=5, audit_id="a"),
        PoisonMessage("bad"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert vars(copy) == vars(error)


# --- the botocore table --------------------------------------------------------------------


def _client_error(code: str, status: int | None, message: str = "m", **error: str) -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": message, **error}}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "SomeOperation")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("NoSuchKey", 404, StorageNotFound),
        ("404", 404, StorageNotFound),  # HeadObject / HeadBucket: no body, the status as code
        ("NoSuchBucket", 404, StorageNotFound),
        ("AWS.SimpleQueueService.NonExistentQueue", 400, StorageNotFound),
        ("QueueDoesNotExist", 400, StorageNotFound),
        ("NoSuchCORSConfiguration", 404, StorageNotFound),
        ("ServerSideEncryptionConfigurationNotFoundError", 404, StorageNotFound),
        ("AccessDenied", 403, StorageForbidden),
        ("403", 403, StorageForbidden),
        ("InvalidAccessKeyId", 403, StorageForbidden),
        ("SignatureDoesNotMatch", 403, StorageForbidden),
        ("InvalidClientTokenId", 403, StorageForbidden),
        ("SomethingNew", 401, StorageForbidden),  # the status decides when the code is unknown
        ("SomethingNew", 404, StorageNotFound),
        ("SlowDown", 503, StorageUnavailable),
        ("ThrottlingException", 400, StorageUnavailable),
        ("RequestThrottled", 403, StorageUnavailable),  # the code decides before the status
        ("InternalError", 500, StorageUnavailable),
        ("AWS.SimpleQueueService.QueueDeletedRecently", 400, StorageUnavailable),
        ("SomethingNew", 502, StorageUnavailable),
        ("SomethingNew", 429, StorageUnavailable),
        ("InvalidArgument", 400, StorageError),
        ("BucketAlreadyOwnedByYou", 409, StorageError),
        ("SomethingNew", None, StorageError),
    ],
)
def test_botocore_client_errors_map_by_code_then_status(code: str, status: int | None,
                                                        kind: type[SyncError]) -> None:
    error = map_aws_error(_client_error(code, status, "what AWS said"), "GetQueueUrl events")
    assert type(error) is kind
    assert (error.operation, error.code, error.status) == ("GetQueueUrl events", code, status)
    assert error.message == "what AWS said"


def test_the_older_query_code_sqs_sends_is_looked_up_too() -> None:
    error = map_aws_error(_client_error("SomethingNew", 400, QueryErrorCode="QueueDoesNotExist"), "Op")
    assert isinstance(error, StorageNotFound) and error.code == "SomethingNew"


def test_an_xml_answer_botocore_could_not_parse_keeps_its_code_and_message() -> None:
    # What moto 5.2 sends for SQS's JSON protocol, as botocore leaves it.
    body = ('<?xml version="1.0" encoding="utf-8"?>\n<ErrorResponse><Errors><Error><Code>AccessDenied'
            '</Code><Message>User: arn:aws:iam::123456789012:user/reader is not authorized to perform: '
            'sqs:GetQueueUrl</Message><Type>Sender</Type></Error></Errors></ErrorResponse>')
    error = map_aws_error(_client_error("403", 403, body), "GetQueueUrl q")
    assert isinstance(error, StorageForbidden)
    assert (error.code, error.status) == ("AccessDenied", 403)
    assert error.message.startswith("User: arn:aws:iam::123456789012:user/reader is not authorized")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), StorageUnavailable),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"), StorageUnavailable),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), StorageUnavailable),
        (ConnectionResetError("reset"), StorageUnavailable),
        (TimeoutError(), StorageUnavailable),
        (NoCredentialsError(), StorageError),
    ],
)
def test_botocore_exceptions_without_an_answer_map_by_type(exc: Exception, kind: type[SyncError]) -> None:
    error = map_aws_error(exc, "ReceiveMessage events")
    assert type(error) is kind
    assert (error.operation, error.code, error.status) == ("ReceiveMessage events", None, None)
    assert type(exc).__name__ in str(error)


def test_a_mapped_error_is_not_mapped_twice() -> None:
    error = StorageNotFound("gone", operation="HeadObject b/k", code="404", status=404)
    assert map_aws_error(error, "Other") is error


def test_describe_names_what_the_operation_was_about() -> None:
    assert describe("GetQueueUrl", {"QueueName": "events"}) == "GetQueueUrl events"
    assert describe("ReceiveMessage", {"QueueUrl": "http://h/1/events-dlq"}) == "ReceiveMessage events-dlq"
    assert describe("HeadObject", {"Bucket": "b", "Key": "a b/c.mp4"}) == "HeadObject b/a b/c.mp4"
    assert describe("HeadBucket", {"Bucket": "b"}) == "HeadBucket b"
    assert describe("ListQueues", {}) == "ListQueues"


@pytest.mark.e2e  # what each emulator really answers, on LocalStack too
async def test_the_clients_raise_mapped_errors_named_by_operation(aws_resources) -> None:
    settings = load(AwsSettings, _env_file=None)  # the names aws_resources exported
    async with open_clients(settings, signed_head=False) as aws:
        with pytest.raises(StorageNotFound) as missing_queue:
            await aws.sqs.get_queue_url(QueueName=aws_resources.queue_name)
        with pytest.raises(StorageNotFound) as missing_bucket:
            await aws.s3.head_bucket(Bucket=aws_resources.bucket)
        assert await S3ObjectStore(aws.s3).head(aws_resources.bucket, "nothing.mp4") is None
    assert missing_queue.value.operation == f"GetQueueUrl {aws_resources.queue_name}"
    assert missing_queue.value.code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
    assert isinstance(missing_queue.value.__cause__, ClientError)
    assert (missing_bucket.value.operation, missing_bucket.value.status) == (
        f"HeadBucket {aws_resources.bucket}", 404)


@pytest.mark.e2e  # what each emulator really answers, on LocalStack too
async def test_resolve_queues_says_a_missing_queue_is_missing(aws_resources) -> None:
    settings = load(AwsSettings, _env_file=None)  # the names aws_resources exported
    async with open_clients(settings, signed_head=False) as aws:
        with pytest.raises(NotFound) as info:
            await resolve_queues(aws.sqs, load(SqsSettings, _env_file=None))
    assert info.value.code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
    assert info.value.hint is not None and "infra up" in info.value.hint


# --- the httpx + Convex table ----------------------------------------------------------------


def _answering(status: int, body: Any = None, *, text: str | None = None,
               headers: dict[str, str] | None = None) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if text is not None:
            return httpx.Response(status, text=text, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return httpx.MockTransport(handler), seen


@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (401, {"code": "BadAdminKey", "message": "The provided admin key was invalid"}, ConvexForbidden,
         "BadAdminKey"),
        (403, {"code": "Forbidden", "message": "no"}, ConvexForbidden, "Forbidden"),
        (404, {"code": "FunctionPathNotFound", "message": "no such function"}, ConvexNotFound,
         "FunctionPathNotFound"),
        (400, {"code": "BadJsonBody", "message": "expected an object"}, ConvexRequestError, "BadJsonBody"),
        (429, {"code": "RateLimited", "message": "slow down"}, ConvexUnavailable, "RateLimited"),
        (503, {"code": "OptimisticConcurrencyControlFailure", "message": "changed"}, ConvexUnavailable,
         "OptimisticConcurrencyControlFailure"),
        (500, {"code": "InternalServerError", "message": "try later"}, ConvexUnavailable,
         "InternalServerError"),
        (200, {"status": "error", "errorMessage": "threw", "errorData": {"code": "BadPrincipal"}},
         ConvexFunctionError, "BadPrincipal"),
        (560, {"status": "error", "errorMessage": "Uncaught Error: boom"}, ConvexFunctionError, None),
    ],
)
async def test_convex_answers_map_by_their_shape_and_status(status: int, body: Any, kind: type[SyncError],
                                                            code: str | None) -> None:
    transport, seen = _answering(status, body)
    async with ConvexClient("http://convex.invalid", SecretStr("k"), transport=transport,
                            retry=RetryBudget(attempts=3, base=0.001, cap=0.001)) as client:
        with pytest.raises(kind) as info:
            await client.query("assets:getByKey", {"bucket": "b", "key": "k"})
    assert type(info.value) is kind
    assert (info.value.operation, info.value.code, info.value.status) == ("assets:getByKey", code, status)
    retried = issubclass(kind, RetryableError)
    assert len(seen) == (3 if retried else 1)  # 429/5xx are retried, a refusal never


async def test_a_page_that_is_not_convex_keeps_its_first_words() -> None:
    transport, _ = _answering(502, text="<html>Bad Gateway from the proxy</html>")
    async with ConvexClient("http://convex.invalid", None, transport=transport) as client:
        with pytest.raises(ConvexUnavailable) as info:
            await client.mutation("assets:applyEvents", {"events": []})
    assert (info.value.code, info.value.status) == (None, 502)
    assert "Bad Gateway from the proxy" in info.value.message


async def test_retry_after_is_read_and_capped() -> None:
    for header, expected in (("2", 2.0), ("3600", RETRY_AFTER_CAP), ("soon", 0.0)):
        transport, _ = _answering(429, {"code": "RateLimited", "message": "m"},
                                  headers={"Retry-After": header})
        async with ConvexClient("http://convex.invalid", None, transport=transport) as client:
            with pytest.raises(ConvexUnavailable) as info:
                await client.query("q:q")
        assert info.value.retry_after == expected


async def test_retry_after_is_waited_for() -> None:
    answers = iter([httpx.Response(503, json={"code": "Overloaded", "message": "m"},
                                   headers={"Retry-After": "0.3"}),
                    httpx.Response(200, json={"status": "success", "value": 7})])
    transport = httpx.MockTransport(lambda request: next(answers))
    async with ConvexClient("http://convex.invalid", None, transport=transport,
                            retry=RetryBudget(attempts=2, base=0.001, cap=0.001)) as client:
        started = time.monotonic()
        assert await client.query("q:q") == 7
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("refused"), ConvexUnavailable),
        (httpx.ReadTimeout("slow"), ConvexUnavailable),
        (httpx.RemoteProtocolError("Server disconnected"), ConvexUnavailable),
        (httpx.UnsupportedProtocol("ftp://"), ConvexRequestError),
    ],
)
async def test_httpx_failures_map_by_type(exc: httpx.HTTPError, kind: type[SyncError]) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise exc

    async with ConvexClient("http://convex.invalid", None, transport=httpx.MockTransport(handler),
                            retry=RetryBudget(attempts=2, base=0.001, cap=0.001)) as client:
        with pytest.raises(kind) as info:
            await client.query("assets:getByKey")
    assert type(info.value) is kind
    assert (info.value.operation, info.value.code, info.value.status) == ("assets:getByKey", None, None)
    assert calls == (2 if kind is ConvexUnavailable else 1)
    assert type(map_httpx_error(exc, "p")) is kind


async def test_the_client_makes_one_attempt_unless_asked() -> None:
    transport, seen = _answering(503, {"code": "Overloaded", "message": "m"})
    async with ConvexClient("http://convex.invalid", None, transport=transport) as client:
        with pytest.raises(ConvexUnavailable):
            await client.query("q:q")
        assert len(seen) == 1
        with pytest.raises(ConvexUnavailable):
            await client.query("q:q", retry=RetryBudget(attempts=2, base=0.001, cap=0.001))
        assert len(seen) == 3


# --- the one retry loop ----------------------------------------------------------------------


@dataclass
class _Clock:
    """A monotonic clock that sleeping moves on, so budgets in seconds are tested in no time."""

    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _failing(error: SyncError, succeed_on: int | None = None) -> tuple[Any, list[int]]:
    calls: list[int] = []

    async def call() -> str:
        calls.append(len(calls) + 1)
        if succeed_on is not None and len(calls) >= succeed_on:
            return "done"
        raise error

    return call, calls


async def test_with_retries_spends_the_attempts_then_raises_the_last_error() -> None:
    clock = _Clock()
    call, calls = _failing(StorageUnavailable("slow down"))
    with pytest.raises(StorageUnavailable):
        await with_retries(call, RetryBudget(attempts=4, base=1.0, cap=8.0), sleep=clock.sleep, clock=clock)
    assert len(calls) == 4 and len(clock.slept) == 3
    assert all(2 ** i / 2 <= wait <= 2 ** i for i, wait in enumerate(clock.slept))


async def test_with_retries_stops_starting_tries_after_the_seconds_budget() -> None:
    clock = _Clock()
    call, calls = _failing(ConvexUnavailable("down"))
    with pytest.raises(ConvexUnavailable):
        await with_retries(call, RetryBudget(attempts=None, seconds=60.0, base=1.0, cap=10.0),
                           sleep=clock.sleep, clock=clock)
    assert clock.now <= 60.0  # no try started later than 60 s after the first failure
    assert 6 < len(calls) < 40


async def test_with_retries_waits_at_least_retry_after_and_succeeds() -> None:
    clock = _Clock()
    heard: list[tuple[int, float]] = []
    call, calls = _failing(ConvexUnavailable("busy", status=429, retry_after=5.0), succeed_on=2)
    result = await with_retries(call, RetryBudget(attempts=3, base=0.1, cap=0.2), sleep=clock.sleep,
                                clock=clock, on_retry=lambda n, wait, exc: heard.append((n, wait)))
    assert result == "done" and len(calls) == 2 and heard == [(1, 5.0)]


async def test_permanent_errors_are_never_retried() -> None:
    for error in (StorageForbidden("no", code="AccessDenied", status=403), ConvexRequestError("bad"),
                  ConvexFunctionError("a:b", "threw")):
        call, calls = _failing(error)
        with pytest.raises(type(error)):
            await with_retries(call, RetryBudget(attempts=5, base=0.001, cap=0.001))
        assert calls == [1]


async def test_one_attempt_is_one_attempt() -> None:
    call, calls = _failing(StorageUnavailable("x"))
    with pytest.raises(StorageUnavailable):
        await with_retries(call, ONE_ATTEMPT)
    assert calls == [1]
    with pytest.raises(ValueError):
        RetryBudget(attempts=0)


async def test_the_applier_holds_with_one_attempt_per_try_whatever_the_client_budget(
        caplog: pytest.LogCaptureFixture) -> None:
    """No retry inside a retry: an operator's client (4 attempts per call) under the applier's
    hold still sends one request per try of the hold."""
    transport, seen = _answering(503, {"code": "Overloaded", "message": "m"})
    change = AssetChange(type="created", bucket="b", key="k", eventName="ObjectCreated:Put",
                         eventTime=1_700_000_000_000, size=1, etag="c4ca4238a0b923820dcc509a6f75849b",
                         etagKind="md5", kind="other")
    caplog.set_level(logging.WARNING)
    async with ConvexClient("http://convex.invalid", None, transport=transport, retry=BOUNDED_RETRY) as client:
        applier = ConvexApplier(client, hold_seconds=0.2, backoff_base=0.02, backoff_cap=0.04)
        with pytest.raises(ConvexUnavailable):
            await applier.apply([change])
    holds = [r for r in caplog.records if r.getMessage() == "convex unavailable, holding batch"]
    client_retries = [r for r in caplog.records if r.getMessage() == "convex call failed, retrying"]
    assert holds and not client_retries
    assert len(seen) == len(holds) + 1


# --- a real AccessDenied: moto enforcing IAM --------------------------------------------------


@dataclass(frozen=True)
class DeniedUser:
    endpoint_url: str
    env: dict[str, str]  # AWS_* and the settings naming the resources, for this user
    queue_name: str
    dlq_name: str
    bucket: str


@pytest.fixture(scope="module")
def denied_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeniedUser]:
    """A moto server of its own that enforces IAM once three actions have run unauthenticated
    (moto reads ``INITIAL_NO_AUTH_ACTION_COUNT`` at import), and a user allowed everything but
    ``sqs:GetQueueUrl`` and ``s3:GetObject``; the bucket and both queues exist."""
    with iam_enforcing_moto(tmp_path_factory.mktemp("moto-iam")) as url:
        where = {"endpoint_url": url, "region_name": "us-east-1"}
        iam = boto3.client("iam", **where, aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
                           aws_secret_access_key="unchecked")
        iam.create_user(UserName="reader")  # the three unauthenticated actions
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.put_user_policy(UserName="reader", PolicyName="no-queue-lookup", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"},
                          {"Effect": "Deny", "Action": ["sqs:GetQueueUrl", "s3:GetObject"],
                           "Resource": "*"}]}))
        credentials = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                       "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        user = {**where, "aws_access_key_id": key["AccessKeyId"],
                "aws_secret_access_key": key["SecretAccessKey"]}
        names = DeniedUser(url, {}, "denied-events", "denied-dlq", "denied-bucket")
        boto3.client("s3", **user).create_bucket(Bucket=names.bucket)
        boto3.client("s3", **user).put_object(Bucket=names.bucket, Key="k.txt", Body=b"x")
        for queue in (names.dlq_name, names.queue_name):
            boto3.client("sqs", **user).create_queue(QueueName=queue)
        env = {**credentials, "AWS_ENDPOINT_URL": url, "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1", "S3_BUCKET": names.bucket,
               "SQS_QUEUE_NAME": names.queue_name, "SQS_DLQ_NAME": names.dlq_name}
        yield DeniedUser(url, env, names.queue_name, names.dlq_name, names.bucket)


@pytest.fixture
def as_denied_user(denied_user: DeniedUser, monkeypatch: pytest.MonkeyPatch) -> DeniedUser:
    for name, value in denied_user.env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "SQS_QUEUE_URL"):
        monkeypatch.delenv(name, raising=False)
    return denied_user


async def test_resolve_queues_reports_the_access_denied_aws_sent(as_denied_user: DeniedUser) -> None:
    settings = load(AwsSettings, _env_file=None)  # the user's keys and names, exported
    async with open_clients(settings) as aws:
        with pytest.raises(Forbidden) as info:
            await resolve_queues(aws.sqs, load(SqsSettings, _env_file=None))
    error = info.value
    assert isinstance(error, StorageForbidden)
    assert (error.operation, error.code, error.status) == (
        f"GetQueueUrl {as_denied_user.queue_name}", "AccessDenied", 403)
    assert "sqs:GetQueueUrl" in error.message  # AWS's own words: who may not do what
    assert "AccessDenied" in str(error) and "IAM" in str(error)
    _no_wrong_diagnosis(str(error))


async def test_a_refused_head_is_not_a_deleted_object(as_denied_user: DeniedUser) -> None:
    settings = load(AwsSettings, _env_file=None)  # the user's keys and names, exported
    async with open_clients(settings) as aws:
        store = S3ObjectStore(aws.s3, aws.signed_head)  # the signed fast path hands 403 over
        with pytest.raises(Forbidden) as info:
            await store.head(as_denied_user.bucket, "k.txt")
    assert info.value.status == 403 and info.value.operation == f"HeadObject {as_denied_user.bucket}/k.txt"


def _cli(user: DeniedUser, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **user.env, "CONVEX_URL": f"http://127.0.0.1:{free_port()}",
           "CONVEX_DEPLOY_KEY": "unused-0123456789", "S3CONVEX_REPLAY_WAIT": "0"}
    env.pop("SQS_QUEUE_URL", None)
    return subprocess.run([sys.executable, "-m", "s3convex", *args], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


async def test_the_cli_reports_access_denied_not_a_missing_queue(denied_user: DeniedUser) -> None:
    done = await asyncio.to_thread(_cli, denied_user, "replay", "list", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "AccessDenied" in done.stderr and "Traceback" not in done.stderr
    _no_wrong_diagnosis(done.stderr)


async def test_health_reports_access_denied_for_both_queues(denied_user: DeniedUser) -> None:
    done = await asyncio.to_thread(_cli, denied_user, "health", "--json", "--sample", "0",
                                   "--timeout", "20")
    assert done.returncode == 1, done.stdout + done.stderr
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    assert checks["s3"]["status"] == "ok"
    for name in ("queue", "dlq"):
        assert checks[name]["status"] == "fail"
        assert "AccessDenied" in checks[name]["detail"], checks[name]
        _no_wrong_diagnosis(checks[name]["detail"])
