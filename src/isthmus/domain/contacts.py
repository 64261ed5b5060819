"""The canonical contact: its fields, its email rule, its hash, its API and CSV shapes. Pure.

How a provider's record becomes one is ``isthmus.domain.contact_mapping``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, TypeVar

#: The canonical fields, as the API and mappings name them.
CANONICAL_FIELDS = ("email", "firstName", "lastName", "phone", "company", "jobTitle")
#: Longest value kept per text field (the contacts table's column sizes); a longer synced
#: value is cut, a longer value sent to the API is refused.
MAX_LENGTHS = {"firstName": 200, "lastName": 200, "phone": 100, "company": 300, "jobTitle": 300}
#: RFC 5321 caps a path at 256 octets including its angle brackets, the local part at 64.
MAX_EMAIL, MAX_LOCAL_PART = 254, 64
MAX_CUSTOM_NAME = 100

_T = TypeVar("_T")

# -- the contact ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """An integration a contact came from, and the contact's id there (if the record had one)."""

    integration_id: str
    external_id: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"integrationId": self.integration_id, "externalId": self.external_id}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Source:
        return cls(str(value["integrationId"]), value.get("externalId"))


@dataclass(frozen=True, kw_only=True)
class ContactFields:
    """What a contact says about a person: the canonical fields and the custom ones."""

    email: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    company: str | None = None
    job_title: str | None = None
    custom: Mapping[str, Any] = field(default_factory=dict)


