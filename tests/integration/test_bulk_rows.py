"""Rows passed to PostgreSQL as one JSON text (``isthmus.store.bulk``) come out as sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from isthmus.hub import Hub
from isthmus.store.bulk import Kind, rows_from, rows_json, texts_param

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("db_url", ["postgresql"], indirect=True),
]

COLUMNS: list[tuple[str, Kind]] = [
    ("name", "text"),
    ("doc", "jsonb"),
    ("at", "timestamptz"),
    ("n", "integer"),
    ("x", "float8"),
]
SELECT = sa.text(f"SELECT r.name, r.doc, r.at, r.n, r.x FROM {rows_from('rows', COLUMNS)}")


async def test_every_kind_of_value_round_trips_in_order(hub: Hub) -> None:
    at = datetime(2026, 3, 29, 1, 59, 59, 123456, tzinfo=UTC)
    rows = [
        ('quote " backslash \\ tab \t', {"nested": ["a", 1, None], "é": "ü"}, at, 7, 0.5),
        ("línea\nnueva 雪 🙂", [], at + timedelta(microseconds=1), -3, 1e-9),
        (None, {}, datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=5))), None, None),
        *[(f"row {i}", {"i": i}, at, i, float(i)) for i in range(500)],
    ]
    async with hub.store.read() as conn:
        got = (await conn.execute(SELECT, {"rows": rows_json(rows)})).all()
    assert [tuple(row) for row in got] == [
        (name, doc, when.astimezone(UTC), n, x) for name, doc, when, n, x in rows
    ]


async def test_no_rows_is_no_rows_and_other_values_are_refused(hub: Hub) -> None:
    async with hub.store.read() as conn:
        assert (await conn.execute(SELECT, {"rows": rows_json([])})).all() == []
    with pytest.raises(TypeError, match="set is not a bulk column value"):
        rows_json([("a", {1, 2}, None, None, None)])


TEXT_COLUMNS: list[tuple[str, Kind]] = [("name", "text"), ("doc", "jsonb")]
SELECT_TEXT = sa.text(
    "SELECT r.name, CAST(r.raw AS TEXT), r.doc, r.note FROM "
    + rows_from("rows", TEXT_COLUMNS, texts=[("raw", "json"), ("note", "text")])
)


def text_params(rows: list[tuple[str, str, object, str | None]]) -> dict[str, object]:
    return {
        "rows": rows_json([(name, doc) for name, _raw, doc, _note in rows]),
        texts_param("rows", "raw"): [raw for _name, raw, _doc, _note in rows],
        texts_param("rows", "note"): [note for _name, _raw, _doc, note in rows],
    }


@pytest.mark.parametrize("big", [False, True], ids=["orjson", "standard encoder"])
async def test_text_beside_the_rows_is_kept_as_the_very_text_sent(hub: Hub, big: bool) -> None:
    # A 70-bit integer is more than orjson writes: those rows take the standard encoder.
    extra = {"n": 2**70 if big else 2**40}
    texts = ['{"b": [1, "x\\"y"], "c": {"d": null}}', '{"z":1,"a":"é 🙂\\n"}', "[]", "null"]
    notes = ['quote " backslash \\ tab \t', None, "línea\nnueva 雪 🙂", ""]
    rows = [
        (f"row {i}", text, extra, note)
        for i, (text, note) in enumerate(zip(texts, notes, strict=True))
    ]
    rows += [(f"row {i}", f'{{"i":{i}}}', {}, str(i)) for i in range(4, 600)]
    async with hub.store.read() as conn:
        got = (await conn.execute(SELECT_TEXT, text_params(rows))).all()
    assert [tuple(row) for row in got] == rows  # in order; spacing and key order as written


async def test_text_that_is_not_json_is_refused_by_the_server(hub: Hub) -> None:
    with pytest.raises(sa.exc.DBAPIError, match="invalid input syntax for type json"):
        async with hub.store.read() as conn:
            await conn.execute(SELECT_TEXT, text_params([("bad", "{not json", {}, None)]))
