"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from isthmus.api.deps import HubDep
from isthmus.store import migrate

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the store answers and its migrations are current")
async def readyz(hub: HubDep) -> JSONResponse:
    reachable = await hub.store.ping()
    current = reachable and await migrate.is_current(hub.store)
    checks = {"store": "ok" if reachable else "unreachable"}
    checks["migrations"] = "current" if current else ("pending" if reachable else "unknown")
    ready = reachable and current
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
