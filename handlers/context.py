"""Everything a handler may use, passed in explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field

from s3convex.core.layout import KeyLayout
from s3convex.core.ports import ObjectStore, UrlSource


@dataclass(frozen=True, slots=True)
class HandlerContext:
    store: ObjectStore
    urls: UrlSource
    layout: KeyLayout = field(default_factory=KeyLayout.default)
