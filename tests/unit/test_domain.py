from __future__ import annotations

import re

import pytest

from isthmus.domain.auth import KEY_PREFIX, Scope, generate_key, grants, hash_key
from isthmus.domain.ids import new_id
from isthmus.domain.integrations import mask_secret
from isthmus.domain.pagination import decode_cursor, encode_cursor
from isthmus.errors import InvalidInput


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("sk_live_abcdefgh9fQ2", "sk_l...9fQ2"),
        ("0123456789abcdef", "0123...cdef"),
        ("0123456789abcde", "********"),  # 15 characters: too short to show any of it
        ("abc", "********"),
        ("", "********"),
    ],
)
def test_masking_shows_at_most_four_and_four(value: str, masked: str) -> None:
    assert mask_secret(value) == masked


def test_api_keys_are_prefixed_32_random_bytes() -> None:
    key = generate_key()
    assert key.startswith(KEY_PREFIX)
    assert re.fullmatch(r"isk_[A-Za-z0-9_-]{43}", key)
    assert generate_key() != key
    assert hash_key(key) == hash_key(key) and len(hash_key(key)) == 64


@pytest.mark.parametrize(
    ("held", "needed", "granted"),
    [
        (("read",), Scope.READ, True),
        (("read",), Scope.WRITE, False),
        (("read",), Scope.ADMIN, False),
        (("write",), Scope.READ, True),
        (("write",), Scope.WRITE, True),
        (("write",), Scope.ADMIN, False),
        (("admin",), Scope.WRITE, True),
        (("admin",), Scope.READ, True),
        ((), Scope.READ, False),
        (("bogus",), Scope.READ, False),
    ],
)
def test_scope_rule(held: tuple[str, ...], needed: Scope, granted: bool) -> None:
    assert grants(held, needed) is granted


def test_ids_carry_their_prefix_and_sort_by_time() -> None:
    ids = [new_id("int") for _ in range(50)]
    assert all(re.fullmatch(r"int_[0-9a-z]{26}", i) for i in ids)
    assert len(set(ids)) == 50
    # one process's ids sort in creation order, even within one millisecond
    assert [i[4:] for i in ids] == sorted(i[4:] for i in ids)


def test_cursor_round_trip_and_garbage() -> None:
    assert decode_cursor(encode_cursor("int_abc")) == "int_abc"
    assert decode_cursor(None) is None
    for bad in ("%%%", "bm90LWFuLWlk"):  # not base64; base64 of "not-an-id"
        with pytest.raises(InvalidInput, match="cursor"):
            decode_cursor(bad)
