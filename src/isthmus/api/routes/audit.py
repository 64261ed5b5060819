"""/api/v1/audit: read only; there is no route that changes or deletes an audit row."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from isthmus.api.deps import Admin, CursorQ, HubDep, LimitQ, utc_instant
from isthmus.api.schemas import AuditOut, PageOut
from isthmus.domain.pagination import DEFAULT_LIMIT

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", summary="Read the audit log, newest first")
async def audit(
    hub: HubDep,
    actor: Admin,
    resource: Annotated[str | None, Query(description="A type (`integration`) or type/id.")] = None,
    action: Annotated[
        str | None, Query(description="Only this action.", examples=["integration.update"])
    ] = None,
    since: Annotated[datetime | None, Query(description="At or after this time.")] = None,
    until: Annotated[datetime | None, Query(description="Before this time.")] = None,
    cursor: CursorQ = None,
    limit: LimitQ = DEFAULT_LIMIT,
) -> PageOut[AuditOut]:
    page = await hub.audit.query(
        actor.tenant_id,
        resource=resource,
        action=action,
        since=utc_instant("since", since),
        until=utc_instant("until", until),
        cursor=cursor,
        limit=limit,
    )
    return PageOut(data=[AuditOut.of(e) for e in page.items], next_cursor=page.next_cursor)
