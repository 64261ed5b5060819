"""The SSRF guard: which addresses outbound calls may reach, and the resolver that enforces it.

Two halves, one policy:

- :class:`AddressPolicy` is a pure judgement of one address (no I/O): every address that is not
  globally routable is refused unless an allowlisted network holds it. Addresses that carry an
  IPv4 address inside IPv6 (mapped, compatible, 6to4, NAT64) are judged by the IPv4 they reach.
- :class:`GuardedResolver` wraps aiohttp's resolver: it vets *every* address a name resolves to,
  refuses the whole name if any one is blocked (a name answering a public and a private address
  must not connect at all), and hands aiohttp only vetted addresses, so the socket connects to
  exactly what was judged; there is no second lookup an attacker's DNS could answer differently.

aiohttp does not ask the resolver about IP literals, so the client checks literal hosts with
:meth:`AddressPolicy.check_host` before connecting.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from isthmus.errors import BlockedAddress

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


def _nets(*rows: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ip_network(net), label) for net, label in rows)


# IANA special-purpose registries, the parts that are not globally reachable; first match names
# the reason. The stdlib's is_global backs this up, but its tables differ between Python
# versions (fec0::/10 and 224.0.0.0/4 count as "global" in 3.11), so the policy owns its list.
_V4_BLOCKED = _nets(
    ("0.0.0.0/8", "unspecified ('this network')"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_V6_BLOCKED = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:db8::/32", "documentation"),
    ("2001::/23", "IETF protocol assignments"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"),
    ("fc00::/7", "unique-local"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)

_MAPPED = ip_network("::ffff:0:0/96")
_TRANSLATED = ip_network("::ffff:0:0:0/96")
_COMPATIBLE = ip_network("::/96")
_SIX_TO_FOUR = ip_network("2002::/16")
_NAT64 = ip_network("64:ff9b::/96")
_NAT64_LOCAL = ip_network("64:ff9b:1::/48")
# RFC 6052 layouts a local-use NAT64 prefix (/48 or longer) may use: (prefix length, the bit
# ranges holding the IPv4 address). The operator's choice is invisible from outside, so every
# layout is judged and all must pass.
_RFC6052_LAYOUTS = ((48, ((48, 64), (72, 88))), (56, ((56, 64), (72, 96))), (64, ((72, 104),)))


def _bits(value: int, start: int, stop: int) -> int:
    return (value >> (128 - stop)) & ((1 << (stop - start)) - 1)


def _embedded_ipv4(address: IPv6Address) -> tuple[str, list[IPv4Address]] | None:
    """The IPv4 address(es) an IPv6 address leads to, and what kind of embedding it is."""
    value = int(address)
    last32 = IPv4Address(value & 0xFFFFFFFF)
    if address in _MAPPED:
        return "IPv4-mapped", [last32]
    if address in _TRANSLATED:
        return "IPv4-translated", [last32]
    if address in _COMPATIBLE:
        return "IPv4-compatible", [last32]
    if address in _SIX_TO_FOUR:
        return "6to4", [IPv4Address(_bits(value, 16, 48))]
    if address in _NAT64:
        return "NAT64", [last32]
    if address in _NAT64_LOCAL:
        found = [last32]
        for _, ranges in _RFC6052_LAYOUTS:
            v4 = 0
            for start, stop in ranges:
                v4 = (v4 << (stop - start)) | _bits(value, start, stop)
            found.append(IPv4Address(v4))
        return "local-use NAT64", found
    return None


def _judge(address: IPAddress) -> str | None:
    """Why ``address`` is not a public destination, or None when it is."""
    if isinstance(address, IPv6Address):
        for net, label in _V6_BLOCKED[:2]:  # :: and ::1 sit inside ::/96; name them first
            if address in net:
                return label
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            kind, candidates = embedded
            for v4 in candidates:
                if (reason := _judge(v4)) is not None:
                    return f"the {kind} form of {v4}, which is {reason}"
            return None
        table: tuple[tuple[IPNetwork, str], ...] = _V6_BLOCKED
    else:
        table = _V4_BLOCKED
    for net, label in table:
        if address in net:
            return label
    if (
        not address.is_global
        or address.is_private
        or address.is_reserved
        or address.is_multicast
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
    ):
        return "not a global address"
    return None


def parse_ip(text: str) -> IPAddress | None:
    """A canonical IP literal (IPv6 optionally in brackets or with a zone), else None."""
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ip_address(text)
    except ValueError:
        return None


_LEGACY_PART = re.compile(r"0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*")


def parse_legacy_ipv4(host: str) -> IPv4Address | None:
    """Decode the numeric IPv4 forms inet_aton() accepts: ``2130706433``, ``0x7f000001``,
    ``017700000001``, ``127.1``, ``0177.0.0.1``; None when ``host`` is not one of them.

    Resolvers and URL parsers disagree on these forms, which is what makes them an SSRF
    favourite; the client refuses every non-canonical one, this tells it what it would reach.
    """
    text = host[:-1] if host.endswith(".") else host
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if not _LEGACY_PART.fullmatch(part):
            return None
        if part[:2].lower() == "0x":
            values.append(int(part[2:] or "0", 16))
        elif len(part) > 1 and part[0] == "0":
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 0xFF for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    number = 0
    for v in head:
        number = (number << 8) | v
    return IPv4Address((number << (8 * (4 - len(head)))) | last)


def parse_networks(values: Iterable[str | IPNetwork]) -> tuple[IPNetwork, ...]:
    """Allowlist entries as networks (``10.0.0.0/8``; a bare address means just that one)."""
    return tuple(v if isinstance(v, IPv4Network | IPv6Network) else ip_network(v) for v in values)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses outbound calls may reach: public ones, plus the allowlisted networks.

    Pure and cheap; one instance is shared by the resolver and the client.
    """

    allowlist: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_strings(cls, allowlist: Iterable[str | IPNetwork] = ()) -> AddressPolicy:
        return cls(parse_networks(allowlist))

    def blocked_reason(self, address: str | IPAddress) -> str | None:
        """None when ``address`` may be reached, else a short reason ("loopback", "the NAT64
        form of 10.0.0.1, which is private"). Fails closed: text that is not an IP address is
        refused ("not an IP address")."""
        ip = address if isinstance(address, IPv4Address | IPv6Address) else parse_ip(address)
        if ip is None:
            return "not an IP address"
        if self._allowlisted(ip):
            return None
        return _judge(ip)

    def is_allowed(self, address: str | IPAddress) -> bool:
        return self.blocked_reason(address) is None

    def check_host(self, host: str) -> IPAddress | None:
        """Vet a URL host that is written as an address; return it, or None for a name.

        Raises BlockedAddress for a refused address, for an unparseable IPv6-looking host and
        for every non-canonical numeric IPv4 form (``2130706433``, ``127.1``, ...), whatever
        it decodes to: only the dotted quad means the same to every parser.
        """
        ip = parse_ip(host)
        if ip is not None:
            if (reason := self.blocked_reason(ip)) is not None:
                raise BlockedAddress(f"{host} is {reason}")
            return ip
        if ":" in host:  # aiohttp would treat it as an address without asking the resolver
            raise BlockedAddress(f"{host!r} is not a valid IP address")
        legacy = parse_legacy_ipv4(host)
        if legacy is not None:
            reason = self.blocked_reason(legacy)
            why = f"which is {reason}" if reason else "and only dotted-quad IPv4 is accepted"
            raise BlockedAddress(f"{host} is a numeric form of {legacy}, {why}")
        return None

    def _allowlisted(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        # ::ffff:a.b.c.d is the same host as a.b.c.d (a dual-stack socket connects there), so
        # an allowlisted IPv4 network covers its mapped form; 6to4/NAT64 go via a gateway: no.
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c.version == n.version and c in n for c in candidates for n in self.allowlist)


def _is_invalid_name(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "invalid" or name.endswith(".invalid")


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that returns only addresses the policy allows.

    Wraps another resolver (aiohttp's default: threaded getaddrinfo, or aiodns when installed).
    Raises BlockedAddress when any resolved address is refused, and a ``socket.gaierror``
    (which aiohttp reports as a DNS error) when the name does not resolve.
    """

    def __init__(self, policy: AddressPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if _is_invalid_name(host):
            # RFC 6761: .invalid never resolves; answer at once instead of asking the network.
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is a reserved, invalid name")
        results = await self._inner.resolve(host, port, family)
        if not results:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} has no addresses")
        for result in results:
            if (reason := self.policy.blocked_reason(result["host"])) is not None:
                raise BlockedAddress(f"{host} resolves to {result['host']}, which is {reason}")
        # Copies: what aiohttp connects to is exactly what was judged above.
        return [ResolveResult(**result) for result in results]

    async def close(self) -> None:
        await self._inner.close()
