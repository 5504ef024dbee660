"""Make the S3 → SQS wiring exist, check it, take it down — idempotently.

Four resources, always handled in this order because each needs the one before::

    bucket → DLQ → queue (redrive to the DLQ, policy naming the bucket) → bucket notification

and, when configured, two settings of the bucket: our CORS rule (``S3_CORS_ALLOWED_ORIGINS``;
others' rules are kept) and default SSE-KMS encryption (``S3_KMS_KEY_ID``).

Each resource has one *check* that reads what exists and returns a :class:`Step` (plain data:
``none``/``create``/``update`` plus the differences) and, when something differs, the *fix*
that makes it right. ``status`` runs the checks only; ``up`` runs check → fix one resource at
a time, so every check sees what the fixes before it created and only differences are ever
written: a second ``up`` finds nothing to do. Entries of others (notification configurations,
queue policy statements) are kept; ours are found by fixed ids (see :mod:`infra.desired`).

botocore errors are mapped here, at the boundary: throttling, 5xx and network failures become
:class:`~consumer.errors.StorageUnavailable`, everything else :class:`~consumer.errors.StorageError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from consumer.aws import map_aws_error
from consumer.config import Settings
from consumer.errors import StorageError, StorageUnavailable
from infra.desired import (
    CORS_RULE_ID,
    NOTIFICATION_ID,
    Desired,
    find_statement,
    merge_statement,
    normalize_cors_rule,
    normalize_encryption_rule,
    normalize_notification,
    normalize_statement,
    sibling_queue_arn,
)

Action = Literal["none", "create", "update", "delete"]
Fix = Callable[[], None]
# "Not there" answers; every other error is mapped to the error tree.
_MISSING_CODES = {
    "404",
    "NoSuchBucket",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "NoSuchCORSConfiguration",
    "ServerSideEncryptionConfigurationNotFoundError",
}
# SQS refuses to re-create a queue for 60 s after it was deleted: worth retrying, for `up`.
_RETRY_LATER_CODES = {"AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently"}
_NOTIFICATION_KINDS = (
    "QueueConfigurations",
    "TopicConfigurations",
    "LambdaFunctionConfigurations",
    "EventBridgeConfiguration",
)
UNKNOWN_ARN = "<known once the queue exists>"


# --- Plain data returned to the CLI and to tests -----------------------------------------------


@dataclass(frozen=True)
class Difference:
    field: str
    current: Any
    desired: Any


@dataclass(frozen=True)
class Step:
    """One resource: what has to happen to it (``none`` when it is as desired)."""

    resource: Literal["bucket", "dlq", "queue", "notification", "cors", "encryption"]
    name: str
    action: Action
    differences: tuple[Difference, ...] = ()

    @property
    def state(self) -> Literal["present", "missing", "different", "removed"]:
        return {"none": "present", "create": "missing", "update": "different"}.get(
            self.action, "removed"
        )  # type: ignore[return-value]


@dataclass(frozen=True)
class Plan:
    """What exists compared with what is desired, one step per resource."""

    steps: tuple[Step, ...]

    @property
    def changes(self) -> tuple[Step, ...]:
        return tuple(step for step in self.steps if step.action != "none")

    @property
    def up_to_date(self) -> bool:
        return not self.changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "up_to_date": self.up_to_date,
            "steps": [{**asdict(step), "state": step.state} for step in self.steps],
        }


@dataclass(frozen=True)
class UpReport:
    """The plan ``up`` found (each step checked just before it was applied)."""

    plan: Plan

    @property
    def changed(self) -> bool:
        return not self.plan.up_to_date

    def to_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, **self.plan.to_dict()}


@dataclass(frozen=True)
class DownReport:
    removed: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return bool(self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "removed": [asdict(step) for step in self.removed]}


# --- Clients and error mapping -----------------------------------------------------------------


def make_clients(settings: Settings) -> tuple[Any, Any]:
    """S3 and SQS clients for the settings' endpoint and region, standard credential chain."""
    options: dict[str, Any] = {
        "retries": {"mode": "standard", "max_attempts": 5},
        "connect_timeout": 5,
        "read_timeout": 30,
    }
    if settings.endpoint_url:
        # Custom endpoints (emulators, MinIO-likes, VPC endpoints by IP) rarely resolve
        # bucket-name subdomains; path-style addressing works everywhere.
        options["s3"] = {"addressing_style": "path"}
    session = boto3.session.Session(region_name=settings.aws_region)
    config = Config(**options)
    return (
        session.client("s3", endpoint_url=settings.endpoint_url, config=config),
        session.client("sqs", endpoint_url=settings.endpoint_url, config=config),
    )


