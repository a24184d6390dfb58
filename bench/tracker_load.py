"""Load a real tracker process with simulated peers and report throughput, latency and RSS.

    .venv/bin/python -m bench.tracker_load                 # 10,000 peers × 1,000 blobs
    .venv/bin/python -m bench.tracker_load --peers 1000    # a quick run

For each store (memory, then Redis on a throwaway ``redis-server``) it starts
``python -m tracker`` on loopback and:

1. **populate**: every simulated peer announces once (``--held`` complete blobs drawn
   uniformly from ``--blobs``, plus ``--in-progress`` partial ones);
2. **re-announce**: every peer announces again with the same blobs and new counters (the
   steady state of a cluster: mostly unchanged holdings);
3. **lookups**: one client asks for random blobs one request at a time (no pipelining),
   timing each request end to end over loopback, for p50/p99;
4. reads the tracker's resident memory (``VmRSS`` / ``VmHWM`` from ``/proc``) and, for
   Redis, redis-server's.

The announce clients are ``--clients`` processes, each with one HTTP/1.1 connection that
pipelines ``--pipeline`` pre-encoded requests, so the client side costs little CPU next
to the tracker (pass ``--pipeline 1`` to see unpipelined numbers). Results are printed as
a markdown table and written to ``--out``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tracker import protocol as p

ROOT = Path(__file__).resolve().parents[1]


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def request(path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: tracker\r\nContent-Type: {p.MEDIA_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Conn:
    """A blocking HTTP/1.1 connection that reads responses by Content-Length."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def read_response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = next(
            int(v)
            for k, _, v in (x.partition(b":") for x in lines[1:])
            if k.lower() == b"content-length"
        )
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def _fill(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("tracker closed the connection")
        self.buf += data


def announce_for(peer: int, args: argparse.Namespace, round_: int) -> bytes:
    rng = random.Random(peer)
    chosen = rng.sample(range(args.blobs), args.held + args.in_progress)
    held = tuple(p.BlobHeld(digest(n), 10_000_000 + n) for n in chosen[: args.held])
    partial = tuple(
        p.BlobInProgress(digest(n), 10_000_000 + n, 1000 * (round_ + 1))
        for n in chosen[args.held :]
    )
    message = p.Announce(
        peer_id=f"peer-{peer:05d}",
        session=peer.to_bytes(16, "big"),
        host=f"10.{peer >> 16 & 255}.{peer >> 8 & 255}.{peer & 255}",
        port=5051,
        held=held,
        in_progress=partial,
        upload_slots=4,
        load=rng.randrange(5),
        bytes_served=round_ * 1000,
        bytes_from_origin=round_ * 500,
        bytes_from_peers=round_ * 1500,
    )
    return request("/v1/announce", p.encode(message))


def worker(
    port: int, peers: range, args: argparse.Namespace, round_: int, barrier: Any, out: Any
) -> None:
    bodies = [announce_for(n, args, round_) for n in peers]
    conn = Conn(port)
    barrier.wait()
    errors = 0
    for start in range(0, len(bodies), args.pipeline):
        batch = bodies[start : start + args.pipeline]
        while batch:  # hypercorn closes a connection after keep_alive_max_requests
            conn.sock.sendall(b"".join(batch))
            try:
                while batch:
                    status, _ = conn.read_response()
                    errors += status != 200
                    batch = batch[1:]
            except ConnectionError:
                conn = Conn(port)
    out.put((len(bodies), errors))


def announce_round(port: int, args: argparse.Namespace, round_: int) -> tuple[float, int]:
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.clients + 1)
    out = ctx.Queue()
    share = -(-args.peers // args.clients)
    procs = [
        ctx.Process(
            target=worker,
            args=(
                port,
                range(i * share, min(args.peers, (i + 1) * share)),
                args,
                round_,
                barrier,
                out,
            ),
        )
        for i in range(args.clients)
    ]
    for proc in procs:
        proc.start()
    barrier.wait()
    start = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    elapsed = time.perf_counter() - start
    for proc in procs:
        proc.join()
    total = sum(n for n, _ in results)
    return total / elapsed, sum(e for _, e in results)


def lookups(
    port: int, args: argparse.Namespace, *, bare: bool = False
) -> tuple[list[float], int, float]:
    rng = random.Random(99)
    conn = Conn(port)
    latencies, found = [], 0
    bodies = [
        request(
            "/v1/lookup",
            p.encode(
                p.Lookup(
                    digest=digest(rng.randrange(args.blobs)),
                    peer_id=f"peer-{rng.randrange(args.peers):05d}",
                )
            ),
        )
        for _ in range(args.lookups)
    ]
    for body in bodies[:200]:  # warm up
        conn.sock.sendall(body)
        conn.read_response()
    for n, body in enumerate(bodies):
        if n % 500 == 0:  # stay under hypercorn's keep_alive_max_requests
            conn = Conn(port)
        start = time.perf_counter()
        conn.sock.sendall(body)
        status, reply = conn.read_response()
        latencies.append(time.perf_counter() - start)
        assert status == 200, reply
        found += 0 if bare else len(p.decode(p.LookupReply, reply).peers)
    return latencies, found, sum(latencies)


def rss_mb(pid: int) -> tuple[float, float]:
    fields = dict(
        line.split(":", 1)
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"tracker exited with {proc.returncode}")
        try:
            conn = Conn(port)
            conn.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            if conn.read_response()[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("tracker did not come up")


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The calibration server: reads the body, answers 200 with 8 bytes. No tracker logic."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"8")]}
    )
    await send({"type": "http.response.body", "body": b"\x81\xa1v\x01" + b"\x00" * 4})


def serve_bare(port: int) -> None:
    """Run :func:`bare_app` under hypercorn + trio, configured like the tracker."""
    import trio
    from hypercorn.trio import serve

    from tracker.config import TrackerConfig
    from tracker.service import hypercorn_config

    config = hypercorn_config(TrackerConfig(listen_host="127.0.0.1", listen_port=port))
    trio.run(serve, bare_app, config)  # type: ignore[arg-type]  # a plain ASGI callable


def run_store(store: str, args: argparse.Namespace, redis_pid: int | None) -> dict[str, Any]:
    port = free_port()
    if store == "bare":
        cmd = [sys.executable, "-m", "bench.tracker_load", "--serve-bare", str(port)]
    else:
        cmd = [sys.executable, "-m", "tracker", "--listen", f"127.0.0.1:{port}", "--no-mdns",
               "--store", store, "--announce-interval", "30m", "--peer-ttl", "2h",
               "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        wait_healthy(port, proc)
        populate, errors1 = announce_round(port, args, 0)
        reannounce, errors2 = announce_round(port, args, 1)
        latencies, found, _ = lookups(port, args, bare=store == "bare")
        rss, peak = rss_mb(proc.pid)
        q = statistics.quantiles(latencies, n=100)
        kind = {"memory": "memory", "bare": "bare hypercorn (ceiling)"}.get(store, "redis")
        row = {
            "store": kind,
            "populate": populate,
            "reannounce": reannounce,
            "errors": errors1 + errors2,
            "p50": q[49] * 1000,
            "p99": q[98] * 1000,
            "lookups_per_s": len(latencies) / sum(latencies),
            "peers_per_lookup": found / len(latencies),
            "rss": rss,
            "peak": peak,
            "redis_rss": rss_mb(redis_pid)[0] if redis_pid and store.startswith("unix") else None,
        }
        print(row, flush=True)
        return row
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| store | announces/s (populate) | announces/s (re-announce) | non-200 | lookup p50 | lookup p99 | lookups/s (1 client) | tracker RSS (peak) | redis-server RSS |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        redis = "n/a" if r["redis_rss"] is None else f"{r['redis_rss']:.0f} MB"
        lines.append(
            f"| {r['store']} | {r['populate']:,.0f} | {r['reannounce']:,.0f} | {r['errors']} | "
            f"{r['p50']:.2f} ms | {r['p99']:.2f} ms | {r['lookups_per_s']:,.0f} | "
            f"{r['rss']:.0f} MB ({r['peak']:.0f} MB) | {redis} |"
        )
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return f"{os.cpu_count()} cores ({cpu}), {mem} MB RAM, Linux {platform.release()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--peers", type=int, default=10_000)
    parser.add_argument("--blobs", type=int, default=1_000)
    parser.add_argument("--held", type=int, default=100, help="complete blobs per peer")
    parser.add_argument("--in-progress", type=int, default=2, help="partial blobs per peer")
    parser.add_argument("--clients", type=int, default=3, help="announcing client processes")
    parser.add_argument("--pipeline", type=int, default=32, help="requests in flight per client")
    parser.add_argument("--lookups", type=int, default=5_000)
    parser.add_argument("--stores", default="memory,redis")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks-tracker.md")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare hypercorn row")
    parser.add_argument("--repeat", type=int, default=1, help="runs per store; the best is kept")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0

    load_before = Path("/proc/loadavg").read_text().split()[:3]
    stores = args.stores.split(",") + ([] if args.no_ceiling else ["bare"])
    runs: dict[str, list[dict[str, Any]]] = {store: [] for store in stores}
    redis_proc, workdir = None, Path(tempfile.mkdtemp(prefix="shoal-bench-redis-"))
    sock = workdir / "redis.sock"
    try:
        if "redis" in stores:
            redis_proc = subprocess.Popen(
                ["redis-server", "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            while not sock.exists():
                time.sleep(0.05)
        for _ in range(args.repeat):  # interleaved, so machine noise hits every store alike
            for store in stores:
                url = store
                if store == "redis":
                    import redis

                    redis.Redis(unix_socket_path=str(sock)).flushall()
                    url = f"unix://{sock}"
                runs[store].append(run_store(url, args, redis_proc.pid if redis_proc else None))
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    rows = [max(runs[store], key=lambda r: r["populate"]) for store in stores]

    command = "python -m bench.tracker_load " + " ".join(sys.argv[1:] if argv is None else argv)
    report = "\n".join([
        "# Tracker load benchmark",
        "",
        f"- command: `{command.strip()}`",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {machine()}",
        f"- load average (1, 5, 15 min) before: {' '.join(load_before)}, after: "
        f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])} (the machine is shared)",
        f"- load: {args.peers:,} peers × {args.blobs:,} blobs; each peer holds {args.held} blobs "
        f"and downloads {args.in_progress}; {args.clients} client processes × 1 connection × "
        f"{args.pipeline} pipelined requests; {args.lookups:,} sequential lookups (limit 16); "
        f"best of {args.repeat} interleaved run(s) per store, by populate rate",
        "",
        table(rows),
        "",
    ])  # fmt: skip
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
