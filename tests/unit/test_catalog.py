from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from isthmus.connectors.catalog import (
    Catalog,
    ProviderSpec,
    load_catalog,
    validate_integration,
)
from isthmus.domain.integrations import IntegrationType
from isthmus.errors import ConfigError, FieldError, InvalidInput

URL = "https://api.example.com/v1/contacts"
DEFAULTS: dict[str, Any] = {
    "method": "GET",
    "headers": {},
    "auth": {"type": "bearer", "headerName": "X-API-Key", "paramName": "api_key"},
    "pagination": {"type": "none"},
    "fieldMapping": {},
}


@pytest.fixture(scope="module")
def spec() -> ProviderSpec:
    return load_catalog().get("api_endpoint")


def errors_of(
    spec: ProviderSpec,
    config: Any,
    credentials: Any,
    *,
    require_credentials: bool = True,
) -> list[FieldError]:
    with pytest.raises(InvalidInput) as caught:
        validate_integration(spec, config, credentials, require_credentials=require_credentials)
    return caught.value.errors


def test_shipped_catalog_loads() -> None:
    catalog = load_catalog()
    assert [p.name for p in catalog.all()] == ["api_endpoint"]
    spec = catalog.get("api_endpoint")
    assert spec.display_name == "Generic REST API"
    assert spec.category is IntegrationType.REST_API
    assert [c.name for c in spec.credentials] == [
        "apiKey",
        "username",
        "password",
        "clientId",
        "clientSecret",
    ]
    assert spec.secret_fields() == {"apiKey", "password", "clientSecret"}
    username = spec.credential("username")
    assert username is not None and not username.secret
    assert spec.credential("nope") is None
    assert spec.auth.default == "bearer"
    assert spec.auth.types["basic"] == ["username", "password"]
    assert spec.auth.types["none"] == []


def _properties(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, Any]]:
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}{name}", sub
        yield from _properties(sub, f"{path}{name}.")


def test_every_config_property_has_title_and_description(spec: ProviderSpec) -> None:
    properties = dict(_properties(spec.config_schema))
    assert {"apiEndpoint", "auth.tokenUrl", "pagination.maxPages", "fieldMapping"} <= set(
        properties
    )
    for path, sub in properties.items():
        assert sub.get("title") and sub.get("description"), path


def cfg(**settings: Any) -> dict[str, Any]:
    """A config with a good endpoint plus ``settings`` (which may replace it)."""
    return {"apiEndpoint": URL, **settings}


KEY = {"apiKey": "k"}
OAUTH = {"clientId": "i", "clientSecret": "s"}
OAUTH2 = "oauth2_client_credentials"
HTTP_URL = "must be an http or https URL"
ALL_CREDENTIALS = "apiKey, username, password, clientId, clientSecret"


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if both else value
    return out


GOOD: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("minimal", cfg(), KEY),
    ("post-with-headers", cfg(method="POST", headers={"X-Tenant": "a"}), KEY),
    ("local-url-with-port", cfg(apiEndpoint="http://localhost:8080/x?y=1"), KEY),
    ("basic", cfg(auth={"type": "basic"}), {"username": "u", "password": "p"}),
    ("header", cfg(auth={"type": "header", "headerName": "Api-Token"}), KEY),
    ("query", cfg(auth={"type": "query", "paramName": "token"}), KEY),
    (
        "oauth2",
        cfg(auth={"type": OAUTH2, "tokenUrl": "https://auth.example.com/t", "scopes": ["read"]}),
        OAUTH,
    ),
    ("none-needs-nothing", cfg(auth={"type": "none"}), {}),
    (
        "cursor-selector-mapping",
        cfg(
            pagination={"type": "cursor", "cursorPath": "meta.next", "pageSize": 1000},
            dataSelector="data.items",
            fieldMapping={"email": "attributes.email", "firstName": "first_name"},
        ),
        KEY,
    ),
    ("page", cfg(pagination={"type": "page", "pageParam": "p", "maxPages": 1}), KEY),
    ("known-credential-unused", cfg(), {"apiKey": "k", "username": "u"}),
]


