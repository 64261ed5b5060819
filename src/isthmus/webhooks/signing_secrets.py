"""A subscription's signing secrets, sealed in the vault: issue, rotate, and which sign now.

Owner ``webhook:<id>``; field ``secret`` is the current secret and, for a rotation's grace
period, ``previous_secret`` the one before it. The grace period's end is the subscription
row's ``previous_secret_expires_at``: the row says until when, the vault holds what.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from isthmus.domain.records import WebhookSubscription
from isthmus.errors import DecryptionFailed
from isthmus.services.credentials import SecretBox
from isthmus.store.deliveries import SecretsStamp
from isthmus.vault import Vault
from isthmus.webhooks.signing import generate_secret

SECRET = "secret"  # noqa: S105 - the name of a vault field, not a secret
PREVIOUS_SECRET = "previous_secret"  # noqa: S105 - likewise

#: How long opened secrets are reused for deliveries (``active_cached``), at most.
CACHE_SECONDS = 30.0
_CACHE_MAX = 10_000


def owner_of(sub_id: str) -> str:
    return f"webhook:{sub_id}"


class SigningSecrets:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        # sub id -> (tenant id, secrets stamp, opened values, monotonic expiry)
        self._opened: dict[str, tuple[str, SecretsStamp, dict[str, str], float]] = {}

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
        return self._signing(sub, await self.box(sub.tenant_id, sub.id).read(conn), now)

    async def active_cached(
        self, conn: AsyncConnection, sub: WebhookSubscription, now: datetime, stamp: SecretsStamp
    ) -> list[str]:
        """``active``, opening the vault's values again only when ``stamp`` (read with the
        subscription: see ``deliveries.load_many``) shows they changed, or after
        ``CACHE_SECONDS``. A rotation rewrites the secrets, so it is seen at once."""
        found = self.cached(sub, now, stamp)
        if found is not None:
            return found
        values = await self.box(sub.tenant_id, sub.id).read(conn)
        signing = self._signing(sub, values, now)
        if stamp[0] is not None:
            if len(self._opened) >= _CACHE_MAX:
                self._opened.clear()
            self._opened[sub.id] = (sub.tenant_id, stamp, values, time.monotonic() + CACHE_SECONDS)
        return signing

    def cached(
        self, sub: WebhookSubscription, now: datetime, stamp: SecretsStamp
    ) -> list[str] | None:
        """``active_cached`` when it needs no read of the vault; None when it does."""
        cached = self._opened.get(sub.id)
        if cached is None or cached[0] != sub.tenant_id or cached[1] != stamp:
            return None
        if cached[3] <= time.monotonic():
            return None
        return self._signing(sub, cached[2], now)

    @staticmethod
    def _signing(sub: WebhookSubscription, values: dict[str, str], now: datetime) -> list[str]:
        if SECRET not in values:
            raise DecryptionFailed(f"webhook {sub.id!r} has no signing secret")
        previous = values.get(PREVIOUS_SECRET)
        expires = sub.previous_secret_expires_at
        if previous is not None and expires is not None and now < expires:
            return [previous, values[SECRET]]
        return [values[SECRET]]

    async def remove(self, conn: AsyncConnection, tenant_id: str, sub_id: str) -> None:
        await self.box(tenant_id, sub_id).remove(conn)
