"""The fast JSON reader gives what the standard one gives, or raises what it raises."""

from __future__ import annotations

import json
import math

import pytest

from isthmus import jsonread

SAME = [
    '{"id": 1, "name": "Ada", "tags": ["a", "b"], "score": 2.5, "ok": true, "none": null}',
    "123456789012345678",  # 18 digits: exact either way
    "123456789012345678901234567890",  # past 64 bits: an exact int, not a float
    '{"id": -98765432109876543210}',
    '"caf\\u00e9 \\ud83d\\ude00"',  # a surrogate pair, escaped
    '"\\ud800"',  # a lone surrogate: kept, as the standard reader keeps it
    '{"a": 1, "a": 2}',  # the last of a repeated key
    "  [1, 2]\n",
    "1e400",
    "-0.0",
    "[NaN, Infinity, -Infinity]",
    '"line\\nbreak \\"quoted\\" back\\\\slash"',
]


@pytest.mark.parametrize("text", SAME)
def test_the_values_are_those_of_the_standard_reader(text: str) -> None:
    for data in (text, text.encode(), text.encode("utf-16")):
        got, want = jsonread.loads(data), json.loads(data)
        assert repr(got) == repr(want)
        assert type(got) is type(want)


def test_big_integers_stay_exact() -> None:
    found = jsonread.loads(b'{"results": [{"id": 18446744073709551616}]}')
    assert found["results"][0]["id"] == 2**64


def test_nan_comes_back_as_nan() -> None:
    assert math.isnan(jsonread.loads("NaN"))


@pytest.mark.parametrize("bad", ["", "[1,", "{'a': 1}", "tru", "[1] 2"])
def test_what_is_not_json_raises_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        jsonread.loads(bad)
    with pytest.raises(ValueError):
        jsonread.loads(bad.encode())


def test_bytes_that_are_no_text_raise_a_value_error() -> None:
    with pytest.raises(ValueError):
        jsonread.loads(b"\xff\xfe\xfd")
