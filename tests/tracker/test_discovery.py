"""The tracker's mDNS advert, seen from another process over loopback multicast.

Multicast works on this kind of host only when zeroconf is bound to 127.0.0.1 (see
``tracker.discovery``), so both sides use ``interfaces=["127.0.0.1"]``.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
import uuid

import pytest
import trio

from tests.helpers import procs
from tracker.discovery import SERVICE_TYPE, advertise, advertised_addresses

# A browser written against python-zeroconf directly (not our peer code): it prints the
# first service whose name starts with argv[1], as JSON, and exits.
BROWSER = textwrap.dedent(
    """
    import json, sys, threading
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    wanted, done = sys.argv[1], threading.Event()
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)

    def handler(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added and name.startswith(wanted):
            info = zeroconf.get_service_info(service_type, name, 3000)
            if info is not None:
                print(json.dumps({"name": name, "addresses": info.parsed_addresses(),
                                  "port": info.port, "v": info.properties.get(b"v").decode()}))
                done.set()

    browser = ServiceBrowser(zc, sys.argv[2], handlers=[handler])
    done.wait(20)
    zc.close()
    """
)


async def test_another_process_finds_the_advert() -> None:
    instance = f"test-{uuid.uuid4().hex[:8]}"
    port = procs.free_port()
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            name = await nursery.start(
                functools.partial(
                    advertise,
                    port,
                    listen_host="127.0.0.1",
                    interfaces=["127.0.0.1"],
                    instance=instance,
                )
            )
            assert name == f"{instance}.{SERVICE_TYPE}"
            result = await trio.to_thread.run_sync(
                functools.partial(
                    subprocess.run,
                    [sys.executable, "-c", BROWSER, instance, SERVICE_TYPE],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
            )
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found == {"name": name, "addresses": ["127.0.0.1"], "port": port, "v": "1"}


@pytest.mark.parametrize(
    ("host", "interfaces", "expected"),
    [
        ("0.0.0.0", ["127.0.0.1"], ["127.0.0.1"]),
        ("10.1.2.3", [], ["10.1.2.3"]),
        ("127.0.0.1", [], ["127.0.0.1"]),
    ],
)
def test_advertised_addresses(host: str, interfaces: list[str], expected: list[str]) -> None:
    assert advertised_addresses(host, interfaces) == expected


def test_wildcard_listen_advertises_every_ipv4_address_loopback_last() -> None:
    addresses = advertised_addresses("0.0.0.0", [])
    assert addresses
    assert all(a.count(".") == 3 for a in addresses)
    loopback = [a.startswith("127.") for a in addresses]
    assert loopback == sorted(loopback)
