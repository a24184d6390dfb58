"""Mutual TLS on the P2P port: ``--tls-cert``, ``--tls-key``, ``--tls-ca``.

Every link runs inside a ``trio.SSLStream`` over its TCP stream, and both ends demand a
certificate signed by the cluster CA (``CERT_REQUIRED`` on the server side too). Any
certificate of that CA makes its holder a member: nodes dial each other by the address
the tracker hands out, so host names are not checked, and the peer id in the handshake
is not bound to the certificate. What mTLS adds to the cluster secret is the channel:
bytes after the handshake are encrypted and integrity-protected, so an attacker on the
path can neither read pieces nor take a link over. With both configured, both apply.

TLS 1.2 is the floor (RFC 8996 retired older versions); Python's defaults pick the
ciphers. The handshake is bounded by the caller (``trio.fail_after``).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trio

from peer.errors import ConfigError

__all__ = ["MeshTLS"]


def _context(purpose: ssl.Purpose, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(cert), str(key))
    context.check_hostname = False  # members are dialled by address; the CA is the check
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@dataclass(frozen=True, slots=True)
class MeshTLS:
    """The two contexts of a node: for links it accepts and for links it dials."""

    server: ssl.SSLContext
    client: ssl.SSLContext

    @classmethod
    def load(cls, cert: Path, key: Path, ca: Path) -> MeshTLS:
        """Read the node's certificate and key and the cluster CA.

        Raises:
            ConfigError: A file is missing or unusable.
        """
        try:
            return cls(
                server=_context(ssl.Purpose.CLIENT_AUTH, cert, key, ca),
                client=_context(ssl.Purpose.SERVER_AUTH, cert, key, ca),
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"--tls-cert/--tls-key/--tls-ca: {exc}") from None

    async def accept(self, stream: trio.abc.Stream) -> trio.SSLStream[trio.abc.Stream]:
        """Run the server side of the handshake over an accepted stream.

        Raises:
            trio.BrokenResourceError: The handshake failed (no or a foreign certificate);
                the stream is closed.
        """
        return await _handshake(trio.SSLStream(stream, self.server, server_side=True))

    async def dial(self, stream: trio.abc.Stream) -> trio.SSLStream[trio.abc.Stream]:
        """Run the client side of the handshake over a dialled stream.

        Raises:
            trio.BrokenResourceError: The handshake failed; the stream is closed.
        """
        return await _handshake(trio.SSLStream(stream, self.client, server_side=False))


async def _handshake(
    wrapped: trio.SSLStream[trio.abc.Stream],
) -> trio.SSLStream[trio.abc.Stream]:
    try:
        await wrapped.do_handshake()
    except BaseException:  # cancelled or failed: close the transport, then let it go on
        await trio.aclose_forcefully(wrapped)
        raise
    return wrapped
