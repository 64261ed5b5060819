"""A subscription's signing secrets, sealed in the vault: issue, rotate, and which sign now.

Owner ``webhook:<id>``; field ``secret`` is the current secret and, for a rotation's grace
period, ``previous_secret`` the one before it. The grace period's end is the subscription
row's ``previous_secret_expires_at``: the row says until when, the vault holds what.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.records import WebhookSubscription
from isthmus.errors import DecryptionFailed
from isthmus.services.credentials import SecretBox
from isthmus.vault import Vault
from isthmus.webhooks.signing import generate_secret

SECRET = "secret"  # noqa: S105 - the name of a vault field, not a secret
PREVIOUS_SECRET = "previous_secret"  # noqa: S105 - likewise


def owner_of(sub_id: str) -> str:
    return f"webhook:{sub_id}"


class SigningSecrets:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault

    def box(self, tenant_id: str, sub_id: str) -> SecretBox:
        return SecretBox(self.vault, tenant_id, owner_of(sub_id))

    async def issue(self, conn: AsyncConnection, tenant_id: str, sub_id: str) -> str:
        """A new subscription's first secret: ``whsec_`` + 32 random bytes, base64."""
        secret = generate_secret()
        await self.box(tenant_id, sub_id).write(conn, {SECRET: secret})
        return secret

    async def rotate(
        self, conn: AsyncConnection, tenant_id: str, sub_id: str, *, grace: timedelta, now: datetime
    ) -> tuple[str, datetime | None]:
        """(the new secret, when the old one stops signing: None if it stopped at once).

        A secret still in an earlier rotation's grace period is dropped, so at most two
        secrets sign at any time; a current secret that no longer decrypts cannot sign, so it
        is not kept either.
        """
        box = self.box(tenant_id, sub_id)
        secret = generate_secret()
        opened, _ = await box.read_lenient(conn)
        previous = opened.get(SECRET)
        if grace > timedelta(0) and previous is not None:
            await box.write(conn, {SECRET: secret, PREVIOUS_SECRET: previous})
            return secret, now + grace
        await box.write(conn, {SECRET: secret})
        await box.remove(conn, [PREVIOUS_SECRET])
        return secret, None

    async def active(
        self, conn: AsyncConnection, sub: WebhookSubscription, now: datetime
    ) -> list[str]:
        """The secrets that sign at ``now``, oldest first: the previous one while its grace
        period lasts (it ends at ``previous_secret_expires_at``, exclusive), then the current
        one. This is the order ``delivery_headers`` expects."""
        values = await self.box(sub.tenant_id, sub.id).read(conn)
        if SECRET not in values:
            raise DecryptionFailed(f"webhook {sub.id!r} has no signing secret")
        previous = values.get(PREVIOUS_SECRET)
        expires = sub.previous_secret_expires_at
        if previous is not None and expires is not None and now < expires:
            return [previous, values[SECRET]]
        return [values[SECRET]]

    async def remove(self, conn: AsyncConnection, tenant_id: str, sub_id: str) -> None:
        await self.box(tenant_id, sub_id).remove(conn)
