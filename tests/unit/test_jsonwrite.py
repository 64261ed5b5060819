"""The fast JSON writer writes the values the standard one writes, or raises what it raises;
floats that are not finite become null."""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from isthmus import jsonread, jsonwrite


class Colour(enum.StrEnum):
    RED = "red"


class Plain(str):
    pass


@dataclasses.dataclass
class Point:
    x: int


SAME: list[Any] = [
    {"deliveryId": "dlv_01jd3k"},
    [{"integrationId": "int_1", "externalId": None}],
    {"é": "ü 雪 🙂", "quote": 'a"b\\c', "ctl": "\x01\n\t", "sep": "\u2028"},
    {"n": [0, -1, 2**63 - 1, -(2**63), 2**64, -(2**70)], "f": [0.1, -0.0, 1e16, 1e-9]},
    {"nested": {"a": [1, {"b": [True, False, None]}]}, "empty": {}, "list": []},
    (1, "tuple"),
    {1: "int key", "s": 2},
    "\ud800 lone surrogate",
    [Colour.RED, Plain("sub")],
    2**100,
]


@pytest.mark.parametrize("value", SAME)
def test_the_values_are_those_of_the_standard_writer(value: Any) -> None:
    written = jsonwrite.dumps(value)
    assert json.loads(written) == json.loads(json.dumps(value))
    assert jsonread.loads(written) == jsonread.loads(json.dumps(value))


def test_compact_with_non_ascii_as_is() -> None:
    assert jsonwrite.dumps({"a": ["é", 1]}) == '{"a":["é",1]}'


def test_floats_that_are_not_finite_are_null() -> None:
    assert json.loads(jsonwrite.dumps([float("nan"), float("inf"), -float("inf"), 1.5])) == [
        None,
        None,
        None,
        1.5,
    ]


@pytest.mark.parametrize(
    "value",
    [datetime(2026, 1, 1, tzinfo=UTC), {1, 2}, object(), Point(1), {"k": b"bytes"}],
    ids=["datetime", "set", "object", "dataclass", "bytes"],
)
def test_what_the_standard_writer_refuses_is_refused(value: Any) -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        json.dumps(value)
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsonwrite.dumps(value)
