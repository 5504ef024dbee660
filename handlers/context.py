"""Everything a handler may use, passed in explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field

from s3convex.adapters.s3_store import ObjectStore
from s3convex.adapters.urls import UrlSource
from s3convex.core.layout import KeyLayout


@dataclass(frozen=True, slots=True)
class HandlerContext:
    store: ObjectStore
    urls: UrlSource
    layout: KeyLayout = field(default_factory=KeyLayout.default)
