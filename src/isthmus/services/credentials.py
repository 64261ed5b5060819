"""Sealing a row's secrets into the store and opening them again, through the vault."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.errors import DecryptionFailed
from isthmus.store import secrets
from isthmus.vault import Vault, secret_aad


class SecretBox:
    """The secrets of one owner row (``integration:int_...``) of one tenant."""

    def __init__(self, vault: Vault, tenant_id: str, owner: str) -> None:
        self.vault = vault
        self.tenant_id = tenant_id
        self.owner = owner

    async def write(self, conn: AsyncConnection, values: dict[str, str]) -> None:
        for field, value in values.items():
            sealed = self.vault.seal(value, secret_aad(self.tenant_id, self.owner, field))
            await secrets.put(conn, self.tenant_id, self.owner, field, sealed)

    async def remove(self, conn: AsyncConnection, fields: list[str] | None = None) -> None:
        await secrets.delete(conn, self.owner, fields)

    async def read(self, conn: AsyncConnection) -> dict[str, str]:
        """Every field in clear; raises DecryptionFailed naming the field that fails."""
        opened, failed = await self.read_lenient(conn)
        for field, why in failed.items():
            raise DecryptionFailed(f"credential {field!r}: {why}")
        return opened

    async def read_lenient(self, conn: AsyncConnection) -> tuple[dict[str, str], dict[str, str]]:
        """(opened values, {field: why it failed}) so one broken field does not hide the rest."""
        opened: dict[str, str] = {}
        failed: dict[str, str] = {}
        for field, sealed in (await secrets.get_all(conn, self.owner)).items():
            try:
                opened[field] = self.vault.open(
                    sealed, secret_aad(self.tenant_id, self.owner, field)
                )
            except DecryptionFailed as exc:
                failed[field] = exc.message
        return opened, failed

    async def fields(self, conn: AsyncConnection) -> set[str]:
        return set(await secrets.get_all(conn, self.owner))
