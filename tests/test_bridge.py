"""The MinIO webhook bridge against a real SQS (moto by default, ``--backend=localstack`` too).

The bodies are MinIO's own (``tests/fixtures/minio``, written from MinIO's source: its
webhook target posts ``{"EventName", "Key", "Records"}``; ``Key`` is ``bucket/unescaped key``,
the record's key is ``url.QueryEscape``d — ``%2F``, ``+`` for a space). The bridge runs in
process on a free port and is reached over HTTP with aiohttp, as MinIO would.
End to end through the daemon into Convex: ``tests/test_bridge_e2e.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import aiohttp
import pytest

from s3convex.consumer.bridge import Bridge, run_bridge
from s3convex.consumer.decode import Decoder
from s3convex.consumer.ops.bridge import minio_setup
from s3convex.consumer.ops.dlq import DlqMessage
from s3convex.settings import AwsSettings, BridgeSettings, SqsSettings, load
from tests.backends import AwsResources

FIXTURES = Path(__file__).parent / "fixtures" / "minio"
FIXTURE_BUCKET = "video-assets"
TOKEN = "bridge-test-token-8c1f0d9e2b7a4c5d"
ROOT = Path(__file__).resolve().parent.parent


# --- MinIO's payloads --------------------------------------------------------------------------

def minio_fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def minio_event(name: str, bucket: str, key: str, **object_fields: Any) -> dict[str, Any]:
    """The fixture ``name`` as MinIO would post it now for ``bucket``/``key``: the record's key
    QueryEscaped (Go's ``url.QueryEscape`` is ``quote_plus`` with nothing safe), ``Key`` the
    bucket and the unescaped key (``webhook.go``), the time and sequencer (the modification
    time in hex nanoseconds) of now, the object's fields replaced by ``object_fields``."""
    document = copy.deepcopy(minio_fixture(name))
    record = document["Records"][0]
    now = time.time_ns()
    record["eventTime"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now // 10**9)) + f".{now // 10**6 % 1000:03d}Z"
    record["s3"]["object"]["sequencer"] = f"{now:X}"
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
    record["s3"]["object"].update(key=quote_plus(key, safe=""), **object_fields)
    document["Key"] = f"{bucket}/{key}"
    return document


def minio_body(document: dict[str, Any]) -> bytes:
    """Compact, non-ASCII as UTF-8: how Go's json.Marshal writes it."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


# --- a bridge on a free port ------------------------------------------------------------------

@dataclass
class RunningBridge:
    url: str
    server: Bridge
    stop: asyncio.Event
    task: asyncio.Task[int]
    http: aiohttp.ClientSession

    async def post(self, body: bytes | dict[str, Any], *, token: str | None = TOKEN,
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any], Any]:
        data = minio_body(body) if isinstance(body, dict) else body
        sent = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.http.post(self.url + "/", data=data, headers=sent) as response:
            return response.status, dict(response.headers), await response.json(content_type=None)


@contextlib.asynccontextmanager
async def running_bridge(bucket: str, *, aws_overrides: dict[str, str] | None = None,
                         **overrides: Any) -> AsyncIterator[RunningBridge]:
    """``run_bridge`` in this event loop with the environment's AWS/SQS settings."""
    settings = load(BridgeSettings, _env_file=None, BRIDGE_AUTH_TOKEN=TOKEN, BRIDGE_PORT=0,
                    BRIDGE_HOST="127.0.0.1", **overrides)
    aws = load(AwsSettings, _env_file=None, S3_BUCKET=bucket, **(aws_overrides or {}))
    sqs = load(SqsSettings, _env_file=None)
    stop = asyncio.Event()
    started: asyncio.Future[Bridge] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_bridge(settings, aws, sqs, stop=stop, grace=5, started=started))
    await asyncio.wait({started, task}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what kept it from starting
    server = started.result()
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
        try:
            yield RunningBridge(f"http://127.0.0.1:{server.port}", server, stop, task, http)
        finally:
            stop.set()
            assert await asyncio.wait_for(task, 30) == 0


@pytest.fixture
def queues(aws_resources: AwsResources) -> tuple[str, str]:
    """The notification queue and its DLQ (no bucket: the bridge never calls S3)."""
    sqs = aws_resources.client("sqs")
    dlq = sqs.create_queue(QueueName=aws_resources.dlq_name)["QueueUrl"]
    queue = sqs.create_queue(QueueName=aws_resources.queue_name)["QueueUrl"]
    return queue, dlq


def take_all(aws_resources: AwsResources, url: str) -> list[dict[str, Any]]:
    sqs = aws_resources.client("sqs")
    taken: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                       VisibilityTimeout=300, MessageAttributeNames=["All"],
                                       AttributeNames=["All"]).get("Messages", []):
        taken += batch
    return taken


# --- the payloads as MinIO wrote them --------------------------------------------------------

@pytest.mark.parametrize("name", ["put.json", "complete-multipart.json", "delete.json", "delete-marker.json"])
async def test_minio_payloads_are_queued_as_the_s3_records_the_daemon_decodes(
        name: str, aws_resources: AwsResources, queues: tuple[str, str]) -> None:
    document = minio_fixture(name)  # untouched: Key and the %2F key as MinIO wrote them
    async with running_bridge(FIXTURE_BUCKET) as bridge:
        status, _, answer = await bridge.post(document)
    assert status == 200, answer
    assert answer["status"] == "queued" and answer["keys"] == [document["Key"]]

    [message] = take_all(aws_resources, queues[0])
    assert message["MessageId"] == answer["messageId"]
    assert json.loads(message["Body"]) == {"Records": document["Records"]}  # S3's shape, records intact
    [event] = Decoder([FIXTURE_BUCKET]).decode(message["Body"]).events
    assert f"{event.bucket}/{event.key}" == document["Key"]
    assert event.event_name == document["EventName"].removeprefix("s3:")
    assert event.source == "minio:s3" and event.sequencer is None  # a cluster's are not comparable
    assert take_all(aws_resources, queues[1]) == []


async def test_non_ascii_and_odd_escapes_are_queued_as_text_sqs_accepts(
        aws_resources: AwsResources, queues: tuple[str, str]) -> None:
    emoji = minio_fixture("put.json")
    emoji["Records"][0]["s3"]["object"]["userMetadata"]["X-Amz-Meta-Scene"] = "🎬 Einführung 東京" * 50
    surrogate = minio_body(minio_fixture("delete.json")).replace(b'"principalId":"minioadmin"}',
                                                                 b'"principalId":"\\ud800"}', 1)
    assert b"\\ud800" in surrogate
    async with running_bridge(FIXTURE_BUCKET) as bridge:
        for body in (minio_body(emoji), surrogate):
            status, _, answer = await bridge.post(body)
            assert (status, answer["status"]) == (200, "queued"), answer
    messages = {m["MessageId"]: m["Body"] for m in take_all(aws_resources, queues[0])}
    assert len(messages) == 2
    bodies = [json.loads(body) for body in messages.values()]
    assert {"Records": emoji["Records"]} in bodies
    for body in messages.values():
        assert len(body.encode()) <= len(minio_body(emoji))  # never larger than what MinIO sent


def test_the_put_fixture_decodes_to_its_unescaped_key() -> None:
    [event] = Decoder([FIXTURE_BUCKET]).decode(json.dumps(minio_fixture("put.json"))).events
    assert event.key == "sessions/s-7/scenes/intro shot/v1/clip ü+1.mp4"
    assert event.size == 2048 and event.content_type == "video/mp4"


# --- refusals ---------------------------------------------------------------------------------

async def test_a_missing_or_wrong_token_is_401_and_nothing_is_read_or_queued(
        aws_resources: AwsResources, queues: tuple[str, str]) -> None:
    document = minio_fixture("put.json")
    async with running_bridge(FIXTURE_BUCKET) as bridge:
        for token, headers in [(None, None), ("wrong" + TOKEN[5:], None), (TOKEN[:-1], None),
                               (TOKEN + "x", None), (None, {"Authorization": TOKEN}),
                               (None, {"Authorization": f"bearer {TOKEN}"})]:
            status, sent_headers, answer = await bridge.post(document, token=token, headers=headers)
            assert status == 401, (token, headers, answer)
            assert sent_headers["WWW-Authenticate"].startswith("Bearer")
            assert TOKEN not in json.dumps(answer)
    assert take_all(aws_resources, queues[0]) == [] and take_all(aws_resources, queues[1]) == []


async def test_a_body_over_the_limit_is_413(aws_resources: AwsResources, queues: tuple[str, str]) -> None:
    padded = minio_fixture("put.json")
    padded["Records"][0]["s3"]["object"]["userMetadata"]["X-Amz-Meta-Pad"] = "p" * 5000
    async with running_bridge(FIXTURE_BUCKET, BRIDGE_MAX_BODY_BYTES=4096) as bridge:
        status, _, answer = await bridge.post(padded)
        assert status == 413 and "BRIDGE_MAX_BODY_BYTES" in answer["error"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while reading
            body = minio_body(padded)
            for start in range(0, len(body), 1000):
                yield body[start:start + 1000]

        async with bridge.http.post(bridge.url + "/", data=chunks(),
                                    headers={"Authorization": f"Bearer {TOKEN}"}) as response:
            assert response.status == 413
        status, _, answer = await bridge.post(minio_fixture("put.json"))  # a normal one still passes
        assert status == 200, answer
    assert len(take_all(aws_resources, queues[0])) == 1


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json {", "poison: body is not JSON: "),
    (b"\xff\xfe\x00binary", "poison: body is not JSON: "),
    (b"[1, 2]", "poison: body is JSON list, not an object"),
    (minio_body(minio_event("put.json", "someone-elses-bucket", "a.txt")),
     "poison: bucket 'someone-elses-bucket' is not configured here"),
    (minio_body({**minio_fixture("put.json"), "Key": "video-assets/another key.mp4"}),
     "poison: Key 'video-assets/another key.mp4' names no object of its Records"),
    (minio_body(minio_fixture("accessed-get.json")), "poison: no handler for event 'ObjectAccessed:Get'"),
    (minio_body({"EventName": "s3:ObjectCreated:Put", "Key": "video-assets/x", "Records": []}),
     "poison: invalid S3 notification: Records: "),
])
async def test_a_body_that_can_never_be_handled_goes_to_the_dlq_with_its_reason_and_gets_2xx(
        body: bytes, reason: str, aws_resources: AwsResources, queues: tuple[str, str]) -> None:
    async with running_bridge(FIXTURE_BUCKET) as bridge:
        status, _, answer = await bridge.post(body)
    assert status == 200, answer  # MinIO must not retry poison forever
    assert answer["status"] == "dead_lettered" and answer["reason"].startswith(reason), answer

    assert take_all(aws_resources, queues[0]) == []
    [raw] = take_all(aws_resources, queues[1])
    dead = DlqMessage.from_sqs(raw)  # what `s3convex replay list` reads
    assert dead.reason == answer["reason"]
    assert dead.source_message_id and dead.source_message_id.startswith("minio-bridge:")
    assert dead.failed_receive_count == 0 and dead.failed_at
    # The body as received, for the operator to read (what SQS cannot carry replaced).
    assert dead.body == body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


async def test_sqs_refusing_the_message_is_503_so_minio_retries(aws_resources: AwsResources,
                                                              queues: tuple[str, str]) -> None:
    async with running_bridge(FIXTURE_BUCKET) as bridge:
        aws_resources.client("sqs").delete_queue(QueueUrl=queues[0])
        status, headers, answer = await bridge.post(minio_fixture("put.json"))
        assert status == 503, answer
        assert headers["Retry-After"] and "SendMessageBatch" in answer["error"]
        unauthorized, _, _ = await bridge.post(b"", token=None)  # checked before anything else
        assert unauthorized == 401
        async with bridge.http.get(bridge.url + "/readyz") as response:
            assert response.status == 503


async def test_beyond_the_concurrency_bound_requests_get_503_with_retry_after(
        aws_resources: AwsResources, queues: tuple[str, str]) -> None:
    # One slot, and a long linger holds the first request inside the batcher.
    async with running_bridge(FIXTURE_BUCKET, BRIDGE_MAX_CONCURRENCY=1, BRIDGE_LINGER_MS=800) as bridge:
        first = asyncio.create_task(bridge.post(minio_fixture("put.json")))
        await asyncio.sleep(0.3)
        status, headers, _ = await bridge.post(minio_fixture("delete.json"))
        assert status == 503 and headers["Retry-After"] == "1"
        assert (await first)[0] == 200
        status, _, _ = await bridge.post(minio_fixture("delete.json"))  # the slot is free again
        assert status == 200
    assert len(take_all(aws_resources, queues[0])) == 2


async def test_concurrent_posts_are_all_queued(aws_resources: AwsResources, queues: tuple[str, str]) -> None:
    keys = [f"batch/item {i}.bin" for i in range(37)]
    async with running_bridge(FIXTURE_BUCKET, BRIDGE_LINGER_MS=50) as bridge:
        answers = await asyncio.gather(*(bridge.post(minio_event("put.json", FIXTURE_BUCKET, key))
                                         for key in keys))
        stats = bridge.server.forwarder.stats
    assert stats["queued"] == len(keys)
    assert stats["send_calls"] <= 8, stats  # they shared SendMessageBatch calls (10 entries each)
    assert [status for status, _, _ in answers] == [200] * len(keys)
    bodies = [json.loads(m["Body"]) for m in take_all(aws_resources, queues[0])]
    assert sorted(b["Records"][0]["s3"]["object"]["key"] for b in bodies) == sorted(
        quote_plus(k, safe="") for k in keys)


async def test_the_bridge_reaches_sqs_through_botocore_s_per_service_endpoint(
        aws_resources: AwsResources, queues: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The README's MinIO setup: S3 is MinIO (here: nothing listens), SQS elsewhere.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", aws_resources.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    async with running_bridge(FIXTURE_BUCKET) as bridge:
        status, _, answer = await bridge.post(minio_fixture("put.json"))
        assert status == 200, answer
    assert len(take_all(aws_resources, queues[0])) == 1


async def test_probes_and_minio_liveness_check(aws_resources: AwsResources, queues: tuple[str, str]) -> None:
    async with running_bridge(FIXTURE_BUCKET) as bridge:
        async with bridge.http.head(bridge.url + "/") as response:  # MinIO's IsActive: no token
            assert response.status == 200
        for path in ("/healthz", "/readyz"):
            async with bridge.http.get(bridge.url + path) as response:
                assert response.status == 200, await response.text()
        async with bridge.http.get(bridge.url + "/") as response:
            assert response.status == 405
        async with bridge.http.get(bridge.url + "/nothing") as response:
            assert response.status == 404


# --- settings and the command line ------------------------------------------------------------

def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run([sys.executable, "-m", "s3convex", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_bridge_refuses_to_start_without_a_good_token(tmp_path: Path) -> None:
    base = {"S3_BUCKET": FIXTURE_BUCKET}
    missing = _cli("bridge", env=base)
    assert missing.returncode == 2
    assert "BRIDGE_AUTH_TOKEN is not set (required)" in missing.stderr
    short = _cli("bridge", env={**base, "BRIDGE_AUTH_TOKEN": "hunter2"})
    assert short.returncode == 2 and "BRIDGE_AUTH_TOKEN=<hidden> is invalid" in short.stderr
    assert "hunter2" not in short.stderr
    two_words = _cli("bridge", env={**base, "BRIDGE_AUTH_TOKEN": "two words of a long token"})
    assert two_words.returncode == 2 and "one word" in two_words.stderr
    bad = _cli("bridge", env={**base, "BRIDGE_AUTH_TOKEN": TOKEN, "BRIDGE_PORT": "70000",
                              "BRIDGE_MAX_CONCURRENCY": "0"})
    assert bad.returncode == 2
    assert "BRIDGE_PORT='70000' is invalid" in bad.stderr and "BRIDGE_MAX_CONCURRENCY='0' is invalid" in bad.stderr


def _spawn_bridge(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("w") as log:
        return subprocess.Popen([sys.executable, "-m", "s3convex", "bridge", "--port", "0"], cwd=ROOT,
                                env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)


async def _listening_port(process: subprocess.Popen[bytes], log_path: Path) -> int:
    """The port the spawned bridge says it listens on (it picks a free one)."""
    port = None
    for _ in range(300):
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        port = next((line["port"] for line in lines if line["msg"] == "bridge listening"), None)
        if port or process.poll() is not None:
            break
        await asyncio.sleep(0.1)
    assert port, log_path.read_text()
    return port


async def test_the_command_serves_until_sigterm(aws_resources: AwsResources, queues: tuple[str, str],
                                                tmp_path: Path) -> None:
    log_path = tmp_path / "bridge.log"
    env = {**os.environ, **aws_resources.env, "S3_BUCKET": FIXTURE_BUCKET, "BRIDGE_AUTH_TOKEN": TOKEN,
           "BRIDGE_HOST": "127.0.0.1"}
    process = _spawn_bridge(env, log_path)
    try:
        port = await _listening_port(process, log_path)
        async with (aiohttp.ClientSession() as http,
                    http.post(f"http://127.0.0.1:{port}/", data=minio_body(minio_fixture("put.json")),
                              headers={"Authorization": f"Bearer {TOKEN}"}) as response):
            assert response.status == 200, await response.text()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert TOKEN not in log_path.read_text()
    assert len(take_all(aws_resources, queues[0])) == 1


def test_infra_minio_prints_the_mc_commands_without_the_token() -> None:
    setup = minio_setup("video-assets", "http://bridge.internal:8088/", alias="dev", target_id="S3CONVEX",
                        queue_dir="/data/.s3convex-events", queue_limit=100_000)
    assert setup["mc"]["config"][0] == (
        'mc admin config set dev notify_webhook:S3CONVEX endpoint="http://bridge.internal:8088/" '
        'auth_token="$BRIDGE_AUTH_TOKEN" queue_dir="/data/.s3convex-events" queue_limit="100000"')
    assert setup["mc"]["subscribe"] == "mc event add dev/video-assets arn:minio:sqs::S3CONVEX:webhook --event put,delete"
    assert setup["environment"]["MINIO_NOTIFY_WEBHOOK_ENDPOINT_S3CONVEX"] == "http://bridge.internal:8088/"
    assert setup["environment"]["MINIO_NOTIFY_WEBHOOK_ENABLE_S3CONVEX"] == "on"

    shown = _cli("infra", "minio", "--bucket", "video-assets", "--json",
                 env={"BRIDGE_PORT": "9099", "BRIDGE_AUTH_TOKEN": TOKEN})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["environment"]["MINIO_NOTIFY_WEBHOOK_ENDPOINT_S3CONVEX"] == "http://localhost:9099/"
    assert TOKEN not in shown.stdout
    refused = _cli("infra", "minio", "--bucket", "Not_A_Bucket", env={})
    assert refused.returncode == 2 and "S3_BUCKET" in refused.stderr
    relative = _cli("infra", "minio", "--bucket", "video-assets", "--queue-dir", "events", env={})
    assert relative.returncode == 2 and "--queue-dir" in relative.stderr


# --- metrics ----------------------------------------------------------------------------------

async def test_the_command_exports_what_it_answered_on_metrics_and_over_otlp(
        aws_resources: AwsResources, queues: tuple[str, str], tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_observability import Collector

    log_path = tmp_path / "bridge.log"
    async with Collector() as collector:
        env = {**os.environ, **aws_resources.env, "S3_BUCKET": FIXTURE_BUCKET, "BRIDGE_AUTH_TOKEN": TOKEN,
               "BRIDGE_HOST": "127.0.0.1", "BRIDGE_MAX_BODY_BYTES": "4096",
               "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_METRIC_EXPORT_INTERVAL": "60000"}
        env.pop("OTEL_METRICS_EXPORTER", None)
        process = _spawn_bridge(env, log_path)
        try:
            port = await _listening_port(process, log_path)
            url = f"http://127.0.0.1:{port}"
            padded = minio_fixture("put.json")
            padded["Records"][0]["s3"]["object"]["userMetadata"]["X-Amz-Meta-Pad"] = "p" * 5000
            posts: list[tuple[bytes, str | None, int]] = [
                *[(minio_body(minio_event("put.json", FIXTURE_BUCKET, f"m/{i}.bin")), TOKEN, 200) for i in range(3)],
                (minio_body(minio_fixture("put.json")), "wrong" + TOKEN, 401),
                (minio_body(minio_fixture("put.json")), None, 401),
                (b"not json {", TOKEN, 200),
                (minio_body(minio_fixture("accessed-get.json")), TOKEN, 200),
                (minio_body(padded), TOKEN, 413),
            ]
            async with aiohttp.ClientSession() as http:
                for body, token, expected in posts:
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    async with http.post(url + "/", data=body, headers=headers) as response:
                        assert response.status == expected, await response.text()
                aws_resources.client("sqs").delete_queue(QueueUrl=queues[0])  # SQS refuses the next
                async with http.post(url + "/", data=minio_body(minio_fixture("delete.json")),
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                    assert response.status == 503
                async with http.get(url + "/metrics") as response:
                    assert response.status == 200 and response.content_type == "text/plain"
                    text = await response.text()
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 20) == 0
        finally:
            if process.poll() is None:
                process.kill()

    samples = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
               for s in family.samples]

    def value(name: str, **labels: str) -> float:
        return sum(v for n, attrs, v in samples if n == name and labels.items() <= attrs.items())

    assert {attrs["outcome"]: v for n, attrs, v in samples if n == "s3convex_bridge_requests_total"} == {
        "queued": 3, "ignored": 0, "poison": 2, "unauthorized": 2, "too_large": 1, "saturated": 0, "sqs_error": 1}
    assert {attrs["reason"]: v for n, attrs, v in samples if n == "s3convex_bridge_dead_letters_total"} == {
        "not_json": 1, "no_handler": 1}
    assert value("messaging_client_sent_messages_total", messaging_system="aws_sqs") == 3
    # Sequential posts: one SendMessageBatch each, the last one refused.
    sends = "messaging_client_operation_duration_seconds_count"
    assert value(sends, messaging_operation_name="send") == 4
    assert sum(v for n, attrs, v in samples if n == sends and attrs.get("error_type")) == 1  # "" = none
    assert value("http_server_active_requests") == 0
    assert TOKEN not in text and "m/0.bin" not in text  # no secret, no key as a label

    exported = collector.metric_sums()  # flushed over OTLP when the provider shut down
    assert exported[("s3convex.bridge.requests", (("outcome", "queued"),))] == 3
    assert exported[("s3convex.bridge.requests", (("outcome", "unauthorized"),))] == 2
    assert log_path.read_text().count('"bridge stopped"') == 1
