"""Connectors: calling upstream APIs with auth, pagination, rate limits, retries, transforms.

:class:`APIClient` composes the strategy families of :mod:`isthmus.connectors.types`; the
paginators, the data selector, the retry policy and the transforms are plain values from the
modules named after them.
"""

from __future__ import annotations

from isthmus.connectors.client import APIClient
from isthmus.connectors.pagination import (
    CursorPaginator,
    HeaderCursorPaginator,
    LinkHeaderPaginator,
    NextURLPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    SinglePage,
    StopRules,
)
from isthmus.connectors.pagination_config import paginator_from_config
from isthmus.connectors.retry import RetryPolicy
from isthmus.connectors.selector import select_records
from isthmus.connectors.transforms import Transforms, coerce_date
from isthmus.connectors.types import (
    Auth,
    CallObserver,
    CallRecord,
    Page,
    PageWalk,
    Paginator,
    RateLimiter,
    Record,
    Request,
    Response,
)

__all__ = [
    "APIClient",
    "Auth",
    "CallObserver",
    "CallRecord",
    "CursorPaginator",
    "HeaderCursorPaginator",
    "LinkHeaderPaginator",
    "NextURLPaginator",
    "OffsetPaginator",
    "Page",
    "PageNumberPaginator",
    "PageWalk",
    "Paginator",
    "RateLimiter",
    "Record",
    "Request",
    "Response",
    "RetryPolicy",
    "SinglePage",
    "StopRules",
    "Transforms",
    "coerce_date",
    "paginator_from_config",
    "select_records",
]
