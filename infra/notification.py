"""The bucket notification: our queue entry in the bucket's notification configuration.

A bucket has one notification configuration, shared with whoever else configured it: ours is
the queue entry found by :data:`~s3convex.infra.desired.NOTIFICATION_ID`, and every other entry (queue,
topic, Lambda, EventBridge) is written back unchanged. It comes last because it names the main
queue's ARN and S3 checks that the queue's policy lets the bucket send to it; while the queue
is missing (``status`` only) the ARN is predicted from the DLQ's. ``remove`` takes only our
entry out (``down``).
"""

from __future__ import annotations

from typing import Any

from s3convex.infra.aws import aws_call
from s3convex.infra.buckets import BucketSteps
from s3convex.infra.desired import (
    NOTIFICATION_ID,
    Desired,
    normalize_notification,
    sibling_queue_arn,
)
from s3convex.infra.plan import Difference, Fix, Step
from s3convex.infra.queues import QueueSteps

_NOTIFICATION_KINDS = (
    "QueueConfigurations",
    "TopicConfigurations",
    "LambdaFunctionConfigurations",
    "EventBridgeConfiguration",
)
UNKNOWN_ARN = "<known once the queue exists>"


class NotificationSteps:
    """Check, fix and remove our entry of the bucket's notification configuration."""

    def __init__(self, s3: Any, desired: Desired, bucket: BucketSteps, queues: QueueSteps) -> None:
        self.s3 = s3
        self.desired = desired
        self._bucket = bucket
        self._queues = queues

    def check(self) -> tuple[Step, Fix | None]:
        if not self._bucket.exists():  # status only: up has created the bucket by now
            return Step("notification", NOTIFICATION_ID, "create"), None
        config = self._config()
        queues = config.get("QueueConfigurations", [])
        others = [c for c in queues if c.get("Id") != NOTIFICATION_ID]
        ours = next((c for c in queues if c.get("Id") == NOTIFICATION_ID), None)
        queue_arn = self._queues.arn(self.desired.queue_name, self.desired.queue_url)
        if queue_arn is None:  # status only: predict it from the DLQ's, if that exists
            dlq_arn = self._queues.arn(self.desired.dlq_name)
            queue_arn = sibling_queue_arn(dlq_arn, self.desired.queue_name) if dlq_arn else None
        desired = self.desired.notification(queue_arn or UNKNOWN_ARN)

        def fix() -> None:
            entry = self.desired.notification(self._queues.require_queue_arn())
            new_config = {k: v for k, v in config.items() if k in _NOTIFICATION_KINDS}
            new_config["QueueConfigurations"] = [*others, entry]
            self._put(new_config)

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

    def remove(self) -> bool:
        config = self._config()
        queues = config.get("QueueConfigurations", [])
        others = [c for c in queues if c.get("Id") != NOTIFICATION_ID]
        if len(others) == len(queues):
            return False
        new_config = {k: v for k, v in config.items() if k != "QueueConfigurations"}
        if others:
            new_config["QueueConfigurations"] = others
        self._put(new_config)
        return True

    def _config(self) -> dict[str, Any]:
        answer = aws_call(self.s3.get_bucket_notification_configuration, Bucket=self.desired.bucket)
        return {k: v for k, v in answer.items() if k in _NOTIFICATION_KINDS}

    def _put(self, config: dict[str, Any]) -> None:
        # S3 sends an s3:TestEvent to every destination when this is written; the daemon
        # recognises and drops it.
        aws_call(
            self.s3.put_bucket_notification_configuration,
            Bucket=self.desired.bucket,
            NotificationConfiguration=config,
        )
