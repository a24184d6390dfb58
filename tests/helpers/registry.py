"""A real upstream registry for tests: Debian's ``docker-registry`` (distribution 2.8).

:class:`Registry` starts the daemon on a loopback port with its own storage directory,
fills it over the registry HTTP API (OCI distribution spec, "Pushing blobs" and "Pushing
manifests"), and stops it. The image builders in :mod:`tests.helpers.images` make content
that containerd, skopeo and podman can pull and unpack.

The daemon listens on ``127.0.0.1:0`` and we read the port it bound from its log line
``listening on 127.0.0.1:PORT``, so there is no window in which another process can take a
port we picked.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Final, NamedTuple

import httpx

from tests.helpers import images, procs
from tests.helpers.images import Platform, PushedImage, digest_of

REGISTRY_BIN: Final = "docker-registry"
# distribution needs well under a second on this machine; CI boxes can be slower.
STARTUP_TIMEOUT: Final = 30.0
# Big test layers (tens of MiB) are pushed in one PUT over loopback.
HTTP_TIMEOUT: Final = 60.0

_LISTENING = re.compile(r'msg="listening on (?:127\.0\.0\.1|\[::\]|0\.0\.0\.0):(\d+)"')
# distribution's access log: `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"`
_ACCESS = re.compile(
    r'^\S+ - - \[[^\]]+\] "(\w+) (\S+) HTTP/[\d.]+" (\d{3}) (\S+) "[^"]*" "([^"]*)"'
)

#: The one account of a registry started with ``htpasswd=True``: alice / s3cret (bcrypt made
#: once with libxcrypt, so the tests need no bcrypt package).
USER: Final = "alice"
PASSWORD: Final = "s3cret"
_HTPASSWD: Final = "alice:$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n"
_AUTH = """\
auth:
  htpasswd:
    realm: shoal-test
    path: {path}
"""

_CONFIG = """\
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:0
  secret: shoal-test-secret
  headers:
    X-Content-Type-Options: [nosniff]
"""


class LoggedRequest(NamedTuple):
    """One line of the registry's access log."""

    method: str
    path: str
    query: str  # without the "?", e.g. "ns=docker.io" from containerd's mirror requests
    status: int
    user_agent: str
    size: int = 0  # body bytes sent


def available() -> bool:
    """Whether the ``docker-registry`` binary is installed."""
    return shutil.which(REGISTRY_BIN) is not None


