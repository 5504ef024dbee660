"""The two queues: the DLQ, then the main queue with its redrive to the DLQ and its policy.

The DLQ comes first because the main queue's ``RedrivePolicy`` names its ARN; the main queue's
policy statement (found by :data:`~s3convex.infra.desired.POLICY_SID`; others' statements are kept)
names the queue's own ARN and so is written only once the queue exists. Each ``check_*`` reads
the queue's attributes and returns its :class:`~s3convex.infra.plan.Step` with the differences and a fix
that sends only what differs (and the unchanged policy: see :meth:`QueueSteps._set`).
``SQS_QUEUE_URL``, when set, names the main queue exactly.
"""

from __future__ import annotations

import json
from typing import Any

from s3convex.core.errors import StorageError
from s3convex.infra.aws import _Missing, aws_call
from s3convex.infra.desired import (
    Desired,
    find_statement,
    merge_statement,
    normalize_statement,
    sibling_queue_arn,
)
from s3convex.infra.plan import Difference, Fix, Step


class QueueSteps:
    """Checks and fixes of the DLQ and the main queue of :class:`Desired`, through boto3 SQS."""

    def __init__(self, sqs: Any, desired: Desired) -> None:
        self.sqs = sqs
        self.desired = desired

    # --- checks: (step, fix or None) ---

    def check_dlq(self) -> tuple[Step, Fix | None]:
        name, desired = self.desired.dlq_name, self.desired.dlq_attributes()
        url = self.url(name)
        if url is None:
            return Step("dlq", name, "create"), self._create_dlq
        current = self.attributes(url)
        differences = _attribute_differences(current, desired)
        if not differences:
            return Step("dlq", name, "none"), None
        changed = {d.field: desired[d.field] for d in differences}

        def fix() -> None:
            self._set(url, changed, current)

        return Step("dlq", name, "update", tuple(differences)), fix

    def check_queue(self) -> tuple[Step, Fix | None]:
        name = self.desired.queue_name
        url = self.url(name, self.desired.queue_url)
        if url is None:
            return Step("queue", name, "create"), self._create_main_queue
        current = self.attributes(url)
        queue_arn = current["QueueArn"]
        # With the DLQ gone (status only: up re-creates it first) its ARN is still predictable.
        dlq_arn = self.arn(self.desired.dlq_name) or sibling_queue_arn(
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

        def fix() -> None:
            self._set(url, changed, current)

        return Step("queue", name, "update", tuple(differences)), fix

    # --- reading ---

    def url(self, name: str, url: str | None = None) -> str | None:
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

    def attributes(self, url: str) -> dict[str, str]:
        answer = aws_call(self.sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["All"])
        return answer.get("Attributes", {})

    def arn(self, name: str, url: str | None = None) -> str | None:
        queue_url = self.url(name, url)
        if queue_url is None:
            return None
        answer = aws_call(
            self.sqs.get_queue_attributes, QueueUrl=queue_url, AttributeNames=["QueueArn"]
        )
        return answer["Attributes"]["QueueArn"]

    def require_queue_arn(self) -> str:
        arn = self.arn(self.desired.queue_name, self.desired.queue_url)
        if arn is None:
            raise StorageError(f"queue {self.desired.queue_name} does not exist")
        return arn

    # --- writing ---

    def _set(self, url: str, changed: dict[str, str], current: dict[str, str]) -> None:
        if "Policy" in current and "Policy" not in changed:
            # moto (5.2) drops a queue's policy on any SetQueueAttributes that omits it; AWS
            # changes only what is sent, so re-sending the unchanged policy is a no-op there.
            changed = {**changed, "Policy": current["Policy"]}
        aws_call(self.sqs.set_queue_attributes, QueueUrl=url, Attributes=changed)

    def _create_queue(self, name: str, attributes: dict[str, str]) -> str:
        return aws_call(self.sqs.create_queue, QueueName=name, Attributes=attributes)["QueueUrl"]

    def _create_dlq(self) -> None:
        self._create_queue(self.desired.dlq_name, self.desired.dlq_attributes())

    def _create_main_queue(self) -> None:
        dlq_arn = self.arn(self.desired.dlq_name)
        url = self._create_queue(
            self.desired.queue_name, self.desired.queue_attributes(dlq_arn=dlq_arn)
        )
        # The policy names the queue's own ARN, which exists only now.
        queue_arn = self.attributes(url)["QueueArn"]
        policy = merge_statement(None, self.desired.queue_statement(queue_arn))
        aws_call(self.sqs.set_queue_attributes, QueueUrl=url, Attributes={"Policy": policy})


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
