"""Paginators: one class per paging convention, each a :class:`~.types.Paginator`.

A paginator is immutable configuration; :meth:`start` begins a walk that remembers what this
run has seen. The client sends ``walk.first(request)``, then ``walk.next(request, response,
records)`` after every page until it answers ``None``. ``records`` are the page's records as
the data selector found them (before transforms, which may drop some).

Stop rules, shared by every paginator (:class:`StopRules`), checked in this order:

- ``max_pages``: this many pages were fetched;
- ``stop_on_empty`` (default on): the page had no records;
- ``has_more_path``: the boolean at that dotted path is false;
- ``total_path``: as many records were seen as the number at that path announces;
- then the convention's own: no next cursor, next URL or Link rel=next.

A cursor or next URL the API already sent in this walk raises ``PaginationLoop``, as does a
page/offset page with exactly the records of the page before (an API ignoring the parameter):
never an endless loop. A next URL on another origin than the first request's is refused
(``BadResponse``), since the credentials would go along to it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from yarl import URL

from isthmus.connectors.selector import (
    MISSING,
    as_count,
    describe,
    flag_at,
    get_path,
    parse_path,
    set_path,
)
from isthmus.connectors.types import PageWalk, Paginator, Record, Request, Response
from isthmus.errors import BadResponse, ConfigError, PaginationLoop
from isthmus.http import redact_url
from isthmus.http.links import link_target

CursorIn = Literal["query", "body"]
_SHOWN_CURSOR = 60


@dataclass(frozen=True, kw_only=True)
class StopRules:
    """The stop rules every paginator takes (see the module docstring)."""

    max_pages: int | None = None
    stop_on_empty: bool = True
    has_more_path: str | None = None
    total_path: str | None = None

    def __post_init__(self) -> None:
        if self.max_pages is not None and self.max_pages < 1:
            raise ConfigError("max_pages must be at least 1")
        for path in (self.has_more_path, self.total_path):
            if path is not None:
                parse_path(path)

    def start(self) -> PageWalk:
        raise NotImplementedError

    def announced_total(self, body: Any) -> int | None:
        """The total the response announces for the whole listing: the number at
        ``total_path``, else a top-level ``total``, ``total_count`` or ``totalCount``."""
        if self.total_path is not None:
            return as_count(get_path(body, self.total_path))
        if isinstance(body, dict):
            for key in ("total", "total_count", "totalCount"):
                if (found := as_count(body.get(key))) is not None:
                    return found
        return None

    def _require_stop(self, kind: str) -> None:
        if not (self.max_pages or self.stop_on_empty or self.has_more_path or self.total_path):
            raise ConfigError(
                f"{kind} pagination needs a way to stop: stop_on_empty, has_more_path, "
                "total_path or max_pages"
            )


class _Walk:
    """What every walk shares: counting pages and records, the stop rules, loop detection."""

    def __init__(self, rules: StopRules) -> None:
        self.rules = rules
        self.pages = 0
        self.records_seen = 0
        self._total: int | None = None
        self._followed: dict[str, int] = {}
        self._origin: URL | None = None

    def first(self, request: Request) -> Request:
        first = _copy(request)
        self._origin = URL(first.url).origin()
        self._begin(first)
        return first

    def resume(self, request: Request) -> Request:
        resumed = _copy(request)
        self._restore(resumed)
        return resumed

    def _restore(self, request: Request) -> None:
        """Take up the position ``request`` stands for (a walk that counts pages itself)."""

    def next(
        self, request: Request, response: Response, records: Sequence[Record]
    ) -> Request | None:
        self.pages += 1
        self.records_seen += len(records)
        if self._stop(response.body, records):
            return None
        return self._advance(request, response, records)

    def _begin(self, request: Request) -> None:
        """Put the first page's parameters on ``request`` (a copy)."""

    def _advance(
        self, request: Request, response: Response, records: Sequence[Record]
    ) -> Request | None:
        raise NotImplementedError

    def _stop(self, body: Any, records: Sequence[Record]) -> bool:
        rules = self.rules
        if rules.max_pages is not None and self.pages >= rules.max_pages:
            return True
        if rules.stop_on_empty and not records:
            return True
        if rules.has_more_path is not None and not flag_at(body, rules.has_more_path):
            return True
        if rules.total_path is not None:
            found = get_path(body, rules.total_path)
            if found is not MISSING and found is not None:
                total = as_count(found)
                if total is None:
                    raise BadResponse(
                        f"total path {rules.total_path!r} holds {describe(found)}, not a count"
                    )
                self._total = total
            if self._total is None:
                # Some APIs announce the total on the first page only; one that never did
                # cannot stop this walk, and silently fetching for ever is worse than saying so.
                raise BadResponse(f"total path {rules.total_path!r} found nothing in the response")
            if self.records_seen >= self._total:
                return True
        return False

    def _follow(self, token: str, what: str, shown: str, request: Request) -> None:
        """Remember ``token`` (a cursor or URL) as followed; raise if it was already."""
        if token in self._followed:
            first = self._followed[token]
            raise PaginationLoop(
                f"the API sent the {what} {shown} again with page {self.pages} (it first came "
                f"with page {first}); following it would fetch the same pages for ever, so the "
                "listing stops here",
                url=redact_url(request.url),
            )
        self._followed[token] = self.pages