def _frozen(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass ``cls`` holding ``values``, which name every
    field, made without the generated ``__init__``: that sets each field through
    ``object.__setattr__``, three times the cost, and a sync makes two objects per record."""
    made = object.__new__(cls)
    object.__setattr__(made, "__dict__", values)
    return made


@dataclass(frozen=True, kw_only=True)
class Contact(ContactFields):
    """A stored contact. ``hash`` is :func:`contact_hash` of its fields."""

    id: str
    tenant_id: str
    sources: tuple[Source, ...]
    hash: str
    created_at: datetime
    updated_at: datetime

    @classmethod
    def new_from(
        cls,
        mapped: Mapped,
        *,
        id: str,
        tenant_id: str,
        sources: tuple[Source, ...],
        now: datetime,
    ) -> Contact:
        """A new contact of a synced record: its fields and hash, created and updated now."""
        values = dict(vars(mapped))
        del values["external_id"]  # in ``sources``
        values.update(id=id, tenant_id=tenant_id, sources=sources, created_at=now, updated_at=now)
        return _frozen(cls, values)


@dataclass(frozen=True, kw_only=True)
class Mapped(ContactFields):
    """A record mapped to the canonical fields, with its id at the source."""

    external_id: str | None = None
    #: ``contact_hash`` of the fields, taken once made (every record a sync maps is
    #: compared or stored by it; a ``cached_property`` took a lock per record).
    hash: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hash", contact_hash(self))

    @classmethod
    def made(
        cls,
        *,
        email: str,
        first_name: str | None,
        last_name: str | None,
        phone: str | None,
        company: str | None,
        job_title: str | None,
        custom: Mapping[str, Any],
        external_id: str | None,
    ) -> Mapped:
        """``Mapped(...)`` with every field given, for the mapping of each synced record."""
        values = {
            "email": email,
            "first_name": first_name,
            "last_name": last_name,
            "phone": phone,
            "company": company,
            "job_title": job_title,
            "custom": custom,
            "external_id": external_id,
        }
        mapped = _frozen(cls, values)
        values["hash"] = contact_hash(mapped)
        return mapped


def contact_hash(fields: ContactFields) -> str:
    """sha256 over the canonical fields and the custom ones, as stable JSON: equal contents,
    equal hash, whatever the order of the custom fields.

    The JSON is ``[email, firstName, lastName, phone, company, jobTitle, custom]`` written
    compact with sorted keys and non-ASCII as is; built as text (a sync hashes every record
    it reads, and the encoder's list walk cost twice as much). Stored hashes depend on it:
    a unit test holds it to the encoder's output."""
    q = _quoted
    custom = _CANONICAL.encode(fields.custom) if fields.custom else "{}"
    canonical = (
        f"[{q(fields.email)},{q(fields.first_name)},{q(fields.last_name)},{q(fields.phone)},"
        f"{q(fields.company)},{q(fields.job_title)},{custom}]"
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


# What ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` uses,
# made once: a sync hashes every record, and building the encoder cost a third of it.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def merged(stored: ContactFields, incoming: ContactFields) -> ContactFields:
    """``stored`` with what ``incoming`` says. A field ``incoming`` lacks keeps its stored
    value: a source without a phone (or a second integration that does not carry job titles)
    must not blank it, or two sources would undo each other at every sync."""
    return ContactFields(
        email=incoming.email,
        first_name=_either(incoming.first_name, stored.first_name),
        last_name=_either(incoming.last_name, stored.last_name),
        phone=_either(incoming.phone, stored.phone),
        company=_either(incoming.company, stored.company),
        job_title=_either(incoming.job_title, stored.job_title),
        custom={**stored.custom, **incoming.custom},
    )


def _either(new: str | None, old: str | None) -> str | None:
    return old if new is None else new


def with_source(
    sources: Iterable[Source], integration_id: str, external_id: str | None
) -> tuple[Source, ...]:
    """``sources`` with the integration's entry added, or its external id replaced in place."""
    mine = Source(integration_id, external_id)
    result: list[Source] = []
    placed = False
    for source in sources:
        if source.integration_id != integration_id:
            result.append(source)
        elif not placed:
            result.append(mine)
            placed = True
    if not placed:
        result.append(mine)
    return tuple(result)


def is_linked(sources: Iterable[Source], integration_id: str, external_id: str | None) -> bool:
    """Whether ``sources`` hold the integration's entry, with this external id, once:
    ``with_source`` would change nothing."""
    mine = [source for source in sources if source.integration_id == integration_id]
    return len(mine) == 1 and mine[0].external_id == external_id


class Change(StrEnum):
    """What a synced record did to the stored contact with its email."""

    UNCHANGED = "unchanged"
    #: The data is the same; the integration's entry in ``sources`` was added or changed.
    LINKED = "linked"
    UPDATED = "updated"


_FIELDS = ("email", "first_name", "last_name", "phone", "company", "job_title", "custom")


def reconcile(
    stored: Contact, incoming: Mapped, integration_id: str, now: datetime
) -> tuple[Change, Contact]:
    """The stored contact after ``incoming`` came from ``integration_id``: updated (and its
    ``updated_at`` moved) only when the merged fields hash differently; linked when only
    its source entry changes; else unchanged."""
    sources = with_source(stored.sources, integration_id, incoming.external_id)
    if incoming.hash != stored.hash:
        fields = merged(stored, incoming)
        digest = contact_hash(fields)
        if digest != stored.hash:
            values = {name: getattr(fields, name) for name in _FIELDS}
            return Change.UPDATED, replace(
                stored, **values, sources=sources, hash=digest, updated_at=now
            )
    if sources != stored.sources:
        return Change.LINKED, replace(stored, sources=sources)
    return Change.UNCHANGED, stored


@dataclass(frozen=True)
class ContactFilter:
    """What a list or an export keeps: an exact (normalised) email, a company (case
    ignored), contacts from one integration, changed at or after a time, and ``q``: text
    found in the email, the name or the company, case ignored."""

    email: str | None = None
    company: str | None = None
    integration_id: str | None = None
    updated_since: datetime | None = None
    q: str | None = None


def contact_json(contact: Contact) -> dict[str, Any]:
    """The contact as the API shows it and events carry it (camelCase, times in ISO 8601)."""
    return {
        "id": contact.id,
        "email": contact.email,
        "firstName": contact.first_name,
        "lastName": contact.last_name,
        "phone": contact.phone,
        "company": contact.company,
        "jobTitle": contact.job_title,
        "customFields": dict(contact.custom),
        "sources": [s.as_json() for s in contact.sources],
        "createdAt": _iso(contact.created_at),
        "updatedAt": _iso(contact.updated_at),
    }


def contact_json_text(contact: Contact, dump: Callable[[Any], str]) -> str:
    """``dump(contact_json(contact))``, for a ``dump`` that writes compact JSON with sorted
    keys and non-ASCII as is (as event data is written), built as text: the sync publishes
    every contact it writes, and the dict alone cost more than this. ``dump`` writes the
    custom fields (and raises what it raises for them)."""
    q = _quoted
    sources = ",".join(
        f'{{"externalId":{q(s.external_id)},"integrationId":{q(s.integration_id)}}}'
        for s in contact.sources
    )
    custom = dump(dict(contact.custom)) if contact.custom else "{}"
    return (
        f'{{"company":{q(contact.company)},"createdAt":"{_iso(contact.created_at)}",'
        f'"customFields":{custom},"email":{q(contact.email)},'
        f'"firstName":{q(contact.first_name)},"id":{q(contact.id)},'
        f'"jobTitle":{q(contact.job_title)},"lastName":{q(contact.last_name)},'
        f'"phone":{q(contact.phone)},"sources":[{sources}],'
        f'"updatedAt":"{_iso(contact.updated_at)}"}}'
    )


# What ``json.JSONEncoder(ensure_ascii=False).encode`` runs for a string, called directly
# (the C function when there is one): the sync quotes every field of every contact twice.
_STRING = json.encoder.encode_basestring


def _quoted(value: str | None) -> str:
    return "null" if value is None else _STRING(value)


@lru_cache(maxsize=256)
def _iso(moment: datetime) -> str:
    # Cached: the contacts a sync writes together share their times.
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- emails and text --------------------------------------------------------------------------

# Characters no unquoted address holds (quoted local parts are legal and never seen).
_BAD_CHARS = re.compile(r'[\s\x00-\x1f\x7f"(),:;<>\[\]\\]')
_LABEL = re.compile(r"^[^\W_](?:[\w-]*[^\W_])?$")
# The same rule for the usual all-ASCII host, in one match (a sync checks every address).
_ASCII_LABEL = r"[a-zA-Z0-9](?:[\w-]{0,61}[a-zA-Z0-9])?"
_ASCII_HOST = re.compile(rf"(?:{_ASCII_LABEL}\.)+{_ASCII_LABEL}", re.ASCII)


def normalise_email(value: str) -> str:
    return value.strip().lower()


# Addresses every rule of ``email_problem`` passes, in one match: the usual plain ASCII
# address (a sync checks every record's). What it does not match goes through the rules.
_PLAIN_EMAIL = re.compile(
    r"[a-z0-9_%+-]+(?:\.[a-z0-9_%+-]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?"
)


def email_problem(email: str) -> str | None:
    """Why a normalised address is not a plausible one, or None. Plausible: one ``@``, a
    local part without spaces or stray dots, a domain of at least two labels."""
    if (
        len(email) <= MAX_EMAIL
        and _PLAIN_EMAIL.fullmatch(email)
        and email.index("@") <= MAX_LOCAL_PART
    ):
        return None
    return _email_rules(email)


def _email_rules(email: str) -> str | None:
    if not email:
        return "empty"
    if len(email) > MAX_EMAIL:
        return f"longer than {MAX_EMAIL} characters"
    if email.count("@") != 1:
        return "needs exactly one @"
    if _BAD_CHARS.search(email):
        return "has spaces or forbidden characters"
    local, domain = email.split("@")
    if not local:
        return "nothing before the @"
    if len(local) > MAX_LOCAL_PART:
        return f"over {MAX_LOCAL_PART} characters before the @"
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "misplaced dot before the @"
    labels = domain.split(".")
    if len(labels) < 2:
        return "the domain needs a dot"
    if not _ASCII_HOST.fullmatch(domain) and not all(
        len(label) <= 63 and _LABEL.match(label) for label in labels
    ):
        return "the domain is not a host name"
    if labels[-1].isdigit():
        return "the domain is not a host name"
    return None


def clean_text(value: object, limit: int) -> str | None:
    """A record's value as a canonical text field: text trimmed, a number as its digits,
    anything else (a list, an object, a boolean) nothing; NUL removed (PostgreSQL cannot
    store it), cut at ``limit``; empty is nothing."""
    if isinstance(value, str):
        text = value.replace("\x00", "").strip() if "\x00" in value else value.strip()
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() and abs(value) < 1e16 else str(value)
    else:
        return None
    return text[:limit] or None


# -- CSV export -------------------------------------------------------------------------------

CSV_HEADER = (
    "id",
    "email",
    "firstName",
    "lastName",
    "phone",
    "company",
    "jobTitle",
    "customFields",
    "sources",
    "createdAt",
    "updatedAt",
)
_PHONE_LIKE = re.compile(r"^[+-][\d\s().-]*$")


def csv_row(contact: Contact) -> list[str]:
    """One contact as a CSV row in the order of :data:`CSV_HEADER`: custom fields and sources
    as JSON; text that a spreadsheet would run as a formula is made inert."""
    return [
        contact.id,
        _inert(contact.email),
        _inert(contact.first_name or ""),
        _inert(contact.last_name or ""),
        _inert(contact.phone or ""),
        _inert(contact.company or ""),
        _inert(contact.job_title or ""),
        json.dumps(dict(contact.custom), ensure_ascii=False, sort_keys=True)
        if contact.custom
        else "",
        json.dumps([s.as_json() for s in contact.sources]) if contact.sources else "",
        _iso(contact.created_at),
        _iso(contact.updated_at),
    ]


def _inert(text: str) -> str:
    """Contacts come from third parties: a cell starting with ``=``, ``+``, ``-``, ``@`` or a
    tab runs as a formula in spreadsheets (CSV injection), so it gets a leading ``'`` --
    except a phone-like ``+44 20 7946 0958``, which is data and common."""
    if not text or text[0] not in "=+-@\t\r":
        return text
    if text[0] in "+-" and _PHONE_LIKE.match(text):
        return text
    return "'" + text
