"""A local OAuth2 authorization server (and the API it protects) on aiohttp, for the tests.

It follows RFC 6749 and RFC 7636 as a provider would:

- ``GET /authorize`` checks ``response_type=code``, the client id, the registered redirect URI
  and an S256 ``code_challenge``, then redirects (302) to the redirect URI with ``code`` and
  ``state`` (or ``error=access_denied`` when told to deny);
- ``POST /token`` authenticates the client (HTTP Basic or form fields) and serves the
  ``authorization_code`` (code once, same redirect URI, verifier matching the challenge),
  ``refresh_token`` (rotating the refresh token or not, ``invalid_grant`` for an unknown or
  revoked one) and ``client_credentials`` grants; errors are RFC 6749 5.2 JSON bodies;
- ``GET /api/...`` answers 200 for a live access token and 401 otherwise.

Every call is counted (``calls``) and kept (``token_requests``) so tests can assert on them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from webhook_support import LocalServer

CLIENT_ID = "isthmus-test-client"
CLIENT_SECRET = "test-client-secret-0123456789"


@dataclass
class _Code:
    challenge: str
    redirect_uri: str
    scope: str


@dataclass
class TokenRequest:
    grant_type: str
    form: dict[str, str]
    #: How the client authenticated: "basic" or "post".
    client_auth: str


class OAuthServer(LocalServer):
    def __init__(self) -> None:
        super().__init__()
        #: The one redirect URI registered for the client.
        self.redirect_uri = ""
        #: Seconds every access token lives.
        self.expires_in = 3600
        #: Hand out a new refresh token on each refresh (and revoke the old one).
        self.rotate = True
        #: Answer access_denied at /authorize instead of a code.
        self.deny = False
        #: Seconds a refresh takes, so that concurrent refreshes overlap.
        self.refresh_delay = 0.0
        self.calls: Counter[str] = Counter()
        self.token_requests: list[TokenRequest] = []
        self.access_tokens: set[str] = set()
        self.refresh_tokens: set[str] = set()
        self._codes: dict[str, _Code] = {}

    def revoke_refresh_tokens(self) -> None:
        self.refresh_tokens.clear()

    def revoke_access_tokens(self) -> None:
        self.access_tokens.clear()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/authorize" and request.method == "GET":
            self.calls["authorize"] += 1
            return self._authorize(request)
        if request.path == "/token" and request.method == "POST":
            return await self._token(request)
        if request.path.startswith("/api/"):
            self.calls["api"] += 1
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or token not in self.access_tokens:
                return web.json_response({"message": "invalid access token"}, status=401)
            return web.json_response({"ok": True})
        return web.json_response({"message": "no such route"}, status=404)

    def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        problems = [
            what
            for what, bad in (
                ("response_type must be code", q.get("response_type") != "code"),
                ("unknown client_id", q.get("client_id") != CLIENT_ID),
                ("redirect_uri is not registered", q.get("redirect_uri") != self.redirect_uri),
                ("code_challenge_method must be S256", q.get("code_challenge_method") != "S256"),
                ("code_challenge is missing", len(q.get("code_challenge", "")) < 43),
                ("state is missing", not q.get("state")),
            )
            if bad
        ]
        if problems:
            # A real server shows the person an error page; it never redirects to a bad URI.
            return web.json_response({"problems": problems}, status=400)
        if self.deny:
            query = {
                "error": "access_denied",
                "error_description": "The user denied the request",
                "state": q["state"],
            }
        else:
            code = secrets.token_urlsafe(16)
            self._codes[code] = _Code(q["code_challenge"], q["redirect_uri"], q.get("scope", ""))
            query = {"code": code, "state": q["state"]}
        raise web.HTTPFound(f"{self.redirect_uri}?{urlencode(query)}")

    async def _token(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        grant = form.get("grant_type", "")
        self.calls[grant] += 1
        client_id, client_secret, how = form.get("client_id"), form.get("client_secret"), "post"
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            decoded = base64.b64decode(header[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
            how = "basic"
        self.token_requests.append(TokenRequest(grant, form, how))
        if (client_id, client_secret) != (CLIENT_ID, CLIENT_SECRET):
            return _error(401, "invalid_client", "Client authentication failed")
        if grant == "authorization_code":
            return self._exchange(form)
        if grant == "refresh_token":
            if self.refresh_delay:
                await asyncio.sleep(self.refresh_delay)
            return self._refresh(form)
        if grant == "client_credentials":
            return web.json_response(self._issue(form.get("scope", ""), refresh=False))
        return _error(400, "unsupported_grant_type", f"grant_type {grant!r} is not supported")

    def _exchange(self, form: dict[str, str]) -> web.Response:
        code = self._codes.pop(form.get("code", ""), None)
        if code is None:
            return _error(400, "invalid_grant", "The authorization code is invalid or used")
        if form.get("redirect_uri") != code.redirect_uri:
            return _error(400, "invalid_grant", "redirect_uri does not match")
        verifier = form.get("code_verifier", "")
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != code.challenge:
            return _error(400, "invalid_grant", "PKCE verification failed")
        return web.json_response(self._issue(code.scope, refresh=True))

    def _refresh(self, form: dict[str, str]) -> web.Response:
        old = form.get("refresh_token", "")
        if old not in self.refresh_tokens:
            return _error(400, "invalid_grant", "The refresh token is invalid or revoked")
        if self.rotate:
            self.refresh_tokens.discard(old)
        return web.json_response(self._issue(None, refresh=self.rotate))

    def _issue(self, scope: str | None, *, refresh: bool) -> dict[str, Any]:
        access = "at_" + secrets.token_urlsafe(24)
        self.access_tokens.add(access)
        body: dict[str, Any] = {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": self.expires_in,
        }
        if scope is not None:
            body["scope"] = scope
        if refresh:
            body["refresh_token"] = "rt_" + secrets.token_urlsafe(24)
            self.refresh_tokens.add(body["refresh_token"])
        return body


def _error(status: int, code: str, description: str) -> web.Response:
    return web.json_response({"error": code, "error_description": description}, status=status)
