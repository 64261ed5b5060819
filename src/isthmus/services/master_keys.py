"""Master-key rotation: add a key, re-encrypt every stored secret under it, retire the old."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from isthmus.config import Settings
from isthmus.domain.auth import Actor
from isthmus.errors import DecryptionFailed, MasterKeyError
from isthmus.services.audit import record
from isthmus.store import secrets
from isthmus.store.db import Store
from isthmus.vault import (
    KeyFile,
    MasterKey,
    Vault,
    generate_master_key,
    load_master_keys,
    secret_aad,
)

_BATCH = 200

Progress = Callable[[int, int], None]


@dataclass
class RotationReport:
    key_id: str
    reencrypted: int = 0
    unreadable: list[str] = field(default_factory=list)
    still_used: dict[str, int] = field(default_factory=dict)
    retirable: list[str] = field(default_factory=list)


class MasterKeyService:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    @property
    def from_env(self) -> bool:
        return self.settings.master_keys is not None

    def keys(self) -> list[MasterKey]:
        configured = self.settings.master_keys
        return load_master_keys(
            self.settings.home, configured.get_secret_value() if configured else None
        )

    async def usage(self) -> dict[str, int]:
        async with self.store.read() as conn:
            return await secrets.count_by_key(conn)

    async def rotate(self, *, on_progress: Progress | None = None) -> RotationReport:
        """With the key file, a new key is added first; with ``ISTHMUS_MASTER_KEYS`` the newest
        key there must be new already (``isthmus master-key generate`` makes one)."""
        keys = self.keys()
        if self.from_env and len(keys) < 2:
            raise MasterKeyError(
                "ISTHMUS_MASTER_KEYS holds one key: add a new one as its last entry "
                "(`isthmus master-key generate` makes one), then rotate"
            )
        if not self.from_env:
            keys = [*keys, generate_master_key()]
            KeyFile(self.settings.home).write(keys)
        vault = Vault(keys)
        report = RotationReport(vault.newest_key_id)
        usage = await self.usage()
        total = sum(n for k, n in usage.items() if k != vault.newest_key_id)
        if on_progress:
            on_progress(0, total)
        after = ("", "")
        per_tenant: dict[str, int] = {}
        while True:
            # One transaction per batch: an interrupted rotation keeps what it did; run again.
            async with self.store.transaction() as conn:
                batch = await secrets.not_under_key(conn, vault.newest_key_id, after, _BATCH)
                for tenant_id, owner, name, sealed in batch:
                    aad = secret_aad(tenant_id, owner, name)
                    try:
                        plain = vault.open(sealed, aad)
                    except DecryptionFailed as exc:
                        report.unreadable.append(f"{owner}/{name}: {exc.message}")
                        continue
                    if await secrets.replace_if_unchanged(
                        conn, owner, name, sealed, vault.seal(plain, aad)
                    ):
                        report.reencrypted += 1
                        per_tenant[tenant_id] = per_tenant.get(tenant_id, 0) + 1
            if not batch:
                break
            after = (batch[-1][1], batch[-1][2])
            if on_progress:
                on_progress(report.reencrypted + len(report.unreadable), total)
        async with self.store.transaction() as conn:
            for tenant_id, count in per_tenant.items():
                await record(
                    conn,
                    Actor(tenant_id, "cli"),
                    "master_key.rotate",
                    "master_key",
                    vault.newest_key_id,
                    {"toKey": vault.newest_key_id, "reencrypted": count},
                )
        usage = await self.usage()
        report.still_used = {k: n for k, n in usage.items() if k != vault.newest_key_id}
        report.retirable = [k for k in vault.key_ids[:-1] if k not in report.still_used]
        return report

    async def prune(self) -> list[str]:
        """Drop from the key file every old key that no stored secret uses; returns their ids."""
        if self.from_env:
            raise MasterKeyError(
                "keys come from ISTHMUS_MASTER_KEYS: remove old keys there instead"
            )
        keys = self.keys()
        usage = await self.usage()
        newest = keys[-1].id
        keep = [k for k in keys if k.id == newest or usage.get(k.id)]
        KeyFile(self.settings.home).write(keep)
        return [k.id for k in keys if k not in keep]
