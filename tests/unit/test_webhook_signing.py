"""Signatures and headers of outbound deliveries, checked against the official library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from isthmus.errors import InvalidInput
from isthmus.webhooks.signing import (
    check_custom_headers,
    delivery_headers,
    generate_secret,
    payload,
    sign_hex,
    sign_standard,
    signature_header,
)

# The Standard Webhooks specification's own test secret.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MOMENT = datetime(2024, 12, 1, 12, 0, tzinfo=UTC)
BODY = payload(
    "contact.created",
    MOMENT,
    "tenant-1",
    {"id": "c1", "firstName": "Zoë", "email": "z@example.com"},
)


def headers_for(secrets: list[str], body: bytes = BODY, **kw: object) -> dict[str, str]:
    args: dict[str, object] = {
        "secrets": secrets,
        "msg_id": "msg_2x9Q",
        "timestamp": int(time.time()),  # the library refuses timestamps 5 min off its clock
        "body": body,
        "subscription_id": "sub_1",
        "event_type": "contact.created",
        "user_agent": "isthmus/0.1.0",
    }
    args.update(kw)
    return delivery_headers(**args)  # type: ignore[arg-type]


# -- secrets -------------------------------------------------------------------------------


def test_generated_secret_is_whsec_and_32_bytes_standard_base64() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    raw = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    assert len(raw) == 32
    assert Webhook(secret)._whsecret == raw  # the official library keys with the same bytes
    assert len({generate_secret() for _ in range(50)}) == 50


# -- known answers -------------------------------------------------------------------------


def test_spec_vector() -> None:
    # The Standard Webhooks specification's published example.
    signed = sign_standard(
        SPEC_SECRET, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert signed == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_pinned_vectors() -> None:
    assert BODY.decode() == (
        '{"event":"contact.created","timestamp":"2024-12-01T12:00:00.000Z",'
        '"tenantId":"tenant-1","data":{"email":"z@example.com","firstName":"Zoë","id":"c1"}}'
    )
    assert (
        sign_standard(SPEC_SECRET, "msg_2x9Q", 1733054400, BODY)
        == "v1,UlKJnrfAMs9M/3PSfHvjKbi+LIJd+t/dwetbzo4WaTk="
    )
    # Also what seed 004's Node snippet computes, run verbatim on this body and secret.
    assert (
        sign_hex(SPEC_SECRET, BODY)
        == "sha256=69523e8cbdc60d09ae55b2da1750c96311f3c8811a77e8d068fb2ef87dd00e0b"
    )


# -- the official library verifies what we send --------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3])
def test_official_library_verifies_with_every_active_secret(count: int) -> None:
    secrets = [generate_secret() for _ in range(count)]
    headers = headers_for(secrets)
    assert len(headers["webhook-signature"].split(" ")) == count
    for secret in secrets:  # during rotation a receiver may hold any one of them
        assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


@pytest.mark.parametrize(
    "data",
    [{}, {"n": 1.5, "list": [1, None, True]}, {"text": '日本語 \u2028 "q" \\ \n'}, []],
    ids=["empty", "mixed", "unicode", "list"],
)
def test_official_library_verifies_any_payload(data: object) -> None:
    secret = generate_secret()
    body = payload("lead.created", datetime.now(UTC), "t", data)
    assert Webhook(secret).verify(body, headers_for([secret], body))["data"] == data


@pytest.mark.parametrize(
    ("name", "tamper"),
    [
        ("body", lambda b, h: (b.replace(b"c1", b"c2"), h)),
        ("id", lambda b, h: (b, {**h, "webhook-id": "msg_other"})),
        ("timestamp", lambda b, h: (b, {**h, "webhook-timestamp": str(int(time.time()) - 1)})),
    ],
)
def test_official_library_rejects_tampering(name: str, tamper: object) -> None:
    secret = generate_secret()
    body, headers = tamper(BODY, headers_for([secret]))  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, headers)


def test_official_library_rejects_a_secret_that_is_not_active() -> None:
    headers = headers_for([generate_secret(), generate_secret()])
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(BODY, headers)


# -- the seeds' hex header -----------------------------------------------------------------


@pytest.mark.parametrize("secrets", [["one"], ["old", "new"]], ids=["single", "rotating"])
def test_hex_signature_uses_the_newest_secret_as_the_user_sees_it(secrets: list[str]) -> None:
    real = [generate_secret() for _ in secrets]
    headers = headers_for(real)
    newest = real[-1].encode("utf-8")  # the whole string, whsec_ included, not decoded
    expected = hmac.new(newest, BODY, hashlib.sha256).hexdigest()
    assert headers["X-Webhook-Signature"] == f"sha256={expected}"
    assert hmac.compare_digest(headers["X-Webhook-Signature"], sign_hex(real[-1], BODY))


def test_signature_header_joins_one_signature_per_secret_in_order() -> None:
    a, b = generate_secret(), generate_secret()
    assert signature_header([a, b], "m", 1, b"x") == (
        f"{sign_standard(a, 'm', 1, b'x')} {sign_standard(b, 'm', 1, b'x')}"
    )


@pytest.mark.parametrize("secret", ["no_prefix", "whsec_", "whsec_not base64!"])
def test_malformed_secrets_are_refused(secret: str) -> None:
    with pytest.raises(ValueError):
        sign_standard(secret, "m", 1, b"x")


def test_unpadded_base64_secret_is_accepted_like_the_official_library() -> None:
    padded = generate_secret()
    unpadded = padded.rstrip("=")
    assert sign_standard(unpadded, "m", 1, b"x") == sign_standard(padded, "m", 1, b"x")


def test_no_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        headers_for([])


# -- headers and body ----------------------------------------------------------------------


def test_delivery_headers_are_complete() -> None:
    secret = generate_secret()
    headers = headers_for(
        [secret], timestamp=1733054400, extra={"Authorization": "Bearer x", "X-Tenant": "t1"}
    )
    assert headers == {
        "Authorization": "Bearer x",
        "X-Tenant": "t1",
        "Content-Type": "application/json",
        "User-Agent": "isthmus/0.1.0",
        "webhook-id": "msg_2x9Q",
        "webhook-timestamp": "1733054400",
        "webhook-signature": sign_standard(secret, "msg_2x9Q", 1733054400, BODY),
        "X-Webhook-Signature": sign_hex(secret, BODY),
        "X-Webhook-Id": "sub_1",
        "X-Webhook-Event": "contact.created",
    }


def test_delivery_headers_refuse_an_override() -> None:
    with pytest.raises(InvalidInput):
        headers_for([generate_secret()], extra={"X-Webhook-Signature": "sha256=forged"})


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (MOMENT, "2024-12-01T12:00:00.000Z"),
        (MOMENT.replace(microsecond=123456), "2024-12-01T12:00:00.123Z"),
        (
            datetime(2024, 12, 1, 13, 0, tzinfo=timezone(timedelta(hours=1))),
            "2024-12-01T12:00:00.000Z",
        ),
    ],
    ids=["whole", "fraction", "other-zone"],
)
def test_payload_timestamp_is_utc_with_z(moment: datetime, text: str) -> None:
    assert json.loads(payload("e", moment, "t", None))["timestamp"] == text


def test_payload_shape_is_stable() -> None:
    one = payload("e", MOMENT, "t", {"b": {"y": 1, "x": 2}, "a": 1})
    two = payload("e", MOMENT, "t", {"a": 1, "b": {"x": 2, "y": 1}})
    assert one == two
    assert list(json.loads(one)) == ["event", "timestamp", "tenantId", "data"]
    assert b" " not in one


@pytest.mark.parametrize("data", [float("nan"), {"x": float("inf")}, {1, 2}, object()])
def test_payload_refuses_what_is_not_json(data: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        payload("e", MOMENT, "t", data)
    assert caught.value.errors[0].field == "data"


def test_payload_refuses_a_naive_timestamp() -> None:
    with pytest.raises(ValueError):
        payload("e", datetime(2024, 12, 1), "t", {})


# -- custom headers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"Authorization": "Bearer abc"},
        {"X-Api-Key": "k", "X-Trace": "  spaced  "},
        {"x-custom_header.v2": "tab\tok"},
    ],
)
def test_custom_headers_accepted(headers: dict[str, str] | None) -> None:
    result = check_custom_headers(headers)
    assert result == {k: v.strip() for k, v in (headers or {}).items()}


@pytest.mark.parametrize(
    ("headers", "field", "why"),
    [
        ({"webhook-signature": "v1,x"}, "headers.webhook-signature", "set by the webhook"),
        ({"Webhook-Id": "x"}, "headers.Webhook-Id", "set by the webhook"),
        ({"WEBHOOK-TIMESTAMP": "1"}, "headers.WEBHOOK-TIMESTAMP", "set by the webhook"),
        ({"webhook-anything": "1"}, "headers.webhook-anything", "set by the webhook"),
        ({"X-Webhook-Signature": "x"}, "headers.X-Webhook-Signature", "set by the webhook"),
        ({"x-webhook-id": "x"}, "headers.x-webhook-id", "set by the webhook"),
        ({"X-Webhook-Event": "x"}, "headers.X-Webhook-Event", "set by the webhook"),
        ({"Content-Type": "text/plain"}, "headers.Content-Type", "set by the webhook"),
        ({"User-Agent": "me"}, "headers.User-Agent", "set by the webhook"),
        ({"Host": "internal"}, "headers.Host", "connection header"),
        ({"Content-Length": "0"}, "headers.Content-Length", "connection header"),
        ({"Transfer-Encoding": "chunked"}, "headers.Transfer-Encoding", "connection header"),
        ({"Connection": "close"}, "headers.Connection", "connection header"),
        ({"Keep-Alive": "5"}, "headers.Keep-Alive", "connection header"),
        ({"Upgrade": "h2c"}, "headers.Upgrade", "connection header"),
        ({"TE": "trailers"}, "headers.TE", "connection header"),
        ({"Proxy-Authorization": "x"}, "headers.Proxy-Authorization", "connection header"),
        ({"Bad Name": "x"}, "headers.Bad Name", "not a valid HTTP header name"),
        ({"": "x"}, "headers.", "not a valid HTTP header name"),
        ({"X-Ok": "a\r\nX-Evil: 1"}, "headers.X-Ok", "printable"),
        ({"X-Ok": "a\x00"}, "headers.X-Ok", "printable"),
        ({"X-Ok": "v" * 5000}, "headers.X-Ok", "printable"),
        ({"X-Ok": 5}, "headers.X-Ok", "must be a string"),
        ({"X-A": "1", "x-a": "2"}, "headers.x-a", "given twice"),
        ({f"X-H{i}": "v" for i in range(21)}, "headers", "at most 20"),
    ],
)
def test_custom_headers_refused(headers: dict[str, object], field: str, why: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_custom_headers(headers)
    assert field in [e.field for e in caught.value.errors]
    assert why in caught.value.message


def test_custom_headers_report_every_problem_at_once() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_custom_headers({"Host": "x", "webhook-id": "y", "X-Fine": "z"})
    assert [e.field for e in caught.value.errors] == ["headers.Host", "headers.webhook-id"]