@pytest.mark.parametrize(
    ("config", "credentials"), [pytest.param(*row[1:], id=row[0]) for row in GOOD]
)
def test_good_configs_pass_with_defaults_filled(
    spec: ProviderSpec, config: dict[str, Any], credentials: dict[str, str]
) -> None:
    before = copy.deepcopy(config)
    filled = validate_integration(spec, config, credentials)
    assert filled == _merged(DEFAULTS, config)
    assert config == before  # the caller's dict is not filled in place


BAD: list[tuple[str, Any, Any, str, str]] = [
    ("missing-endpoint", {}, KEY, "config.apiEndpoint", "is required"),
    ("ftp", cfg(apiEndpoint="ftp://x"), KEY, "config.apiEndpoint", HTTP_URL),
    ("not-a-url", cfg(apiEndpoint="not a url"), KEY, "config.apiEndpoint", HTTP_URL),
    ("no-host", cfg(apiEndpoint="https://"), KEY, "config.apiEndpoint", HTTP_URL),
    ("relative", cfg(apiEndpoint="/v1/contacts"), KEY, "config.apiEndpoint", HTTP_URL),
    ("space", cfg(apiEndpoint="https://a.example/x y"), KEY, "config.apiEndpoint", HTTP_URL),
    ("bad-port", cfg(apiEndpoint="https://a.example:p/"), KEY, "config.apiEndpoint", HTTP_URL),
    ("endpoint-int", cfg(apiEndpoint=5), KEY, "config.apiEndpoint", "must be a string"),
    ("method-int", cfg(method=5), KEY, "config.method", "must be a string"),
    ("method-enum", cfg(method="DELETE"), KEY, "config.method", "must be one of GET, POST"),
    ("header-value", cfg(headers={"X-A": 1}), KEY, "config.headers.X-A", "must be a string"),
    (
        "header-name",
        cfg(headers={"Bad Name": "v"}),
        KEY,
        "config.headers.Bad Name",
        "must be a valid HTTP header name",
    ),
    ("headers-list", cfg(headers=[]), KEY, "config.headers", "must be an object"),
    (
        "extra-config-key",
        cfg(timeout=30),
        KEY,
        "config.timeout",
        "is not a known setting; expected one of apiEndpoint, method, headers, auth, ",
    ),
    ("extra-auth-key", cfg(auth={"kind": "x"}), KEY, "config.auth.kind", "is not a known setting"),
    (
        "pagination-type",
        cfg(pagination={"type": "scroll"}),
        KEY,
        "config.pagination.type",
        "must be one of none, page, offset, cursor, next_url, link_header, header_cursor",
    ),
    (
        "page-size-low",
        cfg(pagination={"pageSize": 0}),
        KEY,
        "config.pagination.pageSize",
        "must be at least 1",
    ),
    (
        "page-size-high",
        cfg(pagination={"pageSize": 1001}),
        KEY,
        "config.pagination.pageSize",
        "must be at most 1000",
    ),
    (
        "max-pages-bool",
        cfg(pagination={"maxPages": True}),
        KEY,
        "config.pagination.maxPages",
        "must be an integer",
    ),
    (
        "cursor-without-path",
        cfg(pagination={"type": "cursor", "cursorParam": "after"}),
        KEY,
        "config.pagination.cursorPath",
        "is required when pagination.type is 'cursor'",
    ),
    (
        "header-cursor-without-header",
        cfg(pagination={"type": "header_cursor"}),
        KEY,
        "config.pagination.cursorHeader",
        "is required when pagination.type is 'header_cursor'",
    ),
    (
        "page-without-a-stop",
        cfg(pagination={"type": "page", "stopOnEmpty": False}),
        KEY,
        "config.pagination.stopOnEmpty",
        "page pagination needs a way to stop: stopOnEmpty, hasMorePath, totalPath or maxPages",
    ),
    (
        "extra-pagination-key",
        cfg(pagination={"cursor": "x"}),
        KEY,
        "config.pagination.cursor",
        "is not a known setting",
    ),
    ("selector", cfg(dataSelector="a..b"), KEY, "config.dataSelector", "must be a dotted path"),
    (
        "mapping",
        cfg(fieldMapping={"email": 1}),
        KEY,
        "config.fieldMapping.email",
        "must be a string",
    ),
    (
        "oauth2-no-token-url",
        cfg(auth={"type": OAUTH2}),
        OAUTH,
        "config.auth.tokenUrl",
        f"is required when auth.type is {OAUTH2!r}",
    ),
    (
        "oauth2-bad-token-url",
        cfg(auth={"type": OAUTH2, "tokenUrl": "ftp://t"}),
        OAUTH,
        "config.auth.tokenUrl",
        HTTP_URL,
    ),
    (
        "empty-scope",
        cfg(auth={"type": "none", "scopes": [""]}),
        {},
        "config.auth.scopes.0",
        "must not be empty",
    ),
    (
        "auth-type",
        cfg(auth={"type": "kerberos"}),
        {},
        "config.auth.type",
        "must be one of bearer, header, query, basic, oauth2_client_credentials, "
        "oauth2_authorization_code, none",
    ),
    ("auth-not-object", cfg(auth="bearer"), {}, "config.auth", "must be an object"),
    ("config-not-object", [], {}, "config", "must be an object"),
    ("bearer-no-key", cfg(), {}, "credentials.apiKey", "is required for auth type 'bearer'"),
    (
        "query-no-key",
        cfg(auth={"type": "query"}),
        {},
        "credentials.apiKey",
        "is required for auth type 'query'",
    ),
    (
        "basic-no-password",
        cfg(auth={"type": "basic"}),
        {"username": "u"},
        "credentials.password",
        "is required for auth type 'basic'",
    ),
    (
        "oauth2-no-secret",
        cfg(auth={"type": OAUTH2, "tokenUrl": URL}),
        {"clientId": "i"},
        "credentials.clientSecret",
        f"is required for auth type {OAUTH2!r}",
    ),
    (
        "extra-credential",
        cfg(),
        {"apiKey": "k", "token": "t"},
        "credentials.token",
        f"is not a credential of provider 'api_endpoint'; expected one of {ALL_CREDENTIALS}",
    ),
    ("credential-int", cfg(), {"apiKey": 123}, "credentials.apiKey", "must be a string"),
    ("credential-empty", cfg(), {"apiKey": ""}, "credentials.apiKey", "must not be empty"),
    ("credentials-list", cfg(), ["apiKey"], "credentials", "must be an object"),
]


