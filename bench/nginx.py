"""nginx as a benchmark reference: one configuration head, started with its own temp dirs.

``bench.mirror_throughput`` serves a blob file with it (the cache-hit reference);
``bench.e2e_containerd`` runs it as a caching reverse proxy (the cold-pull reference).
Everything it writes stays under ``root``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.helpers import procs

_CONF = """
daemon off;
{user}worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
{http}
}}
"""


def start(
    root: Path, http: str, *, workers: str = "1", connections: int = 64, as_root: bool = False
) -> subprocess.Popen[bytes]:
    """Write ``root/nginx.conf`` with ``http`` (server blocks, already formatted) inside its
    ``http`` block and start nginx on it; its error log is ``root/nginx-error.log``.
    ``as_root``: workers run as root (else nginx's unprivileged user: ``root`` must be
    readable by it)."""
    (root / "tmp").mkdir(parents=True)
    conf = root / "nginx.conf"
    user = "user root;\n" if as_root else ""
    conf.write_text(
        _CONF.format(root=root, user=user, workers=workers, connections=connections, http=http)
    )
    return procs.start(["nginx", "-c", str(conf)], root / "nginx.log")
