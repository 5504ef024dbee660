"""Everything a handler may use, passed in explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from handlers.store import ObjectStore
from handlers.urls import UrlSource


@dataclass(frozen=True, slots=True)
class HandlerContext:
    store: ObjectStore
    urls: UrlSource
