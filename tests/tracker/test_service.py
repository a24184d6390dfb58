"""Layer 3: the service on real loopback sockets, and the CLI as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import httpx
import pytest
import trio

from tests.helpers import procs
from tracker import protocol as p
from tracker.config import TrackerConfig
from tracker.service import serve

S = b"s" * 16
D = "sha256:" + "c" * 64
LOCAL = TrackerConfig(listen_host="127.0.0.1", listen_port=0, mdns=False, admin_token="tok")


async def test_serve_on_loopback_and_shut_down_gracefully() -> None:
    stop = trio.Event()
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve(
                    LOCAL, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                announce = p.Announce(
                    peer_id="a", session=S, host="127.0.0.1", port=9, held=(p.BlobHeld(D, 5),)
                )
                r = await client.post(
                    "/v1/announce",
                    content=p.encode(announce),
                    headers={"content-type": p.MEDIA_TYPE},
                )
                assert r.status_code == 200
                r = await client.post(
                    "/v1/lookup",
                    content=p.encode(p.Lookup(digest=D, peer_id="b")),
                    headers={"content-type": p.MEDIA_TYPE},
                )
                assert [x.port for x in p.decode(p.LookupReply, r.content).peers] == [9]
                assert (await client.get("/healthz")).json()["store"] == "memory"
                r = await client.post(
                    "/admin/peers/a/drain", headers={"authorization": "Bearer tok"}
                )
                assert r.status_code == 200
            stop.set()
    # serve() returned: the nursery exited within the deadline, and the port is closed.
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


def get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_cli_process_serves_honours_env_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = procs.free_port()
    log = tmp_path / "tracker.log"
    env = {**os.environ, "SHOAL_ADMIN_TOKEN": "from-env", "SHOAL_MDNS": "false"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tracker", "--listen", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        procs.wait_for(
            lambda: get(base + "/healthz"), what="tracker", timeout=20, proc=proc, log_path=log
        )
        request = urllib.request.Request(
            base + "/admin/peers/x/drain",
            method="POST",
            headers={"authorization": "Bearer from-env"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 404  # authorised (not 401/403), but no such peer
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, procs.log_tail(log)
        assert "tracker stopped" in log.read_text()
    finally:
        procs.stop(proc)


def test_cli_refuses_bad_configuration() -> None:
    result = procs.run(
        [sys.executable, "-m", "tracker", "--announce-interval", "60s", "--peer-ttl", "90s"],
        timeout=30,
    )
    assert result.returncode == 2, procs.describe(result)
    assert "--peer-ttl" in result.stderr


def test_tracker_never_imports_peer() -> None:
    root = Path(__file__).resolve().parents[2] / "tracker"
    offenders = [
        f"{path.name}:{n}"
        for path in sorted(root.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if line.lstrip().startswith(("import peer", "from peer"))
    ]
    assert offenders == []
