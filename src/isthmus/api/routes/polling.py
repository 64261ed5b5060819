"""/api/v1/integrations/{id}/polling: thin: parse, call the service, shape the answer."""

from __future__ import annotations

from fastapi import APIRouter

from isthmus.api.deps import HubDep, Reader, Writer
from isthmus.api.polling_schemas import PollingIn, PollingOut

router = APIRouter(prefix="/api/v1/integrations", tags=["polling"])


@router.get("/{integration_id}/polling", summary="Get an integration's polling settings")
async def get_polling(integration_id: str, hub: HubDep, actor: Reader) -> PollingOut:
    return PollingOut.of(await hub.polling.get(actor.tenant_id, integration_id))


@router.put(
    "/{integration_id}/polling",
    summary="Set an integration's polling settings",
    description="Replaces the settings (what is left out takes its default). A change starts "
    "the schedule afresh from now and drops pending retries. Schedules are read in "
    "`timezone`; none may poll more often than every 10 minutes.",
)
async def put_polling(
    integration_id: str, body: PollingIn, hub: HubDep, actor: Writer
) -> PollingOut:
    return PollingOut.of(await hub.polling.put(actor, integration_id, body.settings()))
