"""Which addresses the crawler may connect to: the public internet only, by default.

The URLs come from strangers, so a link (or a redirect) to `http://10.0.0.5/admin` or to
a cloud metadata address must never be fetched. Checking a hostname and then letting the
HTTP client resolve it again would leave a gap (DNS rebinding), so the check lives in
the resolver the client connects through: only the addresses it returns can be dialled.
IP-literal hosts bypass aiohttp's resolver and are checked with `check_literal_host`.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(OSError):
    """Every address of a host is one the policy refuses."""


@dataclass(frozen=True)
class AddressPolicy:
    """Refuses non-public addresses; tests and demos allow loopback, and nothing else."""

    allow_loopback: bool = False
    allow_private: bool = False

    def refusal(self, ip: IPAddress) -> str | None:
        """Why `ip` may not be dialled, or None."""
        if isinstance(ip, ipaddress.IPv6Address):
            # IPv6 forms that carry an IPv4 address reach that address.
            embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
            if embedded is not None:
                return self.refusal(embedded)
        if ip.is_loopback:
            return None if self.allow_loopback else "loopback"
        if ip.is_multicast:
            return "multicast"
        if ip.is_link_local:
            return "link-local"
        if ip.is_unspecified or ip.is_reserved:
            return "reserved"
        if ip.is_private or not ip.is_global:
            return None if self.allow_private else "private"
        return None


def check_literal_host(host: str, policy: AddressPolicy) -> None:
    """Raise `AddressRefused` when `host` is an IP literal the policy refuses."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    if reason := policy.refusal(ip):
        raise AddressRefused(f"{host} is a {reason} address")


class SafeResolver(AbstractResolver):
    """aiohttp resolver that drops refused addresses, and fails if none is left."""

    def __init__(self, policy: AddressPolicy, resolver: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._resolver = resolver or ThreadedResolver()
        # The first allowed address of each host: the WARC's IP when the connection
        # was already released by the time the response is read.
        self.addresses: dict[str, str] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        allowed = []
        reasons = []
        for result in results:
            reason = self.policy.refusal(ipaddress.ip_address(result["host"]))
            if reason is None:
                allowed.append(result)
            else:
                reasons.append(f"{result['host']} ({reason})")
        if not allowed:
            raise AddressRefused(f"{host} resolves only to refused addresses: {', '.join(reasons)}")
        self.addresses[host] = allowed[0]["host"]
        return allowed

    async def close(self) -> None:
        await self._resolver.close()
