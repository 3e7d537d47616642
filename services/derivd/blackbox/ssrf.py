"""SSRF defence: which addresses a black box may live at, and how we reach it.

A registered URL is attacker-controlled, so the service must not become a
proxy into its own network (loopback admin ports, cloud metadata at
169.254.169.254, private ranges). Checking the host name is not enough: names
resolve to anything, and a second lookup at connect time can answer
differently (DNS rebinding). So :func:`check_url` resolves once, checks every
address, and returns a :class:`Target` whose request goes to the checked
address itself, carrying the original name only in ``Host`` and TLS SNI.
:func:`post_json` then sends one request to that target without following
redirects and with a cap on the response body.

An address is checked as itself and as every IPv4 host it reaches through a
translation mechanism (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16`` and both ends of
Teredo ``2001::/32``), so a deny-list that names 127.0.0.0/8 also refuses
``[::127.0.0.1]`` and ``[2002:7f00:1::]`` whatever else it names. Addresses
that are not one host (unspecified, "this network" 0.0.0.0/8, broadcast,
multicast, the reserved 240.0.0.0/4) are refused whatever the lists say. This
is the rule of egress proxies built for the purpose (Stripe's Smokescreen) and
of the OWASP SSRF guidance: unmap every embedded IPv4 address, then decide.
"""

import ipaddress
import socket
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Mapping

import httpx

from .. import __version__
from ..config import Settings, get_settings
from ..errors import DerivdError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_DEFAULT_PORTS = {"http": 80, "https": 443}


class BlackBoxRefused(DerivdError):
    """A black-box URL the allow-list does not admit: the registrant's fault."""

    status = 403
    code = "blackbox_refused"


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and who we say we talk to."""

    url: httpx.URL
    address: IPAddress

    @cached_property
    def connect_url(self) -> httpx.URL:
        """The URL with its host replaced by the checked address, so the HTTP
        client connects there without a lookup of its own."""
        return self.url.copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        """``Host`` as the original URL would send it, for virtual hosting."""
        return self.url.netloc.decode("ascii")

    @property
    def extensions(self) -> dict:
        """For https, the name for SNI and certificate verification, which
        would otherwise be checked against the bare IP and fail."""
        if self.url.scheme == "https" and _literal(_host(self.url)) is None:
            return {"sni_hostname": _host(self.url)}
        return {}


@dataclass(frozen=True)
class Reply:
    """A black box's answer, its body read in full (under the cap)."""

    status: int
    body: bytes
    location: str | None


class ResponseTooLarge(Exception):
    """The body passed the configured cap; reading stopped there."""

    def __init__(self, limit: int, declared: int | None):
        super().__init__(limit, declared)
        self.limit = limit
        self.declared = declared


def check_url(url: str, settings: Settings | None = None) -> Target:
    """Parse, resolve and check ``url``; refuse it before any connection.

    Every address the host resolves to must be allowed, not just the first:
    otherwise whichever address the client happened to pick could be a
    forbidden one. The first address is the one connections will use.
    """
    settings = settings or get_settings()
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise BlackBoxRefused(f"black-box URL is not a valid URL: {exc}", reason="invalid_url") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        raise BlackBoxRefused(
            f"black-box URL scheme {parsed.scheme!r} refused: only http and https are allowed",
            reason="scheme",
        )
    host = _host(parsed)
    if not host:
        raise BlackBoxRefused("black-box URL has no host", reason="no_host")
    if parsed.userinfo:
        raise BlackBoxRefused(
            "black-box URL carries credentials, which would be echoed back; register them as headers",
            host=host, reason="credentials_in_url",
        )
    port = parsed.port or _DEFAULT_PORTS[parsed.scheme]
    if not 0 < port < 65536:
        raise BlackBoxRefused(f"black-box URL port {port} is out of range", host=host, reason="port")
    addresses = _resolve(host, port)
    allow, deny = _networks(tuple(settings.blackbox_allow), tuple(settings.blackbox_deny))
    for address in addresses:
        _check_address(host, address, allow, deny)
        for mechanism, embedded in _embedded_ipv4(address):
            _check_address(host, embedded, allow, deny, via=f"{address} ({mechanism})")
    return Target(parsed, addresses[0])


