"""The data selector and the dotted paths it shares with paginators and transforms."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus.connectors.selector import (
    MISSING,
    describe,
    get_path,
    pop_path,
    select_records,
    set_path,
)
from isthmus.errors import BadResponse, ConfigError

A = {"id": 1}
B = {"id": 2}


@pytest.mark.parametrize(
    ("body", "selector", "records"),
    [
        ([A, B], None, [A, B]),
        ([], None, []),
        (None, None, []),
        ({"results": [A, B], "next": None}, None, [A, B]),
        ({"results": [], "next": None}, None, []),  # the last, empty page of a listing
        ({"data": [A], "tags": ["x", "y"]}, None, [A]),  # a list of strings holds no records
        ({"id": 1, "name": "Ada"}, None, [{"id": 1, "name": "Ada"}]),
        ({"a": [A], "b": [B]}, None, [{"a": [A], "b": [B]}]),  # two lists: which? the object
        ({"results": [A, B]}, "results", [A, B]),
        ({"data": {"items": [A, B]}}, "data.items", [A, B]),
        ({"data": {"items": []}}, "data.items", []),
        ({"data": [{"rows": [A]}, {"rows": [B]}]}, "data.1.rows", [B]),
        ({"data": [{"rows": [A]}, {"rows": [B]}]}, "data.-1.rows", [B]),
        ({"user": {"id": 7}}, "user", [{"id": 7}]),
        ({"0": [A]}, "0", [A]),  # a key that looks like an index is still a key
        ([A, B], "", [A, B]),  # empty selector = none (a form's blank field)
    ],
)
def test_selects_records(body: Any, selector: str | None, records: list[dict[str, Any]]) -> None:
    assert select_records(body, selector) == records


@pytest.mark.parametrize(
    ("body", "selector", "message"),
    [
        (
            {"data": {"rows": [A]}},
            "data.items",
            "data selector 'data.items' found nothing: there is no 'items' under 'data', "
            "which is an object with keys rows",
        ),
        (
            {"results": [A]},
            "data.items",
            "there is no 'data' in the response, which is an object with keys results",
        ),
        ({"data": [A]}, "data.3", "there is no '3' under 'data', which is a list of 1 objects"),
        (None, "data", "data selector 'data' found nothing: the response body is empty"),
        ({"data": None}, "data", "data selector 'data' found null, not records"),
        ({"data": ["a", "b"]}, "data", "found a list of 2 strings, not records (JSON objects)"),
        ({"data": [A, 3]}, "data", "found a list of 2 numbers and objects, not records"),
        ({"data": "none"}, "data", "found the text 'none', not records"),
        ({"count": 3}, "count", "found the number 3, not records"),
        (["a"], None, "the response found a list of 1 strings, not records"),
        ("<html>", None, "the response found the text '<html>', not records"),
        (True, None, "found the boolean true, not records"),
    ],
)
def test_a_selector_that_finds_no_records_says_what_it_found(
    body: Any, selector: str | None, message: str
) -> None:
    with pytest.raises(BadResponse) as caught:
        select_records(body, selector)
    assert message in str(caught.value)
    assert caught.value.error_class == "bad_response"


@pytest.mark.parametrize("path", ["", ".", "a..b", "a. .b", "a."])
def test_a_malformed_path_is_a_config_error(path: str) -> None:
    with pytest.raises(ConfigError, match="not a dotted path"):
        get_path({}, path)


def test_paths_get_set_and_pop() -> None:
    doc: dict[str, Any] = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert get_path(doc, "a.b.1.c") == 2
    assert get_path(doc, "a.b.2.c") is MISSING
    assert get_path(doc, "a.x") is MISSING
    assert get_path({"a": None}, "a") is None
    set_path(doc, "a.b.0.c", 10)
    set_path(doc, "x.y.z", "new")
    assert doc == {"a": {"b": [{"c": 10}, {"c": 2}]}, "x": {"y": {"z": "new"}}}
    assert pop_path(doc, "a.b.1") == {"c": 2}
    assert pop_path(doc, "x.y.z") == "new"
    assert pop_path(doc, "x.nothing") is MISSING
    assert doc == {"a": {"b": [{"c": 10}]}, "x": {"y": {}}}


def test_set_path_replaces_a_scalar_on_the_way() -> None:
    doc: dict[str, Any] = {"a": 1}
    set_path(doc, "a.b", 2)
    assert doc == {"a": {"b": 2}}


def test_describe_shortens_long_texts_and_key_lists() -> None:
    assert describe("x" * 100).endswith("…'")
    many = {f"k{i}": i for i in range(12)}
    assert describe(many) == "an object with keys k0, k1, k2, k3, k4, k5, k6, k7 and 4 more"
    assert describe([]) == "an empty list"
    assert describe({}) == "an empty object"
