"""Settings: one typed object, built once (by the CLI or a test) and injected everywhere.

Sources, strongest first: keyword arguments, ``ISTHMUS_*`` environment variables, a TOML file
(``ISTHMUS_CONFIG`` or ``isthmus --config``), the defaults below. Nothing reads the
environment at import time.
"""

from __future__ import annotations

import os
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any

from limits import parse as parse_limit
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from isthmus.errors import ConfigError

_toml_file: Path | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISTHMUS_", extra="forbid", frozen=True)

    home: Path = Field(
        Path(".isthmus"), description="Data directory: SQLite file, generated master key."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default is SQLite in the data directory. "
        "postgresql://user@host/db is accepted as is.",
    )
    redis_url: str | None = Field(
        None, description="Redis URL; when set, rate limits are shared by every process."
    )
    master_keys: SecretStr | None = Field(
        None,
        description="Comma-separated id:base64 AES-256 keys, newest last; default is the "
        "generated key file in the data directory.",
    )
    rate_limit: str = Field("100/minute", description="Requests per API key.")
    rate_limit_ip: str = Field("1000/minute", description="Requests per client IP.")
    rate_limit_routes: dict[str, str] = Field(
        default_factory=dict,
        description='Per-route limits per key, JSON: {"POST /api/v1/integrations": "10/minute"}.',
    )
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="Request body cap (413 above).")
    host: str = Field("127.0.0.1", description="Address `isthmus serve` binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port `isthmus serve` binds.")
    log_level: str = Field("info", description="debug, info, warning or error.")
    # NoDecode: the environment gives "127.0.0.0/8,10.0.0.0/8", not the JSON list
    # pydantic-settings would otherwise insist on; _split_networks parses it.
    outbound_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated networks outbound calls may reach although they are not "
        "public, e.g. 127.0.0.0/8,10.0.0.0/8; empty (the default) blocks every non-global "
        "address.",
    )
    outbound_connect_timeout: float = Field(
        5.0, gt=0, description="Seconds for one outbound connect (TCP and TLS handshake)."
    )
    outbound_timeout: float = Field(
        10.0, gt=0, description="Seconds for a whole outbound call, body included."
    )
    outbound_max_response_bytes: int = Field(
        1024 * 1024, gt=0, description="Outbound response body cap, after decompression."
    )
    connector_max_response_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        description="Response body cap, after decompression, for the calls integrations make "
        "(an API's listing pages: one that lists every contact in one response needs room).",
    )
    webhook_retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="Days finished webhook deliveries, their attempts and event payloads are "
        "kept; an hourly cleanup job deletes older ones.",
    )
    integration_log_retention_days: int = Field(
        14,
        ge=1,
        le=3650,
        description="Days each integration's request log is kept; an hourly cleanup job "
        "deletes older entries.",
    )
    sync_run_retention_days: int = Field(
        90,
        ge=1,
        le=3650,
        description="Days ended contact sync runs are kept (each integration's latest always "
        "is); the hourly request log cleanup deletes older ones.",
    )
    public_url: str | None = Field(
        None,
        description="The hub's address as browsers reach it (e.g. https://hub.example.com), "
        "for OAuth2 redirect URIs; default http://<host>:<port>.",
    )
    worker_concurrency: int = Field(
        32, ge=1, le=1000, description="Jobs one worker process runs at a time."
    )
    worker_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="Seconds a worker holds a job without renewing; a dead worker's jobs go "
        "to another worker after this.",
    )
    webhook_max_payload_bytes: int = Field(
        256 * 1024, gt=0, description="Largest published event, as its delivery body (413 above)."
    )

    @field_validator("rate_limit", "rate_limit_ip")
    @classmethod
    def _check_limit(cls, value: str) -> str:
        _parse(value)
        return value

    @field_validator("rate_limit_routes")
    @classmethod
    def _check_routes(cls, value: dict[str, str]) -> dict[str, str]:
        for route, limit in value.items():
            if len(route.split(" ", 1)) != 2:
                raise ValueError(f"route {route!r} must read 'METHOD /path'")
            _parse(limit)
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be debug, info, warning or error")
        return value.lower()

    @field_validator("outbound_allowlist", mode="before")
    @classmethod
    def _split_networks(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in (p.strip() for p in value.split(",")) if part]
        return value

    @field_validator("outbound_allowlist")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        return [str(_network(item.strip())) for item in value]

    @property
    def outbound_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """The allowlist as parsed networks."""
        return tuple(_network(item) for item in self.outbound_allowlist)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if _toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=_toml_file))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        """The async SQLAlchemy URL, with the driver filled in."""
        url = self.database_url or f"sqlite:///{(self.home / 'isthmus.db').resolve()}"
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @property
    def resolved_public_url(self) -> str:
        """Where browsers reach the hub, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")


def _parse(value: str) -> None:
    try:
        parse_limit(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a rate limit such as '100/minute'") from exc


def _network(value: str) -> IPv4Network | IPv6Network:
    try:
        return ip_network(value)
    except ValueError:
        pass
    try:
        loose = ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a network such as 10.0.0.0/8 or fd00::/8") from None
    # Widening 10.0.0.1/8 silently would open more than the operator may have meant.
    raise ValueError(f"{value!r} has host bits set; did you mean {loose}?")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings once; a bad value becomes a ConfigError naming the setting."""
    global _toml_file
    path = config_file or (Path(p) if (p := os.environ.get("ISTHMUS_CONFIG")) else None)
    if path is not None and not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    _toml_file = path
    try:
        return Settings(**overrides)
    except ValueError as exc:
        raise ConfigError(f"invalid settings: {exc}") from exc
    finally:
        _toml_file = None