# -- single page -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SinglePage(StopRules):
    """The whole listing comes in one response."""

    def start(self) -> PageWalk:
        return _SingleWalk(self)


class _SingleWalk(_Walk):
    def _advance(
        self, request: Request, response: Response, records: Sequence[Record]
    ) -> Request | None:
        return None


# -- page number and offset ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PageNumberPaginator(StopRules):
    """``?page=1``, ``?page=2``, ...; with ``page_size`` and ``page_size_param`` the size is
    asked for too. Stops by the shared rules (by default on the first empty page)."""

    page_param: str = "page"
    start_page: int = 1
    page_size: int | None = None
    page_size_param: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require_stop("page number")
        if self.page_size is not None and (self.page_size < 1 or not self.page_size_param):
            raise ConfigError("page_size is at least 1 and needs page_size_param to carry it")

    def start(self) -> PageWalk:
        return _PageWalk(self)


class _PageWalk(_Walk):
    rules: PageNumberPaginator

    def __init__(self, rules: PageNumberPaginator) -> None:
        super().__init__(rules)
        self._page = rules.start_page
        self._last: list[Record] | None = None

    def _restore(self, request: Request) -> None:
        self._page = _int_param(request, self.rules.page_param, self._page)

    def _begin(self, request: Request) -> None:
        request.set_param(self.rules.page_param, str(self._page))
        if self.rules.page_size is not None and self.rules.page_size_param:
            request.set_param(self.rules.page_size_param, str(self.rules.page_size))

    def _advance(
        self, request: Request, response: Response, records: Sequence[Record]
    ) -> Request | None:
        _same_records(self, records, request, f"the {self.rules.page_param!r} parameter")
        self._page += 1
        following = _copy(request)
        following.set_param(self.rules.page_param, str(self._page))
        return following


@dataclass(frozen=True, kw_only=True)
class OffsetPaginator(StopRules):
    """``?offset=0&limit=100``, then the offset grows by the records each page brought (not
    by ``limit``: an API capping the page size lower would otherwise skip records)."""

    limit: int | None = None
    offset_param: str = "offset"
    limit_param: str = "limit"
    start_offset: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._require_stop("offset")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit must be at least 1")

    def start(self) -> PageWalk:
        return _OffsetWalk(self)


class _OffsetWalk(_Walk):
    rules: OffsetPaginator

    def __init__(self, rules: OffsetPaginator) -> None:
        super().__init__(rules)
        self._offset = rules.start_offset
        self._last: list[Record] | None = None

    def _restore(self, request: Request) -> None:
        self._offset = _int_param(request, self.rules.offset_param, self._offset)

    def _begin(self, request: Request) -> None:
        request.set_param(self.rules.offset_param, str(self._offset))
        if self.rules.limit is not None:
            request.set_param(self.rules.limit_param, str(self.rules.limit))

    def _advance(
        self, request: Request, response: Response, records: Sequence[Record]
    ) -> Request | None:
        _same_records(self, records, request, f"the {self.rules.offset_param!r} parameter")
        if not records:
            # Nothing to move the offset by: asking again would get the same empty page.
            return None
        self._offset += len(records)
        following = _copy(request)
        following.set_param(self.rules.offset_param, str(self._offset))
        return following


# -- cursors ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CursorPaginator(StopRules):
    """The next cursor at ``cursor_path`` in the body, sent as ``cursor_param`` in the query
    or (``cursor_in="body"``, for POST searches) at that dotted path of the JSON body. No
    cursor (absent, null or empty) ends the listing."""

    cursor_path: str
    cursor_param: str = "cursor"
    cursor_in: CursorIn = "query"

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_path(self.cursor_path)
        _check_in(self.cursor_in, self.cursor_param)

    def start(self) -> PageWalk:
        return _CursorWalk(self, self.cursor_param, self.cursor_in)


@dataclass(frozen=True, kw_only=True)
class HeaderCursorPaginator(StopRules):
    """The next cursor in the response header ``cursor_header``, sent like
    :class:`CursorPaginator` sends its. No header (or an empty one) ends the listing."""

    cursor_header: str
    cursor_param: str = "cursor"
    cursor_in: CursorIn = "query"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.cursor_header:
            raise ConfigError("cursor_header names the response header holding the cursor")
        _check_in(self.cursor_in, self.cursor_param)

    def start(self) -> PageWalk:
        return _CursorWalk(self, self.cursor_param, self.cursor_in)


