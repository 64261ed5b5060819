"""Record and request transforms, by tables."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from isthmus.connectors.transforms import Transforms, coerce_date
from isthmus.connectors.types import Record, Request
from isthmus.errors import BadResponse, ConfigError

CONTACT: Record = {
    "id": 7,
    "properties": {"email": "ada@example.com", "firstname": "Ada"},
    "status": "A",
    "created": 1714564800,
    "internal": {"score": 3},
}


@pytest.mark.parametrize(
    ("transforms", "expected"),
    [
        (Transforms(), CONTACT),
        (
            Transforms(rename={"properties.email": "email", "id": "external_id"}),
            {
                "external_id": 7,
                "email": "ada@example.com",
                "properties": {"firstname": "Ada"},
                "status": "A",
                "created": 1714564800,
                "internal": {"score": 3},
            },
        ),
        (
            Transforms(rename={"missing": "there"}, drop=["internal", "properties"]),
            {"id": 7, "status": "A", "created": 1714564800},
        ),
        (
            Transforms(map_values={"status": {"A": "active", "I": "inactive"}}, drop=["internal"]),
            {
                "id": 7,
                "properties": {"email": "ada@example.com", "firstname": "Ada"},
                "status": "active",
                "created": 1714564800,
            },
        ),
        (
            Transforms(defaults={"country": "NZ", "properties.firstname": "?"}, drop=["internal"]),
            {
                "id": 7,
                "properties": {"email": "ada@example.com", "firstname": "Ada"},
                "status": "A",
                "created": 1714564800,
                "country": "NZ",
            },
        ),
        (
            Transforms(
                rename={"properties.email": "email"},
                map_values={"email": {"ada@example.com": "ADA"}},
                dates={"created": "epoch"},
                drop=["properties", "internal", "status"],
            ),
            {"id": 7, "email": "ADA", "created": "2024-05-01T12:00:00Z"},
        ),
    ],
)
def test_record_transforms(transforms: Transforms, expected: Record) -> None:
    given = copy.deepcopy(CONTACT)
    assert transforms.record(given) == expected
    assert given == CONTACT  # the input is never changed


@pytest.mark.parametrize(
    ("value", "table", "expected"),
    [
        ("A", {"A": "active"}, "active"),
        ("Z", {"A": "active"}, "Z"),  # not listed: kept
        (1, {1: "one"}, "one"),
        (True, {1: "one"}, True),  # a JSON true is not a 1
        (1, {True: "yes"}, 1),
        (True, {True: "yes"}, "yes"),
        (None, {None: "unknown"}, "unknown"),
        ([1], {"x": "y"}, [1]),  # unhashable values are fine, just never equal
    ],
)
def test_map_values_compares_json_values(value: Any, table: dict[Any, Any], expected: Any) -> None:
    assert Transforms(map_values={"v": table}).record({"v": value}) == {"v": expected}


def test_defaults_fill_missing_and_null_but_not_falsy_values() -> None:
    t = Transforms(defaults={"a": "d", "b": "d", "c": "d", "d": "d"})
    assert t.record({"a": None, "b": 0, "c": ""}) == {"a": "d", "b": 0, "c": "", "d": "d"}


def test_default_values_are_not_shared_between_records() -> None:
    t = Transforms(defaults={"tags": []})
    first = t.record({})
    assert first is not None
    first["tags"].append("x")
    assert t.record({}) == {"tags": []}


@pytest.mark.parametrize(
    ("value", "fmt", "expected"),
    [
        ("2024-05-01T12:00:00Z", "iso", "2024-05-01T12:00:00Z"),
        ("2024-05-01T14:00:00+02:00", "iso", "2024-05-01T12:00:00Z"),
        ("2024-05-01T12:00:00", "iso", "2024-05-01T12:00:00Z"),  # no offset: UTC
        ("2024-05-01", "iso", "2024-05-01T00:00:00Z"),
        ("2024-05-01T12:00:00.250Z", "iso", "2024-05-01T12:00:00.250000Z"),
        (1714564800, "epoch", "2024-05-01T12:00:00Z"),
        ("1714564800", "epoch", "2024-05-01T12:00:00Z"),
        (1714564800.5, "epoch", "2024-05-01T12:00:00.500000Z"),
        (1714564800000, "epoch_ms", "2024-05-01T12:00:00Z"),
        (1714564800, "auto", "2024-05-01T12:00:00Z"),
        (1714564800000, "auto", "2024-05-01T12:00:00Z"),
        ("2024-05-01T12:00:00Z", "auto", "2024-05-01T12:00:00Z"),
        ("01/05/2024", "%d/%m/%Y", "2024-05-01T00:00:00Z"),
        ("01/05/2024 13:30 +0100", "%d/%m/%Y %H:%M %z", "2024-05-01T12:30:00Z"),
    ],
)
def test_dates_become_iso_8601_utc(value: Any, fmt: str, expected: str) -> None:
    assert coerce_date(value, fmt) == expected
    assert Transforms(dates={"at": fmt}).record({"at": value}) == {"at": expected}


@pytest.mark.parametrize(
    ("value", "fmt"),
    [
        ("yesterday", "iso"),
        ("2024-05-01", "epoch"),
        (True, "epoch"),
        ("31/02/2024", "%d/%m/%Y"),
        (1e30, "epoch"),
        ({"at": 1}, "auto"),
    ],
)
def test_a_value_that_is_not_a_date_is_a_bad_response(value: Any, fmt: str) -> None:
    with pytest.raises(BadResponse, match=f"field 'when' holds .*, not a date \\({fmt}\\)"):
        Transforms(dates={"when": fmt}).record({"when": value})


def test_null_and_missing_dates_are_left_alone() -> None:
    t = Transforms(dates={"a": "iso", "b": "epoch"})
    assert t.record({"a": None}) == {"a": None}


def test_hook_runs_last_and_may_drop_records() -> None:
    def only_with_email(record: Record) -> Record | None:
        if not record.get("email"):
            return None
        return {**record, "domain": record["email"].split("@")[1]}

    t = Transforms(rename={"mail": "email"}, hook=only_with_email)
    records = [{"mail": "a@x.io"}, {"mail": ""}, {"other": 1}, {"mail": "b@y.io"}]
    assert t.records(records) == [
        {"email": "a@x.io", "domain": "x.io"},
        {"email": "b@y.io", "domain": "y.io"},
    ]


def test_request_transforms_add_headers_and_params_to_a_copy() -> None:
    t = Transforms(headers={"X-Version": "2"}, params={"limit": "50", "archived": "false"})
    request = Request("GET", "https://api.example.com/x", [("limit", "10"), ("q", "a")])
    out = t.request(request)
    assert out.headers == {"X-Version": "2"}
    assert out.params == [("q", "a"), ("limit", "50"), ("archived", "false")]
    assert request.params == [("limit", "10"), ("q", "a")]
    assert request.headers == {}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dates": {"at": "yyyy-mm-dd"}},
        {"rename": {"a..b": "c"}},
        {"drop": "field"},
        {"map_values": {"": {}}},
    ],
)
def test_malformed_transforms_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        Transforms(**kwargs)
