"""Which config headers and endpoint query parameters are refused as credentials, by table."""

from __future__ import annotations

import pytest

from isthmus.connectors.config_secrets import holds_credential, secret_errors

ENDPOINT = "https://api.example.com/v1/contacts"


@pytest.mark.parametrize(
    ("name", "credential"),
    [
        ("Authorization", True),
        ("X-API-Key", True),
        ("api_key", True),
        ("apiKey", True),
        ("access_token", True),
        ("X-Auth-Token", True),
        ("client_secret", True),
        ("password", True),
        ("key", True),  # Google's APIs
        ("X-Auth", True),
        ("AccessKeyId", True),
        # Names the logs mask at no cost, which would refuse good configs here.
        ("country_code", False),
        ("session_id", False),
        ("sort_key", False),
        ("auth_mode", False),
        ("X-Api-Version", False),
        ("X-Request-Id", False),
        ("limit", False),
    ],
)
def test_names_that_carry_credentials(name: str, credential: bool) -> None:
    assert holds_credential(name) is credential


def test_the_errors_name_the_place_and_never_the_value() -> None:
    config = {
        "apiEndpoint": f"{ENDPOINT}?limit=100&api_key=v1&api_key=v2&country_code=US",
        "headers": {"Authorization": "Bearer v3", "X-Api-Version": "2"},
    }
    errors = list(secret_errors(config))

    assert [e.field for e in errors] == ["config.headers.Authorization", "config.apiEndpoint"]
    assert '"type": "bearer"' in errors[0].message
    assert '"paramName": "api_key"' in errors[1].message
    assert not any(v in e.message for e in errors for v in ("v1", "v2", "v3"))
    assert list(secret_errors({"apiEndpoint": "not a url at all ::"})) == []
    assert list(secret_errors("config")) == []
