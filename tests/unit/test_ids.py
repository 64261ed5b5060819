"""Row ids: prefix, 26 Crockford base32 characters, creation order."""

from __future__ import annotations

import os
import random
import re

import pytest

from isthmus.domain.ids import encode, new_id, new_ids

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def by_division(value: int) -> str:
    """The encoding spelled out the slow way: 26 base32 digits, most significant first."""
    digits = []
    for _ in range(26):
        value, rem = divmod(value, 32)
        digits.append(ALPHABET[rem])
    return "".join(reversed(digits))


@pytest.mark.parametrize(
    "value", [0, 1, 31, 32, 1023, 1024, 2**80, 2**127, 2**128 - 1, 0x0123456789ABCDEF << 40]
)
def test_encode_is_base32_most_significant_first(value: int) -> None:
    assert encode(value) == by_division(value)


def test_encode_matches_on_random_values() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        value = rng.getrandbits(128)
        assert encode(value) == by_division(value)


def test_ids_carry_their_prefix_and_sort_in_creation_order() -> None:
    ids = [new_id("evt") for _ in range(5000)]
    assert all(re.fullmatch(r"evt_[0-9a-hjkmnp-tv-z]{26}", i) for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_made_in_a_lot_are_unique_and_keep_creation_order_with_single_ones() -> None:
    made: list[str] = []
    for size in [0, 1, 3, 500, 2, 1000]:
        made.append(new_id("dlv"))
        lot = new_ids("dlv", size)
        assert len(lot) == size
        made.extend(lot)
    made.append(new_id("dlv"))
    assert all(re.fullmatch(r"dlv_[0-9a-hjkmnp-tv-z]{26}", i) for i in made)
    assert made == sorted(made)
    assert len(set(made)) == len(made)


@pytest.mark.parametrize("count", [1, 2, 1023, 1024, 1025, 3000])
def test_a_lot_is_the_encoding_of_consecutive_values_across_carries(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import isthmus.domain.ids as ids

    rng = random.Random(count)
    # Starts just below 10-bit, 20-bit and 80-bit boundaries, so the lot carries into the
    # characters a run shares.
    for first in [2**10 - 3, 2**20 - 1, 2**80 - 2, rng.getrandbits(128) - count]:
        monkeypatch.setattr(ids, "_reserve", lambda n, first=first: first)
        assert new_ids("job", count) == [
            f"job_{by_division(v)}" for v in range(first, first + count)
        ]


def test_a_forked_child_draws_other_random_bits_than_its_parent() -> None:
    new_id("evt")  # the parent has random bytes in hand
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write_end, new_id("evt").encode())
        os._exit(0)
    os.close(write_end)
    parents = new_id("evt")
    with os.fdopen(read_end, "rb") as pipe:
        childs = pipe.read().decode()
    os.waitpid(pid, 0)
    # The last 16 characters are the 80 random bits.
    assert childs[-16:] != parents[-16:]