@pytest.mark.parametrize(
    ("config", "credentials", "field", "message"),
    [pytest.param(*row[1:], id=row[0]) for row in BAD],
)
def test_bad_input_names_the_field(
    spec: ProviderSpec, config: Any, credentials: Any, field: str, message: str
) -> None:
    errors = errors_of(spec, config, credentials)
    assert [e.field for e in errors] == [field], errors
    assert errors[0].message.startswith(message)


@pytest.mark.parametrize(
    ("config", "credentials", "fields"),
    [
        pytest.param(cfg(), {}, [], id="missing-ok"),
        pytest.param(cfg(auth={"type": "basic"}), {"username": "u"}, [], id="partial-ok"),
        pytest.param(cfg(), {"secret": "x"}, ["credentials.secret"], id="extra-still-rejected"),
        pytest.param(cfg(), {"apiKey": 1}, ["credentials.apiKey"], id="non-string-still-rejected"),
        pytest.param(cfg(apiEndpoint="ftp://x"), {}, ["config.apiEndpoint"], id="config-checked"),
    ],
)
def test_require_credentials_false_skips_only_missing_fields(
    spec: ProviderSpec, config: dict[str, Any], credentials: dict[str, Any], fields: list[str]
) -> None:
    if not fields:
        validate_integration(spec, config, credentials, require_credentials=False)
        return
    errors = errors_of(spec, config, credentials, require_credentials=False)
    assert [e.field for e in errors] == fields


def test_none_auth_rejects_only_unknown_credentials(spec: ProviderSpec) -> None:
    config = {"apiEndpoint": URL, "auth": {"type": "none"}}
    validate_integration(spec, config, {})
    assert [e.field for e in errors_of(spec, config, {"pin": "1"})] == ["credentials.pin"]


