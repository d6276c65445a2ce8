"""Where webhooks may go: the guard against server-side request forgery.

A subscriber names a URL and the hub POSTs signed FHIR with personal data to
it, so a URL must never make the hub reach its own machine or network: a
loopback, private, link-local (cloud metadata at 169.254.169.254), shared,
multicast, reserved or unspecified address, in any spelling (IPv4, IPv6,
IPv4-mapped / NAT64 / 6to4 / Teredo IPv6, decimal `2130706433` or hex
`0x7f000001` IPv4) is refused.

The host is resolved and every address it resolves to is checked twice:

* when the subscription is made (`url_problem`: a 422 naming `url`), and
* at every connection the webhook client opens, because DNS can change
  after the check: the delivery client (`HostClients` in
  hub/delivery/http1.py) asks `checked_addresses` before each connection;
  FHIR subscription handshakes and heartbeats go through the same client.
  It connects to the very address it checked (the name
  still goes in the Host header and in TLS SNI / certificate checks), so a
  DNS answer that changes between check and connect cannot slip through.

An operator allow-list (`S117_WEBHOOK_ALLOWED_HOSTS`: host names, IP
addresses or networks) lifts the rule for named hosts: tests and the demo
allow 127.0.0.1; a private network may allow its own receivers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


class WebhookTargetRefused(ConnectionError):
    """The webhook's host resolves to an address the hub must not reach.
    A delivery records it (by this name) as a failed attempt; the delivery
    log then says the same for an open or a closed port."""


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why the hub must not connect to `ip`, or None if it is a public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        inner = _embedded_ipv4(ip)
        if inner is not None:
            return address_problem(inner)
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "an address that is not publicly routable"
    return None


@dataclass(frozen=True, slots=True)
class AllowList:
    """Operator-named hosts the rule does not apply to: names (exact,
    case-insensitive), addresses or networks (a resolved address inside one)."""

    names: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> "AllowList":
        names, networks = set(), []
        for entry in entries:
            entry = entry.strip().lower().strip("[]")
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def names_host(self, host: str) -> bool:
        return host.lower().strip("[]").rstrip(".") in self.names

    def covers(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def resolve(host: str, port: int, timeout: float | None = None) -> list[IPAddress]:
    """Every address `host` resolves to, the way the connection would resolve it
    (getaddrinfo also reads "2130706433", "0x7f000001" and "127.1")."""
    literal = _literal(host)
    if literal is not None:
        return [literal]
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


def _refusal(host: str, addresses: list[IPAddress], allow: AllowList) -> str | None:
    for ip in addresses:
        why = address_problem(ip)
        if why and not allow.covers(ip):
            return (f"resolves to {why}; webhooks must go to a public address "
                    "(or the hub operator must allow the host)")
    return None


async def url_problem(url: str, allowed: Iterable[str], timeout: float = 5.0) -> str | None:
    """Why a webhook URL is refused at subscription, or None. Never quotes the
    resolved addresses (the answer must not map the hub's network)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return "has no host"
    if "@" in parts.netloc:
        # A user name or password in the URL: a credential the hub would store and show back
        # (and never send: the signature authenticates), on every kind of endpoint (webhook, FHIR rest-hook).
        return "must not carry credentials (user:password@); the signature authenticates"
    allow = AllowList.parse(allowed)
    if allow.names_host(host):
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "has an invalid port"
    try:
        addresses = await resolve(host, port, timeout)
    except (OSError, TimeoutError, UnicodeError, ValueError):
        return "has a host that cannot be resolved"
    if not addresses:
        return "has a host that cannot be resolved"
    return _refusal(host, addresses, allow)


async def checked_addresses(host: str, port: int, allow: AllowList) -> list[str]:
    """Where a webhook connection to `host` may go: every address it resolves
    to, each checked (the connection is made to these, not to the name);
    the name itself when the operator allows it. Raises WebhookTargetRefused
    for an address the hub must not reach (a literal one included), OSError
    when the name cannot be resolved."""
    if allow.names_host(host):
        return [host]
    try:
        addresses = await resolve(host, port)
    except (OSError, TimeoutError, UnicodeError, ValueError) as exc:
        raise OSError(f"cannot resolve the webhook host ({type(exc).__name__})") from None
    why = _refusal(host, addresses, allow) if addresses else "resolves to no address"
    if why:
        raise WebhookTargetRefused(f"webhook host {why}")
    return [str(ip) for ip in addresses]
