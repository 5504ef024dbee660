"""Everything a handler may use, passed in explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field

from handlers.layout import KeyLayout
from handlers.store import ObjectStore
from handlers.urls import UrlSource


@dataclass(frozen=True, slots=True)
class HandlerContext:
    store: ObjectStore
    urls: UrlSource
    layout: KeyLayout = field(default_factory=KeyLayout.default)
