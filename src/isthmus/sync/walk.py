"""Where a sync run stands in its listing, and where the next run picks up. Pure.

A run's position is its counts, its checkpoint (the request for the page after the last one
written, so a killed run resumes there; for a page written in parts, that page's own request
and how many of its records are written) and, for an incremental sync, what it has seen. The
incremental state is saved per integration once a run has walked the whole listing:

- ``incremental: {"param": "updatedSince", "recordField": "updatedAt"}`` (type
  ``updated_since``, the default): the highest ``recordField`` seen; the next run asks for
  records from there (``?updatedSince=<value>``);
- ``incremental: {"type": "cursor"}``: the request of the listing's last page; the next run
  starts from it, so it reads that page again and then only what was added after it (a
  listing in creation order, an event feed, a change log). Should the API refuse that
  request (a cursor expired: 400, 404, 410, ...), the run walks the whole listing instead.

The state remembers which listing it belongs to (the integration's config but its auth and
rate limit): once the endpoint, pagination, selector or field mapping changes, the next run
walks the whole listing again, so no record is missed or mapped the old way.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from isthmus.connectors.selector import MISSING
from isthmus.connectors.types import Request
from isthmus.domain.contact_mapping import EmailClaims, RecordEmails
from isthmus.domain.contacts import Mapped
from isthmus.store.contact_upserts import UpsertOutcome
from isthmus.store.sync_runs import RunCounts, SyncRun

#: Config keys that do not change what a listing holds or how it maps.
_NOT_THE_LISTING = frozenset({"auth", "rateLimit"})


@dataclass(frozen=True)
class Incremental:
    """How a run picks up where the last complete one ended (see the module docstring)."""

    type: Literal["updated_since", "cursor"]
    param: str = ""
    record_field: str = ""

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Incremental | None:
        block = config.get("incremental")
        if not isinstance(block, Mapping):
            return None
        if block.get("type") == "cursor":
            return cls("cursor")
        if not block.get("param") or not block.get("recordField"):
            return None
        return cls("updated_since", str(block["param"]), str(block["recordField"]))


@dataclass
class MappedPage:
    """A page fetched and mapped, waiting to be written."""

    mapped: list[Mapped]
    skipped: Counter[str]
    fetched: int
    watermark: Any
    #: The request that fetched this page, and the one for the page after it (None: last).
    request: Request | None
    following: Request | None
    #: The emails of ``mapped`` and those they moved from: what the writes keep apart.
    emails: frozenset[str]
    #: How many records of ``following`` are written with this one: a part of a page too
    #: large for one write has its own page as ``following``, and the records so far here.
    skip: int = 0
    #: New email -> the email its record had (``RecordEmails.moved``).
    moved: dict[str, str] = field(default_factory=dict)


class Walk:
    """Where a run stands: its counts, its checkpoint, what its incremental state will be."""

    def __init__(
        self,
        run: SyncRun,
        config: Mapping[str, Any],
        state: Mapping[str, Any],
    ) -> None:
        self.run = run
        self.counts = run.counts
        self.incremental = Incremental.of(config)
        self.listing = listing_key(config)
        # A state saved for another listing (or by another kind of incremental) is not ours.
        ours = state.get("listing", self.listing) == self.listing
        self.state: Mapping[str, Any] = state if ours else {}
        saved = run.checkpoint or {}
        self.watermark: Any = saved.get("watermark")
        self.writes = 0
        self.stale_statistics = False
        self._saved_next: dict[str, Any] | None = saved.get("next")
        self._saved_skip = int(saved.get("skip", 0))
        #: The request of the last page written (the cursor a complete walk leaves).
        self.last_request: Request | None = None
        #: Which record holds each email, in this process's part of the walk (a run resumed
        #: elsewhere starts over with the pages after its checkpoint).
        self.claims = EmailClaims()
        #: The email each record has in the store; the runner reads it before the walk.
        self.record_emails = RecordEmails({})

    @property
    def record_field(self) -> str | None:
        inc = self.incremental
        return inc.record_field if inc is not None and inc.type == "updated_since" else None

    def resume_from(self) -> Request | None:
        """The checkpoint's request, else the saved cursor (an incremental run's start)."""
        if self._saved_next is not None:
            return request_of(self._saved_next)
        cursor = self._cursor()
        return request_of(cursor) if cursor is not None else None

    @property
    def resume_skip(self) -> int:
        """How many records of the first page the checkpoint says are written already."""
        return self._saved_skip if self._saved_next is not None else 0

    @property
    def from_saved_cursor(self) -> bool:
        """Whether the walk starts from the cursor the last complete run saved."""
        return self._saved_next is None and self._cursor() is not None

    def forget_cursor(self) -> None:
        """Walk from the top of the listing instead (the API refused the saved cursor)."""
        self.state = {}
        self.claims = EmailClaims()

    def _cursor(self) -> Mapping[str, Any] | None:
        inc, cursor = self.incremental, self.state.get("cursor")
        if inc is not None and inc.type == "cursor" and isinstance(cursor, Mapping):
            return cursor
        return None

    def first_params(self) -> list[tuple[str, str]] | None:
        inc = self.incremental
        if inc is None or inc.type != "updated_since" or "since" not in self.state:
            return None
        return [(inc.param, str(self.state["since"]))]

    def after(self, pages: Sequence[MappedPage], outcome: UpsertOutcome) -> tuple[RunCounts, Any]:
        """The counts and the watermark once ``pages`` are written with ``outcome``."""
        c = self.counts
        reasons = Counter(dict(c.skipped_reasons))
        watermark = self.watermark
        for page in pages:
            reasons.update(page.skipped)
            watermark = highest(watermark, page.watermark)
        counts = replace(
            c,
            fetched=c.fetched + sum(page.fetched for page in pages),
            created=c.created + len(outcome.created),
            updated=c.updated + len(outcome.updated),
            unchanged=c.unchanged + outcome.unchanged,
            skipped=c.skipped + sum(sum(page.skipped.values()) for page in pages),
            skipped_reasons=dict(reasons),
        )
        return counts, watermark

    def checkpoint(self, last: MappedPage, watermark: Any) -> dict[str, Any]:
        """Where a run resumes once ``last`` (and every page before it) is written."""
        saved: dict[str, Any] = {"watermark": watermark}
        if last.following is not None:
            saved["next"] = request_json(last.following)
            if last.skip:
                saved["skip"] = last.skip
        return saved

    def next_state(self) -> dict[str, Any] | None:
        """The incremental state a complete walk leaves (None: nothing to save)."""
        inc = self.incremental
        if inc is None:
            return None
        if inc.type == "cursor":
            if self.last_request is None:
                return None
            return {"listing": self.listing, "cursor": request_json(self.last_request)}
        if self.watermark is None:
            return None
        return {"listing": self.listing, "since": self.watermark}


def listing_key(config: Mapping[str, Any]) -> str:
    """What identifies an integration's listing and mapping (its config, but its auth and
    rate limit), as a short digest."""
    kept = {k: v for k, v in config.items() if k not in _NOT_THE_LISTING}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def request_json(request: Request) -> dict[str, Any]:
    """A request (never with its auth: that is applied at each send) as JSON."""
    return {
        "method": request.method,
        "url": request.url,
        "params": [list(pair) for pair in request.params],
        "headers": request.headers,
        "json": request.json,
    }


def request_of(saved: Mapping[str, Any]) -> Request:
    return Request(
        method=saved["method"],
        url=saved["url"],
        params=[(str(k), str(v)) for k, v in saved.get("params", [])],
        headers=dict(saved.get("headers", {})),
        json=saved.get("json"),
    )


def past_a_power_of_ten(before: int, after: int) -> bool:
    """Whether a count went past 10, 100, 1,000, ...: the contacts table grew by about that
    much, and its statistics are worth refreshing. From 10: statistics of a table that was
    empty, or held one contact, rate the tenant index as good as the email index for a
    lookup by email, and the first thousands of a first sync each read every contact."""
    mark = 10
    while mark <= after:
        if before < mark:
            return True
        mark *= 10
    return False


def highest(watermark: Any, value: Any) -> Any:
    """The later of a watermark and a record's value (a value that cannot be one is not)."""
    if value is MISSING or value is None or isinstance(value, bool | dict | list):
        return watermark
    if watermark is None or _later(value, watermark):
        return value
    return watermark


def _later(value: Any, than: Any) -> bool:
    """Watermarks compare as numbers when both are, else as text (ISO 8601 sorts as text)."""
    if isinstance(value, int | float) and isinstance(than, int | float):
        return value > than
    return str(value) > str(than)
