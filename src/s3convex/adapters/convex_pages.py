"""Page through a paginated Convex query: ``async for page in convex_pages(convex, path, args)``.

Convex's paginated queries take ``paginationOpts: {numItems, cursor}`` and answer
``{page, isDone, continueCursor}``; the first call has cursor ``null``, each next one the
``continueCursor`` of the last. The next page is asked for only when the caller wants it, so
what the caller does with a page (``urls:store`` writes back the rows it read) happens before
the next query.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class Queries(Protocol):
    """What paging needs of :class:`~s3convex.adapters.convex.ConvexClient`."""

    async def query(self, path: str, args: Mapping[str, Any] | None = None) -> Any: ...


@dataclass(frozen=True, slots=True)
class ConvexPage:
    items: list[dict[str, Any]]
    is_done: bool  # the last page: nothing follows it
    cursor: str | None  # where the next page starts (``continueCursor``)


async def convex_pages(convex: Queries, path: str, args: Mapping[str, Any], *,
                       page_size: int, cursor: str | None = None) -> AsyncIterator[ConvexPage]:
    """The pages of query ``path`` with ``args``, ``page_size`` items at most each, from
    ``cursor`` (None: the start) to the last page."""
    while True:
        answer = await convex.query(path, {**args, "paginationOpts": {"numItems": page_size,
                                                                      "cursor": cursor}})
        page = ConvexPage(answer["page"], bool(answer["isDone"]), answer.get("continueCursor"))
        yield page
        if page.is_done:
            return
        cursor = page.cursor
