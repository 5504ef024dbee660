"""Least-privilege IAM policy documents, one per component, scoped to the configured resources.

Each component's grants name the S3/SQS API operations its code calls (found by reading the
calls in ``consumer/``, ``src/s3convex/adapters/``, ``src/s3convex/storage/`` and ``infra/``)
and the IAM actions those operations need (:data:`OPERATION_ACTIONS`, from AWS's service
authorization reference — the batch operations are authorized by their single-message action,
``HeadObject`` by ``s3:GetObject``, ``GetBucketCors`` by ``s3:GetBucketCORS``, …). A grant holds
no action that none of its operations needs, unless its ``why`` says what breaks without it.

=============  =======================================================================
consumer       ``s3convex run``: receive, heartbeat, delete, release and dead-letter;
               HEAD the objects (by version when the event has one); sign readers' GET URLs
bridge         ``s3convex bridge``: MinIO's notifications into the queue, poison into the DLQ
cleanup        the cleanup worker (consumer/cleanup.py): DeleteObjects of due keys, by version
               when known; retention (consumer/retention.py) reads the current manifests
provisioning   ``s3convex infra up|status|down`` (not ``down --delete-bucket``: destroying
               the bucket and its objects is left to an administrator)
uploader       ``S3Storage`` / ``s3convex upload``: PUT and multipart uploads
scaler         KEDA's ``aws-sqs-queue`` trigger (the role its TriggerAuthentication assumes):
               the queue's approximate counts
=============  =======================================================================

Operator commands (``replay``, ``reconcile``, ``health``, ``assets``) are run by a person with
broader rights and have no document here (:data:`OPERATOR_ONLY` lists what only they call).
Documents are plain data; ``s3convex infra policy`` prints them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from s3convex.core.errors import ConfigError
from s3convex.settings import AwsSettings, SqsSettings

Component = Literal["consumer", "bridge", "cleanup", "provisioning", "uploader", "scaler"]
COMPONENTS: tuple[Component, ...] = ("consumer", "bridge", "cleanup", "provisioning", "uploader",
                                     "scaler")
ResourceKind = Literal["bucket", "objects", "queue", "dlq", "kms"]

# API operation → the IAM actions AWS authorizes it by.
OPERATION_ACTIONS: dict[str, tuple[str, ...]] = {
    # SQS
    "GetQueueUrl": ("sqs:GetQueueUrl",),
    "GetQueueAttributes": ("sqs:GetQueueAttributes",),
    "SetQueueAttributes": ("sqs:SetQueueAttributes",),
    "CreateQueue": ("sqs:CreateQueue",),
    "DeleteQueue": ("sqs:DeleteQueue",),
    "ReceiveMessage": ("sqs:ReceiveMessage",),
    "SendMessage": ("sqs:SendMessage",),
    "SendMessageBatch": ("sqs:SendMessage",),
    "DeleteMessageBatch": ("sqs:DeleteMessage",),
    "ChangeMessageVisibility": ("sqs:ChangeMessageVisibility",),
    "ChangeMessageVisibilityBatch": ("sqs:ChangeMessageVisibility",),
    # S3 objects. The daemon HEADs with ?versionId= when the event carries one.
    "HeadObject": ("s3:GetObject", "s3:GetObjectVersion"),
    "GetObject": ("s3:GetObject",),  # the presigned GET URLs the daemon signs for readers
    "PutObject": ("s3:PutObject",),
    "CreateMultipartUpload": ("s3:PutObject",),
    "UploadPart": ("s3:PutObject",),
    "CompleteMultipartUpload": ("s3:PutObject",),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload",),
    # DeleteObjects is authorized per key: s3:DeleteObjectVersion for a key sent with VersionId.
    "DeleteObjects": ("s3:DeleteObject", "s3:DeleteObjectVersion"),
    # S3 buckets
    "HeadBucket": ("s3:ListBucket",),
    "ListObjectsV2": ("s3:ListBucket",),
    "CreateBucket": ("s3:CreateBucket",),
    "GetBucketCors": ("s3:GetBucketCORS",),
    "PutBucketCors": ("s3:PutBucketCORS",),
    "GetBucketEncryption": ("s3:GetEncryptionConfiguration",),
    "PutBucketEncryption": ("s3:PutEncryptionConfiguration",),
    "GetBucketNotificationConfiguration": ("s3:GetBucketNotification",),
    "PutBucketNotificationConfiguration": ("s3:PutBucketNotification",),
    "GetBucketVersioning": ("s3:GetBucketVersioning",),
    "GetBucketLifecycleConfiguration": ("s3:GetLifecycleConfiguration",),
    "PutBucketLifecycleConfiguration": ("s3:PutLifecycleConfiguration",),
    "DeleteBucketLifecycle": ("s3:PutLifecycleConfiguration",),
    # KMS, for SSE-KMS objects (S3 calls KMS as the requester)
    "kms:Decrypt": ("kms:Decrypt",),
    "kms:GenerateDataKey": ("kms:GenerateDataKey",),
}

# Operations only operator commands (or `infra down --delete-bucket --force`) call.
OPERATOR_ONLY = frozenset({"ListObjectsV2", "ListObjectVersions", "ListMultipartUploads",
                           "DeleteBucket"})


@dataclass(frozen=True, slots=True)
class Grant:
    resource: ResourceKind
    calls: tuple[str, ...]  # keys of OPERATION_ACTIONS
    extra: tuple[str, ...] = ()  # actions no call needs by name; `why` says what breaks without
    why: str = ""

    @property
    def actions(self) -> tuple[str, ...]:
        needed = {action for call in self.calls for action in OPERATION_ACTIONS[call]}
        return tuple(sorted(needed | set(self.extra)))


_CONSUMER = (
    # receive.py, heartbeat.py, ack.py (release), sqs_batch.delete_batch, probes/daemon's counts,
    # queues.resolve_queues.
    Grant("queue", ("GetQueueUrl", "GetQueueAttributes", "ReceiveMessage", "DeleteMessageBatch",
                    "ChangeMessageVisibility", "ChangeMessageVisibilityBatch")),
    # ack.dead_letter; telemetry.py's queue-depth gauge reads the DLQ's counts too.
    Grant("dlq", ("GetQueueUrl", "GetQueueAttributes", "SendMessage")),
    Grant("objects", ("HeadObject", "GetObject")),  # handlers' HEAD; adapters/urls.py presigns
    Grant("bucket", (), extra=("s3:ListBucket",),
          why="without it S3 answers HeadObject of a deleted key 403, not 404, and the event "
              "of an object deleted meanwhile fails as forbidden instead of being skipped"),
    Grant("kms", ("kms:Decrypt",)),  # a reader's presigned GET of an SSE-KMS object
)
_BRIDGE = (
    Grant("queue", ("GetQueueUrl", "GetQueueAttributes", "SendMessageBatch")),
    Grant("dlq", ("GetQueueUrl", "SendMessage")),  # poison bodies, with their reason
)
_CLEANUP = (Grant("objects", ("DeleteObjects", "GetObject")),)
_UPLOADER = (
    # storage/transfer.py; HeadObject only after NoSuchUpload, to tell our completed upload.
    Grant("objects", ("PutObject", "CreateMultipartUpload", "UploadPart",
                      "CompleteMultipartUpload", "AbortMultipartUpload", "HeadObject")),
    Grant("kms", ("kms:GenerateDataKey", "kms:Decrypt")),  # multipart SSE-KMS needs both
)
_SCALER = (Grant("queue", ("GetQueueAttributes",)),)


def _provisioning(aws: AwsSettings) -> tuple[Grant, ...]:
    bucket_calls = ["HeadBucket", "CreateBucket", "GetBucketNotificationConfiguration",
                    "PutBucketNotificationConfiguration"]
    if aws.cors_allowed_origins:  # CORS is left untouched otherwise
        bucket_calls += ["GetBucketCors", "PutBucketCors"]
    if aws.kms_key_id:
        bucket_calls += ["GetBucketEncryption", "PutBucketEncryption"]
    if aws.abort_multipart_days or aws.noncurrent_version_days:  # infra/lifecycle.py's rules
        bucket_calls += ["GetBucketVersioning", "GetBucketLifecycleConfiguration",
                         "PutBucketLifecycleConfiguration", "DeleteBucketLifecycle"]
    queue_calls = ("GetQueueUrl", "GetQueueAttributes", "CreateQueue", "SetQueueAttributes",
                   "DeleteQueue")
    return (Grant("bucket", tuple(bucket_calls)), Grant("queue", queue_calls),
            Grant("dlq", queue_calls))


@dataclass(frozen=True, slots=True)
class Arns:
    """The resources the documents are scoped to."""

    partition: str
    region: str
    account: str
    bucket: str
    queue: str
    dlq: str
    object_prefix: str = ""  # S3_NOTIFICATION_PREFIX: the keys the pipeline handles
    kms_key: str | None = None

    @property
    def bucket_arn(self) -> str:
        return f"arn:{self.partition}:s3:::{self.bucket}"

    @property
    def objects_arn(self) -> str:
        return f"{self.bucket_arn}/{self.object_prefix}*"

    def queue_arn(self, name: str) -> str:
        return f"arn:{self.partition}:sqs:{self.region}:{self.account}:{name}"

    def kms_statement_parts(self) -> tuple[str, dict[str, Any] | None]:
        """The key's ARN, or, for an alias, any key of the account that carries the alias
        (IAM authorizes a KMS call by the key, never by the alias)."""
        key = self.kms_key or ""
        if key.startswith("arn:"):
            if ":alias/" not in key:
                return key, None
            key = key.split(":", 5)[5]
        keys = f"arn:{self.partition}:kms:{self.region}:{self.account}:key/"
        if key.startswith("alias/"):
            return keys + "*", {"ForAnyValue:StringEquals": {"kms:ResourceAliases": key}}
        return keys + key, None

    def resources(self, kind: ResourceKind) -> list[str]:
        return {"bucket": [self.bucket_arn], "objects": [self.objects_arn],
                "queue": [self.queue_arn(self.queue)], "dlq": [self.queue_arn(self.dlq)],
                "kms": [self.kms_statement_parts()[0]]}[kind]

    @classmethod
    def from_settings(cls, aws: AwsSettings, sqs: SqsSettings, *, account: str,
                      partition: str | None = None) -> Arns:
        queue = sqs.queue_name
        if sqs.queue_url:
            queue = urlsplit(str(sqs.queue_url)).path.rstrip("/").rsplit("/", 1)[-1]
        return cls(partition=partition or partition_of(aws.region), region=aws.region,
                   account=account, bucket=aws.bucket, queue=queue, dlq=sqs.dlq_name,
                   object_prefix=aws.notification_prefix, kms_key=aws.kms_key_id)


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def account_from_queue_url(url: str | None) -> str | None:
    """``https://sqs.<region>.amazonaws.com/<account>/<name>`` → the account, if it is one."""
    if not url:
        return None
    parts = urlsplit(url).path.strip("/").split("/")
    return parts[0] if len(parts) == 2 and parts[0].isdigit() and len(parts[0]) == 12 else None


