"""``infra up|status|down`` against a real S3/SQS backend (``--backend=moto|localstack``)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from typer.testing import CliRunner

from s3convex.consumer.ops import output
from s3convex.consumer.ops.infra import app
from s3convex.core.errors import StorageError, StorageForbidden, StorageUnavailable
from s3convex.infra.aws import aws_call, make_clients
from s3convex.infra.desired import (
    CORS_RULE_ID,
    DLQ_RETENTION_SECONDS,
    NOTIFICATION_ID,
    POLICY_SID,
    SOURCE_RETENTION_SECONDS,
    Desired,
    load_infra_settings,
    normalize_notification,
)
from s3convex.infra.provision import Provisioner
from s3convex.settings import AwsSettings, load
from tests.backends import AwsResources

# Attributes that change by themselves (counters) and so say nothing about what `up` wrote.
_VOLATILE = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
             "ApproximateNumberOfMessagesDelayed")  # fmt: skip


def provisioner(**overrides: Any) -> Provisioner:
    """A provisioner for the test's names (from the environment ``aws_resources`` set)."""
    settings = load_infra_settings(_env_file=None, **overrides)
    return Provisioner(
        *_clients(settings.aws.endpoint_url, settings.aws.region),
        Desired.from_settings(settings.aws, settings.sqs),
    )


@functools.cache
def _clients(endpoint_url: str | None, region: str) -> tuple[Any, Any]:
    # Building clients costs ~0.3 s; tests build many provisioners against one endpoint.
    return make_clients(
        load(AwsSettings, _env_file=None, aws_endpoint_url=endpoint_url, aws_region=region,
             s3_bucket="unused")
    )


def queue_url(res: AwsResources, name: str) -> str:
    return res.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]


def attributes(res: AwsResources, name: str) -> dict[str, str]:
    answer = res.client("sqs").get_queue_attributes(
        QueueUrl=queue_url(res, name), AttributeNames=["All"]
    )
    return {k: v for k, v in answer["Attributes"].items() if k not in _VOLATILE}


def notification_config(res: AwsResources) -> dict[str, Any]:
    answer = res.client("s3").get_bucket_notification_configuration(Bucket=res.bucket)
    answer.pop("ResponseMetadata", None)
    return answer


def receive_s3_records(
    res: AwsResources, *, until: Callable[[list[dict[str, Any]]], bool], timeout: float = 15
) -> list[dict[str, Any]]:
    """S3 records from the queue (TestEvents dropped, messages deleted) until ``until`` holds,
    then one more short poll so that stray extra records are seen too."""
    sqs, url = res.client("sqs"), queue_url(res, res.queue_name)
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    settled = False
    while time.monotonic() < deadline:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in answer.get("Messages", []):
            body = json.loads(message["Body"])
            records.extend(body.get("Records", []))  # an s3:TestEvent has none
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        if settled and not answer.get("Messages"):
            break
        settled = settled or until(records)
    return records


def drain(res: AwsResources) -> list[dict[str, Any]]:
    """Every message now on the queue (bodies), waiting briefly for asynchronous deliveries."""
    sqs, url = res.client("sqs"), queue_url(res, res.queue_name)
    bodies = []
    while messages := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages", []):
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def steps(plan: Any) -> dict[str, str]:
    return {step.resource: step.action for step in plan.steps}


# What `up` manages by default: the four resources and the bucket's lifecycle rules
# (S3_ABORT_MULTIPART_DAYS and S3_NONCURRENT_VERSION_DAYS default to 7 and 30).
DEFAULT_RESOURCES = ("bucket", "dlq", "queue", "notification", "lifecycle")


def lifecycle_rules(res: AwsResources) -> dict[str, dict[str, Any]]:
    """The bucket's lifecycle rules as S3 itself reports them, by ID (none: empty)."""
    try:
        answer = res.client("s3").get_bucket_lifecycle_configuration(Bucket=res.bucket)
    except ClientError as error:
        assert error.response["Error"]["Code"] == "NoSuchLifecycleConfiguration", error.response
        return {}
    return {rule["ID"]: rule for rule in answer["Rules"]}


