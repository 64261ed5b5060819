"""The simple auth schemes on a request, token expiry rules, token responses, and which auth
an integration's config builds."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from isthmus.connectors.auth import (
    BasicAuth,
    BearerAuth,
    HeaderAuth,
    NoAuth,
    OAuth2ClientCredentials,
    QueryAuth,
    parse_token_response,
    token_due,
)
from isthmus.connectors.auth_factory import auth_for
from isthmus.connectors.types import Auth, Request
from isthmus.errors import BadResponse, InvalidInput
from isthmus.http import OutboundHTTP

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def fresh() -> Request:
    return Request("GET", "https://api.example.com/v1/contacts", [("page", "2")], {"X-Trace": "1"})


async def applied(auth: Auth) -> Request:
    request = fresh()
    await auth.apply(request)
    return request


@pytest.mark.parametrize(
    ("auth", "headers", "params"),
    [
        (NoAuth(), {}, []),
        (BearerAuth("tok_123"), {"Authorization": "Bearer tok_123"}, []),
        (HeaderAuth("k_1"), {"X-API-Key": "k_1"}, []),
        (HeaderAuth("k_1", name="Api-Token"), {"Api-Token": "k_1"}, []),
        (QueryAuth("k_2"), {}, [("api_key", "k_2")]),
        (QueryAuth("k_2", name="key"), {}, [("key", "k_2")]),
        (
            BasicAuth("ann", "s3cret"),
            {"Authorization": "Basic " + base64.b64encode(b"ann:s3cret").decode()},
            [],
        ),
        (
            BasicAuth("jörg", "pässwörd:x"),
            {"Authorization": "Basic " + base64.b64encode("jörg:pässwörd:x".encode()).decode()},
            [],
        ),
    ],
    ids=["none", "bearer", "header", "header-named", "query", "query-named", "basic", "utf8"],
)
async def test_simple_auth_on_a_request(
    auth: Auth, headers: dict[str, str], params: list[tuple[str, str]]
) -> None:
    request = await applied(auth)
    assert request.headers == {"X-Trace": "1", **headers}
    assert request.params == [("page", "2"), *params]
    assert request.url == "https://api.example.com/v1/contacts"
    assert await auth.renew() is False


async def test_query_auth_replaces_a_parameter_of_the_same_name() -> None:
    request = Request("GET", "https://x.example/", [("api_key", "old"), ("q", "a")])
    await QueryAuth("new").apply(request)
    assert request.params == [("q", "a"), ("api_key", "new")]


def test_basic_auth_refuses_a_colon_in_the_user_name() -> None:
    with pytest.raises(ValueError):
        BasicAuth("a:b", "pw")


@pytest.mark.parametrize(
    "auth",
    [
        BearerAuth("sk_live_secret"),
        HeaderAuth("sk_live_secret"),
        QueryAuth("sk_live_secret"),
        BasicAuth("user", "sk_live_secret"),
    ],
)
def test_repr_never_shows_the_secret(auth: object) -> None:
    assert "sk_live_secret" not in repr(auth)


@pytest.mark.parametrize(
    ("lifetime", "elapsed", "due"),
    [
        (3600, 0, False),
        (3600, 3539, False),
        (3600, 3540, True),  # the last minute
        (3600, 4000, True),
        (60, 29, False),  # short-lived: renewed half-way, not on every call
        (60, 30, True),
        (0, 0, True),
    ],
)
def test_token_due(lifetime: int, elapsed: int, due: bool) -> None:
    expires = T0 + timedelta(seconds=lifetime)
    assert token_due(T0, expires, T0 + timedelta(seconds=elapsed)) is due


def test_a_token_without_expiry_is_never_due() -> None:
    assert token_due(T0, None, T0 + timedelta(days=365)) is False


@pytest.mark.parametrize(
    ("body", "expires_in", "refresh", "scope"),
    [
        (b'{"access_token":"a","token_type":"bearer","expires_in":3600}', 3600, None, None),
        (b'{"access_token":"a","expires_in":"120","refresh_token":"r"}', 120, "r", None),
        (b'{"access_token":"a","scope":"x y"}', None, None, "x y"),
        (b'{"access_token":"a","scope":["x","y"],"expires_in":"soon"}', None, None, "x y"),
        (b'{"access_token":"a","scope":7,"expires_in":1e400}', None, None, None),
        (b'{"access_token":"a","expires_in":true,"refresh_token":""}', None, None, None),
    ],
)
def test_parse_token_response(
    body: bytes, expires_in: int | None, refresh: str | None, scope: str | None
) -> None:
    tokens = parse_token_response(body, T0, url="https://auth.example/token")
    assert tokens.access_token == "a"
    assert tokens.token_type.lower() == "bearer"
    assert tokens.expires_at == (T0 + timedelta(seconds=expires_in) if expires_in else None)
    assert tokens.refresh_token == refresh
    assert tokens.scope == scope
    assert "access_token" not in repr(tokens) and "refresh_token" not in repr(tokens)


@pytest.mark.parametrize(
    "body", [b"<html>login</html>", b"[]", b'{"token_type":"bearer"}', b'{"access_token":""}']
)
def test_unusable_token_responses(body: bytes) -> None:
    with pytest.raises(BadResponse, match="token endpoint"):
        parse_token_response(body, T0, url="https://auth.example/token")


def test_an_error_in_a_successful_answer_is_reported() -> None:
    body = b'{"ok": false, "error": "invalid_code"}'
    with pytest.raises(BadResponse, match="no access_token: invalid_code"):
        parse_token_response(body, T0, url="https://auth.example/token")


# -- auth_for --------------------------------------------------------------------------------------

ENDPOINT = "https://api.example.com/v1/contacts"


def config(**auth: Any) -> dict[str, Any]:
    return {"apiEndpoint": ENDPOINT, "auth": auth} if auth else {"apiEndpoint": ENDPOINT}


@pytest.mark.parametrize(
    ("cfg", "credentials", "headers", "params"),
    [
        (config(), {"apiKey": "k"}, {"Authorization": "Bearer k"}, []),
        (config(type="bearer"), {"apiKey": "k"}, {"Authorization": "Bearer k"}, []),
        (config(type="header"), {"apiKey": "k"}, {"X-API-Key": "k"}, []),
        (config(type="header", headerName="X-Key"), {"apiKey": "k"}, {"X-Key": "k"}, []),
        (config(type="query"), {"apiKey": "k"}, {}, [("api_key", "k")]),
        (config(type="query", paramName="token"), {"apiKey": "k"}, {}, [("token", "k")]),
        (
            config(type="basic"),
            {"username": "u", "password": "p"},
            {"Authorization": "Basic dTpw"},
            [],
        ),
        (config(type="none"), {}, {}, []),
    ],
)
async def test_auth_for_builds_what_the_config_says(
    cfg: dict[str, Any],
    credentials: dict[str, str],
    headers: dict[str, str],
    params: list[tuple[str, str]],
) -> None:
    request = Request("GET", ENDPOINT)
    await auth_for(cfg, credentials, http=OutboundHTTP()).apply(request)
    assert (request.headers, request.params) == (headers, params)


def test_auth_for_client_credentials() -> None:
    cfg = config(type="oauth2_client_credentials", tokenUrl="https://a.example/t", scopes=["r"])
    auth = auth_for(cfg, {"clientId": "id", "clientSecret": "s"}, http=OutboundHTTP())
    assert isinstance(auth, OAuth2ClientCredentials)
    assert (auth.token_url, auth.client_id, auth.scopes) == ("https://a.example/t", "id", ("r",))


@pytest.mark.parametrize(
    ("cfg", "credentials", "field"),
    [
        (config(), {}, "credentials.apiKey"),
        (config(type="basic"), {"username": "u"}, "credentials.password"),
        (
            config(type="oauth2_client_credentials", tokenUrl="https://a.example/t"),
            {"clientId": "id"},
            "credentials.clientSecret",
        ),
        (config(type="oauth2_client_credentials"), {}, "config.auth.tokenUrl"),
        # Its tokens are stored per integration: nothing to build from a config alone.
        (config(type="oauth2_authorization_code"), {}, "config.auth.type"),
        (config(type="kerberos"), {}, "config.auth.type"),
    ],
)
def test_auth_for_names_what_is_missing(
    cfg: dict[str, Any], credentials: dict[str, str], field: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        auth_for(cfg, credentials, http=OutboundHTTP())
    assert [e.field for e in raised.value.errors] == [field]
