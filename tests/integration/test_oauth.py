"""OAuth2 for integrations against a local authorization server: the authorization code grant
with PKCE through the API (authorize, the provider's redirect, the callback), tokens sealed in
the store, refresh before expiry, rotation, invalid_grant, one refresh across two processes;
and the client credentials grant."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import httpx
import pytest
from api_support import INTEGRATIONS, app_client, assert_problem, audit_rows, key_for
from oauth_server import CLIENT_ID, CLIENT_SECRET, OAuthServer

from isthmus.config import Settings, load_settings
from isthmus.connectors.auth import OAuth2ClientCredentials
from isthmus.connectors.types import Auth, Request
from isthmus.errors import BlockedAddress, ReauthorizationNeeded, UpstreamAuthError
from isthmus.http import OutboundHTTP
from isthmus.hub import Hub
from isthmus.services.access import IssuedKey
from isthmus.services.credentials import SecretBox
from isthmus.store import oauth as oauth_store
from isthmus.store import secrets as secrets_store
from isthmus.store.oauth import OAuthState, token_owner

CALLBACK = "/api/v1/oauth/callback"
PROC = Path(__file__).with_name("oauth_refresh_proc.py")
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """The hub may call the local authorization server on 127.0.0.1."""
    return load_settings(
        home=tmp_path / "home", database_url=db_url, outbound_allowlist=["127.0.0.0/8"]
    )


@pytest.fixture
async def server() -> AsyncIterator[OAuthServer]:
    started = OAuthServer()
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


@pytest.fixture
def provider(server: OAuthServer, hub: Hub) -> OAuthServer:
    """The server with the hub's callback registered as the client's redirect URI."""
    server.redirect_uri = hub.oauth.redirect_uri
    return server


@pytest.fixture
def clock(hub: Hub) -> FakeClock:
    fake = FakeClock()
    hub.oauth.clock = fake
    return fake


@pytest.fixture
async def browser(settings: Settings, hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same app without any API key, as a person's browser is."""
    async with app_client(settings, hub) as client:
        yield client


def oauth_body(server: OAuthServer, **auth: Any) -> dict[str, Any]:
    return {
        "name": "Contacts CRM",
        "provider": "api_endpoint",
        "config": {
            "apiEndpoint": server.url("/api/contacts"),
            "auth": {
                "type": "oauth2_authorization_code",
                "authorizeUrl": server.url("/authorize"),
                "tokenUrl": server.url("/token"),
                "scopes": ["contacts.read", "offline_access"],
                **auth,
            },
        },
        "credentials": {"clientId": CLIENT_ID, "clientSecret": CLIENT_SECRET},
    }


