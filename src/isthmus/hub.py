"""The hub: every long-lived object, built once from the settings and handed to the API,
the CLI and (later) the workers. Nothing else constructs stores, vaults or clients."""

from __future__ import annotations

from dataclasses import dataclass

from limits.aio.storage import Storage

from isthmus.config import Settings
from isthmus.connectors.catalog import Catalog, load_catalog
from isthmus.connectors.oauth import OAuthService
from isthmus.http import OutboundHTTP
from isthmus.ratelimit_storage import close_storage, make_storage
from isthmus.services.access import AccessService
from isthmus.services.audit import AuditService
from isthmus.services.connections import ConnectionService
from isthmus.services.contacts import ContactService
from isthmus.services.integrations import IntegrationService
from isthmus.services.master_keys import MasterKeyService
from isthmus.services.polling import PollingService
from isthmus.services.sync_runs import SyncRunService
from isthmus.store.db import Store, make_engine
from isthmus.sync.runner import SyncRunner
from isthmus.vault import KeyFile, Vault
from isthmus.webhooks.delivery import DeliveryHandler
from isthmus.webhooks.event_types import EventTypeService
from isthmus.webhooks.publish import PublishService
from isthmus.webhooks.subscriptions import SubscriptionService
from isthmus.webhooks.throttle import Throttle

#: Connections beyond one per running job: the claim, the heartbeat, the batched completion,
#: API requests of ``serve``, concurrency slots (see ``Throttle``).
_SPARE_CONNECTIONS = 10


@dataclass
class Hub:
    settings: Settings
    store: Store
    vault: Vault
    catalog: Catalog
    access: AccessService
    audit: AuditService
    integrations: IntegrationService
    master_keys: MasterKeyService
    limiter_storage: Storage
    # One session for every outbound call of this process (its pool, its SSRF guard).
    outbound: OutboundHTTP
    event_types: EventTypeService
    webhooks: SubscriptionService
    events: PublishService
    # The webhook.deliver job handler (run by ``isthmus.runtime``).
    deliver: DeliveryHandler
    contacts: ContactService
    # OAuth2 authorization of integrations, and their stored tokens.
    oauth: OAuthService
    # Polling settings, sync requests and the rules at the end of a sync run.
    polling: PollingService
    # Integrations opened for calls, and their connection tests.
    connections: ConnectionService
    sync_runs: SyncRunService
    # The integration.sync job handler (run by ``isthmus.runtime``).
    sync: SyncRunner

    @classmethod
    def build(cls, settings: Settings) -> Hub:
        if settings.is_sqlite and settings.database_url is None:
            settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        pool: dict[str, int] = {}
        if not settings.is_sqlite:
            # Every running job holds a connection at times; waiting for the pool would cost
            # more than the connections (the queue measured 3-10x with a pool this size).
            # No overflow beyond it: the pool is the process's whole share of the server's
            # connections (README: concurrency + 14 with the hot path's 4), and a burst
            # waits for a connection instead of taking one another process needed.
            pool = {
                "pool_size": settings.worker_concurrency + _SPARE_CONNECTIONS,
                "max_overflow": 0,
            }
        store = Store(make_engine(settings.resolved_database_url, **pool))
        master_keys = MasterKeyService(store, settings)
        reload = None if master_keys.from_env else KeyFile(settings.home).load
        vault = Vault(master_keys.keys(), reload=reload)
        catalog = load_catalog()
        outbound = OutboundHTTP.from_settings(settings)
        event_types = EventTypeService(store)
        limiter_storage = make_storage(settings.redis_url)
        # Half the slots stay free of slow endpoints for everything else.
        throttle = Throttle(
            store, limiter_storage, slow_share=max(1, settings.worker_concurrency // 2)
        )
        integrations = IntegrationService(store, vault, catalog)
        oauth = OAuthService(store, vault, outbound, public_url=settings.resolved_public_url)
        connections = ConnectionService(
            store,
            integrations,
            catalog,
            outbound,
            oauth,
            limiter_storage,
            max_response_bytes=settings.connector_max_response_bytes,
        )
        polling = PollingService(store)
        return cls(
            settings=settings,
            store=store,
            vault=vault,
            catalog=catalog,
            access=AccessService(store),
            audit=AuditService(store),
            integrations=integrations,
            master_keys=master_keys,
            limiter_storage=limiter_storage,
            outbound=outbound,
            event_types=event_types,
            webhooks=SubscriptionService(store, vault, outbound, event_types),
            events=PublishService(store, max_payload_bytes=settings.webhook_max_payload_bytes),
            deliver=DeliveryHandler(store, vault, outbound, throttle),
            contacts=ContactService(store, max_payload_bytes=settings.webhook_max_payload_bytes),
            oauth=oauth,
            connections=connections,
            polling=polling,
            sync_runs=SyncRunService(store, polling),
            sync=SyncRunner(
                store, connections, max_payload_bytes=settings.webhook_max_payload_bytes
            ),
        )

    async def close(self) -> None:
        await self.outbound.close()
        await close_storage(self.limiter_storage)
        await self.store.close()
