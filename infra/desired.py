"""What the S3 → SQS wiring should look like, as plain data derived from the settings.

Nothing here talks to AWS: :class:`Desired` holds names and numbers and turns them (plus the
ARNs only AWS can tell) into the exact queue attributes, policy statement and notification
entry that :mod:`s3convex.infra.provision` compares with what exists and writes; the helpers below
merge ours into what others configured and normalise both sides for the comparison.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from s3convex.settings import AwsSettings, SqsSettings, load

DAY = 24 * 3600
# SQS's own default retention; stated explicitly so the DLQ's can be checked against it.
SOURCE_RETENTION_SECONDS = 4 * DAY
# The maximum SQS allows. A message moved to the DLQ keeps its original enqueue time, so the DLQ
# must keep messages longer than the source queue or they expire right after being moved.
DLQ_RETENTION_SECONDS = 14 * DAY
LONG_POLL_SECONDS = 20

# Our entries are found again by these fixed identifiers; everything else is left alone.
NOTIFICATION_ID = "s3convex-sync"
POLICY_SID = "s3convex-allow-s3-notifications"
NOTIFICATION_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")
CORS_RULE_ID = "s3convex-read"
# What a browser player needs besides the URL: byte ranges, revalidation, sizes and ETags.
CORS_ALLOWED_HEADERS = ("Range", "If-Match", "If-None-Match", "If-Modified-Since")
CORS_EXPOSE_HEADERS = ("Accept-Ranges", "Content-Length", "Content-Range", "ETag")


@dataclass(frozen=True, slots=True)
class InfraSettings:
    """What provisioning reads: S3 and SQS. Never Convex, so ``infra up`` (and LocalStack's init
    hook) does not demand a deploy key."""

    aws: AwsSettings
    sqs: SqsSettings


def load_infra_settings(**overrides: Any) -> InfraSettings:
    """The S3 and SQS parts of the settings (see :func:`s3convex.settings.load`)."""
    return InfraSettings(load(AwsSettings, **overrides), load(SqsSettings, **overrides))


@dataclass(frozen=True)
class Desired:
    """The resources ``infra up`` makes exist, named by the settings."""

    bucket: str
    queue_name: str
    dlq_name: str
    queue_url: str | None = None  # SQS_QUEUE_URL: an existing queue, found by URL, not by name
    visibility_timeout: int = 60
    max_receive_count: int = 5
    receive_wait_seconds: int = LONG_POLL_SECONDS
    source_retention: int = SOURCE_RETENTION_SECONDS
    dlq_retention: int = DLQ_RETENTION_SECONDS
    prefix: str = ""
    suffix: str = ""
    # Managed only when set: CORS when origins are configured, default SSE-KMS with a key.
    cors_origins: tuple[str, ...] = ()
    cors_methods: tuple[str, ...] = ("GET", "HEAD")
    cors_max_age: int = 3600
    kms_key_id: str | None = None
    # S3 lifecycle rules (infra/lifecycle.py); 0: the rule is not kept (settings default 7, 30).
    abort_multipart_days: int = 0
    noncurrent_version_days: int = 0

    def __post_init__(self) -> None:
        if self.dlq_retention <= self.source_retention:
            raise ValueError("the DLQ must retain messages longer than the source queue")

    @classmethod
    def from_settings(cls, aws: AwsSettings, sqs: SqsSettings) -> Desired:
        queue_url = str(sqs.queue_url).rstrip("/") if sqs.queue_url else None
        return cls(
            bucket=aws.bucket,
            # A configured URL names the queue by its last path segment.
            queue_name=queue_name_from_url(queue_url) if queue_url else sqs.queue_name,
            dlq_name=sqs.dlq_name,
            queue_url=queue_url,
            visibility_timeout=sqs.visibility_timeout,
            max_receive_count=sqs.max_receive_count,
            prefix=aws.notification_prefix,
            suffix=aws.notification_suffix,
            cors_origins=aws.cors_allowed_origins,
            cors_methods=aws.cors_allowed_methods,
            cors_max_age=aws.cors_max_age,
            kms_key_id=aws.kms_key_id,
            abort_multipart_days=aws.abort_multipart_days,
            noncurrent_version_days=aws.noncurrent_version_days,
        )

    def dlq_attributes(self) -> dict[str, str]:
        return {"MessageRetentionPeriod": str(self.dlq_retention)}

    def queue_attributes(self, *, dlq_arn: str | None) -> dict[str, str]:
        """The main queue's attributes; the redrive policy only once the DLQ's ARN is known."""
        attributes = {
            "VisibilityTimeout": str(self.visibility_timeout),
            "ReceiveMessageWaitTimeSeconds": str(self.receive_wait_seconds),
            "MessageRetentionPeriod": str(self.source_retention),
        }
        if dlq_arn:
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": self.max_receive_count}
            )
        return attributes

    def queue_statement(self, queue_arn: str) -> dict[str, Any]:
        """Least privilege: only S3, only SendMessage, only on behalf of our bucket (and account)."""
        condition: dict[str, Any] = {
            "ArnEquals": {"aws:SourceArn": bucket_arn(self.bucket, queue_arn)}
        }
        account = arn_account(queue_arn)
        if account:
            # Bucket names are global and can be re-registered by anyone after we delete ours:
            # pinning the account keeps a stranger's namesake bucket from writing to our queue.
            # (The queue is created with the same credentials as the bucket, so same account.)
            condition["StringEquals"] = {"aws:SourceAccount": account}
        return {
            "Sid": POLICY_SID,
            "Effect": "Allow",
            "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": condition,
        }

    def notification(self, queue_arn: str) -> dict[str, Any]:
        """Our entry of the bucket's ``QueueConfigurations``."""
        entry: dict[str, Any] = {
            "Id": NOTIFICATION_ID,
            "QueueArn": queue_arn,
            "Events": list(NOTIFICATION_EVENTS),
        }
        rules = [
            {"Name": name, "Value": value}
            for name, value in (("prefix", self.prefix), ("suffix", self.suffix))
            if value
        ]
        if rules:
            entry["Filter"] = {"Key": {"FilterRules": rules}}
        return entry


    def cors_rule(self) -> dict[str, Any]:
        """Our rule of the bucket's CORS configuration: reads from the configured origins."""
        return {
            "ID": CORS_RULE_ID,
            "AllowedOrigins": list(self.cors_origins),
            "AllowedMethods": list(self.cors_methods),
            "AllowedHeaders": list(CORS_ALLOWED_HEADERS),
            "ExposeHeaders": list(CORS_EXPOSE_HEADERS),
            "MaxAgeSeconds": self.cors_max_age,
        }

    def encryption_rule(self) -> dict[str, Any]:
        """Default encryption: SSE-KMS with the configured key (a bucket key cuts KMS calls)."""
        return {
            "ApplyServerSideEncryptionByDefault": {
                "SSEAlgorithm": "aws:kms",
                "KMSMasterKeyID": self.kms_key_id,
            },
            "BucketKeyEnabled": True,
        }


