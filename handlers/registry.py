"""An explicit handler registry keyed by event-name pattern and, optionally, key pattern."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

from s3convex.core.errors import PoisonMessage
from s3convex.core.events import ObjectEvent

if TYPE_CHECKING:
    from s3convex.core.asset import AssetChange
    from s3convex.handlers.context import HandlerContext

Handler = Callable[[ObjectEvent, "HandlerContext"], Awaitable["AssetChange"]]


@dataclass(frozen=True, slots=True)
class _Route:
    event_pattern: str
    key_pattern: str
    handler: Handler


class HandlerRegistry:
    """``@registry.on("ObjectCreated:*")`` registers; :meth:`resolve` finds the first match.

    Routes are tried in registration order, so register specific key patterns before the
    catch-all. An event no route matches is poison: the daemon does not guess.
    """

    def __init__(self) -> None:
        self._routes: list[_Route] = []

    def on(self, event_pattern: str, *, key: str = "*") -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self._routes.append(_Route(event_pattern, key, handler))
            return handler

        return register

    def resolve(self, event: ObjectEvent) -> Handler:
        for route in self._routes:
            if fnmatchcase(event.event_name, route.event_pattern) and fnmatchcase(
                event.key, route.key_pattern
            ):
                return route.handler
        raise PoisonMessage(f"no handler for event {event.event_name!r}")
