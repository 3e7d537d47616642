"""The SSRF check: what is refused, why, and where connections really go."""

import ipaddress
import socket

import numpy as np
import pytest

from derivd.blackbox import BlackBoxCaller, BlackBoxRefused, BlackBoxSpec, MemoryRegistry, check_url
from derivd.blackbox import caller as caller_module
from derivd.config import Settings


@pytest.fixture
def no_dns(monkeypatch):
    """Fails the test if anything resolves a name: literal IPs need no DNS."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected DNS lookup {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def fake_dns(monkeypatch, table: dict[str, list[str]]) -> list[str]:
    """Answer lookups of the names in ``table``; returns the log of names asked."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def lookup(host, port, *args, **kwargs):
        if host not in table:
            return real(host, port, *args, **kwargs)
        asked.append(host)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
             (a, port, 0, 0) if ":" in a else (a, port))
            for a in table[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    return asked


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "gopher://example.com/", "ftp://example.com/x", "//x/y", "http://93.184.216.34:99999/"],
)
def test_only_http_and_https(url, no_dns):
    with pytest.raises(BlackBoxRefused) as info:
        check_url(url, Settings())
    assert info.value.code == "blackbox_refused" and 400 <= info.value.status < 500


@pytest.mark.parametrize(
    "url, address",
    [
        ("http://127.0.0.1:8080/f", "127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://10.1.2.3/f", "10.1.2.3"),
        ("https://192.168.0.10/f", "192.168.0.10"),
        ("http://[::1]:9000/f", "::1"),
        ("http://[::ffff:127.0.0.1]/f", "::ffff:127.0.0.1"),
        ("http://100.64.1.1/f", "100.64.1.1"),
    ],
)
def test_default_settings_refuse_internal_literals(url, address, no_dns):
    with pytest.raises(BlackBoxRefused) as info:
        check_url(url, Settings())
    canonical = str(ipaddress.ip_address(address))
    assert f"resolves to {canonical}, which is in the denied range" in info.value.message
    assert info.value.detail["address"] == canonical


@pytest.mark.parametrize("url", ["http://[::]:8080/f", "http://0.0.0.0/f"])
def test_unspecified_address_is_refused_whatever_the_lists(url, no_dns):
    """connect() to :: or 0.0.0.0 reaches this very host."""
    with pytest.raises(BlackBoxRefused, match="unspecified address"):
        check_url(url, Settings(blackbox_allow=["0.0.0.0/0", "::/0"], blackbox_deny=[]))


def test_public_literal_is_allowed_by_default(no_dns):
    target = check_url("http://93.184.216.34:8080/f?q=1", Settings())
    assert target.address == ipaddress.ip_address("93.184.216.34")


