"""Make the S3 → SQS wiring exist, check it, take it down — idempotently.

Four resources, always handled in this order because each needs the one before::

    bucket → DLQ → queue (redrive to the DLQ, policy naming the bucket) → bucket notification

and, when configured, two settings of the bucket: our CORS rule (``S3_CORS_ALLOWED_ORIGINS``;
others' rules are kept) and default SSE-KMS encryption (``S3_KMS_KEY_ID``).

Each resource has one *check* that reads what exists and returns a :class:`~s3convex.infra.plan.Step`
(plain data: ``none``/``create``/``update`` plus the differences) and, when something differs,
the *fix* that makes it right. ``status`` runs the checks only; ``up`` runs check → fix one
resource at a time, so every check sees what the fixes before it created and only differences
are ever written: a second ``up`` finds nothing to do. Entries of others (notification
configurations, queue policy statements) are kept; ours are found by fixed ids (see
:mod:`s3convex.infra.desired`). :class:`Provisioner` only orders the work: the checks and fixes are in
:mod:`s3convex.infra.buckets`, :mod:`s3convex.infra.queues` and :mod:`s3convex.infra.notification`, the clients and
:func:`~s3convex.infra.aws.aws_call` (botocore's errors through the project's one table) in
:mod:`s3convex.infra.aws`, the reports in :mod:`s3convex.infra.plan`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from s3convex.core.errors import NotFound, StorageError
from s3convex.infra.aws import aws_call, make_clients
from s3convex.infra.buckets import BucketSteps
from s3convex.infra.desired import NOTIFICATION_ID, Desired, InfraSettings
from s3convex.infra.lifecycle import LifecycleSteps
from s3convex.infra.notification import NotificationSteps
from s3convex.infra.plan import DownReport, Fix, Plan, Resource, Step, UpReport
from s3convex.infra.queues import QueueSteps


class Provisioner:
    """Checks and fixes the four resources of :class:`Desired` through boto3 clients."""

    def __init__(self, s3: Any, sqs: Any, desired: Desired) -> None:
        self.s3 = s3
        self.sqs = sqs
        self.desired = desired
        self._bucket = BucketSteps(s3, desired)
        self._queues = QueueSteps(sqs, desired)
        self._notification = NotificationSteps(s3, desired, self._bucket, self._queues)
        self._lifecycle = LifecycleSteps(s3, desired, self._bucket.exists)

    @classmethod
    def from_settings(cls, settings: InfraSettings) -> Provisioner:
        return cls(*make_clients(settings.aws), Desired.from_settings(settings.aws, settings.sqs))

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
        bucket_exists = self._bucket.exists()
        if delete_bucket and bucket_exists and not force and not self._bucket.is_empty():
            raise StorageError(
                f"bucket {self.desired.bucket} is not empty; pass --force to delete its objects"
            )
        removed: list[Step] = []
        if bucket_exists and self._notification.remove():
            removed.append(Step("notification", NOTIFICATION_ID, "delete"))
        queues: tuple[tuple[Resource, str, str | None], ...] = (
            ("queue", self.desired.queue_name, self.desired.queue_url),
            ("dlq", self.desired.dlq_name, None),
        )
        for resource, name, url in queues:
            queue_url = self._queues.url(name, url)
            if queue_url is not None:
                try:
                    aws_call(self.sqs.delete_queue, QueueUrl=queue_url)
                except NotFound:
                    continue  # deleted meanwhile: the goal is reached all the same
                removed.append(Step(resource, name, "delete"))
        if delete_bucket and bucket_exists:
            if force:
                self._bucket.empty()
            aws_call(self.s3.delete_bucket, Bucket=self.desired.bucket)
            removed.append(Step("bucket", self.desired.bucket, "delete"))
        return DownReport(tuple(removed))

    def _checks(self) -> tuple[Callable[[], tuple[Step, Fix | None]], ...]:
        checks = [
            self._bucket.check_bucket,
            self._queues.check_dlq,
            self._queues.check_queue,
            self._notification.check,
        ]
        if self.desired.cors_origins:
            checks.append(self._bucket.check_cors)
        if self.desired.kms_key_id:
            checks.append(self._bucket.check_encryption)
        if self.desired.abort_multipart_days or self.desired.noncurrent_version_days:
            checks.append(self._lifecycle.check)  # infra/lifecycle.py
        return tuple(checks)
