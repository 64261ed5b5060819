"""Field mapping: how a provider's record becomes a canonical contact. Pure.

A record becomes a contact through a :class:`FieldMapping`. For each canonical field the
mapping tries, in order:

1. the path the user set for it (``fieldMapping`` in the integration's config), and only
   that: a user's mapping is never second-guessed;
2. otherwise the provider's default paths (:data:`PROVIDER_DEFAULTS`), then auto-matching:
   a top-level key whose name equals the field's name or one of its few aliases
   (:data:`AUTO_MATCH`) once case, ``_``, ``-`` and spaces are ignored, so ``first_name``,
   ``FirstName`` and ``firstname`` all fill ``firstName``; failing that, such a key inside
   the record's field container (:data:`FIELD_CONTAINERS`: ``properties``, ``attributes``,
   ``fields``); the names also inside a ``name`` object (:data:`NAME_PARTS`: SCIM's
   ``givenName`` and ``familyName``, ``first`` and ``last``).

A canonical field whose value is a list (``emails: [{"value": ..., "primary": true}]``, as
SCIM, Pipedrive and Google keep addresses and phones) takes its primary entry, else its
first; an entry that is an object gives its ``value``.

Paths are dotted (``properties.email``; a number indexes a list: ``emails.0.value``). Source
fields nobody mapped are dropped; ``custom.<name>: <path>`` keeps one in the contact's custom
fields. A record without a usable email is :class:`Skipped` with a reason that names no
value, so reasons can be counted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from isthmus.domain.contacts import (
    CANONICAL_FIELDS,
    MAX_CUSTOM_NAME,
    MAX_LENGTHS,
    Mapped,
    clean_text,
    email_problem,
    normalise_email,
)
from isthmus.errors import FieldError, InvalidInput

CUSTOM_PREFIX = "custom."
EXTERNAL_ID = "externalId"

#: Auto-matching: per canonical field the key names that fill it, folded (lower case, no
#: ``_``, ``-`` or spaces), best first. Short on purpose: a wrong guess is worse than none.
AUTO_MATCH: dict[str, tuple[str, ...]] = {
    "email": ("email", "emailaddress", "emails", "emailaddresses"),
    "firstName": ("firstname", "givenname"),
    "lastName": ("lastname", "surname", "familyname"),
    "phone": ("phone", "phonenumber", "phones", "phonenumbers"),
    "company": ("company", "companyname", "organization", "organisation"),
    "jobTitle": ("jobtitle", "title"),
}


#: Where well-known API shapes keep a record's own fields: HubSpot's ``properties``, JSON:API's
#: ``attributes``, Airtable's ``fields``. Auto-matching looks inside these for what the top
#: level lacks, and into no other nested object (``company.email`` is not the person's).
FIELD_CONTAINERS = ("properties", "attributes", "fields")

#: Inside a ``name`` object (SCIM's ``{"givenName", "familyName"}``, ``{"first", "last"}``),
#: only these: such an object may hold a ``title`` (Mr, Dr) that is no job title.
NAME_PARTS: dict[str, tuple[str, ...]] = {
    "firstName": ("firstname", "givenname", "first"),
    "lastName": ("lastname", "familyname", "surname", "last"),
}


@dataclass(frozen=True)
class ProviderDefaults:
    """Where a provider keeps each canonical field (paths tried in order) and its record id."""

    fields: Mapping[str, tuple[str, ...]]
    external_id: str = "id"


#: Per provider name. ``api_endpoint`` (the generic API) has none: auto-matching does it.
PROVIDER_DEFAULTS: dict[str, ProviderDefaults] = {
    "hubspot": ProviderDefaults(
        {
            "email": ("properties.email",),
            "firstName": ("properties.firstname",),
            "lastName": ("properties.lastname",),
            "phone": ("properties.phone", "properties.mobilephone"),
            "company": ("properties.company",),
            "jobTitle": ("properties.jobtitle",),
        }
    ),
    "salesforce": ProviderDefaults(
        {
            "email": ("Email",),
            "firstName": ("FirstName",),
            "lastName": ("LastName",),
            "phone": ("Phone", "MobilePhone"),
            "company": ("Company", "Account.Name"),
            "jobTitle": ("Title",),
        },
        external_id="Id",
    ),
    "zoho": ProviderDefaults(
        {
            "email": ("Email",),
            "firstName": ("First_Name",),
            "lastName": ("Last_Name",),
            "phone": ("Phone", "Mobile"),
            # A lookup field: {"name": ..., "id": ...} in API v2, a plain name in exports.
            "company": ("Account_Name.name", "Account_Name"),
            "jobTitle": ("Title",),
        }
    ),
    "mailchimp": ProviderDefaults(
        {
            "email": ("email_address",),
            "firstName": ("merge_fields.FNAME",),
            "lastName": ("merge_fields.LNAME",),
            "phone": ("merge_fields.PHONE",),
        }
    ),
}


@dataclass(frozen=True)
class Skipped:
    """A record that cannot become a contact; ``reason`` names no value, so it can be counted."""

    reason: str
    external_id: str | None = None


@lru_cache(maxsize=4096)
def fold(name: str) -> str:
    """A field name with case, ``_``, ``-`` and spaces ignored."""
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


_CANONICAL_BY_FOLD = {fold(name): name for name in CANONICAL_FIELDS}


def _ranked(table: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, int]]:
    """Folded alias -> (canonical field, rank: 0 is the best)."""
    return {
        alias: (name, rank) for name, aliases in table.items() for rank, alias in enumerate(aliases)
    }


_ALIASES = _ranked(AUTO_MATCH)
_NAME_ALIASES = _ranked(NAME_PARTS)


@dataclass(frozen=True)
class _Path:
    raw: str
    parts: tuple[str, ...]
    #: ``walk``, or a quicker equivalent for a path of one or two parts (a sync reads
    #: several paths of every record, nearly all of them such).
    get: Callable[[Mapping[str, Any]], Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "get", _quick_get(self))

    @classmethod
    def of(cls, raw: str) -> _Path:
        return cls(raw, tuple(raw.split(".")))

    def walk(self, record: Mapping[str, Any]) -> Any:
        # A key holding dots itself (``"properties.email": ...``) is taken as it is.
        if self.raw in record:
            return record[self.raw]
        node: Any = record
        for part in self.parts:
            # ``type is dict`` first: what JSON decodes to, without the slower ABC check.
            if type(node) is dict or isinstance(node, Mapping):
                node = node.get(part)
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node


def _quick_get(path: _Path) -> Callable[[Mapping[str, Any]], Any]:
    """``path.walk``, done the short way where the record allows it."""
    raw, walk = path.raw, path.walk
    if len(path.parts) == 1:
        return lambda record: record.get(raw)  # the key is the path: nothing to walk
    if len(path.parts) == 2:
        first, second = path.parts

        def get(record: Mapping[str, Any]) -> Any:
            node = record.get(first)
            if type(node) is dict and raw not in record:
                return node.get(second)
            return walk(record)

        return get
    return walk


@dataclass(frozen=True)
class FieldMapping:
    """How one integration's records become contacts (see the module's docstring).

    ``paths``: per canonical field, the paths tried in order; ``auto``: the fields that fall
    back to auto-matching; ``custom``: custom field name -> path; ``external_id``: the path
    of the record's id at the source.
    """

    paths: Mapping[str, tuple[_Path, ...]]
    auto: frozenset[str]
    custom: Mapping[str, _Path]
    external_id: _Path

    @classmethod
    def build(cls, provider: str, user: Mapping[str, object] | None = None) -> FieldMapping:
        """The mapping of an integration of ``provider`` whose user set ``user``
        (``{"email": "contact.mail", "custom.plan": "subscription.plan", "externalId":
        "uuid"}``). Keys are canonical fields (case, ``_`` and ``-`` ignored),
        ``custom.<name>`` or ``externalId``; InvalidInput names each bad entry."""
        defaults = PROVIDER_DEFAULTS.get(provider, ProviderDefaults({}))
        chosen, custom, external_id = parse_user_mapping(user or {})
        paths: dict[str, tuple[_Path, ...]] = {}
        auto: set[str] = set()
        for name in CANONICAL_FIELDS:
            if name in chosen:
                paths[name] = (_Path.of(chosen[name]),)
            else:
                paths[name] = tuple(_Path.of(p) for p in defaults.fields.get(name, ()))
                auto.add(name)
        return cls(
            paths=paths,
            auto=frozenset(auto),
            custom={name: _Path.of(path) for name, path in custom.items()},
            external_id=_Path.of(external_id or defaults.external_id),
        )


def parse_user_mapping(
    user: Mapping[str, object],
) -> tuple[dict[str, str], dict[str, str], str | None]:
    """A user's mapping split into (canonical field -> path, custom name -> path, external id
    path); InvalidInput with one error per bad entry (``fieldMapping.<key>``)."""
    chosen: dict[str, str] = {}
    custom: dict[str, str] = {}
    external_id: str | None = None
    errors: list[FieldError] = []
    for key, path in user.items():
        where = f"fieldMapping.{key}"
        if not isinstance(path, str) or not path.strip() or any(p == "" for p in path.split(".")):
            errors.append(FieldError(where, "must be a dotted path such as properties.email"))
            continue
        if key.startswith(CUSTOM_PREFIX):
            name = key[len(CUSTOM_PREFIX) :]
            if not name or len(name) > MAX_CUSTOM_NAME:
                errors.append(
                    FieldError(where, f"custom.<name>: 1 to {MAX_CUSTOM_NAME} characters")
                )
            else:
                custom[name] = path
        elif fold(key) in _CANONICAL_BY_FOLD:
            chosen[_CANONICAL_BY_FOLD[fold(key)]] = path
        elif fold(key) == fold(EXTERNAL_ID):
            external_id = path
        else:
            known = ", ".join((*CANONICAL_FIELDS, EXTERNAL_ID))
            errors.append(
                FieldError(where, f"not a contact field: one of {known} or custom.<name>")
            )
    if errors:
        detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
        raise InvalidInput(f"field mapping: {detail}", errors)
    return chosen, custom, external_id


def map_record(record: object, mapping: FieldMapping) -> Mapped | Skipped:
    """One source record as a contact, or why it cannot be one: ``not an object``, ``no
    email``, ``invalid email: <why>``."""
    if type(record) is not dict and not isinstance(record, Mapping):
        return Skipped("not an object")
    external_id = _external_id(mapping.external_id.get(record))
    auto = _auto_matched(record) if mapping.auto else None
    # The canonical fields in order, each the first value on its paths that is not blank
    # (``_blank``, inline: a sync maps every record it reads).
    found: list[Any] = []
    for name in CANONICAL_FIELDS:
        value = None
        for path in mapping.paths.get(name, ()):
            value = path.get(record)
            if value is not None and not (isinstance(value, str) and not value.strip()):
                break
        else:  # nothing found on the paths
            if auto is not None and name in mapping.auto:
                value = auto.get(name)
        if type(value) is list:
            value = _one_of(value)
        found.append(value)
    email_value, first_name, last_name, phone, company, job_title = found

    if _blank(email_value):
        return Skipped("no email", external_id)
    if not isinstance(email_value, str):
        return Skipped("invalid email: not text", external_id)
    email = normalise_email(email_value)
    if not email:
        return Skipped("no email", external_id)
    if problem := email_problem(email):
        return Skipped(f"invalid email: {problem}", external_id)

    custom = {}
    for name, path in mapping.custom.items():
        value = path.get(record)
        if value is not None:
            custom[name] = _without_nul(value)
    return Mapped.made(
        email=email,
        first_name=clean_text(first_name, MAX_LENGTHS["firstName"]),
        last_name=clean_text(last_name, MAX_LENGTHS["lastName"]),
        phone=clean_text(phone, MAX_LENGTHS["phone"]),
        company=clean_text(company, MAX_LENGTHS["company"]),
        job_title=clean_text(job_title, MAX_LENGTHS["jobTitle"]),
        custom=custom,
        external_id=external_id,
    )


#: The reason a record is skipped when an earlier record of the same listing has its email.
DUPLICATE_EMAIL = "duplicate email: an earlier record has it"

_UNCLAIMED = object()


class EmailClaims:
    """Which record of one listing holds each email: the first one listed.

    A later record with that email and the same external id is that record listed again (a
    listing that moved while it was walked) and stays; with another id, or where records
    have none, it is a duplicate at the source and becomes ``Skipped(DUPLICATE_EMAIL)``.
    So every walk of an unchanged listing leaves the contact as its first record has it
    (the last one winning instead would update it twice a run when the two are written
    apart), and each record is counted once. Memory: one entry per email of the listing
    (about 175 bytes: 17 MB for 100,000 records).
    """

    def __init__(self) -> None:
        self._holders: dict[str, str | None] = {}

    def check(self, result: Mapped | Skipped) -> Mapped | Skipped:
        """``result`` if its record holds its email, else why it is skipped."""
        if isinstance(result, Skipped):
            return result
        held = self._holders.get(result.email, _UNCLAIMED)
        if held is _UNCLAIMED:
            self._holders[result.email] = result.external_id
            return result
        if held is not None and held == result.external_id:
            return result
        return Skipped(DUPLICATE_EMAIL, result.external_id)


class RecordEmails:
    """The email each record of the integration has in the store (external id -> email,
    as written by the runs before) and has had in this walk so far.

    A record listed with another email than its contact has is that contact, its email
    changed at the source: ``moved`` says the email it had, so the write changes the
    contact's email instead of making a new contact and leaving the old one behind.
    Records without an external id cannot be followed. Memory: one entry per record of the
    integration (about 175 bytes with its strings: 17 MB for 100,000 records).
    """

    def __init__(self, stored: dict[str, str]) -> None:
        self._emails = stored

    def moved(self, mapped: Mapped) -> str | None:
        """The email the record had, if another; notes the one it has now."""
        external_id = mapped.external_id
        if external_id is None:
            return None
        before = self._emails.get(external_id)
        self._emails[external_id] = mapped.email
        return before if before is not None and before != mapped.email else None


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _auto_matched(record: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical field -> the value of the best-ranked top-level key that auto-matches it,
    else of the best-ranked key inside the record's field container, if it has one."""
    found = _best_keys(record)
    for container in FIELD_CONTAINERS:
        inner = record.get(container)
        if type(inner) is dict or isinstance(inner, Mapping):
            for name, value in _best_keys(inner).items():
                found.setdefault(name, value)
    parts = record.get("name")
    if type(parts) is dict:
        for name, value in _best_keys(parts, _NAME_ALIASES).items():
            found.setdefault(name, value)
    return found


