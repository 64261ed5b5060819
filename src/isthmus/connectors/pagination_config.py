"""Paginators from the ``pagination`` block of the ``api_endpoint`` provider's config.

The block is camelCase like the rest of the API (see ``providers/api_endpoint.json``); each
type maps to one class of :mod:`isthmus.connectors.pagination`, each key to one of its fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from isthmus.connectors.pagination import (
    CursorIn,
    CursorPaginator,
    HeaderCursorPaginator,
    LinkHeaderPaginator,
    NextURLPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    SinglePage,
)
from isthmus.connectors.types import Paginator
from isthmus.errors import ConfigError, InvalidInput

_COMMON = {"type", "maxPages", "stopOnEmpty", "hasMorePath", "totalPath"}
_KEYS = {
    "none": set[str](),
    "page": {"pageParam", "pageSizeParam", "pageSize", "startPage"},
    "offset": {"offsetParam", "limitParam", "pageSize", "startOffset"},
    "cursor": {"cursorPath", "cursorParam", "cursorIn"},
    "next_url": {"nextUrlPath"},
    "link_header": {"rel"},
    "header_cursor": {"cursorHeader", "cursorParam", "cursorIn"},
}


def paginator_from_config(config: Mapping[str, Any] | None) -> Paginator:
    """A paginator from the ``pagination`` block of an ``api_endpoint`` config (camelCase,
    e.g. ``{"type": "cursor", "cursorPath": "paging.next.after", "cursorParam": "after"}``).

    Keys that belong to another type are ignored (a form may keep them); unknown keys and bad
    values raise ``InvalidInput`` naming ``pagination.<key>``.
    """
    block = dict(config or {})
    kind = block.get("type", "none")
    if kind not in _KEYS:
        raise InvalidInput.field("pagination.type", f"must be one of {', '.join(_KEYS)}")
    unknown = sorted(set(block) - _COMMON - set().union(*_KEYS.values()))
    if unknown:
        raise InvalidInput.field(f"pagination.{unknown[0]}", "is not a pagination setting")
    reader = _Reader(block)
    common: dict[str, Any] = {
        "max_pages": reader.integer("maxPages", None, minimum=1),
        "stop_on_empty": reader.boolean("stopOnEmpty", True),
        "has_more_path": reader.text("hasMorePath", None),
        "total_path": reader.text("totalPath", None),
    }
    # What the paginators refuse, said in the config's own names.
    stops = ("max_pages", "stop_on_empty", "has_more_path", "total_path")
    if kind in ("page", "offset") and not any(common[name] for name in stops):
        raise InvalidInput.field(
            "pagination.stopOnEmpty",
            f"{kind} pagination needs a way to stop: stopOnEmpty, hasMorePath, totalPath or "
            "maxPages",
        )
    try:
        if kind == "page":
            page_size = reader.integer("pageSize", None, minimum=1)
            size_param = reader.text("pageSizeParam", None)
            if page_size is not None and size_param is None:
                raise InvalidInput.field(
                    "pagination.pageSizeParam", "is required with pageSize: the parameter to send"
                )
            return PageNumberPaginator(
                page_param=reader.text("pageParam", "page") or "page",
                start_page=reader.integer("startPage", 1, minimum=0) or 0,
                page_size=page_size,
                page_size_param=size_param,
                **common,
            )
        if kind == "offset":
            return OffsetPaginator(
                offset_param=reader.text("offsetParam", "offset") or "offset",
                limit_param=reader.text("limitParam", "limit") or "limit",
                limit=reader.integer("pageSize", None, minimum=1),
                start_offset=reader.integer("startOffset", 0, minimum=0) or 0,
                **common,
            )
        if kind == "cursor":
            return CursorPaginator(
                cursor_path=reader.required("cursorPath", "cursor"),
                cursor_param=reader.text("cursorParam", "cursor") or "cursor",
                cursor_in=reader.where("cursorIn"),
                **common,
            )
        if kind == "header_cursor":
            return HeaderCursorPaginator(
                cursor_header=reader.required("cursorHeader", "header_cursor"),
                cursor_param=reader.text("cursorParam", "cursor") or "cursor",
                cursor_in=reader.where("cursorIn"),
                **common,
            )
        if kind == "next_url":
            path = reader.text("nextUrlPath", "next") or "next"
            return NextURLPaginator(next_url_path=path, **common)
        if kind == "link_header":
            return LinkHeaderPaginator(rel=reader.text("rel", "next") or "next", **common)
        return SinglePage(**common)
    except ConfigError as exc:
        raise InvalidInput.field("pagination", exc.message) from exc


class _Reader:
    def __init__(self, block: Mapping[str, Any]) -> None:
        self.block = block

    def text(self, key: str, default: str | None) -> str | None:
        value = self.block.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InvalidInput.field(f"pagination.{key}", "must be a non-empty text")
        return value

    def required(self, key: str, kind: str) -> str:
        value = self.text(key, None)
        if value is None:
            raise InvalidInput.field(f"pagination.{key}", f"is required for {kind} pagination")
        return value

    def integer(self, key: str, default: int | None, *, minimum: int) -> int | None:
        value = self.block.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise InvalidInput.field(f"pagination.{key}", f"must be a whole number >= {minimum}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.block.get(key, default)
        if not isinstance(value, bool):
            raise InvalidInput.field(f"pagination.{key}", "must be true or false")
        return value

    def where(self, key: str) -> CursorIn:
        value = self.block.get(key, "query")
        if value == "query":
            return "query"
        if value == "body":
            return "body"
        raise InvalidInput.field(f"pagination.{key}", "must be query or body")


__all__ = ["paginator_from_config"]
