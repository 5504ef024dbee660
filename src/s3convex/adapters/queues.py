"""Find the notification queue and its DLQ: their URLs and the queue's visibility timeout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s3convex.adapters.aws import map_aws_error
from s3convex.core.errors import StorageError
from s3convex.settings import SqsSettings


@dataclass(frozen=True, slots=True)
class Queues:
    url: str
    dlq_url: str
    visibility_timeout: int


async def resolve_queues(sqs_client: Any, sqs: SqsSettings) -> Queues:
    """The configured queues; a missing queue is a clear error."""

    async def url_of(name: str) -> str:
        try:
            return (await sqs_client.get_queue_url(QueueName=name))["QueueUrl"]
        except Exception as exc:
            error = map_aws_error(exc, f"GetQueueUrl {name}")
            if isinstance(error, StorageError):
                raise StorageError(f"queue {name!r} not found — run `s3convex infra up` first") from exc
            raise error from exc

    queue_url = str(sqs.queue_url) if sqs.queue_url else await url_of(sqs.queue_name)
    dlq_url = await url_of(sqs.dlq_name)
    try:
        attributes = (await sqs_client.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]))["Attributes"]
    except Exception as exc:
        raise map_aws_error(exc, "GetQueueAttributes") from exc
    return Queues(queue_url, dlq_url, int(attributes.get("VisibilityTimeout", sqs.visibility_timeout)))
