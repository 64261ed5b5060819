from __future__ import annotations

from pathlib import Path

import pytest

from isthmus.config import load_settings
from isthmus.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ISTHMUS_HOME", "ISTHMUS_DATABASE_URL", "ISTHMUS_RATE_LIMIT", "ISTHMUS_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.home == Path(".isthmus")
    assert settings.rate_limit == "100/minute"
    assert settings.max_body_bytes == 1024 * 1024
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.resolved_database_url.endswith("/.isthmus/isthmus.db")


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_database_urls_get_their_async_driver(given: str, resolved: str) -> None:
    assert load_settings(database_url=given).resolved_database_url == resolved


def test_environment_beats_toml_file_beats_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    toml = tmp_path / "isthmus.toml"
    toml.write_text('rate_limit = "7/minute"\nport = 9001\n')
    settings = load_settings(toml)
    assert (settings.rate_limit, settings.port) == ("7/minute", 9001)
    monkeypatch.setenv("ISTHMUS_RATE_LIMIT", "8/minute")
    assert load_settings(toml).rate_limit == "8/minute"
    monkeypatch.setenv("ISTHMUS_CONFIG", str(toml))
    assert load_settings().port == 9001


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rate_limit": "lots"}, "rate_limit"),
        ({"rate_limit_routes": {"/no-method": "5/minute"}}, "METHOD /path"),
        ({"log_level": "chatty"}, "log_level"),
        ({"max_body_bytes": 0}, "max_body_bytes"),
        ({"unknown_setting": 1}, "unknown_setting"),
    ],
)
def test_bad_settings_name_the_setting(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
