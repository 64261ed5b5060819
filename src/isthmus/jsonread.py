"""JSON read fast, with exactly the values the standard ``json.loads`` gives.

orjson parses in C a few times faster, and the hub parses every page a sync fetches and
every JSON column it reads. Where the two would differ it is not used: integers of 19 digits
or more (orjson turns those past 64 bits into floats), and whatever orjson refuses (NaN and
Infinity, lone surrogates, encodings other than UTF-8, nesting past its limit): the standard
parser then reads the text, and raises what it raises.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Digits to b"1", every other byte to b"0": a run of 19 digits is then a plain substring
# search (a regular expression scanned a page five times slower than orjson parses it).
_DIGITS = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
_LONG_RUN = b"1" * 19


def loads(data: str | bytes | bytearray) -> Any:
    """``json.loads(data)``, faster. Raises ``ValueError`` (``json.JSONDecodeError``, or
    ``UnicodeDecodeError`` for undecodable bytes) as ``json.loads`` does."""
    raw = data
    if isinstance(data, str):
        try:
            raw = data.encode()  # once, for the digit check and for orjson
        except UnicodeEncodeError:  # lone surrogates: orjson refuses them anyway
            return json.loads(data)
    if _LONG_RUN not in raw.translate(_DIGITS):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(data)
