"""The auth family: one class per way an API wants its credentials (``types.Auth``).

The simple schemes put a fixed secret on every request. :class:`OAuth2ClientCredentials`
fetches an access token from the token endpoint and keeps it until shortly before it expires;
the authorization-code grant, whose tokens live in the store, is in ``connectors.oauth``.
Token endpoint calls go through :class:`~isthmus.http.OutboundHTTP` (the SSRF guard applies)
and fail as :mod:`isthmus.errors` classes: ``invalid_client`` is an ``UpstreamAuthError``,
``invalid_grant`` a ``ReauthorizationNeeded``, both carrying the server's description.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from authlib.oauth2.auth import ClientAuth  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749.parameters import (  # type: ignore[import-untyped]
    prepare_token_request,
)

from isthmus.connectors.types import Request
from isthmus.errors import (
    BadResponse,
    ReauthorizationNeeded,
    UpstreamAuthError,
    UpstreamRejected,
    UpstreamStatusError,
)
from isthmus.http import OutboundHTTP, raise_for_status, redact_url, upstream_message
from isthmus.store.types import utcnow

Clock = Callable[[], datetime]
ClientAuthMethod = Literal["client_secret_post", "client_secret_basic"]

#: A token is renewed this long before it expires (less for tokens that live shorter).
REFRESH_LEEWAY = timedelta(seconds=60)


class NoAuth:
    """For APIs that need no credentials."""

    async def apply(self, request: Request) -> None:
        return None

    async def renew(self) -> bool:
        return False


class HeaderAuth:
    """A secret in a request header (an API key in ``X-API-Key`` by default)."""

    def __init__(self, value: str, name: str = "X-API-Key") -> None:
        self.name = name
        self._value = value

    async def apply(self, request: Request) -> None:
        request.headers[self.name] = self._value

    async def renew(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class BearerAuth(HeaderAuth):
    """``Authorization: Bearer <token>``."""

    def __init__(self, token: str) -> None:
        super().__init__(f"Bearer {token}", "Authorization")


class BasicAuth(HeaderAuth):
    """HTTP Basic (RFC 7617), user name and password encoded as UTF-8."""

    def __init__(self, username: str, password: str) -> None:
        if ":" in username:
            raise ValueError("a user name for HTTP Basic cannot contain ':' (RFC 7617 2)")
        encoded = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        super().__init__(f"Basic {encoded}", "Authorization")


class QueryAuth:
    """A secret as a query parameter (``?api_key=...`` by default)."""

    def __init__(self, value: str, name: str = "api_key") -> None:
        self.name = name
        self._value = value

    async def apply(self, request: Request) -> None:
        request.set_param(self.name, self._value)

    async def renew(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"QueryAuth(name={self.name!r})"


# -- OAuth2 tokens ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint handed out, with ``expires_at`` computed from ``expires_in``."""

    access_token: str = field(repr=False)
    token_type: str
    issued_at: datetime
    expires_at: datetime | None = None
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None

    def due(self, now: datetime, leeway: timedelta = REFRESH_LEEWAY) -> bool:
        return token_due(self.issued_at, self.expires_at, now, leeway)


def token_due(
    issued_at: datetime,
    expires_at: datetime | None,
    now: datetime,
    leeway: timedelta = REFRESH_LEEWAY,
) -> bool:
    """Whether a token should be renewed now: ``leeway`` before it expires, or half-way
    through its life for tokens that live shorter than twice the leeway (so a 60-second token
    is not renewed on every call). A token without an expiry is never due."""
    if expires_at is None:
        return False
    margin = min(leeway, max(expires_at - issued_at, timedelta(0)) / 2)
    return now >= expires_at - margin


