"""The network policy: which addresses a connection made for a registry may reach.

A registrant chooses the registry's URL, its token realm and (for GCR) the token endpoint; without a policy
they could point the watcher at the cloud's metadata service or at anything else inside the network it
runs in. The policy is checked against the address a host name RESOLVES to, at connect time, and the
connection is then made to that checked address (TLS still verifies the host name): a name that resolves
to an allowed address when registered and to a refused one later (DNS rebinding) is refused when it does.

Always refused: link-local addresses and the cloud metadata endpoints (`ALWAYS_DENIED`), in IPv4 and
IPv4-mapped IPv6 form. `WATCHER_DENY_NETWORKS` adds ranges; `WATCHER_ALLOW_NETWORKS` punches holes in
either (allow wins over deny). The policy is applied only where the target was chosen by a registrant:
httpx clients through `PolicedBackend`, requests sessions (the Azure SDK's pipeline, google-auth's token
request) through `watcher.registry.policedsession` (a module of its own: only the providers whose SDKs use
requests import it). The SDKs' own cloud credential discovery is left alone (AWS, Azure
and GCP legitimately ask 169.254.169.254 for instance credentials).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import anyio
import httpcore

from watcher import errors
from watcher.registry.aiostream import AsyncioBackend
from watcher.settings import get_settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ALWAYS_DENIED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "169.254.0.0/16",  # IPv4 link-local: AWS, Azure, GCP and OpenStack metadata at 169.254.169.254
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS's IPv6 metadata endpoint
        "100.100.100.200/32",  # Alibaba Cloud's metadata endpoint
    )
)
SETTINGS_HINT = "WATCHER_DENY_NETWORKS / WATCHER_ALLOW_NETWORKS"


class NetworkRefused(errors.UnreachableError):
    """A connection the network policy refused; no packet was sent to the address."""


@dataclass(frozen=True)
class NetworkPolicy:
    denied: tuple[Network, ...]
    allowed: tuple[Network, ...] = ()

    def refuses(self, address: Address) -> bool:
        """True when `address` (or the IPv4 address an IPv4-mapped IPv6 address carries) is refused."""
        forms: list[Address] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            forms.append(address.ipv4_mapped)
        if any(_within(form, self.allowed) for form in forms):
            return False
        return any(_within(form, self.denied) for form in forms)

    def checked(self, host: str, port: int, addresses: Iterable[str]) -> list[str]:
        """`addresses` (what `host` resolved to), or NetworkRefused if the policy refuses any of them."""
        found = list(dict.fromkeys(addresses))  # resolvers repeat an address per socket type
        for text in found:
            if self.refuses(ipaddress.ip_address(text.split("%", 1)[0])):
                shown = host if host == text else f"{host} ({text})"
                raise NetworkRefused(
                    f"connecting to {shown} port {port}: address {text} is refused by the network policy "
                    f"({SETTINGS_HINT})"
                )
        return found


def _within(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def parse_networks(text: str, variable: str) -> tuple[Network, ...]:
    """A comma- (or whitespace-) separated CIDR list; a bad entry is one line naming it and the variable."""
    networks: list[Network] = []
    for entry in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise errors.InputError(
                f"{variable}: {entry!r} is not an IP network in CIDR notation (e.g. 10.0.0.0/8 or fd00::/8)"
            ) from None
    return tuple(networks)


@lru_cache(maxsize=8)
def _policy(deny: str, allow: str) -> NetworkPolicy:
    return NetworkPolicy(
        denied=ALWAYS_DENIED + parse_networks(deny, "WATCHER_DENY_NETWORKS"),
        allowed=parse_networks(allow, "WATCHER_ALLOW_NETWORKS"),
    )


def current_policy() -> NetworkPolicy:
    """The policy the settings describe (an InputError for a bad CIDR); read at each connect."""
    settings = get_settings()
    return _policy(settings.deny_networks, settings.allow_networks)


# -- httpx (httpcore) ---------------------------------------------------------------------------------
class PolicedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving each host itself, checking every address against the policy,
    and connecting to the checked address; httpcore then starts TLS with the original host name."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or AsyncioBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = current_policy().checked(host, port, await _resolve(host, port, timeout))
        last_error: Exception | None = None
        for address in addresses:  # like a resolver-driven connect: the first address that answers
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None  # _resolve never returns an empty list
        raise last_error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for registries")  # pragma: no cover

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int, timeout: float | None) -> list[str]:
    with contextlib.suppress(ValueError):  # an address already: no lookup (on a thread) to make
        ipaddress.ip_address(host)
        return [host]
    try:
        with anyio.fail_after(timeout):
            found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
    except (OSError, UnicodeError) as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {_reason(exc)}") from None
    if not found:
        raise httpcore.ConnectError(f"cannot resolve {host}: no address")
    return [str(info[4][0]) for info in found]


def _reason(exc: BaseException) -> str:
    return exc.args[1] if isinstance(exc, socket.gaierror) and len(exc.args) > 1 else str(exc)