class _CursorWalk(_Walk):
    def __init__(self, rules: StopRules, param: str, where: CursorIn) -> None:
        super().__init__(rules)
        self._param = param
        self._in = where

    def _advance(
        self, request: Request, response: Response, records: Sequence[Record]
    ) -> Request | None:
        cursor = self._cursor(response)
        if cursor is None:
            return None
        shown = cursor if len(cursor) <= _SHOWN_CURSOR else cursor[: _SHOWN_CURSOR - 1] + "…"
        self._follow(cursor, "cursor", repr(shown), request)
        following = _copy(request)
        if self._in == "query":
            following.set_param(self._param, cursor)
        else:
            body = following.json if following.json is not None else {}
            if not isinstance(body, dict):
                raise ConfigError("a cursor in the body needs a JSON object body")
            set_path(body, self._param, cursor)
            following.json = body
        return following

    def _cursor(self, response: Response) -> str | None:
        rules = self.rules
        if isinstance(rules, HeaderCursorPaginator):
            value: Any = _header(response.headers, rules.cursor_header)
        else:
            assert isinstance(rules, CursorPaginator)
            value = get_path(response.body, rules.cursor_path)
        if value is MISSING or value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            path = rules.cursor_path if isinstance(rules, CursorPaginator) else ""
            raise BadResponse(f"cursor path {path!r} holds {describe(value)}, not a cursor")
        return str(value)


# -- next URLs -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NextURLPaginator(StopRules):
    """The next page's URL at ``next_url_path`` in the body (absolute or relative to the
    page's URL); its query replaces the page's. No URL ends the listing."""

    next_url_path: str = "next"

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_path(self.next_url_path)

    def start(self) -> PageWalk:
        return _NextURLWalk(self)


@dataclass(frozen=True, kw_only=True)
class LinkHeaderPaginator(StopRules):
    """RFC 8288 ``Link: <https://...>; rel="next"`` (GitHub, Shopify, ...). No link with
    relation ``rel`` ends the listing."""

    rel: str = "next"

    def start(self) -> PageWalk:
        return _NextURLWalk(self)


class _NextURLWalk(_Walk):
    def _advance(
        self, request: Request, response: Response, records: Sequence[Record]
    ) -> Request | None:
        rules = self.rules
        value: Any
        if isinstance(rules, LinkHeaderPaginator):
            value = link_target(_header(response.headers, "Link"), rules.rel)
            what = f"Link rel={rules.rel}"
        else:
            assert isinstance(rules, NextURLPaginator)
            value = get_path(response.body, rules.next_url_path)
            what = f"next URL path {rules.next_url_path!r}"
        if value is MISSING or value is None or value == "":
            return None
        if not isinstance(value, str):
            raise BadResponse(f"{what} holds {describe(value)}, not a URL")
        try:
            target = URL(request.url).join(URL(value.strip()))
        except ValueError:
            raise BadResponse(f"{what} holds {value!r}, not a URL") from None
        shown = redact_url(target)
        origin = self._origin or URL(request.url).origin()
        if target.origin() != origin:
            raise BadResponse(
                f"the next page URL {shown} is on another host than {origin}; it is not "
                "followed, since the credentials would go along to it",
                url=redact_url(request.url),
            )
        self._follow(str(target), "next page URL", shown, request)
        following = _copy(request)
        following.url = str(target.with_query(None).with_fragment(None))
        following.params = [(k, v) for k, v in target.query.items()]
        return following


def _int_param(request: Request, name: str, default: int) -> int:
    for key, value in reversed(request.params):
        if key == name and value.lstrip("-").isdigit():
            return int(value)
    return default


# -- helpers ---------------------------------------------------------------------------------


def _copy(request: Request) -> Request:
    # Request.copy() copies the body one level deep; a cursor may go deeper (paging.after).
    duplicate = request.copy()
    duplicate.json = copy.deepcopy(request.json)
    return duplicate


def _check_in(where: str, param: str) -> None:
    if where not in ("query", "body"):
        raise ConfigError(f"cursor_in must be query or body, not {where!r}")
    if not param:
        raise ConfigError("cursor_param names where the cursor goes")
    if where == "body":
        parse_path(param)


def _same_records(
    walk: _PageWalk | _OffsetWalk, records: Sequence[Record], request: Request, param: str
) -> None:
    current = list(records)
    if current and current == walk._last:
        raise PaginationLoop(
            f"page {walk.pages} holds exactly the records of page {walk.pages - 1}: the API "
            f"seems to ignore {param}, so the listing stops here instead of looping for ever",
            url=redact_url(request.url),
        )
    walk._last = current


def _header(headers: Mapping[str, str], name: str) -> str | None:
    found = headers.get(name)
    if found is not None:
        return found
    lowered = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lowered), None)


def announced_total(paginator: Paginator, body: Any) -> int | None:
    """The listing's total as the response announces it (see
    :meth:`StopRules.announced_total`); ``None`` for a paginator of another family."""
    if isinstance(paginator, StopRules):
        return paginator.announced_total(body)
    return None


__all__ = [
    "CursorIn",
    "CursorPaginator",
    "HeaderCursorPaginator",
    "LinkHeaderPaginator",
    "NextURLPaginator",
    "OffsetPaginator",
    "PageNumberPaginator",
    "SinglePage",
    "StopRules",
    "announced_total",
    "link_target",
]