def _best_keys(
    record: Mapping[str, Any], aliases: Mapping[str, tuple[str, int]] = _ALIASES
) -> dict[str, Any]:
    best: dict[str, tuple[int, Any]] = {}
    for key, value in record.items():
        hit = aliases.get(fold(key)) if isinstance(key, str) else None
        if hit is None or _blank(value):
            continue
        name, rank = hit
        if name not in best or rank < best[name][0]:
            best[name] = (rank, value)
    return {name: value for name, (_, value) in best.items()}


def _one_of(values: list[Any]) -> Any:
    """A multi-valued field's one value: its primary entry, else its first (module
    docstring)."""
    entries = [entry for entry in values if not _blank(entry)]
    if not entries:
        return None
    chosen = next((entry for entry in entries if _primary(entry)), entries[0])
    return chosen.get("value") if isinstance(chosen, dict) else chosen


def _primary(entry: object) -> bool:
    """SCIM's and Pipedrive's ``primary: true``, Google's ``metadata.primary: true``."""
    if not isinstance(entry, dict):
        return False
    metadata = entry.get("metadata")
    return entry.get("primary") is True or (
        isinstance(metadata, dict) and metadata.get("primary") is True
    )


def _external_id(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        return str(value).replace("\x00", "").strip() or None
    return None


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value
