"""Row ids: a type prefix and a time-ordered body, so ids sort by creation and paginate."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
_RANDOM_BITS = 80
_lock = threading.Lock()
_last = 0
# Random bytes are read from the OS a page at a time (one syscall for 409 draws, where a
# worker makes an id per delivery); a forked child must not reuse its parent's.
_ENTROPY_BYTES = 4096
_entropy = b""
_taken = 0


def _forget_entropy() -> None:
    global _entropy, _taken
    _entropy, _taken = b"", 0


os.register_at_fork(after_in_child=_forget_entropy)


def new_id(prefix: str) -> str:
    """``int_01jd3k...``: 48-bit millisecond time then 80 random bits, 26 characters.

    Within one millisecond the next id is the last one plus one, so ids made by one process
    keep their creation order even when the clock has not moved (an audit trail relies on it).
    """
    return f"{prefix}_{encode(_reserve(1))}"


def new_ids(prefix: str, count: int) -> list[str]:
    """``count`` ids as ``new_id`` makes them, consecutive: one clock read and one draw of
    random bits for the lot (publishing makes two per delivery)."""
    if count <= 0:
        return []
    first = _reserve(count)
    end = first + count
    ids: list[str] = []
    # Consecutive values differ in their last 10 bits (the last two characters) until a
    # carry: the rest of each run is encoded once.
    while first < end:
        run_end = min(end, (first | 1023) + 1)
        head = f"{prefix}_{encode(first)[:-2]}"
        ids += [head + _PAIRS[v & 1023] for v in range(first, run_end)]
        first = run_end
    return ids


def _reserve(count: int) -> int:
    """The first of ``count`` consecutive id values, all after every value handed out.

    The random part leaves room for a lot in all but a vanishing share of draws; then the
    values carry into the next millisecond, which keeps them unique and ordered."""
    global _last, _entropy, _taken
    with _lock:
        if _taken + 10 > len(_entropy):
            _entropy, _taken = os.urandom(_ENTROPY_BYTES), 0
        drawn = int.from_bytes(_entropy[_taken : _taken + 10], "big")
        _taken += 10
        value = (time.time_ns() // 1_000_000) << _RANDOM_BITS | drawn
        if value >> _RANDOM_BITS == _last >> _RANDOM_BITS and value <= _last:
            value = _last + 1
        _last = value + count - 1
    return value


# Two base32 characters per 10 bits: 13 table lookups instead of 26 divisions (ids are made
# several per synced contact and per delivery).
_PAIRS = [_ALPHABET[i >> 5] + _ALPHABET[i & 31] for i in range(1024)]
_SHIFTS = range(120, -1, -10)


def encode(value: int) -> str:
    """A 128-bit ``value`` as 26 Crockford base32 characters, most significant first."""
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in _SHIFTS])