def test_every_resolved_address_is_checked(monkeypatch):
    fake_dns(monkeypatch, {"mixed.example": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(BlackBoxRefused) as info:
        check_url("http://mixed.example/f", Settings())
    assert "'mixed.example' resolves to 10.0.0.7" in info.value.message


def test_name_resolving_to_loopback_is_refused(monkeypatch):
    fake_dns(monkeypatch, {"sneaky.example": ["127.0.0.1"]})
    with pytest.raises(BlackBoxRefused, match="127.0.0.1"):
        check_url("http://sneaky.example/f", Settings())


def test_allow_list_is_exclusive(no_dns):
    settings = Settings(blackbox_allow=["127.0.0.1/32"], blackbox_deny=[])
    assert str(check_url("http://127.0.0.1/f", settings).address) == "127.0.0.1"
    with pytest.raises(BlackBoxRefused, match="not in the allow-list"):
        check_url("http://8.8.8.8/f", settings)


def test_unresolvable_host_is_refused(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(BlackBoxRefused, match="does not resolve"):
        check_url("http://nowhere.invalid/f", Settings())


def test_credentials_in_url_are_refused(no_dns):
    with pytest.raises(BlackBoxRefused, match="headers"):
        check_url("http://user:pw@93.184.216.34/f", Settings())


def test_target_connects_to_the_address_and_keeps_the_name(monkeypatch):
    fake_dns(monkeypatch, {"sim.example": ["93.184.216.34"]})
    target = check_url("https://sim.example:8443/run?v=2", Settings())
    assert str(target.connect_url) == "https://93.184.216.34:8443/run?v=2"
    assert target.host_header == "sim.example:8443"
    assert target.extensions == {"sni_hostname": "sim.example"}
    plain = check_url("http://[2606:2800:220:1::]/f", Settings())
    assert str(plain.connect_url) == "http://[2606:2800:220:1::]/f" and plain.extensions == {}


def test_refused_before_any_connection(server):
    """Loopback under the default settings: the server must see nothing."""
    spec = BlackBoxSpec(name="local", url=server.url("/f"), input_size=2, output_size=2)
    with pytest.raises(BlackBoxRefused, match="127.0.0.1"):
        BlackBoxCaller(spec, Settings()).evaluate(np.ones((3, 2)))
    assert server.connections == 0 and server.requests == []


@pytest.mark.parametrize("host", ["169.254.169.254", "10.20.30.40", "[::1]"])
def test_caller_refuses_internal_literals_without_connecting(host, no_dns, monkeypatch):
    """Whatever the address, no HTTP request is even attempted."""

    async def never(*args, **kwargs):
        raise AssertionError("a request was attempted")

    monkeypatch.setattr(caller_module, "post_json", never)
    spec = BlackBoxSpec(name="meta", url=f"http://{host}/latest", input_size=2, output_size=2)
    with pytest.raises(BlackBoxRefused, match="denied range"):
        BlackBoxCaller(spec, Settings()).evaluate(np.ones((2, 2)))


def test_call_goes_to_the_checked_address(server, local_settings, monkeypatch):
    """A name only our check can resolve still works: the HTTP client makes
    no lookup of its own, and the black box sees the name in Host."""
    port = server.port
    asked = fake_dns(monkeypatch, {"sim.internal.test": ["127.0.0.1"]})
    spec = BlackBoxSpec(name="named", url=f"http://sim.internal.test:{port}/f", input_size=2, output_size=2)
    caller = BlackBoxCaller(spec, local_settings)
    Y = caller.evaluate(np.array([[1.0, 2.0], [0.5, 0.5]]))
    assert np.allclose(Y[0], [5.0, np.sin(1.0) * np.sin(2.0)])
    assert asked == ["sim.internal.test"]
    assert {h["host"] for _, _, h in server.requests} == {f"sim.internal.test:{port}"}


def test_rebinding_after_registration_is_refused(server, local_settings, monkeypatch):
    """The check runs again on every call, so a name that later resolves
    somewhere refused is caught before connecting."""
    table = {"flip.test": ["127.0.0.1"]}
    fake_dns(monkeypatch, table)
    port = server.port
    spec = BlackBoxSpec(name="flip", url=f"http://flip.test:{port}/f", input_size=2, output_size=2)
    caller = BlackBoxCaller(spec, local_settings)
    caller.evaluate(np.ones((1, 2)))
    table["flip.test"] = ["169.254.169.254"]
    server.reset()
    with pytest.raises(BlackBoxRefused, match="169.254.169.254"):
        caller.evaluate(np.zeros((1, 2)))
    assert server.requests == []


@pytest.mark.parametrize(
    "url, embedded, mechanism",
    [
        ("http://[::127.0.0.1]:8080/f", "127.0.0.1", "IPv4-compatible"),
        ("http://[::10.0.0.1]/f", "10.0.0.1", "IPv4-compatible"),
        ("http://[::169.254.169.254]/latest", "169.254.169.254", "IPv4-compatible"),
        ("http://[64:ff9b::7f00:1]/f", "127.0.0.1", "NAT64"),
        ("http://[2002:a9fe:a9fe::1]/f", "169.254.169.254", "6to4"),
        ("http://[2002:c0a8:1::]/f", "192.168.0.1", "6to4"),
        # Teredo: server 65.54.227.120 (public), client 127.0.0.1 stored inverted in the last 32 bits
        ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/f", "127.0.0.1", "Teredo client"),
        ("http://[2001:0:a00:1:8000:63bf:3fff:fdd2]/f", "10.0.0.1", "Teredo server"),
    ],
)
def test_ipv6_addresses_embedding_an_internal_ipv4_are_refused_as_that_host(url, embedded, mechanism, no_dns):
    """Each mechanism reaches the IPv4 host it embeds, so that host must pass too; the check does
    not rely on the deny-list naming the IPv6 prefix (here it names only the IPv4 ranges)."""
    with pytest.raises(BlackBoxRefused):
        check_url(url, Settings())
    only_v4 = Settings(blackbox_deny=["127.0.0.0/8", "10.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16"])
    with pytest.raises(BlackBoxRefused) as info:
        check_url(url, only_v4)
    assert f"which reaches {embedded}, which is in the denied range" in info.value.message
    assert info.value.detail["address"] == embedded and mechanism in info.value.detail["via"]
    assert info.value.detail["reason"] == "denied"


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://255.255.255.255/f", "broadcast"),
        ("http://224.0.0.1/f", "multicast"),
        ("http://239.255.255.250:1900/f", "multicast"),
        ("http://[ff02::1]/f", "multicast"),
        ("http://0.1.2.3/f", "this_network"),
        ("http://240.0.0.1/f", "reserved"),
        ("http://[::ffff:255.255.255.255]/f", "broadcast"),
        ("http://[2002:ffff:ffff::]/f", "broadcast"),
    ],
)
def test_addresses_that_are_not_one_host_are_refused_whatever_the_lists(url, reason, no_dns):
    """Broadcast, multicast, 0.0.0.0/8 and 240.0.0.0/4 cannot be a black box: even an allow-all
    configuration without a deny-list refuses them, at registration."""
    with pytest.raises(BlackBoxRefused) as info:
        check_url(url, Settings(blackbox_allow=["0.0.0.0/0", "::/0"], blackbox_deny=[]))
    assert info.value.detail["reason"] == reason and "never a black box" in info.value.message
    with pytest.raises(BlackBoxRefused):
        check_url(url, Settings())


def test_the_registry_refuses_embedded_and_broadcast_addresses_before_storing(no_dns):
    registry = MemoryRegistry(Settings())
    for url in ("http://[::127.0.0.1]:9/f", "http://255.255.255.255/f", "http://[64:ff9b:1::a00:1]/f"):
        with pytest.raises(BlackBoxRefused):
            registry.register(BlackBoxSpec(name="sneaky", url=url, input_size=1, output_size=1))
    assert registry.list() == []


@pytest.mark.parametrize("url", ["http://[2002:5db8:d822::1]/f", "http://[2001:0:4136:e378:8000:63bf:a247:27dd]/f",
                                 "http://[::ffff:93.184.216.34]/f"])
def test_embedded_public_addresses_pass_when_the_lists_admit_the_ipv6_form(url, no_dns):
    """The unmapping refuses what the embedded host would be refused for, nothing more."""
    target = check_url(url, Settings(blackbox_deny=["127.0.0.0/8", "10.0.0.0/8"]))
    assert target.address == ipaddress.ip_address(url.split("[")[1].split("]")[0])
