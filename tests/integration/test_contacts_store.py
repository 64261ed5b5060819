"""The contacts store's bulk upsert, on SQLite and PostgreSQL: what a sync writes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from isthmus.domain.auth import Actor
from isthmus.domain.contact_mapping import FieldMapping, map_record
from isthmus.domain.contacts import Contact, ContactFilter, Mapped, Source
from isthmus.hub import Hub
from isthmus.store import contact_upserts
from isthmus.store import contacts as repo
from isthmus.store.contact_upserts import UpsertOutcome

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
GENERIC = FieldMapping.build("api_endpoint")


@dataclass
class Setup:
    hub: Hub
    tenant_id: str
    a: str  # two integrations of the tenant
    b: str

    async def upsert(
        self, integration_id: str, items: list[Mapped], now: datetime
    ) -> UpsertOutcome:
        async with self.hub.store.transaction() as conn:
            return await contact_upserts.upsert_many(
                conn, self.tenant_id, integration_id, items, now
            )

    async def rows(self) -> dict[str, Contact]:
        async with self.hub.store.read() as conn:
            page = await repo.query(conn, self.tenant_id, ContactFilter(), limit=200)
        return {c.email: c for c in page.items}


@pytest.fixture
async def setup(hub: Hub) -> Setup:
    tenant = await hub.access.create_tenant("acme")
    actor = Actor(tenant.id, "test")
    ids = []
    for name in ("CRM A", "CRM B"):
        created = await hub.integrations.create(
            actor,
            name=name,
            provider="api_endpoint",
            config={"apiEndpoint": "https://api.example.com/contacts"},
            credentials={"apiKey": "sk_test_0123456789abcdef"},
        )
        ids.append(created.integration.id)
    return Setup(hub, tenant.id, ids[0], ids[1])


def mapped(record: dict[str, Any]) -> Mapped:
    result = map_record(record, GENERIC)
    assert isinstance(result, Mapped), result
    return result


def people(n: int, **changes: dict[str, Any]) -> list[Mapped]:
    """``n`` records as an API would send them; ``changes`` by email override fields."""
    records = [
        {
            "id": f"ext-{i}",
            "email": f"person{i}@example.com",
            "first_name": f"First{i}",
            "last_name": f"Last{i}",
            "company": "Acme",
        }
        for i in range(n)
    ]
    for record in records:
        record.update(changes.get(record["email"], {}))
    return [mapped(r) for r in records]


async def test_new_contacts_are_created_with_their_source(setup: Setup) -> None:
    outcome = await setup.upsert(setup.a, people(3), T0)

    assert [c.email for c in outcome.created] == [f"person{i}@example.com" for i in range(3)]
    assert outcome.updated == [] and outcome.unchanged == 0
    stored = await setup.rows()
    assert sorted(stored) == sorted(c.email for c in outcome.created)
    first = stored["person0@example.com"]
    assert (first.first_name, first.last_name, first.company) == ("First0", "Last0", "Acme")
    assert first.sources == (Source(setup.a, "ext-0"),)
    assert first.created_at == first.updated_at == T0
    assert first == next(c for c in outcome.created if c.email == first.email)


async def test_the_same_batch_again_changes_nothing(setup: Setup) -> None:
    await setup.upsert(setup.a, people(5), T0)
    before = await setup.rows()

    outcome = await setup.upsert(setup.a, people(5), T0 + timedelta(hours=1))

    assert (outcome.created, outcome.updated, outcome.unchanged) == ([], [], 5)
    assert await setup.rows() == before  # updated_at included: no row was written


async def test_only_the_changed_contact_is_updated(setup: Setup) -> None:
    await setup.upsert(setup.a, people(4), T0)
    before = await setup.rows()
    later = T0 + timedelta(hours=1)
    changed = {"person2@example.com": {"job_title": "CTO", "first_name": "Second"}}

    outcome = await setup.upsert(setup.a, people(4, **changed), later)

    assert outcome.created == [] and outcome.unchanged == 3
    assert [c.email for c in outcome.updated] == ["person2@example.com"]
    after = await setup.rows()
    updated = after["person2@example.com"]
    assert (updated.first_name, updated.job_title) == ("Second", "CTO")
    assert updated.updated_at == later and updated.created_at == T0
    assert updated == outcome.updated[0]
    assert {k: v for k, v in after.items() if k != updated.email} == {
        k: v for k, v in before.items() if k != updated.email
    }


async def test_a_missing_field_keeps_the_stored_value(setup: Setup) -> None:
    await setup.upsert(setup.a, [mapped({"email": "a@example.com", "phone": "+1 555 0100"})], T0)

    outcome = await setup.upsert(setup.a, [mapped({"email": "a@example.com"})], T0)

    assert (outcome.created, outcome.updated, outcome.unchanged) == ([], [], 1)
    assert (await setup.rows())["a@example.com"].phone == "+1 555 0100"


async def test_duplicate_emails_in_a_batch_collapse_to_the_last(setup: Setup) -> None:
    batch = [
        mapped({"id": "1", "email": "dup@example.com", "firstName": "Old"}),
        mapped({"id": "2", "email": "other@example.com"}),
        mapped({"id": "3", "email": "DUP@example.com", "firstName": "New"}),
    ]

    outcome = await setup.upsert(setup.a, batch, T0)

    assert [c.email for c in outcome.created] == ["other@example.com", "dup@example.com"]
    assert outcome.unchanged == 1  # the record it superseded: every record counts once
    stored = (await setup.rows())["dup@example.com"]
    assert stored.first_name == "New" and stored.sources == (Source(setup.a, "3"),)

    # The same within a batch of known contacts: one update, with the last values.
    again = [
        mapped({"id": "3", "email": "dup@example.com", "firstName": "Newer"}),
        mapped({"id": "3", "email": "dup@example.com", "firstName": "Newest"}),
    ]
    outcome = await setup.upsert(setup.a, again, T0)
    assert [c.first_name for c in outcome.updated] == ["Newest"]
    assert outcome.unchanged == 1


async def test_sources_merge_across_integrations(setup: Setup) -> None:
    record = {"id": "a-1", "email": "ada@example.com", "first_name": "Ada"}
    await setup.upsert(setup.a, [mapped(record)], T0)
    later = T0 + timedelta(hours=1)

    # The same person from B, with the same data: linked, not updated.
    same = await setup.upsert(setup.b, [mapped({**record, "id": "b-9"})], later)
    assert (same.created, same.updated, same.unchanged) == ([], [], 1)
    stored = (await setup.rows())["ada@example.com"]
    assert stored.sources == (Source(setup.a, "a-1"), Source(setup.b, "b-9"))
    assert stored.updated_at == T0

    # B again: nothing at all to write.
    before = await setup.rows()
    again = await setup.upsert(setup.b, [mapped({**record, "id": "b-9"})], later)
    assert again.unchanged == 1 and await setup.rows() == before

    # B with new data and a new id for the person: updated; B's entry replaced in place.
    changed = await setup.upsert(
        setup.b, [mapped({**record, "id": "b-10", "last_name": "Lovelace"})], later
    )
    assert [c.last_name for c in changed.updated] == ["Lovelace"]
    stored = (await setup.rows())["ada@example.com"]
    assert stored.sources == (Source(setup.a, "a-1"), Source(setup.b, "b-10"))
    assert stored.first_name == "Ada" and stored.updated_at == later


async def test_emails_are_matched_case_folded(setup: Setup) -> None:
    await setup.upsert(setup.a, [mapped({"email": "  Ada.Lovelace@Example.COM "})], T0)
    assert list(await setup.rows()) == ["ada.lovelace@example.com"]

    outcome = await setup.upsert(
        setup.a, [mapped({"email": "ADA.LOVELACE@example.com", "company": "Analytical"})], T0
    )
    assert outcome.created == [] and [c.company for c in outcome.updated] == ["Analytical"]
    # A Mapped built by hand with capitals is folded by the store as well.
    by_hand = Mapped(email="Ada.Lovelace@EXAMPLE.com", company="Analytical")
    outcome = await setup.upsert(setup.a, [by_hand], T0)
    assert outcome.created == [] and outcome.unchanged == 1


async def test_tenants_do_not_share_contacts(setup: Setup) -> None:
    await setup.upsert(setup.a, people(2), T0)
    other = await setup.hub.access.create_tenant("globex")
    async with setup.hub.store.transaction() as conn:
        outcome = await contact_upserts.upsert_many(conn, other.id, "int_other", people(2), T0)
    assert len(outcome.created) == 2
    assert len(await setup.rows()) == 2


async def test_a_stream_reads_in_batches(setup: Setup) -> None:
    await setup.upsert(setup.a, people(7), T0)
    async with setup.hub.store.read() as conn:
        batches = [
            b async for b in repo.stream(conn, setup.tenant_id, ContactFilter(), batch_size=3)
        ]
    assert [len(b) for b in batches] == [3, 3, 1]
    ids = [c.id for b in batches for c in b]
    assert ids == sorted(ids) and len(set(ids)) == 7


@pytest.mark.postgres
async def test_concurrent_syncs_of_one_new_email_merge(setup: Setup, db_url: str) -> None:
    """Two integrations sync the same new person at once: the insert that loses the race
    becomes an update of the winner's row, and both sources are kept."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers; there is no race to lose")
    store = setup.hub.store
    first = mapped({"id": "a-1", "email": "race@example.com", "first_name": "Ada"})
    second = mapped({"id": "b-1", "email": "race@example.com", "last_name": "Lovelace"})

    async with store.transaction() as conn:
        won = await contact_upserts.upsert_many(conn, setup.tenant_id, setup.a, [first], T0)
        assert len(won.created) == 1
        loser = asyncio.create_task(setup.upsert(setup.b, [second], T0))
        await _until_blocked(setup.hub)
    lost = await asyncio.wait_for(loser, 10)

    assert lost.created == [] and [c.last_name for c in lost.updated] == ["Lovelace"]
    stored = (await setup.rows())["race@example.com"]
    assert (stored.first_name, stored.last_name) == ("Ada", "Lovelace")
    assert stored.sources == (Source(setup.a, "a-1"), Source(setup.b, "b-1"))


async def _until_blocked(hub: Hub) -> None:
    """Wait until some other session waits for a lock (the loser's INSERT)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    for _ in range(200):
        async with hub.store.autocommit() as conn:
            if (await conn.execute(query)).scalar_one():
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the second upsert never waited for the first")