class _Missing(StorageError):
    """The bucket or queue asked about does not exist (callers that expect this catch it)."""


def aws_call(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call one botocore operation, mapping its errors into the project's error tree.

    AWS's answers are classified as the daemon's are (:func:`consumer.aws.map_aws_error`); the
    message keeps AWS's own explanation, which is what a person running ``infra up`` must read.
    """
    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = f"{exc.operation_name}: {code}: {error.get('Message', '')}".rstrip(": ")
        if code in _MISSING_CODES or error.get("QueryErrorCode") in _MISSING_CODES:
            raise _Missing(message) from exc
        if code in _RETRY_LATER_CODES:
            raise StorageUnavailable(message) from exc
        raise type(map_aws_error(exc, exc.operation_name))(message) from exc
    except (BotoConnectionError, HTTPClientError) as exc:  # refused, reset, timed out
        raise StorageUnavailable(f"cannot reach AWS: {exc}") from exc
    except BotoCoreError as exc:  # no credentials, no region, invalid parameters...
        raise StorageError(f"{type(exc).__name__}: {exc}") from exc


def aws_pages(client: Any, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """The pages of a paginated operation, each fetch mapped like :func:`aws_call`."""
    pages = iter(client.get_paginator(operation).paginate(**kwargs))
    while (page := aws_call(next, pages, None)) is not None:
        yield page


# --- The provisioner ---------------------------------------------------------------------------


class Provisioner:
    """Checks and fixes the four resources of :class:`Desired` through boto3 clients."""

    def __init__(self, s3: Any, sqs: Any, desired: Desired) -> None:
        self.s3 = s3
        self.sqs = sqs
        self.desired = desired

    @classmethod
    def from_settings(cls, settings: Settings) -> Provisioner:
        return cls(*make_clients(settings), Desired.from_settings(settings))

    def status(self) -> Plan:
        return Plan(tuple(check()[0] for check in self._checks()))

    def up(self) -> UpReport:
        steps = []
        for check in self._checks():
            step, fix = check()
            if fix is not None:
                fix()
            steps.append(step)
        return UpReport(Plan(tuple(steps)))

    def down(self, *, delete_bucket: bool = False, force: bool = False) -> DownReport:
        """Remove our notification entry and both queues; the bucket only if asked to.

        A non-empty bucket is refused before anything is removed, unless ``force`` (which
        deletes every object version, delete marker and unfinished multipart upload).
        """
        bucket_exists = self._bucket_exists()
        if delete_bucket and bucket_exists and not force and not self._bucket_empty():
            raise StorageError(
                f"bucket {self.desired.bucket} is not empty; pass --force to delete its objects"
            )
        removed: list[Step] = []
        if bucket_exists and self._remove_notification():
            removed.append(Step("notification", NOTIFICATION_ID, "delete"))
        for resource, name, url in (
            ("queue", self.desired.queue_name, self.desired.queue_url),
            ("dlq", self.desired.dlq_name, None),
        ):
            queue_url = self._queue_url(name, url)
            if queue_url is not None:
                try:
                    aws_call(self.sqs.delete_queue, QueueUrl=queue_url)
                except _Missing:
                    continue  # deleted meanwhile: the goal is reached all the same
                removed.append(Step(resource, name, "delete"))  # type: ignore[arg-type]
        if delete_bucket and bucket_exists:
            if force:
                self._empty_bucket()
            aws_call(self.s3.delete_bucket, Bucket=self.desired.bucket)
            removed.append(Step("bucket", self.desired.bucket, "delete"))
        return DownReport(tuple(removed))

    # --- checks: (step, fix or None) ---

    def _checks(self) -> tuple[Callable[[], tuple[Step, Fix | None]], ...]:
        checks = [self._check_bucket, self._check_dlq, self._check_queue, self._check_notification]
        if self.desired.cors_origins:
            checks.append(self._check_cors)
        if self.desired.kms_key_id:
            checks.append(self._check_encryption)
        return tuple(checks)

    def _check_bucket(self) -> tuple[Step, Fix | None]:
        bucket = self.desired.bucket
        if self._bucket_exists():
            return Step("bucket", bucket, "none"), None
        return Step("bucket", bucket, "create"), self._create_bucket

    def _check_dlq(self) -> tuple[Step, Fix | None]:
        name, desired = self.desired.dlq_name, self.desired.dlq_attributes()
        url = self._queue_url(name)
        if url is None:
            return Step("dlq", name, "create"), lambda: self._create_queue(name, desired)
        current = self._attributes(url)
        differences = _attribute_differences(current, desired)
        if not differences:
            return Step("dlq", name, "none"), None
        changed = {d.field: desired[d.field] for d in differences}
        return Step("dlq", name, "update", differences), lambda: self._set(url, changed, current)

    def _check_queue(self) -> tuple[Step, Fix | None]:
        name = self.desired.queue_name
        url = self._queue_url(name, self.desired.queue_url)
        if url is None:
            return Step("queue", name, "create"), self._create_main_queue
        current = self._attributes(url)
        queue_arn = current["QueueArn"]
        # With the DLQ gone (status only: up re-creates it first) its ARN is still predictable.
        dlq_arn = self._queue_arn(self.desired.dlq_name) or sibling_queue_arn(
            queue_arn, self.desired.dlq_name
        )
        desired = self.desired.queue_attributes(dlq_arn=dlq_arn)
        differences = _attribute_differences(current, desired)
        statement = self.desired.queue_statement(queue_arn)
        current_statement = find_statement(current.get("Policy"))
        if normalize_statement(current_statement) != normalize_statement(statement):
            differences.append(Difference("Policy", current_statement, statement))
            desired["Policy"] = merge_statement(current.get("Policy"), statement)
        if not differences:
            return Step("queue", name, "none"), None
        changed = {d.field: desired[d.field] for d in differences}
        fix = lambda: self._set(url, changed, current)  # noqa: E731
        return Step("queue", name, "update", tuple(differences)), fix

    def _check_notification(self) -> tuple[Step, Fix | None]:
        if not self._bucket_exists():  # status only: up has created the bucket by now
            return Step("notification", NOTIFICATION_ID, "create"), None
        config = self._notification_config()
        queues = config.get("QueueConfigurations", [])
        others = [c for c in queues if c.get("Id") != NOTIFICATION_ID]
        ours = next((c for c in queues if c.get("Id") == NOTIFICATION_ID), None)
        queue_arn = self._queue_arn(self.desired.queue_name, self.desired.queue_url)
        if queue_arn is None:  # status only: predict it from the DLQ's, if that exists
            dlq_arn = self._queue_arn(self.desired.dlq_name)
            queue_arn = sibling_queue_arn(dlq_arn, self.desired.queue_name) if dlq_arn else None
        desired = self.desired.notification(queue_arn or UNKNOWN_ARN)

        def fix() -> None:
            entry = self.desired.notification(self._require_queue_arn())
            new_config = {k: v for k, v in config.items() if k in _NOTIFICATION_KINDS}
            new_config["QueueConfigurations"] = [*others, entry]
            self._put_notification_config(new_config)

        if ours is None:
            return Step("notification", NOTIFICATION_ID, "create"), fix
        if normalize_notification(ours) == normalize_notification(desired):
            return Step("notification", NOTIFICATION_ID, "none"), None
        differences = tuple(
            Difference(key, value, normalize_notification(desired)[key])
            for key, value in normalize_notification(ours).items()
            if value != normalize_notification(desired)[key]
        )
        return Step("notification", NOTIFICATION_ID, "update", differences), fix

    def _check_cors(self) -> tuple[Step, Fix | None]:
        desired = self.desired.cors_rule()
        if not self._bucket_exists():  # status only: up has created the bucket by now
            return Step("cors", CORS_RULE_ID, "create"), None
        try:
            rules = aws_call(self.s3.get_bucket_cors, Bucket=self.desired.bucket)["CORSRules"]
        except _Missing:
            rules = []
        others = [rule for rule in rules if rule.get("ID") != CORS_RULE_ID]
        ours = next((rule for rule in rules if rule.get("ID") == CORS_RULE_ID), None)

        def fix() -> None:
            aws_call(self.s3.put_bucket_cors, Bucket=self.desired.bucket,
                     CORSConfiguration={"CORSRules": [*others, desired]})

        if ours is None:
            return Step("cors", CORS_RULE_ID, "create"), fix
        current, wanted = normalize_cors_rule(ours), normalize_cors_rule(desired)
        if current == wanted:
            return Step("cors", CORS_RULE_ID, "none"), None
        differences = tuple(Difference(k, v, wanted[k]) for k, v in current.items() if v != wanted[k])
        return Step("cors", CORS_RULE_ID, "update", differences), fix

    def _check_encryption(self) -> tuple[Step, Fix | None]:
        desired = self.desired.encryption_rule()
        if not self._bucket_exists():  # status only
            return Step("encryption", "sse-kms", "create"), None
        try:
            answer = aws_call(self.s3.get_bucket_encryption, Bucket=self.desired.bucket)
            rules = answer["ServerSideEncryptionConfiguration"]["Rules"]
        except _Missing:
            rules = []

        def fix() -> None:
            aws_call(self.s3.put_bucket_encryption, Bucket=self.desired.bucket,
                     ServerSideEncryptionConfiguration={"Rules": [desired]})

        current = normalize_encryption_rule(rules[0]) if rules else None
        wanted = normalize_encryption_rule(desired)
        if current == wanted:
            return Step("encryption", "sse-kms", "none"), None
        action: Action = "create" if current is None else "update"
        return Step("encryption", "sse-kms", action, (Difference("Rule", current, wanted),)), fix

    # --- reading ---

    def _bucket_exists(self) -> bool:
        try:
            aws_call(self.s3.head_bucket, Bucket=self.desired.bucket)
        except _Missing:
            return False
        except StorageError as exc:
            raise StorageError(
                f"bucket {self.desired.bucket} exists but is not accessible to these "
                f"credentials (S3 bucket names are global: another account may own it): {exc}"
            ) from exc
        return True

    def _bucket_empty(self) -> bool:
        answer = aws_call(self.s3.list_object_versions, Bucket=self.desired.bucket, MaxKeys=1)
        return not (answer.get("Versions") or answer.get("DeleteMarkers"))

    def _queue_url(self, name: str, url: str | None = None) -> str | None:
        if url is not None:  # SQS_QUEUE_URL: ask about exactly that queue
            try:
                aws_call(self.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"])
            except _Missing:
                return None
            return url
        try:
            return aws_call(self.sqs.get_queue_url, QueueName=name)["QueueUrl"]
        except _Missing:
            return None

    def _attributes(self, url: str) -> dict[str, str]:
        answer = aws_call(self.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
        return answer.get("Attributes", {})

    def _queue_arn(self, name: str, url: str | None = None) -> str | None:
        queue_url = self._queue_url(name, url)
        if queue_url is None:
            return None
        answer = aws_call(
            self.sqs.get_queue_attributes, QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )
        return answer["Attributes"]["QueueArn"]

    def _require_queue_arn(self) -> str:
        arn = self._queue_arn(self.desired.queue_name, self.desired.queue_url)
        if arn is None:
            raise StorageError(f"queue {self.desired.queue_name} does not exist")
        return arn

    def _notification_config(self) -> dict[str, Any]:
        answer = aws_call(self.s3.get_bucket_notification_configuration, Bucket=self.desired.bucket)
        return {k: v for k, v in answer.items() if k in _NOTIFICATION_KINDS}

    # --- writing ---

    def _set(self, url: str, changed: dict[str, str], current: dict[str, str]) -> None:
        if "Policy" in current and "Policy" not in changed:
            # moto (5.2) drops a queue's policy on any SetQueueAttributes that omits it; AWS
            # changes only what is sent, so re-sending the unchanged policy is a no-op there.
            changed = {**changed, "Policy": current["Policy"]}
        aws_call(self.sqs.set_queue_attributes, QueueUrl=url, Attributes=changed)

    def _create_bucket(self) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.desired.bucket}
        region = self.s3.meta.region_name
        if region and region != "us-east-1":  # us-east-1 refuses an explicit LocationConstraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            aws_call(self.s3.create_bucket, **kwargs)
        except StorageError as exc:
            if not isinstance(exc.__cause__, ClientError):
                raise
            if exc.__cause__.response["Error"].get("Code") != "BucketAlreadyOwnedByYou":
                raise

    def _create_queue(self, name: str, attributes: dict[str, str]) -> str:
        return aws_call(self.sqs.create_queue, QueueName=name, Attributes=attributes)["QueueUrl"]

    def _create_main_queue(self) -> None:
        dlq_arn = self._queue_arn(self.desired.dlq_name)
        url = self._create_queue(
            self.desired.queue_name, self.desired.queue_attributes(dlq_arn=dlq_arn)
        )
        # The policy names the queue's own ARN, which exists only now.
        queue_arn = self._attributes(url)["QueueArn"]
        policy = merge_statement(None, self.desired.queue_statement(queue_arn))
        aws_call(self.sqs.set_queue_attributes, QueueUrl=url, Attributes={"Policy": policy})

    def _put_notification_config(self, config: dict[str, Any]) -> None:
        # S3 sends an s3:TestEvent to every destination when this is written; the daemon
        # recognises and drops it.
        aws_call(
            self.s3.put_bucket_notification_configuration,
            Bucket=self.desired.bucket,
            NotificationConfiguration=config,
        )

    def _remove_notification(self) -> bool:
        config = self._notification_config()
        queues = config.get("QueueConfigurations", [])
        others = [c for c in queues if c.get("Id") != NOTIFICATION_ID]
        if len(others) == len(queues):
            return False
        new_config = {k: v for k, v in config.items() if k != "QueueConfigurations"}
        if others:
            new_config["QueueConfigurations"] = others
        self._put_notification_config(new_config)
        return True

    def _empty_bucket(self) -> None:
        bucket = self.desired.bucket
        for page in aws_pages(self.s3, "list_multipart_uploads", Bucket=bucket):
            for upload in page.get("Uploads", []):
                aws_call(
                    self.s3.abort_multipart_upload,
                    Bucket=bucket,
                    Key=upload["Key"],
                    UploadId=upload["UploadId"],
                )
        for page in aws_pages(self.s3, "list_object_versions", Bucket=bucket):
            objects = [
                {"Key": item["Key"], "VersionId": item["VersionId"]}
                for item in (*page.get("Versions", []), *page.get("DeleteMarkers", []))
            ]
            if objects:  # a page holds at most 1,000 entries, DeleteObjects' limit
                answer = aws_call(
                    self.s3.delete_objects,
                    Bucket=bucket,
                    Delete={"Objects": objects, "Quiet": True},
                )
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    raise StorageError(f"cannot delete {first['Key']}: {first.get('Message')}")


def _attribute_differences(current: dict[str, str], desired: dict[str, str]) -> list[Difference]:
    differences = []
    for name, value in desired.items():
        if name == "RedrivePolicy":
            if _redrive(current.get(name)) != _redrive(value):
                differences.append(Difference(name, _redrive(current.get(name)), _redrive(value)))
        elif current.get(name) != value:
            differences.append(Difference(name, current.get(name), value))
    return differences


def _redrive(policy: str | None) -> dict[str, Any] | None:
    """A redrive policy in a comparable form (SQS may answer maxReceiveCount as a string)."""
    if not policy:
        return None
    parsed = json.loads(policy)
    return {
        "deadLetterTargetArn": parsed.get("deadLetterTargetArn"),
        "maxReceiveCount": int(parsed.get("maxReceiveCount", 0)),
    }
