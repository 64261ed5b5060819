"""Paginators walked over built responses: which requests they ask for, and when they stop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from multidict import CIMultiDict

from isthmus.connectors.pagination import (
    CursorPaginator,
    HeaderCursorPaginator,
    LinkHeaderPaginator,
    NextURLPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    SinglePage,
    StopRules,
    announced_total,
    link_target,
)
from isthmus.connectors.pagination_config import paginator_from_config
from isthmus.connectors.selector import select_records
from isthmus.connectors.types import Paginator, Request, Response
from isthmus.errors import BadResponse, ConfigError, InvalidInput, PaginationLoop

BASE = "https://api.example.com/v1/contacts"


def response(body: Any = None, headers: Mapping[str, str] | None = None) -> Response:
    return Response(200, CIMultiDict(headers or {}), body, b"", 0.01, BASE)


def rows(*ids: int) -> list[dict[str, int]]:
    return [{"id": i} for i in ids]


def walk(
    paginator: Paginator, responses: list[Response], request: Request | None = None
) -> list[Request]:
    """The requests a walk asks for, answering each with the next scripted response; fails
    when the walk asks for more pages than the script has."""
    pages = paginator.start()
    current: Request | None = pages.first(request or Request("GET", BASE, [("q", "x")]))
    sent: list[Request] = []
    for answer in responses:
        assert current is not None, f"stopped after {len(sent)} pages, the script has more"
        sent.append(current)
        current = pages.next(current, answer, select_records(answer.body))
    assert current is None, f"wanted page {len(sent) + 1}, the script has {len(responses)}"
    return sent


def params(requests: list[Request], name: str) -> list[str | None]:
    return [dict(r.params).get(name) for r in requests]


# -- single page, page number, offset --------------------------------------------------------


def test_single_page_asks_once() -> None:
    sent = walk(SinglePage(), [response({"data": rows(1, 2), "next": "x"})])
    assert [(r.url, r.params) for r in sent] == [(BASE, [("q", "x")])]


def test_page_numbers_until_an_empty_page() -> None:
    paginator = PageNumberPaginator(page_size=2, page_size_param="per_page")
    sent = walk(paginator, [response(rows(1, 2)), response(rows(3)), response([])])
    assert params(sent, "page") == ["1", "2", "3"]
    assert params(sent, "per_page") == ["2", "2", "2"]
    assert params(sent, "q") == ["x", "x", "x"]


def test_page_numbers_from_zero_with_another_param() -> None:
    paginator = PageNumberPaginator(page_param="p", start_page=0)
    sent = walk(paginator, [response(rows(1)), response([])])
    assert params(sent, "p") == ["0", "1"]


def test_offsets_grow_by_the_records_that_came() -> None:
    paginator = OffsetPaginator(limit=3)
    # The API caps pages at 2 records although 3 were asked for: nothing may be skipped.
    sent = walk(paginator, [response(rows(1, 2)), response(rows(3, 4)), response([])])
    assert params(sent, "offset") == ["0", "2", "4"]
    assert params(sent, "limit") == ["3", "3", "3"]


@pytest.mark.parametrize("paginator", [PageNumberPaginator(), OffsetPaginator(limit=2)])
def test_an_api_ignoring_the_page_parameter_is_a_loop(paginator: Paginator) -> None:
    with pytest.raises(PaginationLoop, match="holds exactly the records of page 1") as caught:
        walk(paginator, [response(rows(1, 2)), response(rows(1, 2))])
    assert "loop" in str(caught.value)


def test_page_pagination_without_any_stop_rule_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a way to stop"):
        PageNumberPaginator(stop_on_empty=False)
    PageNumberPaginator(stop_on_empty=False, max_pages=3)  # bounded: fine


# -- shared stop rules -----------------------------------------------------------------------


def test_max_pages() -> None:
    sent = walk(PageNumberPaginator(max_pages=2), [response(rows(1)), response(rows(2))])
    assert params(sent, "page") == ["1", "2"]


def test_has_more_false_stops() -> None:
    paginator = PageNumberPaginator(has_more_path="meta.has_more")
    pages = [
        response({"data": rows(1), "meta": {"has_more": True}}),
        response({"data": rows(2), "meta": {"has_more": "false"}}),
    ]
    assert params(walk(paginator, pages), "page") == ["1", "2"]


def test_has_more_missing_is_a_bad_response() -> None:
    with pytest.raises(BadResponse, match="has-more path 'more' holds nothing, not true or false"):
        walk(PageNumberPaginator(has_more_path="more"), [response({"data": rows(1)})])


def test_total_reached_stops_even_with_a_full_page() -> None:
    paginator = OffsetPaginator(limit=2, total_path="meta.total")
    pages = [
        response({"data": rows(1, 2), "meta": {"total": 4}}),
        response({"data": rows(3, 4), "meta": {"total": 4}}),
    ]
    assert params(walk(paginator, pages), "offset") == ["0", "2"]


def test_a_total_given_on_the_first_page_only_is_remembered() -> None:
    paginator = PageNumberPaginator(total_path="total")
    pages = [response({"data": rows(1, 2), "total": 3}), response({"data": rows(3)})]
    assert len(walk(paginator, pages)) == 2


def test_a_total_never_given_is_a_bad_response() -> None:
    with pytest.raises(BadResponse, match=r"total path 'meta\.total' found nothing"):
        walk(PageNumberPaginator(total_path="meta.total"), [response({"data": rows(1)})])


def test_empty_page_stop_can_be_turned_off_for_cursor_apis() -> None:
    # Some search APIs send an empty page with a cursor while an index catches up.
    paginator = CursorPaginator(cursor_path="next", stop_on_empty=False)
    pages = [response({"data": [], "next": "c1"}), response({"data": rows(1), "next": None})]
    assert params(walk(paginator, pages), "cursor") == [None, "c1"]


@pytest.mark.parametrize(
    ("body", "total"),
    [
        ({"data": [], "total": 42}, 42),
        ({"data": [], "total_count": "7"}, 7),
        ({"data": [], "totalCount": 3.0}, 3),
        ({"data": [], "total": True}, None),
        ({"data": []}, None),
        ([], None),
    ],
)
def test_announced_total(body: Any, total: int | None) -> None:
    assert announced_total(SinglePage(), body) == total


def test_announced_total_at_a_configured_path() -> None:
    assert announced_total(SinglePage(total_path="meta.n"), {"meta": {"n": 9}, "total": 1}) == 9


# -- cursors ---------------------------------------------------------------------------------


def test_cursor_in_the_query() -> None:
    paginator = CursorPaginator(cursor_path="paging.next.after", cursor_param="after")
    pages = [
        response({"results": rows(1), "paging": {"next": {"after": "a1"}}}),
        response({"results": rows(2), "paging": {"next": {"after": 200}}}),
        response({"results": rows(3)}),
    ]
    sent = walk(paginator, pages)
    assert params(sent, "after") == [None, "a1", "200"]
    assert params(sent, "q") == ["x", "x", "x"]


@pytest.mark.parametrize("last", [{"next": None}, {"next": ""}, {}])
def test_no_cursor_ends_the_listing(last: dict[str, Any]) -> None:
    pages = [response({"data": rows(1), "next": "c"}), response({"data": rows(2), **last})]
    assert len(walk(CursorPaginator(cursor_path="next"), pages)) == 2


def test_cursor_in_a_json_body_for_post_searches() -> None:
    paginator = CursorPaginator(
        cursor_path="paging.after", cursor_param="page.after", cursor_in="body"
    )
    first = Request("POST", BASE, json={"filter": {"stage": "lead"}, "limit": 2})
    pages = [
        response({"results": rows(1, 2), "paging": {"after": "20"}}),
        response({"results": rows(3, 4), "paging": {"after": "40"}}),
        response({"results": []}),
    ]
    sent = walk(paginator, pages, first)
    assert [r.json for r in sent] == [
        {"filter": {"stage": "lead"}, "limit": 2},
        {"filter": {"stage": "lead"}, "limit": 2, "page": {"after": "20"}},
        {"filter": {"stage": "lead"}, "limit": 2, "page": {"after": "40"}},
    ]
    assert first.json == {"filter": {"stage": "lead"}, "limit": 2}  # never changed in place
    assert all(r.method == "POST" and r.params == [] for r in sent)


def test_a_cursor_seen_twice_is_a_loop_with_a_readable_message() -> None:
    paginator = CursorPaginator(cursor_path="next")
    pages = [
        response({"data": rows(1), "next": "abc"}),
        response({"data": rows(2), "next": "def"}),
        response({"data": rows(3), "next": "abc"}),
    ]
    with pytest.raises(PaginationLoop) as caught:
        walk(paginator, [*pages, response({"data": rows(4)})])
    assert str(caught.value) == (
        "the API sent the cursor 'abc' again with page 3 (it first came with page 1); following "
        "it would fetch the same pages for ever, so the listing stops here"
    )
    assert caught.value.error_class == "pagination_loop"


def test_a_cursor_that_is_not_text_is_a_bad_response() -> None:
    with pytest.raises(BadResponse, match="cursor path 'next' holds an object with keys a"):
        walk(CursorPaginator(cursor_path="next"), [response({"data": rows(1), "next": {"a": 1}})])


def test_cursor_in_a_response_header() -> None:
    paginator = HeaderCursorPaginator(cursor_header="X-Next-Cursor", cursor_param="after")
    pages = [
        response(rows(1), {"x-next-cursor": "h1"}),
        response(rows(2), {"X-Next-Cursor": "h2"}),
        response(rows(3)),
    ]
    assert params(walk(paginator, pages), "after") == [None, "h1", "h2"]


def test_header_cursor_seen_twice_is_a_loop() -> None:
    paginator = HeaderCursorPaginator(cursor_header="X-Next")
    pages = [response(rows(1), {"X-Next": "same"}), response(rows(2), {"X-Next": "same"})]
    with pytest.raises(PaginationLoop, match="cursor 'same' again with page 2"):
        walk(paginator, [*pages, response(rows(3))])


def test_header_cursor_reads_plain_dict_headers_case_insensitively() -> None:
    pages = HeaderCursorPaginator(cursor_header="X-Next").start()
    first = pages.first(Request("GET", BASE))
    answer = Response(200, {"x-next": "c"}, rows(1), b"", 0.0, BASE)
    following = pages.next(first, answer, rows(1))
    assert following is not None and following.params == [("cursor", "c")]


# -- next URLs and Link headers --------------------------------------------------------------


def test_next_url_absolute_and_relative() -> None:
    paginator = NextURLPaginator(next_url_path="links.next")
    pages = [
        response({"data": rows(1), "links": {"next": f"{BASE}?page=2&q=x"}}),
        response({"data": rows(2), "links": {"next": "/v1/contacts?page=3&q=x"}}),
        response({"data": rows(3), "links": {"next": None}}),
    ]
    sent = walk(paginator, pages)
    assert [(r.url, r.params) for r in sent] == [
        (BASE, [("q", "x")]),
        (BASE, [("page", "2"), ("q", "x")]),
        (BASE, [("page", "3"), ("q", "x")]),
    ]


def test_next_url_on_another_host_is_refused() -> None:
    pages = [response({"data": rows(1), "next": "https://evil.example/steal?page=2"})]
    with pytest.raises(BadResponse) as caught:
        walk(NextURLPaginator(), [*pages, response([])])
    assert str(caught.value) == (
        "the next page URL https://evil.example/steal?page=2 is on another host than "
        "https://api.example.com; it is not followed, since the credentials would go along to it"
    )
    assert not isinstance(caught.value, PaginationLoop)


@pytest.mark.parametrize(
    "url", ["http://api.example.com/v1/contacts?page=2", "https://api.example.com:8443/x"]
)
def test_next_url_on_another_scheme_or_port_is_refused(url: str) -> None:
    with pytest.raises(BadResponse, match="is on another host"):
        walk(NextURLPaginator(), [response({"data": rows(1), "next": url}), response([])])


def test_next_url_seen_twice_is_a_loop_and_redacted() -> None:
    again = f"{BASE}?page=2&api_key=s3cret"
    pages = [
        response({"data": rows(1), "next": again}),
        response({"data": rows(2), "next": again}),
    ]
    with pytest.raises(PaginationLoop) as caught:
        walk(NextURLPaginator(), [*pages, response([])])
    assert "next page URL https://api.example.com/v1/contacts?page=2&api_key=*** again" in str(
        caught.value
    )
    assert "s3cret" not in str(caught.value)


def test_link_header_rel_next() -> None:
    link2 = f'<{BASE}?page=2>; rel="next", <{BASE}?page=9>; rel="last"'
    link3 = f'<{BASE}?page=1>; rel="first", <{BASE}?page=3>; rel=next'
    pages = [
        response(rows(1), {"Link": link2}),
        response(rows(2), {"link": link3}),
        response(rows(3)),
    ]
    sent = walk(LinkHeaderPaginator(), pages)
    assert params(sent, "page") == [None, "2", "3"]


@pytest.mark.parametrize(
    ("header", "target"),
    [
        ('<https://a.io/x?page=2>; rel="next"', "https://a.io/x?page=2"),
        ('<https://a.io/x?a=1,2>; rel="prev next"', "https://a.io/x?a=1,2"),
        ('<https://a.io/p>; rel="prev", <https://a.io/n>; title="n"; rel="next"', "https://a.io/n"),
        ('<https://a.io/p>; REL="NEXT"', "https://a.io/p"),
        ('<https://a.io/p>; rel="prev"', None),
        ('<https://a.io/p>; rel="nextpage"', None),
        ("", None),
        (None, None),
    ],
)
def test_link_target(header: str | None, target: str | None) -> None:
    assert link_target(header) == target


# -- from config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, SinglePage()),
        ({}, SinglePage()),
        ({"type": "none", "maxPages": 1}, SinglePage(max_pages=1)),
        (
            {"type": "cursor", "cursorPath": "paging.next.after", "cursorParam": "after"},
            CursorPaginator(cursor_path="paging.next.after", cursor_param="after"),
        ),
        (
            {"type": "cursor", "cursorPath": "after", "cursorIn": "body", "hasMorePath": "more"},
            CursorPaginator(cursor_path="after", cursor_in="body", has_more_path="more"),
        ),
        (
            {"type": "page", "pageParam": "p", "pageSizeParam": "size", "pageSize": 50},
            PageNumberPaginator(page_param="p", page_size_param="size", page_size=50),
        ),
        (
            {"type": "offset", "pageSize": 100, "totalPath": "total", "stopOnEmpty": False},
            OffsetPaginator(limit=100, total_path="total", stop_on_empty=False),
        ),
        (
            {"type": "next_url", "nextUrlPath": "links.next"},
            NextURLPaginator(next_url_path="links.next"),
        ),
        ({"type": "link_header", "maxPages": 5}, LinkHeaderPaginator(max_pages=5)),
        (
            {"type": "header_cursor", "cursorHeader": "X-Next", "cursorParam": "c"},
            HeaderCursorPaginator(cursor_header="X-Next", cursor_param="c"),
        ),
        # A form may keep another type's settings: they are ignored.
        ({"type": "link_header", "cursorPath": "x"}, LinkHeaderPaginator()),
    ],
)
def test_paginator_from_config(config: dict[str, Any] | None, expected: StopRules) -> None:
    assert paginator_from_config(config) == expected


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"type": "scroll"}, "pagination.type", "must be one of none, page, offset"),
        ({"type": "cursor"}, "pagination.cursorPath", "is required for cursor pagination"),
        ({"type": "header_cursor"}, "pagination.cursorHeader", "is required"),
        ({"type": "page", "pageSize": 0}, "pagination.pageSize", "whole number >= 1"),
        ({"type": "page", "maxPages": "3"}, "pagination.maxPages", "whole number >= 1"),
        ({"type": "cursor", "cursorPath": "a", "cursorIn": "header"}, "pagination.cursorIn", ""),
        ({"type": "page", "stopOnEmpty": "no"}, "pagination.stopOnEmpty", "true or false"),
        ({"type": "page", "pageParam": ""}, "pagination.pageParam", "non-empty"),
        ({"type": "page", "pageSize": 5}, "pagination.pageSizeParam", "required with pageSize"),
        ({"type": "page", "stopOnEmpty": False}, "pagination.stopOnEmpty", "needs a way to stop"),
        ({"type": "offset", "stopOnEmpty": False}, "pagination.stopOnEmpty", "maxPages"),
        ({"type": "cursor", "cursorPath": "a..b"}, "pagination", "not a dotted path"),
        ({"type": "page", "colour": "red"}, "pagination.colour", "not a pagination setting"),
    ],
)
def test_bad_pagination_config_names_the_field(
    config: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        paginator_from_config(config)
    assert [e.field for e in caught.value.errors] == [field]
    assert message in caught.value.errors[0].message
