"""Run inside the far-origin namespace by test_far_origin: two servers on the loopback, one
shaped; prints, as JSON, each one's seconds to send ``BYTES`` and the shaped counter."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

from bench import far_origin

BYTES = 4 * 1024 * 1024


def _serve(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.sendall(bytes(BYTES))


def _fetch(port: int) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        got = 0
        while got < BYTES:
            chunk = conn.recv(1 << 16)
            if not chunk:
                raise RuntimeError(f"short read: {got} of {BYTES}")
            got += len(chunk)
    return time.monotonic() - started


def main() -> None:
    rate_mbit = float(sys.argv[1])
    ports = []
    for _ in range(2):
        listener = socket.create_server(("127.0.0.1", 0))
        ports.append(listener.getsockname()[1])
        threading.Thread(target=_serve, args=(listener,), daemon=True).start()
    far_origin.shape(ports[0], rate_mbit)
    before = far_origin.origin_sent()
    shaped = _fetch(ports[0])
    counted = far_origin.origin_sent() - before
    unshaped = _fetch(ports[1])
    print(json.dumps({"shaped": shaped, "unshaped": unshaped, "counted": counted}))


if __name__ == "__main__":
    main()