async def post_json(
    transport: httpx.AsyncBaseTransport,
    target: Target,
    payload: bytes,
    headers: Mapping[str, str],
    max_bytes: int,
) -> Reply:
    """POST ``payload`` to the checked address and read the answer.

    This goes straight to a transport, below ``httpx.AsyncClient``: nothing
    there can follow a redirect (a redirect would be a fresh, unchecked
    destination), pick up a proxy from the environment, or keep cookies
    between calls. The body is streamed and reading stops as soon as it
    passes ``max_bytes``, so a hostile or broken black box cannot exhaust our
    memory; no compression is offered, so what is counted is what arrives.
    """
    request = httpx.Request(
        "POST",
        target.connect_url,
        content=payload,
        headers={
            **headers,
            "Host": target.host_header,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"derivd/{__version__}",
        },
        extensions=target.extensions,
    )
    response = await transport.handle_async_request(request)
    try:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise ResponseTooLarge(max_bytes, int(declared))
        body = bytearray()
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > max_bytes:
                raise ResponseTooLarge(max_bytes, None)
    finally:
        await response.aclose()
    return Reply(response.status_code, bytes(body), response.headers.get("location"))


def _host(url: httpx.URL) -> str:
    # raw_host is the IDNA (punycode) form: what DNS and SNI expect.
    return url.raw_host.decode("ascii")


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise BlackBoxRefused(
            f"black-box host {host!r} does not resolve ({exc})", host=host, reason="unresolvable"
        ) from None
    addresses: list[IPAddress] = []
    for family, *_, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise BlackBoxRefused(
            f"black-box host {host!r} has no IP address", host=host, reason="unresolvable"
        )
    return addresses


@lru_cache(maxsize=16)
def _networks(allow: tuple[str, ...], deny: tuple[str, ...]) -> tuple[list, list]:
    parse = lambda cidrs: [ipaddress.ip_network(c, strict=False) for c in cidrs]  # noqa: E731
    return parse(allow), parse(deny)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")


def _embedded_ipv4(address: IPAddress) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 hosts an IPv6 address reaches through translation, with the mechanism's name."""
    if address.version == 4:
        return []
    found = []
    if address.ipv4_mapped is not None:
        found.append(("IPv4-mapped", address.ipv4_mapped))
    low = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # ::a.b.c.d; :: and ::1 are themselves
        found.append(("IPv4-compatible", low))
    if address in _NAT64:
        found.append(("NAT64", low))
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("Teredo server", server), ("Teredo client", client)]
    return found


def _not_one_host(address: IPAddress) -> tuple[str, str] | None:
    """(reason, description) when ``address`` can never be a black box whatever the lists say."""
    if address.is_unspecified:
        return "unspecified", "the unspecified address (this host)"
    if address.is_multicast:
        return "multicast", "a multicast address"
    if address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255"):
        return "broadcast", "the broadcast address"
    if address.version == 4 and address in _THIS_NETWORK:
        return "this_network", '"this network" (0.0.0.0/8)'
    if address.version == 4 and address.is_reserved:
        return "reserved", "a reserved address (240.0.0.0/4)"
    return None


def _check_address(host: str, address: IPAddress, allow: list, deny: list, via: str | None = None) -> None:
    where = f"{via}, which reaches {address}," if via else f"{address},"
    never = _not_one_host(address)
    if never:
        reason, what = never
        raise BlackBoxRefused(
            f"black-box host {host!r} resolves to {where} {what}: never a black box",
            host=host, address=str(address), reason=reason, via=via,
        )
    for network in deny:
        if address in network:
            raise BlackBoxRefused(
                f"black-box host {host!r} resolves to {where} which is in the denied range {network}",
                host=host, address=str(address), reason="denied", network=str(network), via=via,
            )
    if not any(address in network for network in allow):
        raise BlackBoxRefused(
            f"black-box host {host!r} resolves to {where} which is not in the allow-list",
            host=host, address=str(address), reason="not_allowed", via=via,
        )
