"""The two baselines our daemon is measured against, each run as its own process.

    python bench/_contenders.py floor   # receive 10 → HEAD each concurrently → delete batch
    python bench/_contenders.py floor-botocore   # the same, every HEAD through aiobotocore
    python bench/_contenders.py naive   # receive 1 → decode → HEAD → 1-event mutation → delete 1

Both read the consumer's settings from the environment (``AWS_ENDPOINT_URL``, ``S3_BUCKET``,
``SQS_QUEUE_NAME``, ``CONVEX_URL``, ...) and use the same client stack as the daemon
(aiobotocore through ``s3convex.adapters.aws.open_clients``, ``s3convex.adapters.convex``), so what
differs is only the shape of the loop. They exit once a receive comes back empty and SQS counts
nothing visible, in flight or delayed — the daemon's own drain rule.

The **floor** does only the calls no consumer can avoid — no decoding beyond finding the key,
no Convex — with ``BENCH_FLOOR_POLLERS`` loops (8) side by side. Its HeadObject is the
daemon's own (``s3convex.adapters.s3_store.S3ObjectStore``: signed on aiohttp, ``CONSUMER_SIGNED_HEAD``),
so the ratio compares the work around the calls, not two HTTP stacks; ``floor-botocore`` sends every HEAD through
aiobotocore, the floor as the stock client would make it. The **naive** consumer does
exactly our daemon's per-event work (the project's decoder, the ObjectCreated handler with its
HeadObject and presigned URL, the same ``assets:applyEvents`` mutation), one event at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any
from urllib.parse import unquote_plus

from s3convex.adapters.aws import open_clients
from s3convex.adapters.convex import ConvexClient
from s3convex.adapters.s3_store import S3ObjectStore
from s3convex.adapters.urls import url_source
from s3convex.consumer.apply import APPLY_EVENTS
from s3convex.consumer.decode import Decoder
from s3convex.handlers.context import HandlerContext
from s3convex.handlers.objects import registry
from s3convex.settings import Settings, load_settings

WAIT_SECONDS = 1  # an empty receive waits this long before the queue counts are checked


async def queue_is_empty(sqs: Any, queue_url: str) -> bool:
    counts = (await sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"]))["Attributes"]
    return all(int(v) == 0 for v in counts.values())


# --- floor ---------------------------------------------------------------------------------


async def floor(settings: Settings, pollers: int, *, signed: bool) -> int:
    done = 0
    async with open_clients(settings.aws, max_pool_connections=11 * pollers + 4) as aws:
        queue_url = (await aws.sqs.get_queue_url(QueueName=settings.sqs.queue_name))["QueueUrl"]
        stop = asyncio.Event()

        store = S3ObjectStore(aws.s3, aws.signed_head if signed else None)

        async def poll() -> None:
            nonlocal done
            while not stop.is_set():
                messages = (await aws.sqs.receive_message(
                    QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=WAIT_SECONDS,
                )).get("Messages", [])
                if not messages:
                    if await queue_is_empty(aws.sqs, queue_url):
                        stop.set()
                    continue
                objects = [
                    (record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"]))
                    for message in messages
                    for record in json.loads(message["Body"]).get("Records", [])
                ]
                await asyncio.gather(*(store.head(b, k) for b, k in objects))
                await aws.sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)])
                done += len(objects)

        await asyncio.gather(*(poll() for _ in range(pollers)))
    return done


# --- naive ---------------------------------------------------------------------------------


async def naive(settings: Settings) -> int:
    done = 0
    decoder = Decoder([settings.aws.bucket])
    async with (
        open_clients(settings.aws) as aws,
        ConvexClient.from_settings(settings.convex) as convex,
    ):
        queue_url = (await aws.sqs.get_queue_url(QueueName=settings.sqs.queue_name))["QueueUrl"]
        context = HandlerContext(S3ObjectStore(aws.s3, aws.signed_head), url_source(settings.urls, aws))
        while True:
            messages = (await aws.sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=WAIT_SECONDS,
            )).get("Messages", [])
            if not messages:
                if await queue_is_empty(aws.sqs, queue_url):
                    return done
                continue
            message = messages[0]
            for event in decoder.decode(message["Body"]).events:
                change = await registry.resolve(event)(event, context)
                result = await convex.mutation(APPLY_EVENTS, {"events": [change.to_convex()]})
                if result[0]["status"] == "error":
                    raise RuntimeError(f"{change.key}: {result[0]}")
                done += 1
            await aws.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ("floor", "floor-botocore", "naive"):
        print("usage: _contenders.py floor|floor-botocore|naive", file=sys.stderr)
        return 2
    settings = load_settings()
    if argv[0] != "naive":
        done = asyncio.run(floor(settings, int(os.environ.get("BENCH_FLOOR_POLLERS", "8")),
                                 signed=argv[0] == "floor"))
    else:
        done = asyncio.run(naive(settings))
    print(json.dumps({"events": done}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
