"""Advertise the tracker over mDNS / DNS-SD as ``_shoal-tracker._tcp.local.``.

python-zeroconf runs its own asyncio loop in a background thread when no asyncio loop is
running (which is always the case under trio), so this module uses its **sync** API and
calls every blocking method (construct, ``register_service``, ``unregister_service``,
``close``) through ``trio.to_thread.run_sync``. Unregistering sends the mDNS "goodbye"
so browsers drop us at once; it runs in a shielded, time-boxed cleanup, with the thread
abandoned if zeroconf hangs past the box.

Interfaces. By default zeroconf joins the multicast group on every interface. On a
machine without a multicast route (CI sandboxes, containers with only ``lo``) pass
``interfaces=["127.0.0.1"]``: multicast over loopback works on Linux when the socket is
bound to the loopback address, which is how the tests run two processes against each
other. The browser (``peer.mesh.discovery``) must use the same interface list.

TXT record: ``v`` (tracker protocol version) and ``path`` (URL prefix, ``/``), so a
browser builds ``http://ADDRESS:PORT/``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Sequence
from typing import Final

import ifaddr
import trio
from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

from tracker.messages import PROTOCOL_VERSION

LOGGER = logging.getLogger(__name__)

#: The DNS-SD service type of shoal trackers.
SERVICE_TYPE: Final = "_shoal-tracker._tcp.local."
#: Seconds allowed for the goodbye packets and closing zeroconf's thread at shutdown;
#: unregistering sends three goodbyes ~250 ms apart (RFC 6762 §10.1 suggests repeating).
CLEANUP_SECONDS: Final = 3.0


def advertised_addresses(listen_host: str, interfaces: Sequence[str]) -> list[str]:
    """IPv4 addresses to put in the A records.

    Args:
        listen_host: The address the HTTP server is bound to.
        interfaces: Addresses zeroconf is restricted to (empty: all).

    Returns:
        ``interfaces`` if given; else ``listen_host`` if it is a specific IPv4 address;
        else every IPv4 address of the machine, loopback last.
    """
    if interfaces:
        return list(interfaces)
    try:
        ip = ipaddress.ip_address(listen_host)
    except ValueError:
        ip = None
    if isinstance(ip, ipaddress.IPv4Address) and not ip.is_unspecified:
        return [listen_host]
    found = [
        str(a.ip) for adapter in ifaddr.get_adapters() for a in adapter.ips if isinstance(a.ip, str)
    ]
    return sorted(set(found), key=lambda a: (a.startswith("127."), a)) or ["127.0.0.1"]


def service_info(
    port: int, addresses: Sequence[str], *, instance: str | None = None
) -> ServiceInfo:
    """The DNS-SD record set for a tracker on ``port``."""
    host = socket.gethostname().split(".")[0] or "tracker"
    name = instance or f"shoal-tracker-{host}"
    return ServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(a) for a in addresses],
        port=port,
        properties={"v": str(PROTOCOL_VERSION), "path": "/"},
        server=f"{name}.local.",
    )


async def advertise(
    port: int,
    *,
    listen_host: str = "0.0.0.0",
    interfaces: Sequence[str] = (),
    instance: str | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Advertise the tracker until cancelled, then say goodbye.

    Args:
        port: The tracker's HTTP port.
        listen_host: The HTTP bind address (picks the advertised addresses).
        interfaces: IPv4 addresses zeroconf binds to (empty: all interfaces).
        instance: Service instance name (default ``shoal-tracker-<hostname>``); zeroconf
            appends `` (2)`` and so on if another tracker already uses it.
        task_status: Started with the registered service name.
    """
    info = service_info(port, advertised_addresses(listen_host, interfaces), instance=instance)
    choice = list(interfaces) if interfaces else InterfaceChoice.All
    zc = await trio.to_thread.run_sync(
        functools.partial(Zeroconf, interfaces=choice, ip_version=IPVersion.V4Only)
    )
    registered = False
    try:
        await trio.to_thread.run_sync(
            functools.partial(zc.register_service, info, allow_name_change=True)
        )
        registered = True
        LOGGER.info("mDNS: advertising %s on port %d", info.name, port)
        task_status.started(info.name)
        await trio.sleep_forever()
    finally:
        with trio.move_on_after(CLEANUP_SECONDS, shield=True):
            if registered:
                await trio.to_thread.run_sync(zc.unregister_service, info, abandon_on_cancel=True)
            await trio.to_thread.run_sync(zc.close, abandon_on_cancel=True)