def check_account(account: str) -> str:
    if not (account.isdigit() and len(account) == 12):
        raise ConfigError(f"AWS_ACCOUNT_ID={account!r} is invalid: must be a 12-digit AWS account id")
    return account


def grants(component: Component, aws: AwsSettings) -> tuple[Grant, ...]:
    chosen = {"consumer": _CONSUMER, "bridge": _BRIDGE, "cleanup": _CLEANUP,
              "uploader": _UPLOADER, "scaler": _SCALER}.get(component) or _provisioning(aws)
    return tuple(g for g in chosen if g.resource != "kms" or aws.kms_key_id)


def policy_document(component: Component, aws: AwsSettings, arns: Arns) -> dict[str, Any]:
    """The IAM policy document (JSON-ready) of one component."""
    statements = [_statement(component, grant, arns) for grant in grants(component, aws)]
    return {"Version": "2012-10-17", "Statement": statements}


def policy_documents(aws: AwsSettings, arns: Arns,
                     components: Iterable[Component] = COMPONENTS) -> dict[str, dict[str, Any]]:
    return {name: policy_document(name, aws, arns) for name in components}


def _statement(component: Component, grant: Grant, arns: Arns) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": _sid(component, grant.resource), "Effect": "Allow",
        "Action": list(grant.actions), "Resource": arns.resources(grant.resource),
    }
    if grant.resource == "kms":
        condition = arns.kms_statement_parts()[1]
        # Only through S3 in this region: the key cannot be used directly with these rights.
        statement["Condition"] = {
            **(condition or {}),
            "StringEquals": {"kms:ViaService": f"s3.{arns.region}.amazonaws.com"},
        }
    return statement


def _sid(component: str, resource: str) -> str:
    return "".join(part.capitalize() for part in (component, resource))


def resolve_arns(aws: AwsSettings, sqs: SqsSettings, account: str | None = None) -> Arns:
    """The configured resources' ARNs. The account is ``account`` (``AWS_ACCOUNT_ID``), else
    the one in ``SQS_QUEUE_URL``, else the one in the queue's ``QueueArn`` as SQS reports it
    (one GetQueueUrl and one GetQueueAttributes with the caller's credentials)."""
    account = account or account_from_queue_url(str(sqs.queue_url) if sqs.queue_url else None)
    if account:
        return Arns.from_settings(aws, sqs, account=check_account(account))
    from s3convex.infra.aws import aws_call, make_clients

    _, sqs_client = make_clients(aws)
    url = aws_call(sqs_client.get_queue_url, QueueName=sqs.queue_name)["QueueUrl"]
    arn = aws_call(sqs_client.get_queue_attributes, QueueUrl=url,
                   AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    _, partition, _, _, found, _ = arn.split(":", 5)  # arn:aws:sqs:<region>:<account>:<name>
    return Arns.from_settings(aws, sqs, account=found, partition=partition)
