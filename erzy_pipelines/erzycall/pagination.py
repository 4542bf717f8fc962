"""A small cursor paginator: fixed filters and limit, stop on hasMore false, dedupe by id."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import UnexpectedResponseError
from .models import Page

T = TypeVar("T")


class CursorPaginator(Generic[T]):
    """Walks a cursor-paginated endpoint.

    ``fetch(params)`` performs one request and returns its parsed ``Page``. ``params`` (filters
    and ``limit``) are frozen at construction so a scan cannot change them midway; only
    ``cursor`` is added. The scan ends on ``hasMore == false`` — a cursor may be present on the
    last page — and a page that claims more but gives no new cursor is an error rather than a
    silent truncation or an endless loop.
    """

    def __init__(
        self,
        fetch: Callable[[dict[str, Any]], Page[T]],
        params: Mapping[str, Any],
        *,
        key: Callable[[T], str],
    ) -> None:
        self._fetch = fetch
        self._params = {k: v for k, v in params.items() if v is not None}
        self._key = key

    def pages(self) -> Iterator[Page[T]]:
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            params = dict(self._params)
            if cursor is not None:
                params["cursor"] = cursor
            page = self._fetch(params)
            yield page
            if not page.has_more:
                return
            if page.cursor is None or page.cursor in seen_cursors:
                raise UnexpectedResponseError(
                    "pagination says hasMore but gave no new cursor; refusing to loop"
                )
            seen_cursors.add(page.cursor)
            cursor = page.cursor

    def items(self) -> Iterator[T]:
        """Every item once, in server order (an item repeated across pages is dropped)."""
        seen: set[str] = set()
        for page in self.pages():
            for item in page.items:
                key = self._key(item)
                if key not in seen:
                    seen.add(key)
                    yield item
