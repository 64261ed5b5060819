"""An integration's activity: its request log and metrics (``/api/v1/integrations/{id}/logs``
and ``/metrics``), and the Prometheus export of every integration's figures (``/metrics``,
unauthenticated like ``/healthz``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from isthmus import metrics
from isthmus.api.activity_schemas import MetricsOut, RequestLogOut
from isthmus.api.deps import CursorQ, HubDep, LimitQ, Reader, utc_instant
from isthmus.api.schemas import PageOut
from isthmus.connectors.request_log import RequestLogService
from isthmus.connectors.types import LogLevel
from isthmus.domain.pagination import DEFAULT_LIMIT

router = APIRouter()


def get_log(hub: HubDep) -> RequestLogService:
    return RequestLogService(hub.store)


LogDep = Annotated[RequestLogService, Depends(get_log)]


@router.get(
    "/api/v1/integrations/{integration_id}/metrics",
    tags=["integrations"],
    summary="An integration's call counts, success and error rates, response times",
)
async def integration_metrics(
    integration_id: str,
    log: LogDep,
    actor: Reader,
    since: Annotated[
        datetime | None, Query(description="Count calls from this time on (default: all kept).")
    ] = None,
) -> MetricsOut:
    found = await log.metrics(actor.tenant_id, integration_id, since=utc_instant("since", since))
    return MetricsOut.of(found)


@router.get(
    "/api/v1/integrations/{integration_id}/logs",
    tags=["integrations"],
    summary="An integration's request log, newest first",
)
async def integration_logs(
    integration_id: str,
    log: LogDep,
    actor: Reader,
    level: Annotated[
        LogLevel | None, Query(description="This level and the ones above it.")
    ] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Text in the URL or the message.")
    ] = None,
    since: Annotated[datetime | None, Query(description="Calls from this time on.")] = None,
    cursor: CursorQ = None,
    limit: LimitQ = DEFAULT_LIMIT,
) -> PageOut[RequestLogOut]:
    page = await log.entries(
        actor.tenant_id,
        integration_id,
        level=level,
        q=q,
        since=utc_instant("since", since),
        cursor=cursor,
        limit=limit,
    )
    return PageOut(data=[RequestLogOut.of(e) for e in page.items], next_cursor=page.next_cursor)


@router.get(
    "/metrics",
    tags=["health"],
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}}},
)
async def prometheus(hub: HubDep) -> Response:
    return Response(await metrics.exposition(hub.store), media_type=metrics.CONTENT_TYPE)
