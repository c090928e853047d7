"""Cursor pagination as the reference defines it: `limit` 1-100, `next_cursor`, newest first.

A cursor is `cur_` + urlsafe base64 of `{"seq": N}`: the store's insertion
sequence of the last item returned, continued with `before_seq`. It stays
correct while objects are inserted or deleted between pages. Callers must treat
it as opaque; its shape may change.

Filters the store cannot apply in SQL are applied here over pages of the
store, fetching until `limit + 1` matches are found, so `has_more` is exact.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Protocol, TypeVar

from fastapi import Depends, Query

from fibric import errors

CURSOR_PREFIX = "cur_"
DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_SCAN_BATCH = 200  # rows per store read when filtering in Python


class Sequenced(Protocol):
    @property
    def seq(self) -> int: ...


T = TypeVar("T", bound=Sequenced)
Fetch = Callable[[int | None, int], Sequence[T]]  # (before_seq, limit) -> newest first


@dataclass(frozen=True)
class PageParams:
    limit: int
    before_seq: int | None


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_more: bool
    next_cursor: str | None


def encode_cursor(seq: int) -> str:
    raw = json.dumps({"seq": seq}, separators=(",", ":")).encode()
    return CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The `seq` a cursor continues before; SpecInvalid naming `cursor` if it is not ours."""
    bad = errors.SpecInvalid(
        errors.SpecProblem("not a cursor returned by this API (use next_cursor as given)",
                           path="cursor")
    )
    if not cursor.startswith(CURSOR_PREFIX) or len(cursor) > 200:
        raise bad
    body = cursor[len(CURSOR_PREFIX):]
    try:
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    seq = data.get("seq") if isinstance(data, dict) else None
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise bad
    return seq


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size, 1-100.")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(description="next_cursor from the previous page.")
    ] = None,
) -> PageParams:
    # async: a little decoding, no reason to hop to the thread pool
    return PageParams(limit=limit, before_seq=decode_cursor(cursor) if cursor else None)


Params = Annotated[PageParams, Depends(page_params)]


def paginate(
    fetch: Fetch[T], params: PageParams, keep: Callable[[T], bool] | None = None
) -> Page[T]:
    """One page of `fetch`'s items (newest first), optionally filtered by `keep`."""
    want = params.limit + 1
    batch = want if keep is None else max(want, _SCAN_BATCH)
    found: list[T] = []
    before = params.before_seq
    while len(found) < want:
        rows = fetch(before, batch)
        found.extend(r for r in rows if keep is None or keep(r))
        if len(rows) < batch:
            break
        before = rows[-1].seq
    items = found[: params.limit]
    has_more = len(found) > params.limit
    return Page(items, has_more, encode_cursor(items[-1].seq) if has_more else None)


def envelope(page: Page[Any], data: list[dict[str, Any]]) -> dict[str, Any]:
    """The reference's list envelope around already-represented items."""
    return {"object": "list", "data": data, "has_more": page.has_more, "next_cursor": page.next_cursor}
