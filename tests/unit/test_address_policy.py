"""The SSRF address policy, by tables: what outbound calls may reach, and why not."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from isthmus.errors import BlockedAddress
from isthmus.http import AddressPolicy, parse_ip, parse_legacy_ipv4, parse_networks

DEFAULT = AddressPolicy()

REFUSED = [
    # IPv4, by kind; the reason must name it
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.8", "IETF"),
    ("192.0.2.1", "documentation"),
    ("192.88.99.1", "6to4 relay"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "site-local"),
    ("fc00::1", "unique-local"),
    ("fd12:3456:789a::1", "unique-local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("100::1", "discard"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001::1", "Teredo"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
    ("2001:2::1", "IETF"),  # benchmarking
    ("2001:10::1", "IETF"),  # ORCHID
    ("5f00::1", "segment routing"),
    ("4000::1", "not a global address"),  # outside 2000::/3, reserved by the stdlib
    # IPv4 inside IPv6: judged by the IPv4 it reaches
    ("::ffff:127.0.0.1", "IPv4-mapped form of 127.0.0.1, which is loopback"),
    ("::ffff:7f00:1", "IPv4-mapped form of 127.0.0.1"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:0:7f00:1", "IPv4-translated form of 127.0.0.1"),
    ("::127.0.0.1", "IPv4-compatible form of 127.0.0.1"),
    ("::7f00:1", "IPv4-compatible form of 127.0.0.1"),
    ("::a00:1", "IPv4-compatible form of 10.0.0.1"),
    ("2002:7f00:1::", "6to4 form of 127.0.0.1"),
    ("2002:a9fe:a9fe::1", "6to4 form of 169.254.169.254"),
    ("2002:c0a8:101::", "6to4 form of 192.168.1.1"),
    ("64:ff9b::7f00:1", "NAT64 form of 127.0.0.1"),
    ("64:ff9b::127.0.0.1", "NAT64 form of 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 form of 169.254.169.254"),
    # local use: the prefix length is the operator's, so every RFC 6052 layout must pass
    ("64:ff9b:1::a00:1", "local-use NAT64 form"),
    ("64:ff9b:1::808:808", "local-use NAT64 form"),
    ("64:ff9b:1:7f00:0:100::", "local-use NAT64 form"),  # 127.0.0.1 in the /48 layout
    # fails closed
    ("", "not an IP address"),
    ("example.com", "not an IP address"),
    ("127.0.0.1/8", "not an IP address"),
    ("1.2.3.4.5", "not an IP address"),
    ("0x7f000001", "not an IP address"),
    ("2130706433", "not an IP address"),
    ("::ffff:127.0.0.1:80", "not an IP address"),
]

ALLOWED = [
    "1.1.1.1",
    "8.8.8.8",
    "93.184.216.34",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above it
    "172.15.255.255",
    "172.32.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:80b::200e",
    "[2606:4700:4700::1111]",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "64:ff9b::8.8.8.8",
    "2002:808:808::1",
]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_non_global_addresses_are_refused(address: str, reason: str) -> None:
    found = DEFAULT.blocked_reason(address)
    assert found is not None, f"{address} must be refused"
    assert reason in found
    assert not DEFAULT.is_allowed(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert DEFAULT.blocked_reason(address) is None


def test_the_policy_takes_parsed_addresses_too() -> None:
    assert DEFAULT.blocked_reason(IPv4Address("127.0.0.1")) == "loopback"
    assert DEFAULT.blocked_reason(IPv4Address("8.8.8.8")) is None


@pytest.mark.parametrize(
    ("allowlist", "address", "allowed"),
    [
        (["127.0.0.0/8"], "127.0.0.1", True),
        (["127.0.0.0/8"], "127.8.9.10", True),
        (["127.0.0.0/8"], "::ffff:127.0.0.1", True),  # the same host as 127.0.0.1
        (["127.0.0.0/8"], "::1", False),
        (["127.0.0.0/8"], "10.0.0.1", False),
        (["127.0.0.0/8"], "169.254.169.254", False),
        (["127.0.0.0/8"], "2002:7f00:1::", False),  # via a 6to4 relay: not the same host
        (["127.0.0.0/8"], "64:ff9b::7f00:1", False),  # via a NAT64 gateway: same
        (["127.0.0.0/8"], "8.8.8.8", True),  # the allowlist opens, never closes
        (["10.0.0.0/8", "fd00::/8"], "10.20.30.40", True),
        (["10.0.0.0/8", "fd00::/8"], "fd00::5", True),
        (["10.0.0.0/8", "fd00::/8"], "fc00::5", False),
        (["10.0.0.0/8", "fd00::/8"], "192.168.0.1", False),
        (["169.254.169.254"], "169.254.169.254", True),  # a bare address is a /32
        (["169.254.169.254"], "169.254.169.253", False),
        (["::1"], "::1", True),
        (["::1"], "127.0.0.1", False),
        (["127.0.0.0/8"], "not-an-ip", False),
    ],
)
def test_the_allowlist_opens_exactly_its_networks(
    allowlist: list[str], address: str, allowed: bool
) -> None:
    assert AddressPolicy.from_strings(allowlist).is_allowed(address) is allowed


def test_parse_networks_rejects_garbage() -> None:
    assert [str(n) for n in parse_networks(["127.0.0.0/8", "::1"])] == ["127.0.0.0/8", "::1/128"]
    with pytest.raises(ValueError):
        parse_networks(["10.0.0.1/8"])
    with pytest.raises(ValueError):
        parse_networks(["lan"])


@pytest.mark.parametrize(
    ("host", "decoded"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F000001", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.000.000.001", "127.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("0", "0.0.0.0"),
        ("0x0", "0.0.0.0"),
        ("2852039166", "169.254.169.254"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("10.1", "10.0.0.1"),
        ("134744072", "8.8.8.8"),
        ("127.0.0.1", "127.0.0.1"),  # canonical is a legacy form too
        # not numeric hosts at all: names, out of range, not octal
        ("example.com", None),
        ("08", None),
        ("0x", "0.0.0.0"),  # inet_aton reads a bare 0x as 0
        ("4294967296", None),
        ("256.0.0.1", None),
        ("1.2.3.4.5", None),
        ("1..2", None),
        ("0xg", None),
        ("", None),
        ("١٢٧.0.0.1", None),  # non-ASCII digits
    ],
)
def test_legacy_numeric_ipv4_forms_decode_like_inet_aton(host: str, decoded: str | None) -> None:
    result = parse_legacy_ipv4(host)
    assert (str(result) if result is not None else None) == decoded


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("2130706433", "numeric form of 127.0.0.1, which is loopback"),
        ("0x7f000001", "numeric form of 127.0.0.1, which is loopback"),
        ("017700000001", "numeric form of 127.0.0.1, which is loopback"),
        ("127.1", "numeric form of 127.0.0.1, which is loopback"),
        ("0xa9fea9fe", "which is link-local"),
        ("127.0.0.1.", "loopback"),
        # a public address in a numeric form is refused too: parsers disagree on them
        ("134744072", "only dotted-quad IPv4 is accepted"),
        ("127.0.0.1", "127.0.0.1 is loopback"),
        ("169.254.169.254", "link-local"),
        ("::ffff:7f00:1", "IPv4-mapped form of 127.0.0.1"),
        ("[::ffff:127.0.0.1]", "IPv4-mapped form of 127.0.0.1"),
        ("2002:7f00:1::", "6to4"),
        ("64:ff9b::7f00:1", "NAT64"),
        ("fe80::1%25eth0", "link-local"),
        ("::ffff:127.0.0.1:80", "not a valid IP address"),
        ("fe80::zz", "not a valid IP address"),
    ],
)
def test_check_host_refuses_blocked_and_numeric_hosts(host: str, message: str) -> None:
    with pytest.raises(BlockedAddress) as caught:
        DEFAULT.check_host(host)
    assert message in caught.value.message
    assert caught.value.error_class == "blocked"
    assert caught.value.retryable is False


def test_check_host_passes_names_and_public_literals() -> None:
    assert DEFAULT.check_host("example.com") is None  # judged when it resolves
    assert DEFAULT.check_host("localhost") is None  # ditto: resolves to loopback, refused there
    assert str(DEFAULT.check_host("8.8.8.8")) == "8.8.8.8"
    assert str(DEFAULT.check_host("[2606:4700:4700::1111]")) == "2606:4700:4700::1111"
    loopback = AddressPolicy.from_strings(["127.0.0.0/8"])
    assert str(loopback.check_host("127.0.0.1")) == "127.0.0.1"
    with pytest.raises(BlockedAddress, match="only dotted-quad"):
        loopback.check_host("2130706433")  # allowlisted, and still not in that spelling


def test_parse_ip_accepts_brackets_and_zones_only() -> None:
    assert str(parse_ip("[::1]")) == "::1"
    assert str(parse_ip(" 10.0.0.1 ")) == "10.0.0.1"
    assert parse_ip("fe80::1%eth0") is not None
    assert parse_ip("127.1") is None
    assert parse_ip("localhost") is None