class Registry:
    """A running ``docker-registry`` on loopback, plain HTTP, open or (``htpasswd``) Basic auth.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        host: ``127.0.0.1:PORT``, the form image references and hosts.toml use.
        root: the temp directory holding the config, storage and log.
        log_path: the daemon's combined stdout/stderr (app log and access log).
    """

    def __init__(self, root: Path, *, htpasswd: bool = False, proxy: str | None = None) -> None:
        self.root = root
        self.htpasswd = htpasswd  # every request needs Basic alice:s3cret
        self.proxy = proxy  # a pull-through cache of this registry URL (a mirror)
        self.log_path = root / "registry.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None
        self._names = itertools.count(1)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            raise RuntimeError("registry is not running")
        return self._client

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Registry:
        """Start the daemon and wait until ``GET /v2/`` answers 200."""
        storage = self.root / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yml"
        text = _CONFIG.format(root=storage)
        if self.htpasswd:
            (self.root / "htpasswd").write_text(_HTPASSWD)
            text += _AUTH.format(path=self.root / "htpasswd")
        if self.proxy:
            text += f"proxy:\n  remoteurl: {self.proxy}\n"
        config.write_text(text)
        self._proc = procs.start([REGISTRY_BIN, "serve", config], self.log_path)
        try:
            self.port = procs.wait_for(
                self._bound_port,
                what="docker-registry listening",
                timeout=STARTUP_TIMEOUT,
                proc=self._proc,
                log_path=self.log_path,
            )
            self._client = httpx.Client(
                base_url=self.url, timeout=HTTP_TIMEOUT,
                auth=(USER, PASSWORD) if self.htpasswd else None,
            )  # fmt: skip
            procs.wait_for(
                self._answers,
                what="docker-registry GET /v2/",
                timeout=STARTUP_TIMEOUT,
                proc=self._proc,
                log_path=self.log_path,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the daemon (terminate, then kill) and close the HTTP client. Idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            procs.stop(self._proc)
            self._proc = None

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _bound_port(self) -> int | None:
        match = _LISTENING.search(procs.log_tail(self.log_path, limit=1 << 20))
        return int(match.group(1)) if match else None

    def _answers(self) -> bool | None:
        try:
            return True if self.client.get("/v2/").status_code == 200 else None
        except httpx.TransportError:
            return None

    def new_repo(self, stem: str = "library/t") -> str:
        """A repository name not handed out before by this registry: ``library/t1``, ``…t2``."""
        return f"{stem}{next(self._names)}"

    # -- observing -------------------------------------------------------------------

    def requests(self) -> list[LoggedRequest]:
        """Every request the registry has logged so far, oldest first.

        Lets a test assert how much traffic reached the upstream, e.g. that a blob was
        fetched once. distribution writes an access-log line when it finishes a response.
        """
        out = []
        for line in procs.log_tail(self.log_path, limit=1 << 30).splitlines():
            match = _ACCESS.match(line)
            if match:
                method, target, status, size, agent = match.groups()
                path, _, query = target.partition("?")
                sent = int(size) if size.isdigit() else 0
                out.append(LoggedRequest(method, path, query, int(status), agent, sent))
        return out

    def blob_gets(self, name: str, digest: str) -> int:
        """How many ``GET /v2/<name>/blobs/<digest>`` the registry has answered."""
        path = f"/v2/{name}/blobs/{digest}"
        return sum(1 for r in self.requests() if r.method == "GET" and r.path == path)

    def blob_bytes(self, name: str, digest: str) -> int:
        """How many body bytes the registry has sent for ``GET /v2/<name>/blobs/<digest>``."""
        path = f"/v2/{name}/blobs/{digest}"
        return sum(r.size for r in self.requests() if r.method == "GET" and r.path == path)

    # -- filling it ------------------------------------------------------------------

    def push_blob(self, name: str, data: bytes) -> str:
        """Upload ``data`` to repository ``name`` (monolithic POST + PUT) and return its digest."""
        digest = digest_of(data)
        if self.client.head(f"/v2/{name}/blobs/{digest}").status_code == 200:
            return digest
        started = self.client.post(f"/v2/{name}/blobs/uploads/")
        _expect(started, 202)
        location = started.headers["Location"]
        sep = "&" if "?" in location else "?"
        done = self.client.put(
            f"{location}{sep}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        _expect(done, 201)
        return digest

    def push_manifest(self, name: str, ref: str, body: bytes, media_type: str) -> str:
        """PUT a manifest (or index) under tag or digest ``ref`` and return its digest."""
        digest = digest_of(body)
        resp = self.client.put(
            f"/v2/{name}/manifests/{ref}", content=body, headers={"Content-Type": media_type}
        )
        _expect(resp, 201)
        served = resp.headers.get("Docker-Content-Digest", digest)
        if served != digest:
            raise AssertionError(f"registry computed {served} for a manifest we hash as {digest}")
        return digest

    def push_image(self, image: PushedImage) -> PushedImage:
        """Push a built image: children first, then blobs, then the manifest under its tag."""
        for child in image.children:
            self.push_image(child)
        for blob in image.blobs.values():
            self.push_blob(image.name, blob)
        self.push_manifest(image.name, image.tag, image.manifest_bytes, image.media_type)
        return image

    def push_oci_image(
        self,
        name: str,
        tag: str,
        layer_sizes: list[int] | None = None,
        platform: Platform = ("linux", "amd64"),
        *,
        seed: int = 0,
    ) -> PushedImage:
        """Build and push an OCI image manifest with one gzip'd layer per entry of ``layer_sizes``.

        Layer content is incompressible and a pure function of ``(name, tag, seed, index)``,
        so two calls with the same arguments push the same digests.
        """
        return self.push_image(
            images.build_image(name, tag, layer_sizes or [1024], platform, seed=seed, oci=True)
        )

    def push_docker_image(
        self,
        name: str,
        tag: str,
        layer_sizes: list[int] | None = None,
        platform: Platform = ("linux", "amd64"),
        *,
        seed: int = 0,
    ) -> PushedImage:
        """Like :meth:`push_oci_image`, in Docker schema 2 media types."""
        return self.push_image(
            images.build_image(name, tag, layer_sizes or [1024], platform, seed=seed, oci=False)
        )

    def push_oci_index(
        self,
        name: str,
        tag: str,
        platforms: list[Platform] | None = None,
        layer_sizes: list[int] | None = None,
        *,
        seed: int = 0,
    ) -> PushedImage:
        """Build and push an OCI image index with one image manifest per platform.

        The children are pushed by digest (their ``tag`` is their digest) before the index.
        """
        return self.push_image(
            images.build_index(
                name,
                tag,
                platforms or [("linux", "amd64"), ("linux", "arm64")],
                layer_sizes or [1024],
                seed=seed,
                oci=True,
            )
        )

    def push_docker_manifest_list(
        self,
        name: str,
        tag: str,
        platforms: list[Platform] | None = None,
        layer_sizes: list[int] | None = None,
        *,
        seed: int = 0,
    ) -> PushedImage:
        """Like :meth:`push_oci_index`, as a Docker manifest list of schema 2 manifests."""
        return self.push_image(
            images.build_index(
                name,
                tag,
                platforms or [("linux", "amd64"), ("linux", "arm64")],
                layer_sizes or [1024],
                seed=seed,
                oci=False,
            )
        )


def _expect(resp: httpx.Response, status: int) -> None:
    if resp.status_code != status:
        raise AssertionError(
            f"{resp.request.method} {resp.request.url} -> {resp.status_code}, "
            f"expected {status}: {resp.text[:2000]}"
        )