def test_all_errors_reported_at_once_in_path_order(spec: ProviderSpec) -> None:
    config = {
        "apiEndpoint": "ftp://x",
        "method": 5,
        "pagination": {"type": "scroll"},
        "extra": True,
        "auth": {"type": "basic"},
    }
    with pytest.raises(InvalidInput) as caught:
        validate_integration(spec, config, {"username": 7, "token": "t"})
    assert caught.value.errors == [
        FieldError("config.apiEndpoint", "must be an http or https URL"),
        FieldError(
            "config.extra",
            "is not a known setting; expected one of apiEndpoint, method, headers, auth, "
            "pagination, dataSelector, fieldMapping, rateLimit, incremental",
        ),
        FieldError("config.method", "must be a string"),
        FieldError(
            "config.pagination.type",
            "must be one of none, page, offset, cursor, next_url, link_header, header_cursor",
        ),
        FieldError("credentials.password", "is required for auth type 'basic'"),
        FieldError(
            "credentials.token",
            "is not a credential of provider 'api_endpoint'; "
            "expected one of apiKey, username, password, clientId, clientSecret",
        ),
        FieldError("credentials.username", "must be a string"),
    ]
    assert caught.value.message == (
        "7 invalid fields: config.apiEndpoint, config.extra, config.method, "
        "config.pagination.type, credentials.password, credentials.token, credentials.username"
    )


def test_single_error_message_says_field_and_problem(spec: ProviderSpec) -> None:
    with pytest.raises(InvalidInput, match=r"^config\.apiEndpoint: is required$"):
        validate_integration(spec, {}, {"apiKey": "k"})


def test_unknown_provider() -> None:
    with pytest.raises(InvalidInput) as caught:
        load_catalog().get("salesforse")
    assert caught.value.errors == [
        FieldError("provider", "unknown provider 'salesforse'; known: api_endpoint")
    ]


def _shipped() -> dict[str, Any]:
    shipped = files("isthmus.connectors") / "providers" / "api_endpoint.json"
    data: dict[str, Any] = json.loads(shipped.read_text(encoding="utf-8"))
    return data


def _broken(change: str) -> dict[str, Any]:
    data = _shipped()
    if change == "missing-field":
        del data["display_name"]
    elif change == "unknown-key":
        data["colour"] = "blue"
    elif change == "bad-category":
        data["category"] = "telepathy"
    elif change == "bad-schema":
        data["config_schema"]["properties"]["method"]["type"] = "text"
    elif change == "default-not-a-type":
        data["auth"]["default"] = "digest"
    elif change == "undeclared-credential":
        data["auth"]["types"]["bearer"] = ["token"]
    elif change == "schema-auth-drift":
        data["config_schema"]["properties"]["auth"]["properties"]["type"]["default"] = "none"
    return data


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("missing-field", "display_name: Field required"),
        ("unknown-key", "colour: Extra inputs are not permitted"),
        ("bad-category", "category: Input should be"),
        ("bad-schema", "config_schema is not a valid JSON Schema"),
        ("default-not-a-type", "auth.default 'digest' is not one of auth.types"),
        ("undeclared-credential", "auth type 'bearer' requires undeclared credentials: token"),
        ("schema-auth-drift", "auth.type default differs from auth.default"),
    ],
)
def test_bad_provider_file_raises_config_error_naming_it(
    tmp_path: Path, change: str, problem: str
) -> None:
    (tmp_path / "api_endpoint.json").write_text(json.dumps(_broken(change)), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"api_endpoint\.json") as caught:
        load_catalog(tmp_path)
    assert problem in caught.value.message


@pytest.mark.parametrize(
    ("filename", "text"),
    [
        pytest.param("broken.json", "{not json", id="not-json"),
        pytest.param("other.json", json.dumps(_shipped()), id="name-mismatch"),
    ],
)
def test_unreadable_or_misnamed_file(tmp_path: Path, filename: str, text: str) -> None:
    (tmp_path / filename).write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=filename.replace(".", r"\.")):
        load_catalog(tmp_path)


def test_catalog_lists_sorted_and_ignores_other_files(tmp_path: Path) -> None:
    zeta = _shipped() | {"name": "zeta"}
    (tmp_path / "zeta.json").write_text(json.dumps(zeta), encoding="utf-8")
    (tmp_path / "api_endpoint.json").write_text(json.dumps(_shipped()), encoding="utf-8")
    (tmp_path / "README.md").write_text("not a provider", encoding="utf-8")
    assert [p.name for p in load_catalog(tmp_path).all()] == ["api_endpoint", "zeta"]


def test_duplicate_provider_rejected() -> None:
    spec = ProviderSpec.model_validate(_shipped())
    with pytest.raises(ConfigError, match="defined twice"):
        Catalog([spec, spec])
