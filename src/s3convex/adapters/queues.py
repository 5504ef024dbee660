"""Find the notification queue and its DLQ: their URLs and the queue's visibility timeout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s3convex.core.errors import Forbidden, NotFound
from s3convex.settings import SqsSettings


@dataclass(frozen=True, slots=True)
class Queues:
    url: str
    dlq_url: str
    visibility_timeout: int


async def resolve_queues(sqs_client: Any, sqs: SqsSettings) -> Queues:
    """The configured queues, through a client of :func:`~s3convex.adapters.aws.open_clients`.

    What SQS answered is raised as it said it (operation, code, status, its message), with a
    hint for the two answers a person can act on: the queue does not exist (provision it) or
    these credentials may not ask (the IAM policy).
    """

    async def url_of(name: str) -> str:
        try:
            return (await sqs_client.get_queue_url(QueueName=name))["QueueUrl"]
        except NotFound as exc:
            exc.with_hint("run `s3convex infra up` to create it")
            raise
        except Forbidden as exc:
            exc.with_hint("access denied to these credentials: their IAM policy (or the "
                          "queue's policy) must allow sqs:GetQueueUrl on it")
            raise

    queue_url = str(sqs.queue_url) if sqs.queue_url else await url_of(sqs.queue_name)
    dlq_url = await url_of(sqs.dlq_name)
    attributes = (await sqs_client.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]))["Attributes"]
    return Queues(queue_url, dlq_url, int(attributes.get("VisibilityTimeout", sqs.visibility_timeout)))
