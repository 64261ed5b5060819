"""Declarative transforms of records (responses) and requests, plus a Python hook.

A :class:`Transforms` value changes each record in this order, each step naming fields by
dotted paths (see :mod:`isthmus.connectors.selector`) and every step after ``rename`` by the
new names:

1. ``rename``: source path -> target path (a missing source is left alone);
2. ``defaults``: path -> value, set where the field is missing or null;
3. ``map_values``: path -> {old: new}, for values equal to an ``old`` (same JSON type; a
   value not listed stays as it is);
4. ``dates``: path -> format; the value becomes ISO 8601 in UTC (``2024-05-01T12:00:00Z``).
   Formats: ``iso`` (an ISO 8601 string; no offset means UTC), ``epoch`` (seconds),
   ``epoch_ms`` (milliseconds), ``auto`` (a number is seconds, or milliseconds when it is
   above 10^11; a string is ISO 8601), or a ``strptime`` format such as ``%d/%m/%Y``. Null and
   missing values are left alone; a value that is not such a date raises ``BadResponse``
   (a silently wrong date is worse than a stopped import);
5. ``drop``: paths removed;
6. ``hook``: a function of the record returning the record to keep or ``None`` to drop it.

Records given in are never changed; each result is a new object. Request transforms
(``headers``, ``params``) add to every request the client sends.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from isthmus.connectors.selector import MISSING, get_path, parse_path, pop_path, set_path
from isthmus.connectors.types import Record, Request
from isthmus.errors import BadResponse, ConfigError

Hook = Callable[[Record], Record | None]
DATE_KEYWORDS = ("iso", "epoch", "epoch_ms", "auto")
_MS_THRESHOLD = 1e11  # 10^11 s is the year 5138; 10^11 ms is 1973


@dataclass(frozen=True)
class Transforms:
    """Record and request transforms; see the module docstring for the order and rules."""

    rename: Mapping[str, str] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    map_values: Mapping[str, Mapping[Any, Any]] = field(default_factory=dict)
    dates: Mapping[str, str] = field(default_factory=dict)
    drop: Sequence[str] = ()
    hook: Hook | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.drop, str):
            raise ConfigError("drop is a list of paths, not one text")
        paths = [*self.rename, *self.rename.values(), *self.defaults, *self.map_values]
        for path in [*paths, *self.dates, *self.drop]:
            parse_path(path)
        for path, fmt in self.dates.items():
            if fmt not in DATE_KEYWORDS and "%" not in fmt:
                raise ConfigError(
                    f"date format for {path!r} must be one of {', '.join(DATE_KEYWORDS)} "
                    f"or a strptime format like %Y-%m-%d, not {fmt!r}"
                )

    def record(self, record: Record) -> Record | None:
        """The transformed copy of ``record``, or ``None`` when the hook drops it."""
        out = copy.deepcopy(record)
        for source, target in self.rename.items():
            value = pop_path(out, source)
            if value is not MISSING:
                set_path(out, target, value)
        for path, default in self.defaults.items():
            if get_path(out, path) in (MISSING, None):
                set_path(out, path, copy.deepcopy(default))
        for path, table in self.map_values.items():
            value = get_path(out, path)
            if value is not MISSING:
                set_path(out, path, _mapped(value, table))
        for path, fmt in self.dates.items():
            value = get_path(out, path)
            if value is not MISSING and value is not None:
                set_path(out, path, _date_field(path, value, fmt))
        for path in self.drop:
            pop_path(out, path)
        if self.hook is not None:
            return self.hook(out)
        return out

    def records(self, records: Iterable[Record]) -> list[Record]:
        """Every record transformed, those the hook drops left out."""
        return [out for record in records if (out := self.record(record)) is not None]

    def request(self, request: Request) -> Request:
        """A copy of ``request`` with the extra headers and query parameters set."""
        out = request.copy()
        out.headers.update(self.headers)
        for name, value in self.params.items():
            out.set_param(name, value)
        return out


def _mapped(value: Any, table: Mapping[Any, Any]) -> Any:
    # Compared by hand, not looked up: True == 1 in Python, but a JSON true is not a 1.
    for old, new in table.items():
        if old == value and isinstance(old, bool) == isinstance(value, bool):
            return copy.deepcopy(new)
    return value


def coerce_date(value: Any, fmt: str = "auto") -> str:
    """``value`` as an ISO 8601 UTC timestamp (``...Z``); ``ValueError`` when it is not a
    date in ``fmt`` (see the module docstring for the formats)."""
    moment = _parse_date(value, fmt)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_date(value: Any, fmt: str) -> datetime:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a date")
    if fmt in ("epoch", "epoch_ms") or (fmt == "auto" and _is_number(value)):
        seconds = _number(value)
        if fmt == "epoch_ms" or (fmt == "auto" and abs(seconds) >= _MS_THRESHOLD):
            seconds /= 1000
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError) as exc:
            raise ValueError("out of range") from exc
    if not isinstance(value, str):
        raise ValueError(f"a {type(value).__name__} is not a date text")
    if fmt in ("iso", "auto"):
        return datetime.fromisoformat(value.strip())
    return datetime.strptime(value.strip(), fmt)  # naive: taken as UTC by coerce_date


def _is_number(value: Any) -> bool:
    try:
        _number(value)
    except ValueError:
        return False
    return True


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())  # raises ValueError for "2024-05-01"
    raise ValueError(f"a {type(value).__name__} is not a number of seconds")


def _date_field(path: str, value: Any, fmt: str) -> str:
    try:
        return coerce_date(value, fmt)
    except ValueError:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:59] + "…"
        raise BadResponse(f"field {path!r} holds {shown}, not a date ({fmt})") from None


__all__ = ["DATE_KEYWORDS", "Hook", "Transforms", "coerce_date"]
