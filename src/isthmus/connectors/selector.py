"""Where the records are in a response body, and the dotted paths that say it.

A dotted path names a value inside parsed JSON: ``data.items``, ``paging.next.after``;
a segment that is a whole number indexes a list (``results.0.id``; ``-1`` is the last item),
any other segment is an object key. Paginators and transforms use the same paths.

:func:`select_records` turns a body into records (JSON objects):

- with a selector, the value at that path: a list of objects is the records, one object is
  one record; nothing there, ``null``, or anything else raises ``BadResponse`` naming the path
  and what was found;
- without one: a list body is the records; an object body holding exactly one list of objects
  (an empty list counts) gives that list; any other object is itself the one record; an empty
  body gives no records.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Any

from isthmus.connectors.types import Record
from isthmus.errors import BadResponse, ConfigError


class _Missing(enum.Enum):
    MISSING = "missing"


#: What :func:`get_path` answers when the path leads nowhere (``None`` is JSON's null).
MISSING = _Missing.MISSING


def parse_path(path: str) -> tuple[str, ...]:
    """The segments of a dotted path; a blank path or segment is a ``ConfigError``."""
    parts = tuple(path.split("."))
    if not path or any(not part.strip() for part in parts):
        raise ConfigError(f"{path!r} is not a dotted path (like data.items)")
    return parts


def get_path(doc: Any, path: str | Sequence[str]) -> Any:
    """The value at ``path`` in ``doc``, or :data:`MISSING`."""
    parts = parse_path(path) if isinstance(path, str) else path
    value, _ = _walk(doc, parts)
    return value


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Put ``value`` at ``path`` in ``doc`` in place, creating the objects on the way."""
    parts = parse_path(path)
    node: Any = doc
    for i, part in enumerate(parts[:-1]):
        child, _ = _walk(node, (part,))
        if not isinstance(child, dict | list):
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {path!r}: {'.'.join(parts[:i])} is not an object")
            child = node[part] = {}
        node = child
    last = parts[-1]
    if isinstance(node, dict):
        node[last] = value
        return
    index = _index(node, last)
    if index is None:
        raise ConfigError(f"cannot set {path!r}: {last!r} is not an index of that list")
    node[index] = value


def pop_path(doc: Any, path: str) -> Any:
    """Remove the value at ``path`` from ``doc`` in place and return it (or :data:`MISSING`)."""
    parts = parse_path(path)
    parent, _ = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        return parent.pop(last, MISSING)
    if isinstance(parent, list) and (index := _index(parent, last)) is not None:
        return parent.pop(index)
    return MISSING


def select_records(body: Any, selector: str | None = None) -> list[Record]:
    """The records in ``body`` (see the module docstring for the rule)."""
    if selector:
        parts = parse_path(selector)
        value, depth = _walk(body, parts)
        if value is MISSING:
            raise BadResponse(
                f"data selector {selector!r} found nothing: {_miss(body, parts, depth)}"
            )
        return _as_records(value, f"data selector {selector!r}")
    if body is None:
        return []
    if isinstance(body, dict):
        candidates = [v for v in body.values() if isinstance(v, list) and _all_objects(v)]
        return list(candidates[0]) if len(candidates) == 1 else [body]
    return _as_records(body, "the response")


def describe(value: Any) -> str:
    """What a JSON value is, for a person: ``a list of 3 strings``, ``an object with keys
    id, name``, ``null``, ``the text 'n/a'``."""
    if value is MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:39] + "…"
        return f"the text {shown!r}"
    if isinstance(value, dict):
        if not value:
            return "an empty object"
        keys = list(value)
        more = f" and {len(keys) - 8} more" if len(keys) > 8 else ""
        return f"an object with keys {', '.join(map(str, keys[:8]))}{more}"
    if isinstance(value, list):
        if not value:
            return "an empty list"
        kinds = sorted({_kind(item) for item in value})
        return f"a list of {len(value)} {' and '.join(kinds)}"
    return type(value).__name__


def _kind(value: Any) -> str:
    if value is None:
        return "nulls"
    for kind, name in ((bool, "booleans"), (int | float, "numbers"), (str, "strings")):
        if isinstance(value, kind):
            return name
    return "objects" if isinstance(value, dict) else "lists"


def _as_records(value: Any, what: str) -> list[Record]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and _all_objects(value):
        return list(value)
    raise BadResponse(f"{what} found {describe(value)}, not records (JSON objects)")


def _all_objects(items: list[Any]) -> bool:
    return all(isinstance(item, dict) for item in items)


def _index(items: list[Any], segment: str) -> int | None:
    try:
        index = int(segment)
    except ValueError:
        return None
    return index if -len(items) <= index < len(items) else None


def _walk(doc: Any, parts: Sequence[str]) -> tuple[Any, int]:
    """The value at ``parts`` and how many segments matched (all of them when found)."""
    node = doc
    for depth, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and (index := _index(node, part)) is not None:
            node = node[index]
        else:
            return MISSING, depth
    return node, len(parts)


def _miss(body: Any, parts: Sequence[str], depth: int) -> str:
    if body is None:
        return "the response body is empty"
    where = f"under {'.'.join(parts[:depth])!r}" if depth else "in the response"
    there, _ = _walk(body, parts[:depth])
    return f"there is no {parts[depth]!r} {where}, which is {describe(there)}"


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def flag_at(body: Any, path: str) -> bool:
    """The boolean at ``path`` (true/false, 1/0, "yes"/"no"); BadResponse for anything else."""
    value = get_path(body, path)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise BadResponse(f"has-more path {path!r} holds {describe(value)}, not true or false")


def as_count(value: Any) -> int | None:
    """``value`` as a count of records (a whole number >= 0, also as text), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


__all__ = [
    "MISSING",
    "as_count",
    "describe",
    "flag_at",
    "get_path",
    "parse_path",
    "pop_path",
    "select_records",
    "set_path",
]
