"""OAuth2 authorization of integrations: start it (API key), finish it (the browser returns
from the provider; the one-use state authenticates the callback)."""

from __future__ import annotations

from html import escape
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from isthmus.api.deps import HubDep, Writer, refuse_nul
from isthmus.api.oauth_schemas import OAuthAuthorizeOut, OAuthConnectedOut
from isthmus.api.problems import PROBLEM_JSON, problem
from isthmus.connectors.oauth import CALLBACK_PATH
from isthmus.errors import InvalidInput

router = APIRouter(tags=["oauth"])

_REFUSED = {
    "description": "The redirect cannot complete an authorization: state unknown, used or "
    "expired, the provider's error (e.g. access_denied), or no code.",
    "content": {PROBLEM_JSON: {}},
}


@router.post(
    "/api/v1/integrations/{integration_id}/oauth/authorize",
    summary="Start an OAuth2 authorization (authorization code with PKCE)",
)
async def authorize(integration_id: str, hub: HubDep, actor: Writer) -> OAuthAuthorizeOut:
    return OAuthAuthorizeOut.of(await hub.oauth.authorize(actor, integration_id))


@router.get(
    CALLBACK_PATH,
    summary="Where the provider sends the browser back (no API key: the state authenticates)",
    response_model=OAuthConnectedOut,
    responses={200: {"content": {"text/html": {}}}, 400: _REFUSED},
)
async def callback(
    request: Request,
    hub: HubDep,
    code: Annotated[str | None, Query(description="The authorization code.")] = None,
    state: Annotated[str | None, Query(description="The state the authorize step made.")] = None,
    error: Annotated[str | None, Query(description="The provider's refusal, if any.")] = None,
    error_description: Annotated[
        str | None, Query(description="The provider's words on it.")
    ] = None,
) -> Response:
    try:
        await refuse_nul(request)
        done = await hub.oauth.complete(
            state=state,
            code=code,
            error=error,
            error_description=error_description,
            client_ip=request.client.host if request.client else None,
        )
    except InvalidInput as exc:
        # A redirect that cannot complete is a bad request, not a form with field errors.
        return problem(400, "Authorization failed", exc.message)
    out = OAuthConnectedOut.of(done)
    if _wants_json(request):
        return JSONResponse(out.model_dump(mode="json", by_alias=True))
    return HTMLResponse(_connected_page(out.name))


def _wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def _connected_page(name: str) -> str:
    shown = escape(name)
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{shown} connected</title></head><body>"
        f"<h1>{shown} is connected</h1>"
        "<p>The authorization is complete. You can close this window.</p></body></html>"
    )
