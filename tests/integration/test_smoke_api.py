from __future__ import annotations

import httpx


async def test_create_and_read_back(api: httpx.AsyncClient) -> None:
    created = await api.post(
        "/api/v1/integrations",
        json={
            "name": "CRM",
            "provider": "api_endpoint",
            "config": {"apiEndpoint": "https://crm.example.com/v1/contacts"},
            "credentials": {"apiKey": "sk_live_0123456789abcdefWXYZ"},
        },
    )
    assert created.status_code == 201, created.text
    got = await api.get(f"/api/v1/integrations/{created.json()['id']}")
    assert got.json()["credentials"] == {"apiKey": "sk_l...WXYZ"}
