"""Liveness, readiness, the OpenAPI document and the self-hosted docs pages."""

from __future__ import annotations

import re

import httpx
import pytest
from api_support import assert_problem

ROUTES = {
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/api/v1/integrations", "get"),
    ("/api/v1/integrations", "post"),
    ("/api/v1/integrations/providers", "get"),
    ("/api/v1/integrations/{integration_id}", "get"),
    ("/api/v1/integrations/{integration_id}", "patch"),
    ("/api/v1/integrations/{integration_id}", "delete"),
    ("/api/v1/integrations/{integration_id}/enable", "post"),
    ("/api/v1/integrations/{integration_id}/disable", "post"),
    ("/api/v1/integrations/{integration_id}/credentials/reveal", "post"),
    ("/api/v1/api-keys", "get"),
    ("/api/v1/api-keys", "post"),
    ("/api/v1/api-keys/{key_id}", "delete"),
    ("/api/v1/audit", "get"),
    ("/api/v1/events", "post"),
    ("/api/v1/events", "get"),
    ("/api/v1/events/{event_id}", "get"),
}


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_the_store_is_migrated(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"store": "ok", "migrations": "current"},
    }


async def test_unknown_routes_are_problem_404s(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nowhere"), 404)
    assert_problem(await client.get("/nowhere"), 404)


async def test_openapi_lists_every_route_with_bearer_auth(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")

    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    listed = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert listed >= ROUTES
    schemes = doc["components"]["securitySchemes"]
    bearer_schemes = {
        name for name, s in schemes.items() if s["type"] == "http" and s["scheme"] == "bearer"
    }
    assert bearer_schemes
    for path, method in ROUTES:
        if path.startswith("/api/v1/"):
            security = doc["paths"][path][method].get("security", [])
            assert any(set(req) & bearer_schemes for req in security), (path, method)


async def test_openapi_describes_request_bodies_and_problems(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()

    create = doc["paths"]["/api/v1/integrations"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert {"name", "provider", "type", "description", "config", "credentials", "enabled"} <= set(
        body["properties"]
    )
    assert body.get("additionalProperties") is False


async def test_openapi_describes_every_query_parameter(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()

    bare = [
        f"{method.upper()} {path} ?{param['name']}"
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
        for param in operation.get("parameters", [])
        if param["in"] == "query" and not param.get("description")
    ]
    assert bare == []
    contacts = doc["paths"]["/api/v1/contacts"]["get"]["parameters"]
    limit = next(p for p in contacts if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 200 and "1 to 200" in limit["description"]


@pytest.mark.parametrize("page", ["/api/docs", "/api/redoc"])
async def test_docs_pages_use_only_local_assets(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html and "https://" not in html
    assert "/openapi.json" in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        assert asset.startswith("/"), asset
        served = await client.get(asset)
        assert served.status_code == 200, asset
        assert served.content, asset


async def test_swagger_ui_offers_bearer_auth_and_try_it_out(client: httpx.AsyncClient) -> None:
    html = (await client.get("/api/docs")).text

    assert '"tryItOutEnabled": true' in html
    assert '"persistAuthorization": true' in html
