"""RFC 8288 ``Link`` headers: the target of a link with a given relation."""

from __future__ import annotations

import re

_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]*)*)")
_LINK_PARAM = re.compile(r";\s*([^\s=;,]+)\s*=\s*(?:\"([^\"]*)\"|([^\s;,]*))")


def link_target(header: str | None, rel: str = "next") -> str | None:
    """The target of the first link with relation ``rel`` in an RFC 8288 Link header."""
    if not header:
        return None
    for match in _LINK.finditer(header):
        for param in _LINK_PARAM.finditer(match.group(2)):
            if param.group(1).lower() != "rel":
                continue
            value = param.group(2) if param.group(2) is not None else param.group(3)
            if rel.lower() in value.lower().split():
                return match.group(1).strip()
    return None


__all__ = ["link_target"]