# --- up / status ---------------------------------------------------------------------------


def test_up_creates_everything(aws_resources: AwsResources) -> None:
    before = provisioner().status()
    assert not before.up_to_date
    assert {step.resource: step.state for step in before.steps} == {
        "bucket": "missing", "dlq": "missing", "queue": "missing", "notification": "missing",
        "lifecycle": "missing",
    }  # fmt: skip

    report = provisioner().up()

    assert report.changed
    assert steps(report.plan) == dict.fromkeys(DEFAULT_RESOURCES, "create")
    assert provisioner().status().up_to_date
    aws_resources.client("s3").head_bucket(Bucket=aws_resources.bucket)


def test_queue_attributes_redrive_and_retention(aws_resources: AwsResources) -> None:
    provisioner(sqs_visibility_timeout=90, sqs_max_receive_count=3).up()

    dlq, queue = (
        attributes(aws_resources, aws_resources.dlq_name),
        attributes(aws_resources, aws_resources.queue_name),
    )
    assert queue["VisibilityTimeout"] == "90"
    assert queue["ReceiveMessageWaitTimeSeconds"] == "20"
    redrive = json.loads(queue["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == dlq["QueueArn"]
    assert int(redrive["maxReceiveCount"]) == 3
    # A moved message keeps its original enqueue time: the DLQ must keep it longer.
    assert int(queue["MessageRetentionPeriod"]) == SOURCE_RETENTION_SECONDS
    assert int(dlq["MessageRetentionPeriod"]) == DLQ_RETENTION_SECONDS > SOURCE_RETENTION_SECONDS


def test_queue_policy_lets_only_our_bucket_send(aws_resources: AwsResources) -> None:
    provisioner().up()

    queue = attributes(aws_resources, aws_resources.queue_name)
    (statement,) = json.loads(queue["Policy"])["Statement"]
    account = queue["QueueArn"].split(":")[4]
    assert statement == {
        "Sid": POLICY_SID,
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue["QueueArn"],
        "Condition": {
            "ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{aws_resources.bucket}"},
            "StringEquals": {"aws:SourceAccount": account},
        },
    }


def test_second_up_reports_and_changes_nothing(aws_resources: AwsResources) -> None:
    provisioner().up()
    drain(aws_resources)  # the s3:TestEvent of the first up
    snapshot = (
        attributes(aws_resources, aws_resources.queue_name),
        attributes(aws_resources, aws_resources.dlq_name),
        notification_config(aws_resources),
        lifecycle_rules(aws_resources),
    )

    report = provisioner().up()

    assert not report.changed
    assert steps(report.plan) == dict.fromkeys(DEFAULT_RESOURCES, "none")
    assert snapshot == (
        attributes(aws_resources, aws_resources.queue_name),
        attributes(aws_resources, aws_resources.dlq_name),
        notification_config(aws_resources),
        lifecycle_rules(aws_resources),
    )  # LastModifiedTimestamp included: nothing was written
    assert drain(aws_resources) == []  # no new s3:TestEvent: the notification was not rewritten


def test_changed_settings_update_only_what_differs(aws_resources: AwsResources) -> None:
    provisioner().up()

    plan = provisioner(sqs_visibility_timeout=300, sqs_max_receive_count=8).status()

    assert steps(plan) == {
        "bucket": "none",
        "dlq": "none",
        "queue": "update",
        "notification": "none",
        "lifecycle": "none",
    }
    (queue_step,) = plan.changes
    assert {d.field for d in queue_step.differences} == {"VisibilityTimeout", "RedrivePolicy"}
    report = provisioner(sqs_visibility_timeout=300, sqs_max_receive_count=8).up()
    assert [step.resource for step in report.plan.changes] == ["queue"]
    assert attributes(aws_resources, aws_resources.queue_name)["VisibilityTimeout"] == "300"
    assert provisioner(sqs_visibility_timeout=300, sqs_max_receive_count=8).status().up_to_date


def test_missing_dlq_is_reported_and_only_it_is_recreated(aws_resources: AwsResources) -> None:
    provisioner().up()
    sqs = aws_resources.client("sqs")
    sqs.delete_queue(QueueUrl=queue_url(aws_resources, aws_resources.dlq_name))

    plan = provisioner().status()

    assert steps(plan) == {
        "bucket": "none",
        "dlq": "create",
        "queue": "none",
        "notification": "none",
        "lifecycle": "none",
    }
    assert {step.resource: step.state for step in plan.steps}["dlq"] == "missing"
    report = provisioner().up()
    assert [(s.resource, s.action) for s in report.plan.changes] == [("dlq", "create")]
    assert provisioner().status().up_to_date
    redrive = json.loads(attributes(aws_resources, aws_resources.queue_name)["RedrivePolicy"])
    assert (
        redrive["deadLetterTargetArn"]
        == attributes(aws_resources, aws_resources.dlq_name)["QueueArn"]
    )


def test_existing_queue_found_by_url(aws_resources: AwsResources) -> None:
    provisioner().up()
    url = queue_url(aws_resources, aws_resources.queue_name)

    plan = provisioner(sqs_queue_url=url, sqs_queue_name="ignored-when-url-is-set").status()

    assert plan.up_to_date, plan.changes


# --- the notification --------------------------------------------------------------------------


def test_upload_and_delete_produce_messages(aws_resources: AwsResources) -> None:
    provisioner().up()
    s3 = aws_resources.client("s3")
    bodies = drain(aws_resources)
    assert all("Records" not in body for body in bodies)  # only the s3:TestEvent, if any yet

    s3.put_object(Bucket=aws_resources.bucket, Key="photos/a b.jpg", Body=b"jpeg")
    created = receive_s3_records(aws_resources, until=lambda records: len(records) >= 1)
    s3.delete_object(Bucket=aws_resources.bucket, Key="photos/a b.jpg")
    removed = receive_s3_records(aws_resources, until=lambda records: len(records) >= 1)

    ((put,), (delete,)) = created, removed
    assert put["eventName"].startswith("ObjectCreated:")
    assert delete["eventName"].startswith("ObjectRemoved:")
    for record in (put, delete):
        assert record["s3"]["bucket"]["name"] == aws_resources.bucket
        assert unquote_plus(record["s3"]["object"]["key"]) == "photos/a b.jpg"
        assert record["s3"]["configurationId"] == NOTIFICATION_ID


def test_prefix_and_suffix_filters(aws_resources: AwsResources) -> None:
    provisioner(s3_notification_prefix="incoming/", s3_notification_suffix=".jpg").up()
    (ours,) = notification_config(aws_resources)["QueueConfigurations"]
    assert normalize_notification(ours)["Filter"] == [("prefix", "incoming/"), ("suffix", ".jpg")]
    drain(aws_resources)

    s3 = aws_resources.client("s3")
    for key in ("incoming/skip.png", "elsewhere/skip.jpg", "incoming/take.jpg"):
        s3.put_object(Bucket=aws_resources.bucket, Key=key, Body=b"x")
    records = receive_s3_records(
        aws_resources, until=lambda rs: any("take" in r["s3"]["object"]["key"] for r in rs)
    )

    assert [unquote_plus(r["s3"]["object"]["key"]) for r in records] == ["incoming/take.jpg"]


def test_other_notification_configs_survive_up_and_down(aws_resources: AwsResources) -> None:
    s3, sqs = aws_resources.client("s3"), aws_resources.client("sqs")
    s3.create_bucket(Bucket=aws_resources.bucket)
    other_url = sqs.create_queue(QueueName=aws_resources.name("other"))["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    theirs = {
        "Id": "someone-else",
        "QueueArn": other_arn,
        # No event type in common with ours: AWS refuses overlapping configurations.
        "Events": ["s3:ObjectRestore:*"],
    }
    s3.put_bucket_notification_configuration(
        Bucket=aws_resources.bucket, NotificationConfiguration={"QueueConfigurations": [theirs]}
    )

    provisioner().up()
    ids = {c["Id"] for c in notification_config(aws_resources)["QueueConfigurations"]}
    assert ids == {"someone-else", NOTIFICATION_ID}
    assert provisioner(s3_notification_prefix="changed/").up().changed
    ids = {c["Id"] for c in notification_config(aws_resources)["QueueConfigurations"]}
    assert ids == {"someone-else", NOTIFICATION_ID}

    provisioner().down()
    (survivor,) = notification_config(aws_resources)["QueueConfigurations"]
    assert normalize_notification(survivor) == normalize_notification(theirs)


def test_foreign_policy_statements_are_kept(aws_resources: AwsResources) -> None:
    provisioner().up()
    sqs, url = aws_resources.client("sqs"), queue_url(aws_resources, aws_resources.queue_name)
    policy = json.loads(attributes(aws_resources, aws_resources.queue_name)["Policy"])
    ours = policy["Statement"][0]
    foreign = {**ours, "Sid": "someone-else", "Principal": {"Service": "sns.amazonaws.com"}}
    tampered = {**ours, "Condition": {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::elsewhere"}}}
    sqs.set_queue_attributes(
        QueueUrl=url,
        Attributes={"Policy": json.dumps({**policy, "Statement": [foreign, tampered]})},
    )

    plan = provisioner().status()
    assert [(s.resource, [d.field for d in s.differences]) for s in plan.changes] == [
        ("queue", ["Policy"])
    ]
    provisioner().up()

    statements = json.loads(attributes(aws_resources, aws_resources.queue_name)["Policy"])[
        "Statement"
    ]
    assert {s["Sid"] for s in statements} == {"someone-else", POLICY_SID}
    assert provisioner().status().up_to_date


# --- down --------------------------------------------------------------------------------------


def test_down_is_idempotent_and_keeps_the_bucket_unless_asked(aws_resources: AwsResources) -> None:
    provisioner().up()
    s3 = aws_resources.client("s3")
    s3.put_object(Bucket=aws_resources.bucket, Key="keep.txt", Body=b"x")

    first = provisioner().down()
    second = provisioner().down()

    assert [(s.resource, s.action) for s in first.removed] == [
        ("notification", "delete"), ("queue", "delete"), ("dlq", "delete"),
    ]  # fmt: skip
    assert not second.changed
    assert steps(provisioner().status()) == {
        "bucket": "none", "dlq": "create", "queue": "create", "notification": "create",
        "lifecycle": "none",  # the rules belong to the bucket, which down keeps
    }  # fmt: skip
    with pytest.raises(StorageError, match="not empty"):
        provisioner().down(delete_bucket=True)
    s3.head_bucket(Bucket=aws_resources.bucket)  # refused before anything was deleted

    forced = provisioner().down(delete_bucket=True, force=True)

    assert [(s.resource, s.action) for s in forced.removed] == [("bucket", "delete")]
    assert not provisioner().down(delete_bucket=True, force=True).changed
    assert all(step.state == "missing" for step in provisioner().status().steps)


# --- bucket CORS and default encryption (only when configured) ----------------------------------

ORIGINS = "https://tutor.example, https://admin.tutor.example"
KMS_KEY = "arn:aws:kms:us-east-1:000000000000:key/0c1c2f8e-0000-4000-8000-00000000c0de"


def cors_rules(res: AwsResources) -> list[dict[str, Any]]:
    return res.client("s3").get_bucket_cors(Bucket=res.bucket)["CORSRules"]


def test_cors_and_sse_kms_are_applied_once(aws_resources: AwsResources) -> None:
    configured = {"s3_cors_allowed_origins": ORIGINS, "s3_kms_key_id": KMS_KEY}
    before = provisioner(**configured).status()
    assert {s.resource: s.state for s in before.steps}["cors"] == "missing"
    assert {s.resource: s.state for s in before.steps}["encryption"] == "missing"

    report = provisioner(**configured).up()

    assert steps(report.plan)["cors"] == "create"
    assert steps(report.plan)["encryption"] in {"create", "update"}  # AWS: SSE-S3 by default
    (rule,) = cors_rules(aws_resources)
    assert rule["ID"] == CORS_RULE_ID
    assert sorted(rule["AllowedOrigins"]) == ["https://admin.tutor.example", "https://tutor.example"]
    assert sorted(rule["AllowedMethods"]) == ["GET", "HEAD"]
    assert "Range" in rule["AllowedHeaders"] and "Content-Range" in rule["ExposeHeaders"]
    encryption = aws_resources.client("s3").get_bucket_encryption(Bucket=aws_resources.bucket)
    (default,) = encryption["ServerSideEncryptionConfiguration"]["Rules"]
    assert default["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KMS_KEY}

    again = provisioner(**configured).up()
    assert not again.changed
    assert steps(again.plan) == dict.fromkeys(
        (*DEFAULT_RESOURCES, "cors", "encryption"), "none")
    assert provisioner(**configured).status().up_to_date
    # Not configured: not managed, not reported, left as it is.
    assert "cors" not in steps(provisioner().status())
    assert len(cors_rules(aws_resources)) == 1


def test_cors_keeps_others_rules_and_updates_only_ours(aws_resources: AwsResources) -> None:
    provisioner().up()
    theirs = {"ID": "uploads", "AllowedOrigins": ["https://studio.example"],
              "AllowedMethods": ["PUT"], "AllowedHeaders": ["*"]}
    s3 = aws_resources.client("s3")
    s3.put_bucket_cors(Bucket=aws_resources.bucket, CORSConfiguration={"CORSRules": [theirs]})

    provisioner(s3_cors_allowed_origins="https://tutor.example").up()
    plan = provisioner(s3_cors_allowed_origins="https://tutor.example",
                       s3_cors_allowed_methods="GET").status()
    (change,) = plan.changes
    assert change.resource == "cors" and [d.field for d in change.differences] == ["AllowedMethods"]
    provisioner(s3_cors_allowed_origins="https://tutor.example", s3_cors_allowed_methods="GET").up()

    rules = {rule["ID"]: rule for rule in cors_rules(aws_resources)}
    assert set(rules) == {"uploads", CORS_RULE_ID}
    assert rules["uploads"]["AllowedMethods"] == ["PUT"]
    assert rules[CORS_RULE_ID]["AllowedMethods"] == ["GET"]


def test_cors_answers_browsers_from_allowed_origins_only(
        aws_resources: AwsResources, aws_backend: str) -> None:
    if aws_backend != "localstack":
        pytest.skip("moto stores CORS rules but does not evaluate preflights (measured)")
    provisioner(s3_cors_allowed_origins="https://tutor.example").up()
    aws_resources.client("s3").put_object(Bucket=aws_resources.bucket, Key="a b.mp4", Body=b"x")
    url = f"{aws_resources.endpoint_url}/{aws_resources.bucket}/a%20b.mp4"

    def preflight(origin: str) -> httpx.Response:
        return httpx.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "GET",
                                           "Access-Control-Request-Headers": "range"})

    allowed = preflight("https://tutor.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://tutor.example"
    refused = preflight("https://elsewhere.example")
    assert "access-control-allow-origin" not in refused.headers


# --- the bucket's lifecycle rules (on by default) ----------------------------------------------


def test_up_adds_abort_multipart_and_no_version_rule_on_an_unversioned_bucket(
        aws_resources: AwsResources) -> None:
    provisioner().up()

    rules = lifecycle_rules(aws_resources)
    assert set(rules) == {"s3convex-abort-multipart"}  # no versions: nothing noncurrent to expire
    abort = rules["s3convex-abort-multipart"]
    assert abort["Status"] == "Enabled"
    assert abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert (abort.get("Filter") or {}).get("Prefix", abort.get("Prefix", "")) == ""  # whole bucket


def test_a_versioned_bucket_also_expires_noncurrent_versions(aws_resources: AwsResources) -> None:
    provisioner().up()  # unversioned at first: the abort rule only
    s3 = aws_resources.client("s3")
    s3.put_bucket_versioning(Bucket=aws_resources.bucket,
                             VersioningConfiguration={"Status": "Enabled"})

    plan = provisioner().status()  # versioning turned on later is noticed
    assert [(s.resource, s.action) for s in plan.changes] == [("lifecycle", "update")]
    provisioner().up()

    rules = lifecycle_rules(aws_resources)
    assert set(rules) == {"s3convex-abort-multipart", "s3convex-noncurrent"}
    assert rules["s3convex-abort-multipart"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7}
    assert rules["s3convex-noncurrent"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert provisioner().status().up_to_date


def test_lifecycle_days_are_configurable_and_zero_removes_a_rule(aws_resources: AwsResources) -> None:
    s3 = aws_resources.client("s3")
    s3.create_bucket(Bucket=aws_resources.bucket)
    s3.put_bucket_versioning(Bucket=aws_resources.bucket,
                             VersioningConfiguration={"Status": "Enabled"})
    provisioner().up()
    assert set(lifecycle_rules(aws_resources)) == {"s3convex-abort-multipart", "s3convex-noncurrent"}

    changed = provisioner(s3_abort_multipart_days=0, s3_noncurrent_version_days=90)
    assert [(s.resource, s.action) for s in changed.status().changes] == [("lifecycle", "update")]
    changed.up()

    rules = lifecycle_rules(aws_resources)
    assert set(rules) == {"s3convex-noncurrent"}
    assert rules["s3convex-noncurrent"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90
    assert provisioner(s3_abort_multipart_days=0, s3_noncurrent_version_days=90).status().up_to_date
    # Both 0: the rules are not managed at all — no step, and what is there is left alone.
    unmanaged = provisioner(s3_abort_multipart_days=0, s3_noncurrent_version_days=0).status()
    assert "lifecycle" not in steps(unmanaged)
    assert set(lifecycle_rules(aws_resources)) == {"s3convex-noncurrent"}


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def infra_cli(aws_resources: AwsResources, tmp_path: Any) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``s3convex infra ARGS`` as a real process: stdout is a pipe (not a terminal), the
    environment is the one ``aws_resources`` set, the directory has no developer .env."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "s3convex", "infra", *args], cwd=tmp_path,
                              env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)

    return run


def test_cli_prints_json_when_stdout_is_not_a_terminal(aws_resources: AwsResources, infra_cli: Any) -> None:
    missing = infra_cli("status")  # no --json: a pipe is not a terminal
    assert missing.returncode == 1 and missing.stderr == ""
    assert {s["state"] for s in json.loads(missing.stdout)["steps"]} == {"missing"}

    first, second = infra_cli("up"), infra_cli("up")

    assert first.returncode == 0 and json.loads(first.stdout)["changed"] is True
    assert second.returncode == 0 and json.loads(second.stdout)["changed"] is False
    status = infra_cli("status")
    assert status.returncode == 0 and json.loads(status.stdout)["up_to_date"] is True
    sqs = aws_resources.client("sqs")
    sqs.delete_queue(QueueUrl=queue_url(aws_resources, aws_resources.dlq_name))
    missing = infra_cli("status", "--json")
    assert missing.returncode == 1
    states = {s["resource"]: s["state"] for s in json.loads(missing.stdout)["steps"]}
    assert states == {
        "bucket": "present",
        "dlq": "missing",
        "queue": "present",
        "notification": "present",
        "lifecycle": "present",
    }
    assert infra_cli("down", "--delete-bucket", "--force").returncode == 0
    assert json.loads(infra_cli("down").stdout) == {"changed": False, "removed": []}


def test_cli_errors_take_the_one_exit_path(aws_resources: AwsResources, infra_cli: Any) -> None:
    assert infra_cli("up").returncode == 0
    aws_resources.client("s3").put_object(Bucket=aws_resources.bucket, Key="k", Body=b"x")

    refused = infra_cli("down", "--delete-bucket")  # a StorageError: exit 1, plainly, on stderr

    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("s3convex: error: bucket ")
    assert "is not empty; pass --force" in refused.stderr and "Traceback" not in refused.stderr
    assert queue_url(aws_resources, aws_resources.queue_name)  # refused before removing anything

    bad = infra_cli("status", env={"S3_BUCKET": "Not_A_Bucket"})
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("s3convex: configuration error: S3_BUCKET")
    assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr

    usage = infra_cli("down", "--force")  # --force without --delete-bucket: a usage error
    assert usage.returncode == 2 and "--force only applies" in usage.stderr
    assert "Traceback" not in usage.stderr


def test_cli_tables_on_a_terminal(
    aws_resources: AwsResources, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # away from any developer .env
    monkeypatch.setattr(output, "wants_json", lambda flag: flag)  # as on a terminal
    runner = CliRunner()

    up = runner.invoke(app, ["up"])

    assert up.exit_code == 0 and "create" in up.stdout and aws_resources.bucket in up.stdout
    assert "Applied 5 change(s)." in up.stdout
    assert "Nothing to change" in runner.invoke(app, ["up"]).stdout
    assert "present" in runner.invoke(app, ["status"]).stdout
    assert json.loads(runner.invoke(app, ["status", "--json"]).stdout)["up_to_date"] is True


# --- pure pieces (no backend needed) -----------------------------------------------------------


def test_dlq_must_outlive_the_source_queue() -> None:
    with pytest.raises(ValueError, match="longer"):
        Desired(bucket="b-1", queue_name="q", dlq_name="d", source_retention=5, dlq_retention=5)


def test_policy_names_the_bucket_in_the_queues_partition() -> None:
    desired = Desired(bucket="media", queue_name="q", dlq_name="d")
    statement = desired.queue_statement("arn:aws-cn:sqs:cn-north-1:111122223333:q")
    assert statement["Condition"] == {
        "ArnEquals": {"aws:SourceArn": "arn:aws-cn:s3:::media"},
        "StringEquals": {"aws:SourceAccount": "111122223333"},
    }


def test_settings_without_convex_are_enough_for_infra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONVEX_URL", "CONVEX_DEPLOY_KEY"):
        monkeypatch.delenv(name, raising=False)
    settings = load_infra_settings(_env_file=None, s3_bucket="media", sqs_queue_url="http://h/1/q-x")
    desired = Desired.from_settings(settings.aws, settings.sqs)
    assert (desired.queue_name, desired.queue_url) == ("q-x", "http://h/1/q-x")


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "SomeOperation",
    )


@pytest.mark.parametrize(
    ("error", "mapped"),
    [
        (_client_error("SlowDown", 503), StorageUnavailable),
        (_client_error("ThrottlingException", 400), StorageUnavailable),
        (_client_error("InternalError", 500), StorageUnavailable),
        (_client_error("AWS.SimpleQueueService.QueueDeletedRecently", 400), StorageUnavailable),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), StorageUnavailable),
        (_client_error("AccessDenied", 403), StorageForbidden),
        (_client_error("InvalidArgument", 400), StorageError),
        (NoCredentialsError(), StorageError),
    ],
)
def test_botocore_errors_are_mapped(error: Exception, mapped: type[Exception]) -> None:
    def fail() -> None:
        raise error

    with pytest.raises(mapped) as caught:
        aws_call(fail)
    assert caught.type is mapped and caught.value.__cause__ is error