def parse_token_response(body: bytes, now: datetime, *, url: str) -> TokenSet:
    """A successful token response (RFC 6749 5.1) as a :class:`TokenSet`; BadResponse when
    it is not JSON or has no access token."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadResponse(f"the token endpoint {url} did not answer JSON", url=url) from None
    if not isinstance(doc, dict):
        raise BadResponse(f"the token endpoint {url} did not answer a JSON object", url=url)
    access = doc.get("access_token")
    if not isinstance(access, str) or not access:
        # Some servers answer 200 with an error body ({"ok": false, "error": ...}).
        said = upstream_message(body)
        raise BadResponse(
            f"the token endpoint {url} answered no access_token" + (f": {said}" if said else ""),
            url=url,
        )
    refresh = doc.get("refresh_token")
    token_type = doc.get("token_type")
    return TokenSet(
        access_token=access,
        token_type=token_type if isinstance(token_type, str) and token_type else "Bearer",
        issued_at=now,
        expires_at=_expiry(doc.get("expires_in"), now),
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        scope=_scope(doc.get("scope")),
    )


def _expiry(expires_in: object, now: datetime) -> datetime | None:
    # Some servers send the number as a string; anything unreadable means "no expiry given".
    if not isinstance(expires_in, int | float | str) or isinstance(expires_in, bool):
        return None
    try:
        return now + timedelta(seconds=max(float(expires_in), 0.0))
    except (ValueError, OverflowError):
        return None


def _scope(scope: object) -> str | None:
    if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
        scope = " ".join(scope)
    return scope if isinstance(scope, str) and scope else None


def bearer_value(token: TokenSet | str) -> str:
    """The Authorization value for an access token (RFC 6750: scheme ``Bearer``)."""
    access = token.access_token if isinstance(token, TokenSet) else token
    return f"Bearer {access}"


async def request_token(
    http: OutboundHTTP,
    token_url: str,
    grant_type: str,
    params: Mapping[str, str | Sequence[str] | None],
    *,
    client_id: str,
    client_secret: str,
    client_auth: ClientAuthMethod = "client_secret_post",
    now: datetime,
) -> TokenSet:
    """POST one grant to the token endpoint (RFC 6749 4.1.3, 4.4.2, 6) and read the answer.

    ``params`` are the grant's own parameters (``code``, ``refresh_token``, ``scope`` ...;
    None values are left out). Errors: ``invalid_grant`` -> ReauthorizationNeeded;
    ``invalid_client`` / ``unauthorized_client`` -> UpstreamAuthError; another OAuth error
    -> UpstreamRejected; otherwise what ``raise_for_status`` says for the status.
    """
    body = prepare_token_request(grant_type, **{k: v for k, v in params.items() if v})
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        # GitHub-style servers answer form-encoded unless asked for JSON.
        "Accept": "application/json",
    }
    client = ClientAuth(client_id, client_secret, client_auth)
    _, headers, body = client.prepare("POST", token_url, headers, body)
    response = await http.request("POST", token_url, headers=headers, data=str(body))
    shown = redact_url(response.url)
    if not response.ok:
        _raise_oauth_error(response.status, response.body, shown)
        raise_for_status(response, now=now)
    return parse_token_response(response.body, now, url=shown)


_CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


def _raise_oauth_error(status: int, body: bytes, shown: str) -> None:
    """Raise the error an RFC 6749 5.2 error body names, if the body is one."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return
    code = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(code, str) or status >= 500 or status == 429:
        return
    detail = upstream_message(body)
    kind: type[UpstreamStatusError]
    if code == "invalid_grant":
        kind, what = ReauthorizationNeeded, "refused the grant; authorize the integration again"
    elif code in _CLIENT_ERRORS:
        kind, what = UpstreamAuthError, "refused the client credentials"
    else:
        kind, what = UpstreamRejected, "refused the token request"
    raise kind(
        f"the token endpoint {shown} {what}: {detail}",
        status=status,
        url=shown,
        upstream_message=detail,
    )


class OAuth2ClientCredentials:
    """OAuth2 client credentials grant (RFC 6749 4.4): a token fetched with the client's own
    id and secret, cached in memory until shortly before it expires.

    One token request at a time per instance: callers arriving while one is in flight wait
    for it and share its token. ``renew()`` (after a 401) drops the token and fetches again,
    unless another caller already renewed it meanwhile.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        scopes: Sequence[str] = (),
        *,
        http: OutboundHTTP,
        clock: Clock = utcnow,
        client_auth: ClientAuthMethod = "client_secret_post",
        leeway: timedelta = REFRESH_LEEWAY,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = tuple(scopes)
        self._http = http
        self._clock = clock
        self._client_auth: ClientAuthMethod = client_auth
        self._leeway = leeway
        self._token: TokenSet | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (
            f"OAuth2ClientCredentials(token_url={self.token_url!r}, client_id={self.client_id!r})"
        )

    async def apply(self, request: Request) -> None:
        request.headers["Authorization"] = bearer_value(await self.token())

    async def renew(self) -> bool:
        seen = self._token
        async with self._lock:
            if self._token is seen:
                self._token = await self._fetch()
        return True

    async def token(self) -> TokenSet:
        """The cached token, or a new one when there is none or it is due."""
        current = self._token
        if current is not None and not current.due(self._clock(), self._leeway):
            return current
        async with self._lock:
            current = self._token
            if current is None or current.due(self._clock(), self._leeway):
                current = self._token = await self._fetch()
            return current

    async def _fetch(self) -> TokenSet:
        return await request_token(
            self._http,
            self.token_url,
            "client_credentials",
            {"scope": list(self.scopes) or None},
            client_id=self.client_id,
            client_secret=self._client_secret,
            client_auth=self._client_auth,
            now=self._clock(),
        )
