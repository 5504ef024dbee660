"""``s3convex infra policy``: every component's IAM document is sufficient and tight.

Unit level: the documents cover every S3/SQS operation the code calls and are scoped to the
configured ARNs. Integration: a moto server of its own that enforces IAM
(``INITIAL_NO_AUTH_ACTION_COUNT``; the pattern of ``tests/test_errors.py``), one IAM user per
component holding exactly its printed document: provisioning sets everything up, the uploader
and the cleanup worker write and delete, the daemon (``s3convex run --drain``) drains the events
into Convex, and calls outside a document fail with AWS's own AccessDenied.

moto authorizes some operations by their own name where AWS uses another action: an SQS batch
operation by ``sqs:DeleteMessageBatch`` etc. (AWS: the single-message action, ``sqs:DeleteMessage``,
the only one IAM knows), HeadBucket by ``s3:HeadBucket`` (AWS: ``s3:ListBucket``); and it checks
the calls that name a queue by name, not URL (GetQueueUrl, CreateQueue), against the resource
``*``, where AWS uses the queue's ARN: those two are granted on ``*`` on moto only; and it checks
DeleteObjects' ``s3:DeleteObject`` against the bucket's ARN, where AWS checks each key's.
:func:`as_moto_authorizes` adds moto's names beside AWS's in a document, and
``test_moto_authorizes_batches_by_their_own_name`` shows the gap is still there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import httpx
import pytest
from botocore import xform_name
from botocore.exceptions import ClientError
from pydantic import SecretStr

from convex_local.launcher import LocalConvex
from s3convex.adapters.aws import map_aws_error
from s3convex.adapters.convex import ConvexClient
from s3convex.core.errors import StorageForbidden
from s3convex.infra.policies import (
    COMPONENTS,
    OPERATION_ACTIONS,
    OPERATOR_ONLY,
    Arns,
    grants,
    policy_document,
)
from s3convex.settings import AwsSettings, SqsSettings, load
from tests.backends import free_port, iam_enforcing_moto
from tests.stack import TEST_TUNING

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
SHIPPED = ("consumer", "handlers", "infra", "src/s3convex")
# AWS's action → moto's name for an operation AWS authorizes by that action.
MOTO_NAMES = {"sqs:DeleteMessage": "sqs:DeleteMessageBatch",
              "sqs:ChangeMessageVisibility": "sqs:ChangeMessageVisibilityBatch",
              "sqs:SendMessage": "sqs:SendMessageBatch",
              "s3:ListBucket": "s3:HeadBucket"}


def _settings(**env: str) -> tuple[AwsSettings, SqsSettings]:
    env = {"S3_BUCKET": "assets-bucket", **env}
    return load(AwsSettings, _env_file=None, **env), load(SqsSettings, _env_file=None, **env)


def _arns(aws: AwsSettings, sqs: SqsSettings) -> Arns:
    return Arns.from_settings(aws, sqs, account="123456789012")


def as_moto_authorizes(document: dict[str, Any]) -> dict[str, Any]:
    statements = [{**s, "Action": sorted({*s["Action"], *(MOTO_NAMES[a] for a in s["Action"]
                                                         if a in MOTO_NAMES)})}
                  for s in document["Statement"]]
    by_name = sorted({a for s in statements for a in s["Action"]
                      if a in ("sqs:CreateQueue", "sqs:GetQueueUrl")})
    if by_name:
        statements.append({"Sid": "MotoQueuesByName", "Effect": "Allow", "Action": by_name,
                           "Resource": "*"})
    buckets = sorted({r.split("/", 1)[0] for s in statements if "s3:DeleteObject" in s["Action"]
                      for r in s["Resource"]})
    if buckets:
        statements.append({"Sid": "MotoDeleteObjectsOnTheBucket", "Effect": "Allow",
                           "Action": ["s3:DeleteObject"], "Resource": buckets})
    return {**document, "Statement": statements}


# --- what the code calls ---------------------------------------------------------------------------


def _operations_called() -> dict[str, set[str]]:
    """API operation → the shipped files whose code names its client method (``.head_object``,
    ``"list_object_versions"``), for S3 and SQS."""
    session = botocore.session.get_session()
    methods = {xform_name(op): op for service in ("s3", "sqs")
               for op in session.get_service_model(service).operation_names}
    found: dict[str, set[str]] = {}
    for folder in SHIPPED:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for method, operation in methods.items():
                if method == "create_session":  # S3 Express; the word is an upload session here
                    continue
                if re.search(rf"(\.|[\"']){method}\b", text):
                    found.setdefault(operation, set()).add(str(path.relative_to(ROOT)))
    return found


def test_every_operation_the_code_calls_is_granted_or_operator_only() -> None:
    aws, _ = _settings(S3_CORS_ALLOWED_ORIGINS="https://app.example", S3_KMS_KEY_ID="k")
    granted = {call for c in COMPONENTS for g in grants(c, aws) for call in g.calls}
    called = _operations_called()
    assert {"ReceiveMessage", "HeadObject", "PutObject", "CreateQueue"} <= set(called)  # the scan works
    missing = {op: sorted(files) for op, files in called.items()
               if op not in granted and op not in OPERATOR_ONLY}
    assert not missing, f"operations no component's policy grants: {missing}"


def test_every_grant_is_explained_by_its_calls() -> None:
    aws, _ = _settings(S3_CORS_ALLOWED_ORIGINS="https://app.example", S3_KMS_KEY_ID="k")
    models = {s: botocore.session.get_session().get_service_model(s) for s in ("s3", "sqs")}
    for component in COMPONENTS:
        for grant in grants(component, aws):
            for call in grant.calls:
                assert call in OPERATION_ACTIONS, (component, call)
                if not call.startswith("kms:"):
                    assert any(call in m.operation_names for m in models.values()), call
            assert grant.calls or grant.extra, (component, grant)
            assert not grant.extra or grant.why, f"{component}: {grant.extra} without a reason"


def test_documents_are_scoped_to_the_configured_resources() -> None:
    aws, sqs = _settings(S3_NOTIFICATION_PREFIX="media/", SQS_QUEUE_NAME="q", SQS_DLQ_NAME="q-dlq",
                         AWS_REGION="eu-west-1")
    for component in COMPONENTS:
        document = policy_document(component, aws, _arns(aws, sqs))
        assert document["Version"] == "2012-10-17"
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow" and statement["Action"]
            assert all("*" not in action for action in statement["Action"]), statement
            for resource in statement["Resource"]:
                assert resource in ("arn:aws:s3:::assets-bucket", "arn:aws:s3:::assets-bucket/media/*",
                                    "arn:aws:sqs:eu-west-1:123456789012:q",
                                    "arn:aws:sqs:eu-west-1:123456789012:q-dlq"), resource
    consumer = policy_document("consumer", aws, _arns(aws, sqs))
    actions = {a for s in consumer["Statement"] for a in s["Action"]}
    assert not actions & {"s3:PutObject", "s3:DeleteObject", "sqs:DeleteQueue", "sqs:CreateQueue"}
    scaler = policy_document("scaler", aws, _arns(aws, sqs))["Statement"]
    assert scaler == [{"Sid": "ScalerQueue", "Effect": "Allow", "Action": ["sqs:GetQueueAttributes"],
                       "Resource": ["arn:aws:sqs:eu-west-1:123456789012:q"]}]


def test_kms_is_granted_only_with_a_key_and_only_through_s3() -> None:
    aws, sqs = _settings()
    assert "kms" not in json.dumps(policy_document("uploader", aws, _arns(aws, sqs)))
    aws, sqs = _settings(S3_KMS_KEY_ID="alias/assets")
    kms = next(s for s in policy_document("uploader", aws, _arns(aws, sqs))["Statement"]
               if s["Sid"] == "UploaderKms")
    assert kms["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert kms["Resource"] == ["arn:aws:kms:us-east-1:123456789012:key/*"]
    assert kms["Condition"] == {
        "ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/assets"},
        "StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    aws, sqs = _settings(S3_KMS_KEY_ID="1234abcd-12ab-34cd-56ef-1234567890ab")
    consumer = policy_document("consumer", aws, _arns(aws, sqs))["Statement"]
    assert [s["Resource"] for s in consumer if s["Sid"] == "ConsumerKms"] == [
        ["arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"]]


def test_the_command_prints_json_and_names_a_bad_account() -> None:
    env = {**os.environ, "S3_BUCKET": "assets-bucket", "AWS_REGION": "us-east-1"}
    done = subprocess.run([sys.executable, "-m", "s3convex", "infra", "policy", "--component", "bridge",
                           "--account-id", "123456789012"], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert {s["Sid"] for s in json.loads(done.stdout)["Statement"]} == {"BridgeQueue", "BridgeDlq"}
    bad = subprocess.run([sys.executable, "-m", "s3convex", "infra", "policy", "--account-id", "42"],
                         env=env, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "AWS_ACCOUNT_ID" in bad.stderr


# --- on moto, with IAM enforced ------------------------------------------------------------------


@dataclass(frozen=True)
class IamWorld:
    url: str
    names: dict[str, str]  # the settings naming the resources
    keys: dict[str, dict[str, str]]  # "admin" and each component → its access key

    def env(self, who: str) -> dict[str, str]:
        return {**self.names, "AWS_ENDPOINT_URL": self.url, "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": self.keys[who]["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": self.keys[who]["SecretAccessKey"]}

    def client(self, service: str, who: str) -> Any:
        key = self.keys[who]
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=key["AccessKeyId"],
                            aws_secret_access_key=key["SecretAccessKey"])

    def cli(self, who: str, *args: str, extra: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SQS_", "S3_"))}
        env.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                    **self.env(who), **(extra or {})})
        return subprocess.run([sys.executable, "-m", "s3convex", *args], cwd=ROOT, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def iam_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamWorld]:
    """moto enforcing IAM after three unauthenticated actions (an admin user and its key), then
    one user per component holding exactly the document ``s3convex infra policy`` prints."""
    with iam_enforcing_moto(tmp_path_factory.mktemp("moto-policies")) as url:
        iam = boto3.client("iam", endpoint_url=url, region_name=REGION,
                           aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="unchecked")
        iam.create_user(UserName="admin")  # the three unauthenticated actions
        keys = {"admin": iam.create_access_key(UserName="admin")["AccessKey"]}
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        names = {"S3_BUCKET": "policy-assets", "SQS_QUEUE_NAME": "policy-events",
                 "SQS_DLQ_NAME": "policy-dlq"}
        world = IamWorld(url, names, keys)
        admin_iam = world.client("iam", "admin")
        for component in COMPONENTS:
            printed = world.cli("admin", "infra", "policy", "--component", component,
                                "--account-id", "123456789012")  # moto's account
            assert printed.returncode == 0, printed.stderr
            admin_iam.create_user(UserName=component)
            admin_iam.put_user_policy(UserName=component, PolicyName=component, PolicyDocument=json.dumps(
                as_moto_authorizes(json.loads(printed.stdout))))
            keys[component] = admin_iam.create_access_key(UserName=component)["AccessKey"]
        yield world


def _take_all(sqs: Any, url: str) -> list[dict[str, Any]]:
    """Receive and delete what a queue holds (PurgeQueue may run once a minute)."""
    taken: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=0).get("Messages", []):
        taken += batch
        for message in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return taken


def _denied(call: Any, **params: Any) -> ClientError:
    with pytest.raises(ClientError) as info:
        call(**params)
    return info.value


def _assert_access_denied(error: ClientError) -> None:
    """AWS's AccessDenied, as the project's one mapping reads it (moto answers SQS's JSON
    protocol with its XML error body, which botocore leaves unparsed)."""
    mapped = map_aws_error(error, error.operation_name)
    assert isinstance(mapped, StorageForbidden), error.response
    assert (mapped.code, mapped.status) == ("AccessDenied", 403), error.response
    # S3 says "Access Denied"; SQS names who may not do what.
    assert mapped.message == "Access Denied" or "is not authorized to perform" in mapped.message


@pytest.fixture(scope="module")
def provisioned(iam_world: IamWorld) -> IamWorld:
    up = iam_world.cli("provisioning", "infra", "up", "--json")
    assert up.returncode == 0, up.stderr
    return iam_world


def test_the_provisioning_policy_sets_up_and_checks_everything(provisioned: IamWorld) -> None:
    status = provisioned.cli("provisioning", "infra", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert all(step["state"] == "present" for step in json.loads(status.stdout)["steps"])
    refused = provisioned.cli("consumer", "infra", "up", "--json")  # the daemon may not provision
    assert refused.returncode == 1 and "AccessDenied" in refused.stderr


def test_moto_authorizes_batches_by_their_own_name(provisioned: IamWorld) -> None:
    admin_iam = provisioned.client("iam", "admin")
    admin_iam.create_user(UserName="aws-names-only")
    printed = provisioned.cli("admin", "infra", "policy", "--component", "consumer",
                              "--account-id", "123456789012")
    document = json.loads(printed.stdout)  # only the by-name lookup moto needs on "*"
    by_name = [s for s in as_moto_authorizes(document)["Statement"] if s["Sid"] == "MotoQueuesByName"]
    admin_iam.put_user_policy(UserName="aws-names-only", PolicyName="consumer", PolicyDocument=json.dumps(
        {**document, "Statement": [*document["Statement"], *by_name]}))
    provisioned.keys["aws-names-only"] = admin_iam.create_access_key(UserName="aws-names-only")["AccessKey"]
    sqs = provisioned.client("sqs", "aws-names-only")
    url = sqs.get_queue_url(QueueName=provisioned.names["SQS_QUEUE_NAME"])["QueueUrl"]
    error = _denied(sqs.delete_message_batch, QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": "x"}])
    _assert_access_denied(error)  # AWS would allow it: sqs:DeleteMessage authorizes the batch


async def test_the_consumer_policy_drains_events_into_convex(
        provisioned: IamWorld, convex_server: LocalConvex, tmp_path: Path) -> None:
    world = provisioned
    bucket = world.names["S3_BUCKET"]
    uploader, cleanup = world.client("s3", "uploader"), world.client("s3", "cleanup")
    keys = ["policies/a.txt", "policies/with space/b.bin", "policies/gone.txt"]
    etags = {key: uploader.put_object(Bucket=bucket, Key=key, Body=key.encode())["ETag"].strip('"')
             for key in keys}
    gone = cleanup.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "policies/gone.txt"}]})
    assert [d["Key"] for d in gone.get("Deleted", [])] == ["policies/gone.txt"], gone  # as the worker deletes
    admin_sqs = world.client("sqs", "admin")
    queue_url = admin_sqs.get_queue_url(QueueName=world.names["SQS_QUEUE_NAME"])["QueueUrl"]
    dlq_url = admin_sqs.get_queue_url(QueueName=world.names["SQS_DLQ_NAME"])["QueueUrl"]
    admin_sqs.send_message(QueueUrl=queue_url, MessageBody="this is not json")  # → the DLQ

    done = world.cli("consumer", "run", "--drain", timeout=180, extra={
        **TEST_TUNING, "CONVEX_URL": convex_server.url, "CONVEX_DEPLOY_KEY": convex_server.admin_key})
    (tmp_path / "daemon.log").write_text(done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "AccessDenied" not in done.stderr, done.stderr[-3000:]

    async with ConvexClient(convex_server.url, SecretStr(convex_server.admin_key)) as convex:
        for key in keys:
            record = await convex.query("assets:getByKey", {"bucket": bucket, "key": key})
            assert record is not None, key
            if key.endswith("gone.txt"):
                assert record["status"] == "deleted"
            else:
                assert (record["status"], record["etag"]) == ("available", etags[key])
    assert [m["Body"] for m in _take_all(admin_sqs, dlq_url)] == ["this is not json"]
    attributes = admin_sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert int(attributes["ApproximateNumberOfMessages"]) == 0
    assert int(attributes["ApproximateNumberOfMessagesNotVisible"]) == 0


def test_calls_outside_each_policy_fail_with_access_denied(provisioned: IamWorld) -> None:
    world = provisioned
    bucket = world.names["S3_BUCKET"]
    sqs = {who: world.client("sqs", who) for who in ("consumer", "bridge", "scaler", "admin")}
    queue_url = sqs["admin"].get_queue_url(QueueName=world.names["SQS_QUEUE_NAME"])["QueueUrl"]
    dlq_url = sqs["admin"].get_queue_url(QueueName=world.names["SQS_DLQ_NAME"])["QueueUrl"]
    consumer_s3 = world.client("s3", "consumer")
    world.client("s3", "uploader").put_object(Bucket=bucket, Key="policies/a.txt", Body=b"a")
    refusals = [
        (consumer_s3.put_object, {"Bucket": bucket, "Key": "policies/x", "Body": b"x"}),
        (consumer_s3.delete_object, {"Bucket": bucket, "Key": "policies/a.txt"}),
        (sqs["consumer"].delete_queue, {"QueueUrl": queue_url}),
        (sqs["consumer"].send_message, {"QueueUrl": queue_url, "MessageBody": "{}"}),
        (sqs["consumer"].receive_message, {"QueueUrl": dlq_url}),
        (sqs["bridge"].receive_message, {"QueueUrl": queue_url}),
        (sqs["scaler"].receive_message, {"QueueUrl": queue_url}),
        (world.client("s3", "uploader").delete_object, {"Bucket": bucket, "Key": "policies/a.txt"}),
        (world.client("s3", "cleanup").put_object, {"Bucket": bucket, "Key": "policies/x", "Body": b"x"}),
        (world.client("s3", "provisioning").get_object, {"Bucket": bucket, "Key": "policies/a.txt"}),
    ]
    for call, params in refusals:
        _assert_access_denied(_denied(call, **params))
    # …and what each may do still works.
    sqs["scaler"].get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    consumer_s3.head_object(Bucket=bucket, Key="policies/a.txt")
    sqs["bridge"].send_message(QueueUrl=dlq_url, MessageBody="{}")
    assert [m["Body"] for m in _take_all(sqs["admin"], dlq_url)] == ["{}"]


def test_the_bridge_policy_forwards_minio_events_and_poison(provisioned: IamWorld, tmp_path: Path) -> None:
    world = provisioned
    bucket = world.names["S3_BUCKET"]
    port, token = free_port(), "bridge-token-0123456789abcdef"
    log_path = tmp_path / "bridge.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SQS_", "S3_"))}
    env.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                **world.env("bridge"), "BRIDGE_PORT": str(port), "BRIDGE_HOST": "127.0.0.1",
                "BRIDGE_AUTH_TOKEN": token})
    admin = world.client("sqs", "admin")
    queue_url = admin.get_queue_url(QueueName=world.names["SQS_QUEUE_NAME"])["QueueUrl"]
    dlq_url = admin.get_queue_url(QueueName=world.names["SQS_DLQ_NAME"])["QueueUrl"]
    document = json.loads((ROOT / "tests" / "fixtures" / "minio" / "put.json").read_text())
    document["Records"][0]["s3"]["bucket"]["name"] = bucket
    document["Key"] = f"{bucket}/{document['Key'].split('/', 1)[1]}"
    poison = {**document, "Records": [{**document["Records"][0], "s3": {
        **document["Records"][0]["s3"], "bucket": {"name": "someone-elses-bucket"}}}]}
    _take_all(admin, queue_url)  # what other tests' uploads notified
    _take_all(admin, dlq_url)
    with log_path.open("w") as log:
        bridge = subprocess.Popen([sys.executable, "-m", "s3convex", "bridge"], cwd=ROOT, env=env,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:  # /readyz is 200 once SQS answered the bridge's GetQueueAttributes
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and bridge.poll() is None, log_path.read_text()
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        for body in (document, poison):
            answer = httpx.post(f"{base}/", content=json.dumps(body), headers=headers, timeout=30)
            assert answer.status_code == 200, (answer.status_code, answer.text)
    finally:
        bridge.terminate()
        assert bridge.wait(30) == 0, log_path.read_text()
    assert "AccessDenied" not in log_path.read_text()
    forwarded, dead = _take_all(admin, queue_url), _take_all(admin, dlq_url)
    assert [json.loads(m["Body"])["Records"][0]["eventSource"] for m in forwarded] == ["minio:s3"]
    assert len(dead) == 1 and "someone-elses-bucket" in dead[0]["Body"]