def normalize_cors_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """A CORS rule in a comparable form (lists are sets; S3 may omit empty ones)."""
    return {
        **{name: sorted(rule.get(name, [])) for name in (
            "AllowedOrigins", "AllowedMethods", "AllowedHeaders", "ExposeHeaders")},
        "MaxAgeSeconds": int(rule.get("MaxAgeSeconds", 0)),
    }


def normalize_encryption_rule(rule: dict[str, Any]) -> dict[str, Any]:
    default = rule.get("ApplyServerSideEncryptionByDefault", {})
    return {
        "SSEAlgorithm": default.get("SSEAlgorithm"),
        "KMSMasterKeyID": default.get("KMSMasterKeyID"),
        "BucketKeyEnabled": bool(rule.get("BucketKeyEnabled", False)),
    }


# --- ARNs -------------------------------------------------------------------------------------


def arn_account(arn: str) -> str:
    return arn.split(":")[4] if arn.count(":") >= 5 else ""


def sibling_queue_arn(queue_arn: str, name: str) -> str:
    """The ARN a queue called ``name`` has (or will have) next to ``queue_arn``."""
    return f"{queue_arn.rsplit(':', 1)[0]}:{name}"


def bucket_arn(bucket: str, queue_arn: str) -> str:
    """The bucket's ARN in the queue's partition (aws, aws-cn, aws-us-gov)."""
    partition = queue_arn.split(":")[1] if queue_arn.startswith("arn:") else "aws"
    return f"arn:{partition}:s3:::{bucket}"


def queue_name_from_url(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


# --- Merging our entries into what others configured -----------------------------------------


def merge_statement(policy_json: str | None, statement: dict[str, Any]) -> str:
    """The queue policy with our statement in place and every other statement kept."""
    policy: dict[str, Any] = json.loads(policy_json) if policy_json else {"Version": "2012-10-17"}
    others = [s for s in _statements(policy) if s.get("Sid") != POLICY_SID]
    policy["Statement"] = [*others, statement]
    return json.dumps(policy, sort_keys=True)


def find_statement(policy_json: str | None) -> dict[str, Any] | None:
    if not policy_json:
        return None
    return next(
        (s for s in _statements(json.loads(policy_json)) if s.get("Sid") == POLICY_SID), None
    )


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    statements = policy.get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def normalize_notification(entry: dict[str, Any]) -> dict[str, Any]:
    """A queue configuration in a comparable form: S3 capitalises filter names ("Prefix") and
    may reorder events; neither changes what the entry means."""
    rules = entry.get("Filter", {}).get("Key", {}).get("FilterRules", [])
    return {
        "QueueArn": entry.get("QueueArn"),
        "Events": sorted(entry.get("Events", [])),
        "Filter": sorted((rule["Name"].lower(), rule["Value"]) for rule in rules),
    }


def normalize_statement(statement: dict[str, Any] | None) -> Any:
    """A policy statement in a comparable form (a one-element list equals its element)."""
    if statement is None:
        return None

    def norm(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: norm(val) for key, val in sorted(value.items())}
        if isinstance(value, list):
            items = sorted((norm(v) for v in value), key=json.dumps)
            return items[0] if len(items) == 1 else items
        return value

    return norm(statement)