async def create(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post(INTEGRATIONS, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def start(api: httpx.AsyncClient, integration_id: str) -> dict[str, Any]:
    response = await api.post(f"{INTEGRATIONS}/{integration_id}/oauth/authorize")
    assert response.status_code == 200, response.text
    started: dict[str, Any] = response.json()
    return started


async def follow(authorize_url: str, redirect_uri: str) -> str:
    """What the person's browser does at the provider: the query it brings back to the hub."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(authorize_url, allow_redirects=False) as response,
    ):
        assert response.status == 302, await response.text()
        location = response.headers["Location"]
    assert location.startswith(redirect_uri + "?"), location
    return location.split("?", 1)[1]


async def land(browser: httpx.AsyncClient, query: str, accept: str = "application/json") -> Any:
    return await browser.get(f"{CALLBACK}?{query}", headers={"Accept": accept})


async def connect(
    api: httpx.AsyncClient, browser: httpx.AsyncClient, server: OAuthServer, body: dict[str, Any]
) -> dict[str, Any]:
    """Create an integration and authorize it all the way; its state after the callback."""
    created = await create(api, body)
    started = await start(api, created["id"])
    response = await land(browser, await follow(started["authorizeUrl"], server.redirect_uri))
    assert response.status_code == 200, response.text
    return created


async def call_api(hub: Hub, auth: Auth, server: OAuthServer) -> tuple[int, str]:
    """One request to the protected API with ``auth`` applied: (status, Authorization sent)."""
    request = Request("GET", server.url("/api/contacts"))
    await auth.apply(request)
    response = await hub.outbound.request(
        request.method, request.url, headers=request.headers, params=request.params
    )
    return response.status, request.headers["Authorization"]


async def auth_of(hub: Hub, admin_key: IssuedKey, integration_id: str, clock: FakeClock) -> Any:
    return await hub.oauth.auth_for(admin_key.key.tenant_id, integration_id, clock=clock)


async def stored_tokens(hub: Hub, tenant_id: str, integration_id: str) -> dict[str, str]:
    async with hub.store.read() as conn:
        return await SecretBox(hub.vault, tenant_id, token_owner(integration_id)).read(conn)


async def token_row(hub: Hub, tenant_id: str, integration_id: str) -> oauth_store.TokenRow | None:
    async with hub.store.read() as conn:
        return await oauth_store.get_token(conn, tenant_id, integration_id)


# -- authorization code with PKCE ----------------------------------------------------------------


async def test_authorize_then_callback_connects_and_the_token_authorizes_requests(
    api: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    hub: Hub,
    provider: OAuthServer,
    clock: FakeClock,
    admin_key: IssuedKey,
    settings: Settings,
) -> None:
    created = await create(api, oauth_body(provider))
    assert created["status"] == "configuring"

    started = await start(api, created["id"])
    assert started["redirectUri"] == settings.resolved_public_url + CALLBACK
    assert datetime.fromisoformat(started["expiresAt"]) == clock.now + timedelta(minutes=10)
    sent = parse_qs(urlsplit(started["authorizeUrl"]).query)
    assert sent["client_id"] == [CLIENT_ID]
    assert sent["state"] == [started["state"]]
    assert sent["code_challenge_method"] == ["S256"]
    assert sent["scope"] == ["contacts.read offline_access"]

    query = await follow(started["authorizeUrl"], provider.redirect_uri)
    response = await land(browser, query)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["connected"] is True
    assert answer["integrationId"] == created["id"]
    assert answer["status"] == "active"
    assert provider.calls["authorization_code"] == 1

    shown = (await api.get(f"{INTEGRATIONS}/{created['id']}")).json()
    assert shown["status"] == "active"
    assert shown["verifiedAt"] is not None
    assert shown["statusMessage"] is None
    # The tokens are not the integration's credentials (those stay what the person gave).
    assert set(shown["credentials"]) == {"clientId", "clientSecret"}
    actions = [
        row["action"] for row in await audit_rows(api, resource=f"integration/{created['id']}")
    ]
    assert "integration.oauth.connect" in actions
    assert "integration.oauth.authorize" in actions

    # Sealed: the stored ciphertext does not hold the token, and opens to the one issued.
    tenant_id = admin_key.key.tenant_id
    async with hub.store.read() as conn:
        sealed = await secrets_store.get_all(conn, token_owner(created["id"]))
    tokens = await stored_tokens(hub, tenant_id, created["id"])
    assert set(sealed) == {"accessToken", "refreshToken"}
    assert tokens["accessToken"] in provider.access_tokens
    assert tokens["refreshToken"] in provider.refresh_tokens
    for field, value in tokens.items():
        assert value.encode() not in sealed[field].ciphertext

    auth = await auth_of(hub, admin_key, created["id"], clock)
    status, sent_header = await call_api(hub, auth, provider)
    assert (status, sent_header) == (200, f"Bearer {tokens['accessToken']}")
    assert provider.calls["refresh_token"] == 0


async def test_the_callback_answers_a_browser_with_a_page(
    api: httpx.AsyncClient, browser: httpx.AsyncClient, hub: Hub, provider: OAuthServer
) -> None:
    created = await create(api, oauth_body(provider))
    started = await start(api, created["id"])
    query = await follow(started["authorizeUrl"], provider.redirect_uri)
    # Providers add parameters of their own to the redirect: the callback takes them.
    extras = "&iss=https%3A%2F%2Fprovider.example&session_state=s1&scope=contacts.read"
    response = await land(browser, query + extras, accept=BROWSER_ACCEPT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Contacts CRM is connected" in response.text


async def test_refresh_before_expiry_saves_the_rotated_refresh_token(
    api: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    hub: Hub,
    provider: OAuthServer,
    clock: FakeClock,
    admin_key: IssuedKey,
) -> None:
    created = await connect(api, browser, provider, oauth_body(provider))
    tenant_id = admin_key.key.tenant_id
    first = await stored_tokens(hub, tenant_id, created["id"])
    auth = await auth_of(hub, admin_key, created["id"], clock)

    clock.advance(3600 - 120)  # two minutes left: not yet
    assert (await call_api(hub, auth, provider))[0] == 200
    assert provider.calls["refresh_token"] == 0

    clock.advance(90)  # 30 seconds left: refreshed before it expires
    status, header = await call_api(hub, auth, provider)
    second = await stored_tokens(hub, tenant_id, created["id"])
    assert provider.calls["refresh_token"] == 1
    assert status == 200
    assert header == f"Bearer {second['accessToken']}" != f"Bearer {first['accessToken']}"
    assert second["refreshToken"] != first["refreshToken"]
    assert first["refreshToken"] not in provider.refresh_tokens  # the server rotated it
    row = await token_row(hub, tenant_id, created["id"])
    assert row is not None and row.version == 2
    assert row.expires_at == clock.now + timedelta(seconds=3600)
    assert row.scope == "contacts.read offline_access"  # kept: the refresh answer omits it

    # The next refresh can only work with the rotated token: it was saved.
    clock.advance(3600)
    assert (await call_api(hub, auth, provider))[0] == 200
    assert provider.calls["refresh_token"] == 2
    assert provider.token_requests[-1].form["refresh_token"] == second["refreshToken"]
    assert (await token_row(hub, tenant_id, created["id"])).version == 3  # type: ignore[union-attr]


async def test_the_old_refresh_token_is_kept_when_the_response_omits_it(
    api: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    hub: Hub,
    provider: OAuthServer,
    clock: FakeClock,
    admin_key: IssuedKey,
) -> None:
    created = await connect(api, browser, provider, oauth_body(provider))
    tenant_id = admin_key.key.tenant_id
    original = (await stored_tokens(hub, tenant_id, created["id"]))["refreshToken"]
    provider.rotate = False
    auth = await auth_of(hub, admin_key, created["id"], clock)
    for round_ in (1, 2):
        clock.advance(3600)
        assert (await call_api(hub, auth, provider))[0] == 200
        assert provider.calls["refresh_token"] == round_
        assert provider.token_requests[-1].form["refresh_token"] == original
        assert (await stored_tokens(hub, tenant_id, created["id"]))["refreshToken"] == original


async def test_renew_after_a_401_refreshes_and_the_request_can_go_again(
    api: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    hub: Hub,
    provider: OAuthServer,
    clock: FakeClock,
    admin_key: IssuedKey,
) -> None:
    created = await connect(api, browser, provider, oauth_body(provider))
    auth = await auth_of(hub, admin_key, created["id"], clock)
    assert (await call_api(hub, auth, provider))[0] == 200
    provider.revoke_access_tokens()  # the provider dropped the token before it expired
    assert (await call_api(hub, auth, provider))[0] == 401
    # Several callers meeting the 401 at once renew it once.
    assert await asyncio.gather(auth.renew(), auth.renew(), auth.renew()) == [True] * 3
    assert provider.calls["refresh_token"] == 1
    assert (await call_api(hub, auth, provider))[0] == 200


async def test_invalid_grant_sets_the_integration_to_reauthorization_needed(
    api: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    hub: Hub,
    provider: OAuthServer,
    clock: FakeClock,
    admin_key: IssuedKey,
) -> None:
    created = await connect(api, browser, provider, oauth_body(provider))
    auth = await auth_of(hub, admin_key, created["id"], clock)
    provider.revoke_refresh_tokens()
    clock.advance(3600)
    for _ in range(2):
        with pytest.raises(ReauthorizationNeeded) as raised:
            await call_api(hub, auth, provider)
        assert raised.value.error_class == "reauthorize"
        assert "invalid_grant" in raised.value.message
        assert "The refresh token is invalid or revoked" in raised.value.message

    shown = (await api.get(f"{INTEGRATIONS}/{created['id']}")).json()
    assert shown["status"] == "error"
    assert shown["statusMessage"] == "reauthorization needed"
    failed = [
        row
        for row in await audit_rows(api, resource=f"integration/{created['id']}")
        if row["action"] == "integration.oauth.refresh_failed"
    ]
    assert len(failed) == 1  # once per lost grant, not once per try
    assert failed[0]["diff"]["status"] == {"from": "active", "to": "error"}

    # Authorizing again is the way out.
    started = await start(api, created["id"])
    response = await land(browser, await follow(started["authorizeUrl"], provider.redirect_uri))
    assert response.json()["status"] == "active"
    fresh = await auth_of(hub, admin_key, created["id"], clock)
    assert (await call_api(hub, fresh, provider))[0] == 200
    shown = (await api.get(f"{INTEGRATIONS}/{created['id']}")).json()
    assert (shown["status"], shown["statusMessage"]) == ("active", None)


async def test_an_integration_never_authorized_asks_for_authorization(
    api: httpx.AsyncClient, hub: Hub, provider: OAuthServer, clock: FakeClock, admin_key: IssuedKey
) -> None:
    created = await create(api, oauth_body(provider))
    auth = await auth_of(hub, admin_key, created["id"], clock)
    with pytest.raises(ReauthorizationNeeded, match="not authorized yet"):
        await auth.token()
    assert sum(provider.calls.values()) == 0


async def test_the_callback_refuses_unknown_used_and_expired_states(
    api: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    hub: Hub,
    provider: OAuthServer,
    clock: FakeClock,
) -> None:
    created = await create(api, oauth_body(provider))

    doc = assert_problem(await land(browser, "code=abc&state=not-a-state"), 400)
    assert "unknown or was already used" in doc["detail"]
    doc = assert_problem(await land(browser, "code=abc"), 400)
    assert "state" in doc["detail"] and "missing" in doc["detail"]
    doc = assert_problem(await land(browser, "code=abc&state=%00x"), 400)
    assert "NUL" in doc["detail"]

    started = await start(api, created["id"])
    query = await follow(started["authorizeUrl"], provider.redirect_uri)
    assert (await land(browser, query)).status_code == 200
    doc = assert_problem(await land(browser, query), 400)  # the same redirect again
    assert "already used" in doc["detail"]

    started = await start(api, created["id"])
    query = await follow(started["authorizeUrl"], provider.redirect_uri)
    clock.advance(10 * 60 + 1)
    doc = assert_problem(await land(browser, query), 400)
    assert "expired" in doc["detail"]
    assert provider.calls["authorization_code"] == 1  # only the first, good one


async def test_the_callback_reports_a_denied_authorization(
    api: httpx.AsyncClient, browser: httpx.AsyncClient, hub: Hub, provider: OAuthServer
) -> None:
    created = await create(api, oauth_body(provider))
    provider.deny = True
    started = await start(api, created["id"])
    query = await follow(started["authorizeUrl"], provider.redirect_uri)
    doc = assert_problem(await land(browser, query), 400)
    assert "access was denied (access_denied)" in doc["detail"]
    assert "The user denied the request" in doc["detail"]
    assert provider.calls["authorization_code"] == 0
    shown = (await api.get(f"{INTEGRATIONS}/{created['id']}")).json()
    assert shown["status"] == "configuring"
    # The state is spent all the same.
    doc = assert_problem(await land(browser, f"code=x&state={started['state']}"), 400)
    assert "already used" in doc["detail"]


async def test_a_state_is_bound_to_its_tenant(
    api: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    hub: Hub,
    provider: OAuthServer,
    clock: FakeClock,
) -> None:
    created = await create(api, oauth_body(provider))
    other = await hub.access.create_tenant("tenant-b")
    async with app_client(hub.settings, hub, key=await key_for(hub, other.id, "write")) as as_b:
        response = await as_b.post(f"{INTEGRATIONS}/{created['id']}/oauth/authorize")
    assert_problem(response, 404)

    # A state of tenant B naming tenant A's integration completes nothing.
    async with hub.store.transaction() as conn:
        await oauth_store.insert_state(
            conn,
            OAuthState(
                state="s" * 43,
                tenant_id=other.id,
                integration_id=created["id"],
                code_verifier="v" * 64,
                redirect_uri=provider.redirect_uri,
                created_at=clock.now,
                expires_at=clock.now + timedelta(minutes=10),
            ),
            now=clock.now,
        )
    doc = assert_problem(await land(browser, f"code=abc&state={'s' * 43}"), 400)
    assert "integration" in doc["detail"]
    assert provider.calls["authorization_code"] == 0
    shown = (await api.get(f"{INTEGRATIONS}/{created['id']}")).json()
    assert shown["status"] == "configuring"


async def test_a_refused_code_exchange_says_why(
    api: httpx.AsyncClient, browser: httpx.AsyncClient, hub: Hub, provider: OAuthServer
) -> None:
    body = oauth_body(provider)
    body["credentials"]["clientSecret"] = "not-the-secret-0123456789"
    created = await create(api, body)
    started = await start(api, created["id"])
    response = await land(browser, await follow(started["authorizeUrl"], provider.redirect_uri))
    doc = assert_problem(response, 502)
    assert "invalid_client: Client authentication failed" in doc["detail"]
    shown = (await api.get(f"{INTEGRATIONS}/{created['id']}")).json()
    assert shown["status"] == "configuring"


async def test_authorize_needs_a_writer_and_the_authorization_code_auth_type(
    api: httpx.AsyncClient, hub: Hub, provider: OAuthServer, admin_key: IssuedKey
) -> None:
    oauth = await create(api, oauth_body(provider, scopes=[]))
    reader = await key_for(hub, admin_key.key.tenant_id, "read")
    async with app_client(hub.settings, hub, key=reader) as as_reader:
        assert_problem(await as_reader.post(f"{INTEGRATIONS}/{oauth['id']}/oauth/authorize"), 403)
    async with app_client(hub.settings, hub) as anonymous:
        assert_problem(await anonymous.post(f"{INTEGRATIONS}/{oauth['id']}/oauth/authorize"), 401)
    # Without scopes the authorize URL asks for none.
    assert "scope" not in parse_qs(urlsplit((await start(api, oauth["id"]))["authorizeUrl"]).query)

    body = {**oauth_body(provider), "name": "Bearer API"}
    body["config"]["auth"] = {"type": "bearer"}
    body["credentials"] = {"apiKey": "sk_live_0123456789abcdef"}
    created = await create(api, body)
    doc = assert_problem(await api.post(f"{INTEGRATIONS}/{created['id']}/oauth/authorize"), 422)
    assert "oauth2_authorization_code" in doc["detail"]
    assert_problem(await api.post(f"{INTEGRATIONS}/int_missing/oauth/authorize"), 404)


async def test_the_authorization_code_config_needs_both_urls(
    api: httpx.AsyncClient, provider: OAuthServer
) -> None:
    body = oauth_body(provider)
    del body["config"]["auth"]["authorizeUrl"]
    del body["config"]["auth"]["tokenUrl"]
    response = await api.post(INTEGRATIONS, json=body)
    doc = assert_problem(response, 422, {"config.auth.authorizeUrl", "config.auth.tokenUrl"})
    assert "oauth2_authorization_code" in doc["errors"][0]["message"]


async def test_deleting_the_integration_removes_its_tokens(
    api: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    hub: Hub,
    provider: OAuthServer,
    admin_key: IssuedKey,
) -> None:
    created = await connect(api, browser, provider, oauth_body(provider))
    tenant_id = admin_key.key.tenant_id
    assert await stored_tokens(hub, tenant_id, created["id"])
    assert (await api.delete(f"{INTEGRATIONS}/{created['id']}")).status_code == 204
    assert await stored_tokens(hub, tenant_id, created["id"]) == {}
    assert await token_row(hub, tenant_id, created["id"]) is None


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
async def test_two_processes_refreshing_at_once_make_one_refresh_call(
    api: httpx.AsyncClient,
    browser: httpx.AsyncClient,
    hub: Hub,
    provider: OAuthServer,
    clock: FakeClock,
    admin_key: IssuedKey,
    settings: Settings,
) -> None:
    created = await connect(api, browser, provider, oauth_body(provider))
    tenant_id = admin_key.key.tenant_id
    before = await stored_tokens(hub, tenant_id, created["id"])
    provider.refresh_delay = 0.3  # the second process arrives while the first one refreshes
    stale = (clock.now + timedelta(seconds=3600)).isoformat()
    args = [str(settings.home), str(settings.database_url), tenant_id, created["id"], stale]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROC),
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert line == b"ready\n", line
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outputs = [await asyncio.wait_for(proc.communicate(), timeout=30) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    tokens = []
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err.decode()
        tokens.append(out.decode().split()[-1])

    assert provider.calls["refresh_token"] == 1
    after = await stored_tokens(hub, tenant_id, created["id"])
    assert tokens == [after["accessToken"]] * 2
    assert after["accessToken"] != before["accessToken"]
    assert (await token_row(hub, tenant_id, created["id"])).version == 2  # type: ignore[union-attr]


# -- client credentials --------------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[OutboundHTTP]:
    async with OutboundHTTP(allowlist=["127.0.0.0/8"]) as client:
        yield client


def client_credentials(server: OAuthServer, http: OutboundHTTP, clock: FakeClock, **kw: Any) -> Any:
    return OAuth2ClientCredentials(
        server.url("/token"),
        CLIENT_ID,
        kw.pop("secret", CLIENT_SECRET),
        ["contacts.read"],
        http=http,
        clock=clock,
        **kw,
    )


async def send(http: OutboundHTTP, auth: Auth, server: OAuthServer) -> tuple[int, str]:
    request = Request("GET", server.url("/api/contacts"))
    await auth.apply(request)
    response = await http.request(request.method, request.url, headers=request.headers)
    return response.status, request.headers["Authorization"]


async def test_client_credentials_token_is_reused_until_shortly_before_expiry(
    server: OAuthServer, http: OutboundHTTP
) -> None:
    clock = FakeClock()
    auth = client_credentials(server, http, clock)
    first = await asyncio.gather(*(send(http, auth, server) for _ in range(5)))
    assert server.calls["client_credentials"] == 1  # one request, shared by all five
    assert {status for status, _ in first} == {200}
    assert len({header for _, header in first}) == 1
    assert server.token_requests[0].form["scope"] == "contacts.read"
    assert server.token_requests[0].client_auth == "post"

    clock.advance(3600 - 120)
    assert await send(http, auth, server) == first[0]
    assert server.calls["client_credentials"] == 1

    clock.advance(90)  # within the last minute: a new token
    status, header = await send(http, auth, server)
    assert server.calls["client_credentials"] == 2
    assert status == 200 and header != first[0][1]


async def test_client_credentials_renew_fetches_a_new_token_once(
    server: OAuthServer, http: OutboundHTTP
) -> None:
    auth = client_credentials(server, http, FakeClock())
    _, before = await send(http, auth, server)
    assert await asyncio.gather(auth.renew(), auth.renew()) == [True, True]
    assert server.calls["client_credentials"] == 2
    status, after = await send(http, auth, server)
    assert status == 200 and after != before


async def test_client_credentials_with_http_basic_client_authentication(
    server: OAuthServer, http: OutboundHTTP
) -> None:
    auth = client_credentials(server, http, FakeClock(), client_auth="client_secret_basic")
    assert (await send(http, auth, server))[0] == 200
    sent = server.token_requests[-1]
    assert sent.client_auth == "basic"
    assert "client_secret" not in sent.form


async def test_client_credentials_invalid_client_says_what_the_server_said(
    server: OAuthServer, http: OutboundHTTP
) -> None:
    auth = client_credentials(server, http, FakeClock(), secret="wrong-secret")
    with pytest.raises(UpstreamAuthError) as raised:
        await send(http, auth, server)
    assert type(raised.value) is UpstreamAuthError
    assert raised.value.status == 401
    assert raised.value.upstream_message == "invalid_client: Client authentication failed"
    assert "Client authentication failed" in raised.value.message
    assert server.calls["api"] == 0


async def test_the_token_endpoint_is_behind_the_ssrf_guard(server: OAuthServer) -> None:
    async with OutboundHTTP() as guarded:
        auth = client_credentials(server, guarded, FakeClock())
        with pytest.raises(BlockedAddress):
            await auth.apply(Request("GET", "https://api.example.com/x"))
    assert server.calls["client_credentials"] == 0
