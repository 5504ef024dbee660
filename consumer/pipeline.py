"""One message's whole path: decode → dispatch → apply → ack. The daemon runs one per message."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from s3convex.consumer.ack import Acknowledger
from s3convex.consumer.apply import ApplyResult
from s3convex.consumer.batching import MicroBatcher
from s3convex.consumer.decode import Decoder
from s3convex.consumer.dispatch import Dispatcher
from s3convex.consumer.inflight import InFlightMessage
from s3convex.consumer.logs import log_context
from s3convex.consumer.retry import RetryPolicy, decide
from s3convex.core.asset import AssetChange
from s3convex.core.errors import PermanentError

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    decoder: Decoder
    dispatcher: Dispatcher
    changes: MicroBatcher[AssetChange, ApplyResult]
    acknowledger: Acknowledger
    retry_policy: RetryPolicy

    async def process(self, message: InFlightMessage) -> None:
        with log_context(message_id=message.message_id):
            try:
                await self._apply(message)
            except asyncio.CancelledError:
                raise  # shutdown: the daemon releases whatever is still in flight
            except Exception as exc:
                decision = decide(exc, message.receive_count, self.retry_policy)
                if decision.action == "dead_letter":
                    await self.acknowledger.dead_letter(message, decision.reason)
                else:
                    await self.acknowledger.release(message, decision.delay_seconds, decision.reason)
            else:
                await self.acknowledger.delete(message)

    async def _apply(self, message: InFlightMessage) -> None:
        decoded = self.decoder.decode(message.body)
        if decoded.is_test_event:
            log.info("s3:TestEvent acknowledged")
            return
        changes = await asyncio.gather(*(self.dispatcher.dispatch(e) for e in decoded.events))
        results = await asyncio.gather(*(self.changes.submit(change) for change in changes))
        rejected = [(c, r) for c, r in zip(changes, results, strict=True) if not r.committed]
        if rejected:
            change, result = rejected[0]
            raise PermanentError(f"{change.key}: {result.reason or result.status}")
