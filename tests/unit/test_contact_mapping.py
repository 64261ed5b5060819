"""Field mapping and the contact's pure rules, by tables: records in, contacts (or reasons) out."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from isthmus.domain.contact_mapping import (
    DUPLICATE_EMAIL,
    EmailClaims,
    FieldMapping,
    RecordEmails,
    Skipped,
    map_record,
)
from isthmus.domain.contacts import (
    Change,
    Contact,
    ContactFields,
    Mapped,
    Source,
    _email_rules,
    clean_text,
    contact_hash,
    csv_row,
    email_problem,
    is_linked,
    merged,
    reconcile,
    with_source,
)
from isthmus.errors import InvalidInput

GENERIC = FieldMapping.build("api_endpoint")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def mapped(record: object, mapping: FieldMapping = GENERIC) -> Mapped:
    result = map_record(record, mapping)
    assert isinstance(result, Mapped), result
    return result


def skipped(record: object, mapping: FieldMapping = GENERIC) -> str:
    result = map_record(record, mapping)
    assert isinstance(result, Skipped), result
    return result.reason


# -- auto-matching (the generic API) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "attribute"),
    [
        ("first_name", "first_name"),
        ("FirstName", "first_name"),
        ("firstname", "first_name"),
        ("first-name", "first_name"),
        ("FIRST_NAME", "first_name"),
        ("First Name", "first_name"),
        ("givenName", "first_name"),
        ("last_name", "last_name"),
        ("LastName", "last_name"),
        ("surname", "last_name"),
        ("family_name", "last_name"),
        ("phone", "phone"),
        ("phone_number", "phone"),
        ("PhoneNumber", "phone"),
        ("company", "company"),
        ("company_name", "company"),
        ("organization", "company"),
        ("Organisation", "company"),
        ("jobTitle", "job_title"),
        ("job_title", "job_title"),
        ("title", "job_title"),
    ],
)
def test_names_match_ignoring_case_underscores_and_dashes(key: str, attribute: str) -> None:
    contact = mapped({"email": "a@example.com", key: "Value"})
    assert getattr(contact, attribute) == "Value"
    others = {"first_name", "last_name", "phone", "company", "job_title"} - {attribute}
    assert all(getattr(contact, other) is None for other in others)


@pytest.mark.parametrize("key", ["email", "Email", "EMAIL", "email_address", "emailAddress"])
def test_email_spellings(key: str) -> None:
    assert mapped({key: "ada@example.com"}).email == "ada@example.com"


@pytest.mark.parametrize(
    ("record", "attribute", "expected"),
    [
        # The field's own name beats an alias, whatever the order of the keys.
        ({"email_address": "b@example.com", "email": "a@example.com"}, "email", "a@example.com"),
        ({"title": "Dr", "job_title": "CTO", "email": "a@example.com"}, "job_title", "CTO"),
        # An empty value does not count: the next spelling fills the field.
        ({"email": " ", "emailAddress": "b@example.com"}, "email", "b@example.com"),
        ({"company": None, "organization": "Acme", "email": "a@example.com"}, "company", "Acme"),
    ],
)
def test_the_best_spelling_with_a_value_wins(
    record: dict[str, Any], attribute: str, expected: str
) -> None:
    assert getattr(mapped(record), attribute) == expected


def test_unmapped_fields_are_dropped_and_nested_ones_are_not_guessed() -> None:
    contact = mapped({"email": "a@example.com", "plan": "pro", "profile": {"firstName": "Ada"}})
    assert contact.custom == {} and contact.first_name is None


@pytest.mark.parametrize(
    "record",
    [
        # HubSpot's CRM objects
        {
            "id": "51",
            "properties": {
                "email": "Ada@Example.com",
                "firstname": "Ada",
                "lastname": "Lovelace",
                "jobtitle": "CTO",
            },
        },
        # JSON:API
        {
            "id": "51",
            "type": "people",
            "attributes": {
                "email-address": "ada@example.com",
                "first-name": "Ada",
                "surname": "Lovelace",
                "job-title": "CTO",
            },
        },
        # Airtable
        {
            "id": "51",
            "fields": {
                "Email": "ada@example.com",
                "First Name": "Ada",
                "Last Name": "Lovelace",
                "Title": "CTO",
            },
        },
    ],
    ids=["hubspot-properties", "jsonapi-attributes", "airtable-fields"],
)
def test_names_inside_a_well_known_field_container_match_too(record: dict[str, Any]) -> None:
    contact = mapped(record)
    assert (contact.email, contact.first_name, contact.last_name, contact.job_title) == (
        "ada@example.com",
        "Ada",
        "Lovelace",
        "CTO",
    )
    assert contact.external_id == "51"


def test_the_top_level_wins_over_the_container() -> None:
    contact = mapped(
        {"email": "top@example.com", "properties": {"email": "in@example.com", "phone": "1"}}
    )
    assert (contact.email, contact.phone) == ("top@example.com", "1")
    # A blank value at the top does not hide the container's.
    assert mapped({"email": "", "attributes": {"email": "in@example.com"}}).email == (
        "in@example.com"
    )
    # A container that is not an object is ignored.
    assert skipped({"fields": ["email"], "properties": "x"}) == "no email"


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        # Pipedrive's persons: emails and phones as lists of labelled values
        (
            {
                "id": 7,
                "name": "Ada Lovelace",
                "first_name": "Ada",
                "email": [
                    {"label": "home", "value": "ada@home.example", "primary": False},
                    {"label": "work", "value": "Ada@Example.com", "primary": True},
                ],
                "phone": [{"label": "work", "value": "+44 20 7946 0958", "primary": True}],
            },
            ("ada@example.com", "Ada", None, "+44 20 7946 0958", None),
        ),
        # SCIM users: a name object, emails and phoneNumbers with a primary, a title
        (
            {
                "id": "2819c223",
                "userName": "ada",
                "name": {"givenName": "Ada", "familyName": "Lovelace", "formatted": "Ada L."},
                "emails": [
                    {"value": "ada@home.example", "type": "home"},
                    {"value": "ada@example.com", "type": "work", "primary": True},
                ],
                "phoneNumbers": [{"value": "555-0100", "type": "work"}],
                "title": "Analyst",
            },
            ("ada@example.com", "Ada", "Lovelace", "555-0100", "Analyst"),
        ),
        # Google's People API: the primary one says so in its metadata
        (
            {
                "resourceName": "people/c1",
                "emailAddresses": [
                    {"metadata": {"primary": False}, "value": "old@example.com"},
                    {"metadata": {"primary": True}, "value": "ada@example.com"},
                ],
            },
            ("ada@example.com", None, None, None, None),
        ),
        # A name object's title is a form of address, not a job title
        (
            {"name": {"title": "Ms", "first": "Ada", "last": "Lovelace"}, "email": "a@b.example"},
            ("a@b.example", "Ada", "Lovelace", None, None),
        ),
        # A plain list: its first non-blank entry
        ({"emails": ["", "ada@example.com", "b@example.com"]}, ("ada@example.com",) + (None,) * 4),
    ],
    ids=["pipedrive", "scim", "google-people", "name-object", "plain-list"],
)
def test_multi_valued_fields_take_their_primary_or_first_entry(
    record: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    contact = mapped(record)
    found = (contact.email, contact.first_name, contact.last_name, contact.phone)
    assert (*found, contact.job_title) == expected


def test_a_mapped_path_to_a_list_takes_its_primary_entry_too() -> None:
    mapping = FieldMapping.build("api_endpoint", {"email": "contact.mails"})
    record = {"contact": {"mails": [{"value": "x@example.com"}, {"value": "y@example.com"}]}}
    assert mapped(record, mapping).email == "x@example.com"


# -- user mappings, provider defaults, paths --------------------------------------------------


def test_a_user_mapping_wins_over_auto_matching() -> None:
    mapping = FieldMapping.build("api_endpoint", {"email": "work_email", "first_name": "nick"})
    record = {"email": "home@example.com", "work_email": "work@example.com", "nick": "Ada"}
    contact = mapped({**record, "firstName": "Augusta"}, mapping)
    assert (contact.email, contact.first_name) == ("work@example.com", "Ada")
    # Only the user's path counts: no quiet fallback to the field auto-matching would pick.
    assert skipped({"email": "home@example.com"}, mapping) == "no email"


def test_a_user_mapping_wins_over_provider_defaults() -> None:
    mapping = FieldMapping.build("hubspot", {"company": "properties.account_name"})
    record = {"properties": {"email": "a@example.com", "company": "Old", "account_name": "New"}}
    assert mapped(record, mapping).company == "New"


@pytest.mark.parametrize(
    ("provider", "record", "expected"),
    [
        (
            "hubspot",
            {
                "id": "501",
                "properties": {
                    "email": "Ada@Example.com",
                    "firstname": "Ada",
                    "lastname": "Lovelace",
                    "phone": "+44 20 7946 0958",
                    "company": "Analytical Engines",
                    "jobtitle": "Programmer",
                },
            },
            ("ada@example.com", "Ada", "Lovelace", "+44 20 7946 0958", "Analytical Engines",
             "Programmer", "501"),
        ),
        (
            "salesforce",
            {
                "Id": "003xx",
                "Email": "grace@example.com",
                "FirstName": "Grace",
                "LastName": "Hopper",
                "Phone": None,
                "MobilePhone": "555-0100",
                "Company": "Navy",
                "Title": "Rear Admiral",
            },
            ("grace@example.com", "Grace", "Hopper", "555-0100", "Navy", "Rear Admiral", "003xx"),
        ),
        (
            "zoho",
            {
                "id": 4150868000000224005,
                "Email": "alan@example.com",
                "First_Name": "Alan",
                "Last_Name": "Turing",
                "Account_Name": {"name": "Bletchley", "id": "1"},
                "Title": "Cryptanalyst",
            },
            ("alan@example.com", "Alan", "Turing", None, "Bletchley", "Cryptanalyst",
             "4150868000000224005"),
        ),
        (
            "zoho",
            {"id": "9", "Email": "k@example.com", "Account_Name": "Plain Name"},
            ("k@example.com", None, None, None, "Plain Name", None, "9"),
        ),
        (
            "mailchimp",
            {
                "id": "852aaa9532cb36adfb5e9fef7a4206a9",
                "email_address": "kj@example.com",
                "merge_fields": {"FNAME": "Katherine", "LNAME": "Johnson", "PHONE": ""},
            },
            ("kj@example.com", "Katherine", "Johnson", None, None, None,
             "852aaa9532cb36adfb5e9fef7a4206a9"),
        ),
    ],
)  # fmt: skip
def test_provider_defaults(provider: str, record: dict[str, Any], expected: tuple[Any]) -> None:
    c = mapped(record, FieldMapping.build(provider))
    got = (c.email, c.first_name, c.last_name, c.phone, c.company, c.job_title, c.external_id)
    assert got == expected


@pytest.mark.parametrize(
    ("path", "record", "expected"),
    [
        ("properties.email", {"properties": {"email": "a@example.com"}}, "a@example.com"),
        ("emails.1.value", {"emails": [{"value": "x@x.io"}, {"value": "b@example.com"}]},
         "b@example.com"),
        ("a.b.c", {"a": {"b": {"c": "deep@example.com"}}}, "deep@example.com"),
        # A key that holds dots itself is taken as it is, even beside the nested one.
        ("contact.email", {"contact.email": "flat@example.com"}, "flat@example.com"),
        ("contact.email", {"contact": {"email": "nested@example.com"},
                           "contact.email": "flat@example.com"}, "flat@example.com"),
        ("emails.0", {"emails": ["first@example.com"]}, "first@example.com"),
        ("a.b.c", {"a.b.c": "flat3@example.com", "a": {"b": {"c": "x@x.io"}}},
         "flat3@example.com"),
    ],
)  # fmt: skip
def test_dotted_paths(path: str, record: dict[str, Any], expected: str) -> None:
    assert mapped(record, FieldMapping.build("api_endpoint", {"email": path})).email == expected


@pytest.mark.parametrize(
    "record",
    [
        {"emails": []},
        {"emails": [{"value": "a@example.com"}]},  # index 1 is past the end
        {"emails": "a@example.com"},  # a string is not a list
        {},
    ],
)
def test_a_path_that_leads_nowhere_gives_nothing(record: dict[str, Any]) -> None:
    mapping = FieldMapping.build("api_endpoint", {"email": "emails.1.value"})
    assert skipped(record, mapping) == "no email"


def test_custom_fields_only_when_mapped_there() -> None:
    mapping = FieldMapping.build(
        "api_endpoint",
        {"custom.plan": "subscription.plan", "custom.tags": "tags", "custom.gone": "nowhere"},
    )
    record = {"email": "a@example.com", "subscription": {"plan": "pro"}, "tags": ["a", "b"]}
    assert mapped({**record, "score": 7}, mapping).custom == {"plan": "pro", "tags": ["a", "b"]}


@pytest.mark.parametrize(
    ("user", "record", "expected"),
    [
        ({}, {"id": "abc"}, "abc"),
        ({}, {"id": 42}, "42"),
        ({}, {"id": {"nested": 1}}, None),
        ({}, {}, None),
        ({"externalId": "uuid"}, {"id": 1, "uuid": "u-1"}, "u-1"),
        ({"external_id": "meta.key"}, {"meta": {"key": "k"}}, "k"),
    ],
)
def test_the_external_id(user: dict[str, str], record: dict[str, Any], expected: str) -> None:
    mapping = FieldMapping.build("api_endpoint", user)
    assert mapped({"email": "a@example.com", **record}, mapping).external_id == expected


@pytest.mark.parametrize(
    ("user", "fields"),
    [
        ({"fullName": "name"}, {"fieldMapping.fullName"}),
        ({"email": ""}, {"fieldMapping.email"}),
        ({"email": "a..b"}, {"fieldMapping.email"}),
        ({"custom.": "x"}, {"fieldMapping.custom."}),
        ({"custom." + "x" * 101: "x"}, {"fieldMapping.custom." + "x" * 101}),
        ({"phone": 5, "bogus": "x"}, {"fieldMapping.phone", "fieldMapping.bogus"}),
    ],
)
def test_bad_user_mappings_are_refused_by_field(user: dict[str, Any], fields: set[str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        FieldMapping.build("api_endpoint", user)
    assert {e.field for e in caught.value.errors} == fields


# -- skips and emails -------------------------------------------------------------------------

FORBIDDEN = "has spaces or forbidden characters"


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (["not", "an", "object"], "not an object"),
        ("a@example.com", "not an object"),
        ({}, "no email"),
        ({"email": None}, "no email"),
        ({"email": ""}, "no email"),
        ({"email": "   "}, "no email"),
        ({"email": 12}, "invalid email: not text"),
        ({"email": [12]}, "invalid email: not text"),
        ({"email": []}, "no email"),
        ({"email": [{"label": "work"}]}, "no email"),
        ({"email": "ada"}, "invalid email: needs exactly one @"),
        ({"email": "a@b@example.com"}, "invalid email: needs exactly one @"),
        ({"email": "@example.com"}, "invalid email: nothing before the @"),
        ({"email": "ada@example"}, "invalid email: the domain needs a dot"),
        ({"email": "ada lovelace@example.com"}, f"invalid email: {FORBIDDEN}"),
        ({"email": "<ada@example.com>"}, f"invalid email: {FORBIDDEN}"),
        ({"email": ".ada@example.com"}, "invalid email: misplaced dot before the @"),
        ({"email": "a..b@example.com"}, "invalid email: misplaced dot before the @"),
        ({"email": "a@-example.com"}, "invalid email: the domain is not a host name"),
        ({"email": "a@example..com"}, "invalid email: the domain is not a host name"),
        ({"email": "a@10.0.0.1"}, "invalid email: the domain is not a host name"),
        ({"email": "a@_example.com"}, "invalid email: the domain is not a host name"),
        ({"email": "a@example-.com"}, "invalid email: the domain is not a host name"),
        ({"email": "a@" + "b" * 64 + ".com"}, "invalid email: the domain is not a host name"),
        ({"email": "a@example.com."}, "invalid email: the domain is not a host name"),
        ({"email": "a@ex!ample.com"}, "invalid email: the domain is not a host name"),
        ({"email": "a@bü_.de"}, "invalid email: the domain is not a host name"),
        ({"email": "x" * 65 + "@example.com"}, "invalid email: over 64 characters before the @"),
        ({"email": "a@" + "b" * 250 + ".com"}, "invalid email: longer than 254 characters"),
    ],
)  # fmt: skip
def test_records_without_a_usable_email_are_skipped_with_a_reason(
    record: object, reason: str
) -> None:
    assert skipped(record) == reason


def test_a_skip_keeps_the_external_id_for_the_log() -> None:
    result = map_record({"id": 7, "email": "nope"}, GENERIC)
    assert result == Skipped("invalid email: needs exactly one @", "7")


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("  Ada.Lovelace@Example.COM ", "ada.lovelace@example.com"),
        ("ada+tag@mail.example.co.uk", "ada+tag@mail.example.co.uk"),
        ("o'brien@example.ie", "o'brien@example.ie"),
        ("José@Bücher.de", "josé@bücher.de"),
        ("a@xn--bcher-kva.de", "a@xn--bcher-kva.de"),
        ("a@ex_am-ple.co", "a@ex_am-ple.co"),
        ("a@" + "b" * 63 + ".com", "a@" + "b" * 63 + ".com"),
        ("a@9.example.c0m", "a@9.example.c0m"),
        ("a@bü-cher.example", "a@bü-cher.example"),
    ],
)
def test_emails_are_trimmed_and_lower_cased(raw: str, stored: str) -> None:
    assert mapped({"email": raw}).email == stored
    assert email_problem(stored) is None


def test_the_quick_email_check_agrees_with_the_rules() -> None:
    # Most addresses are accepted by one match before the rules run; over strings made of
    # the characters the rules turn on, at the lengths they turn on, both must say the same.
    rng = random.Random(5)

    def part(length: int) -> str:
        return "".join(
            rng.choice("@ 'éX%!") if rng.random() < 0.01 else rng.choice("aab0.-_+")
            for _ in range(length)
        )

    samples = ["a@" + "b" * 63 + ".com", "a@" + "b" * 64 + ".com", "x" * 64 + "@example.com"]
    samples += ["x" * 65 + "@example.com", "a@" + "b." * 125 + "com", "a@" + "b." * 126 + "co"]
    for _ in range(20_000):
        local = part(rng.choice((1, 2, 5, 64, 65)))
        labels = [part(rng.choice((1, 2, 3, 63, 64))) for _ in range(rng.randint(1, 3))]
        samples.append(f"{local}@{'.'.join(labels)}")
    for email in samples:
        assert email_problem(email) == _email_rules(email), email


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  Ada  ", "Ada"),
        ("", None),
        ("   ", None),
        (4155550100, "4155550100"),
        (4155550100.0, "4155550100"),
        (1.5, "1.5"),
        (True, None),
        ({"name": "x"}, None),
        ([{"name": "x"}], None),  # a list (its first entry) of an object without a value
        (None, None),
        ("a\x00b", "ab"),
        ("x" * 250, "x" * 200),
    ],
)
def test_text_fields_are_cleaned(value: object, expected: str | None) -> None:
    assert clean_text(value, 200) == expected
    assert mapped({"email": "a@example.com", "first_name": value}).first_name == expected


def test_nul_is_removed_from_custom_values() -> None:
    mapping = FieldMapping.build("api_endpoint", {"custom.note": "note"})
    record = {"email": "a@example.com", "note": {"k\x00": ["v\x00"]}}
    assert mapped(record, mapping).custom == {"note": {"k": ["v"]}}


# -- hash, merge, sources ---------------------------------------------------------------------

BASE = Mapped(
    email="a@example.com",
    first_name="Ada",
    last_name="Lovelace",
    phone="+1 555 0100",
    company="Engines",
    job_title="Programmer",
    custom={"plan": "pro", "seats": 3},
)


def test_the_hash_is_stable() -> None:
    same = replace(BASE, custom={"seats": 3, "plan": "pro"}, external_id="other")
    assert contact_hash(BASE) == contact_hash(same) == BASE.hash
    assert len(BASE.hash) == 64 and int(BASE.hash, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [
        {"email": "b@example.com"},
        {"first_name": "Augusta"},
        {"first_name": None},
        {"last_name": "King"},
        {"phone": "+1 555 0101"},
        {"company": "Analytical"},
        {"job_title": "Countess"},
        {"custom": {"plan": "team", "seats": 3}},
        {"custom": {"plan": "pro", "seats": 3, "extra": None}},
        {"custom": {"plan": "pro"}},
        # A value moved to another field is a change, not the same set of values.
        {"first_name": "Lovelace", "last_name": "Ada"},
    ],
)
def test_the_hash_changes_with_every_field(change: dict[str, Any]) -> None:
    assert contact_hash(replace(BASE, **change)) != BASE.hash


def stored(**changes: Any) -> Contact:
    contact = Contact(
        id="con_1",
        tenant_id="ten_1",
        email=BASE.email,
        first_name=BASE.first_name,
        last_name=BASE.last_name,
        phone=BASE.phone,
        company=BASE.company,
        job_title=BASE.job_title,
        custom=BASE.custom,
        sources=(Source("int_a", "1"),),
        hash="",
        created_at=T0,
        updated_at=T0,
    )
    contact = replace(contact, **changes)
    return replace(contact, hash=contact_hash(contact))


def test_a_merge_keeps_what_the_incoming_record_lacks() -> None:
    incoming = ContactFields(email=BASE.email, job_title="Countess", custom={"seats": 4})
    result = merged(stored(), incoming)
    assert (result.first_name, result.phone, result.job_title) == ("Ada", "+1 555 0100", "Countess")
    assert result.custom == {"plan": "pro", "seats": 4}


LATER = T0 + timedelta(hours=1)


@pytest.mark.parametrize(
    ("incoming", "integration", "change", "sources"),
    [
        (replace(BASE, external_id="1"), "int_a", Change.UNCHANGED, [("int_a", "1")]),
        # Less than stored, nothing different: unchanged.
        (Mapped(email=BASE.email, external_id="1"), "int_a", Change.UNCHANGED, [("int_a", "1")]),
        (replace(BASE, external_id="2"), "int_a", Change.LINKED, [("int_a", "2")]),
        (replace(BASE, external_id="9"), "int_b", Change.LINKED, [("int_a", "1"), ("int_b", "9")]),
        (replace(BASE, phone="+1", external_id="1"), "int_a", Change.UPDATED, [("int_a", "1")]),
        (replace(BASE, phone="+1", external_id="9"), "int_b", Change.UPDATED,
         [("int_a", "1"), ("int_b", "9")]),
    ],
)  # fmt: skip
def test_reconcile(
    incoming: Mapped, integration: str, change: Change, sources: list[tuple[str, str]]
) -> None:
    before = stored()
    got, after = reconcile(before, incoming, integration, LATER)
    assert got is change
    assert after.sources == tuple(Source(i, e) for i, e in sources)
    assert after.updated_at == (LATER if change is Change.UPDATED else T0)
    assert after.hash == contact_hash(after)
    if change is Change.UPDATED:
        assert after.phone == "+1" and after.first_name == "Ada"


def test_with_source_replaces_in_place() -> None:
    sources = (Source("int_a", "1"), Source("int_b", "2"), Source("int_c", "3"))
    assert with_source(sources, "int_b", "22") == (
        Source("int_a", "1"),
        Source("int_b", "22"),
        Source("int_c", "3"),
    )
    assert with_source((), "int_a", None) == (Source("int_a", None),)


A, B = Source("int_a", "1"), Source("int_b", "2")


@pytest.mark.parametrize(
    ("sources", "external_id", "linked"),
    [
        ((A,), "1", True),
        ((B, A), "1", True),
        ((A,), "9", False),  # another id at the source
        ((A,), None, False),
        ((B,), "1", False),  # not from int_a yet
        ((), "1", False),
        ((A, A), "1", False),  # twice: with_source keeps one
    ],
)
def test_is_linked_when_with_source_would_change_nothing(
    sources: tuple[Source, ...], external_id: str | None, linked: bool
) -> None:
    assert is_linked(sources, "int_a", external_id) is linked
    assert (with_source(sources, "int_a", external_id) == sources) is linked


# -- CSV --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first_name", "cell"),
    [
        ("Ada", "Ada"),
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("+44 20 7946 0958", "+44 20 7946 0958"),
        ("-", "-"),
    ],
)
def test_csv_cells_cannot_run_as_formulas(first_name: str, cell: str) -> None:
    assert csv_row(stored(first_name=first_name))[2] == cell


@pytest.mark.parametrize(
    ("listing", "kept"),
    [
        # (email, external id) in listing order -> which of them a sync takes
        ([("a@x.io", "1"), ("b@x.io", "2")], [True, True]),
        # another record with a taken email: a duplicate at the source, the first stands
        ([("a@x.io", "1"), ("a@x.io", "2")], [True, False]),
        (
            [("a@x.io", "1"), ("b@x.io", "2"), ("a@x.io", "3"), ("a@x.io", "1")],
            [True] * 2 + [False, True],
        ),
        # the same record listed again (a listing that moved): it stays, every time
        ([("a@x.io", "1"), ("a@x.io", "1"), ("a@x.io", "1")], [True, True, True]),
        # records without ids cannot be told apart from duplicates: the first stands
        ([("a@x.io", None), ("a@x.io", None)], [True, False]),
        ([("a@x.io", None), ("a@x.io", "1")], [True, False]),
        ([("a@x.io", "1"), ("a@x.io", None)], [True, False]),
    ],
)
def test_the_first_record_of_a_listing_holds_its_email(
    listing: list[tuple[str, str | None]], kept: list[bool]
) -> None:
    claims = EmailClaims()
    results = [
        claims.check(mapped({"email": email, "id": ext} if ext else {"email": email}))
        for email, ext in listing
    ]
    assert [isinstance(r, Mapped) for r in results] == kept
    for result, (_, ext) in zip(results, listing, strict=True):
        if isinstance(result, Skipped):
            assert result == Skipped(DUPLICATE_EMAIL, ext)


def test_a_skipped_record_claims_no_email() -> None:
    claims = EmailClaims()
    bad = map_record({"id": "1", "email": "not an address"}, GENERIC)
    assert claims.check(bad) is bad
    assert isinstance(claims.check(mapped({"id": "2", "email": "A@x.io"})), Mapped)


def test_a_record_listed_with_another_email_says_which_it_had() -> None:
    # The store's view first (what earlier runs wrote), then what this walk has seen.
    emails = RecordEmails({"1": "ada@old.io"})
    assert emails.moved(mapped({"id": "1", "email": "Ada@New.io"})) == "ada@old.io"
    assert emails.moved(mapped({"id": "1", "email": "ada@new.io"})) is None  # already seen
    assert emails.moved(mapped({"id": "2", "email": "bob@x.io"})) is None  # first time
    assert emails.moved(mapped({"id": "2", "email": "bob@y.io"})) == "bob@x.io"
    # Without an id a record cannot be followed.
    assert emails.moved(mapped({"email": "carol@x.io"})) is None
    assert emails.moved(mapped({"email": "carol@y.io"})) is None
