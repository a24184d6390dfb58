"""The real pull clients shoal serves: containerd (through ``ctr``), skopeo and podman.

Each runs with private state under a temp directory, so tests never touch the machine's
own containerd or image store, and each helper returns the ``CompletedProcess`` so the test
asserts on it and can quote stderr (:func:`tests.helpers.procs.describe`).

How the mirror is named to each client:

* containerd: ``<hosts-dir>/<namespace>/hosts.toml`` with a ``[host."http://127.0.0.1:PORT"]``
  table (:func:`write_hosts_toml`), pulled with ``ctr image pull --hosts-dir DIR ref``. For
  a mirror, containerd appends ``?ns=<namespace>`` (e.g. ``?ns=docker.io``) to every request.
* podman and skopeo: a ``registries.conf`` with a ``[[registry.mirror]]`` marked
  ``insecure = true`` for plain HTTP (:func:`write_registries_conf`). podman 4.3 has no
  flag for it and reads the ``CONTAINERS_REGISTRIES_CONF`` environment variable; skopeo
  1.9 ignores that variable and takes the hidden global flag ``--registries-conf FILE``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from tests.helpers import procs

CTR_NAMESPACE: Final = "shoaltest"
STARTUP_TIMEOUT: Final = 30.0
# A pull of tens of MiB over loopback takes seconds; a minute means something is stuck.
PULL_TIMEOUT: Final = 120.0
CTR_TIMEOUT: Final = 30.0
# sockaddr_un.sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH: Final = 100

_CONTAINERD_CONFIG = """\
version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"""

_SKOPEO_POLICY = '{"default": [{"type": "insecureAcceptAnything"}]}\n'


def available(binary: str) -> bool:
    return shutil.which(binary) is not None


def write_hosts_toml(
    hosts_dir: Path, registry_ns: str, mirror_url: str, server: str | None = None
) -> Path:
    """Point containerd's pulls of ``registry_ns`` (``docker.io``, ``127.0.0.1:5000``) at a mirror.

    Args:
        hosts_dir: the directory passed as ``--hosts-dir``.
        registry_ns: the registry host part of the image references to redirect.
        mirror_url: e.g. ``http://127.0.0.1:5050``; the scheme decides plain HTTP or TLS.
        server: the fallback used when the mirror fails; None leaves containerd's default
            (``https://registry-1.docker.io`` for docker.io, else ``https://<registry_ns>``).

    Returns:
        The path of the written ``hosts.toml``.
    """
    path = hosts_dir / registry_ns / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f'server = "{server}"', ""] if server else []
    lines += [f'[host."{mirror_url}"]', '  capabilities = ["pull", "resolve"]', ""]
    path.write_text("\n".join(lines))
    return path


def write_registries_conf(
    path: Path, prefix: str, mirror_host: str, *, location: str | None = None
) -> Path:
    """A containers-registries.conf(5) sending pulls of ``prefix`` to ``mirror_host`` first.

    Args:
        path: the file to write.
        prefix: the registry of the image references, e.g. ``docker.io``.
        mirror_host: ``127.0.0.1:PORT`` of the plain-HTTP mirror.
        location: where to fall back when the mirror fails; defaults to ``prefix``.
    """
    path.write_text(
        "unqualified-search-registries = []\n\n"
        "[[registry]]\n"
        f'prefix = "{prefix}"\n'
        f'location = "{location or prefix}"\n\n'
        "[[registry.mirror]]\n"
        f'location = "{mirror_host}"\n'
        "insecure = true\n"
    )
    return path


class Containerd:
    """A private ``containerd`` daemon (CRI disabled) and ``ctr`` commands against it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_path = root / "containerd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._short_dir: Path | None = None
        sock_dir = root / "run"
        if len(str(sock_dir / "containerd.sock.ttrpc")) > MAX_SOCKET_PATH:
            self._short_dir = sock_dir = Path(tempfile.mkdtemp(prefix="shoal-ctd-"))
        self.socket = sock_dir / "containerd.sock"
        self.snapshotter = "overlayfs"

    def start(self) -> Containerd:
        """Start the daemon, wait for its socket to answer, and pick a working snapshotter."""
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.toml"
        config.write_text(
            _CONTAINERD_CONFIG.format(
                root=self.root / "root",
                state=self.root / "state",
                socket=self.socket,
                opt=self.root / "opt",
            )
        )
        self._proc = procs.start(["containerd", "--config", config], self.log_path)
        try:
            procs.wait_for(
                self._answers,
                what="containerd socket",
                timeout=STARTUP_TIMEOUT,
                proc=self._proc,
                log_path=self.log_path,
            )
            self.snapshotter = self._pick_snapshotter()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the daemon (terminate, then kill). Idempotent."""
        if self._proc is not None:
            procs.stop(self._proc)
            self._proc = None
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _answers(self) -> bool | None:
        if not self.socket.exists():
            return None
        return True if self.ctr("version", timeout=5).returncode == 0 else None

    def _pick_snapshotter(self) -> str:
        # overlayfs needs kernel support; "native" (plain copies) works everywhere.
        listing = self.ctr("plugins", "ls", timeout=CTR_TIMEOUT).stdout
        for line in listing.splitlines():
            fields = line.split()
            if fields[:2] == ["io.containerd.snapshotter.v1", "overlayfs"] and fields[-1] == "ok":
                return "overlayfs"
        return "native"

    def ctr(
        self, *args: str | Path, timeout: float = CTR_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """Run ``ctr -a SOCKET -n shoaltest ARGS...``."""
        return procs.run(["ctr", "-a", self.socket, "-n", CTR_NAMESPACE, *args], timeout=timeout)

    def pull(
        self,
        ref: str,
        hosts_dir: Path,
        *extra: str,
        timeout: float = PULL_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """``ctr image pull --hosts-dir DIR [extra...] REF``: fetch and unpack.

        The hosts.toml scheme decides plain HTTP, so ``--plain-http`` is not needed. Pass
        e.g. ``"--all-platforms"`` or ``"--platform", "linux/arm64"`` as ``extra``.
        """
        return self.ctr(
            "image",
            "pull",
            "--snapshotter",
            self.snapshotter,
            "--hosts-dir",
            hosts_dir,
            *extra,
            ref,
            timeout=timeout,
        )

    def images(self) -> dict[str, str]:
        """``{ref: digest}`` from ``ctr images ls``."""
        result = self.ctr("images", "ls")
        if result.returncode != 0:
            raise procs.ProcessFailed(procs.describe(result))
        out = {}
        for line in result.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3:
                out[fields[0]] = fields[2]
        return out

    def image_digest(self, ref: str) -> str | None:
        return self.images().get(ref)

    @contextlib.contextmanager
    def mounted(self, ref: str, target: Path) -> Iterator[Path]:
        """Mount the unpacked root filesystem of ``ref`` read-only at ``target``."""
        target.mkdir(parents=True, exist_ok=True)
        result = self.ctr("images", "mount", "--snapshotter", self.snapshotter, ref, target)
        if result.returncode != 0:
            raise procs.ProcessFailed(procs.describe(result))
        try:
            yield target
        finally:
            self.ctr("images", "unmount", "--rm", target)


class Skopeo:
    """``skopeo`` with a private trust policy, so the host's policy.json does not matter."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.policy = root / "policy.json"
        self.policy.write_text(_SKOPEO_POLICY)
        (root / "tmp").mkdir(exist_ok=True)

    def run(
        self, *args: str | Path, registries_conf: Path | None = None, timeout: float = PULL_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        # skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF; its hidden global flag works.
        conf: list[str | Path] = []
        if registries_conf is not None:
            conf = ["--registries-conf", registries_conf]
        return procs.run(
            ["skopeo", "--policy", self.policy, "--tmpdir", self.root / "tmp", *conf, *args],
            timeout=timeout,
        )

    def copy(
        self,
        src: str,
        dest_dir: Path,
        *extra: str,
        registries_conf: Path | None = None,
        timeout: float = PULL_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """``skopeo copy --src-tls-verify=false docker://SRC dir:DEST``.

        ``src`` is a reference without transport (``127.0.0.1:PORT/name:tag``). The manifest
        lands unchanged in ``dest_dir/manifest.json``; for an index only the host
        platform's image is copied unless ``extra`` has ``"--all"``.
        """
        return self.run(
            "copy",
            "--src-tls-verify=false",
            *extra,
            f"docker://{src}",
            f"dir:{dest_dir}",
            registries_conf=registries_conf,
            timeout=timeout,
        )

    def inspect(
        self, ref: str, *extra: str, registries_conf: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``skopeo inspect --tls-verify=false docker://REF`` (add ``"--raw"`` for the manifest)."""
        return self.run(
            "inspect",
            "--tls-verify=false",
            *extra,
            f"docker://{ref}",
            registries_conf=registries_conf,
            timeout=CTR_TIMEOUT,
        )


def skopeo_copy(
    src: str, dest_dir: Path, *, registries_conf: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """One-shot :meth:`Skopeo.copy` with its policy and temp files beside ``dest_dir``."""
    return Skopeo(dest_dir.parent / f"{dest_dir.name}.skopeo").copy(
        src, dest_dir, registries_conf=registries_conf
    )


class Podman:
    """Rootful podman with a private store (``--root``/``--runroot``, vfs driver)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("tmp", "libpod"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def run(
        self, *args: str | Path, registries_conf: Path | None = None, timeout: float = PULL_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, TMPDIR=str(self.root / "tmp"))
        if registries_conf is not None:
            env["CONTAINERS_REGISTRIES_CONF"] = str(registries_conf)
        return procs.run(
            [
                "podman",
                "--root",
                self.root / "storage",
                "--runroot",
                self.root / "run",
                "--tmpdir",
                self.root / "libpod",
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
                "--cgroup-manager",
                "cgroupfs",
                *args,
            ],
            timeout=timeout,
            env=env,
        )

    def pull(
        self,
        ref: str,
        registries_conf: Path,
        *extra: str,
        timeout: float = PULL_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """``podman pull [extra...] REF`` with ``registries_conf`` naming the mirror."""
        return self.run("pull", *extra, ref, registries_conf=registries_conf, timeout=timeout)

    def image_digests(self) -> dict[str, str]:
        """``{name: digest}`` for every name of every image, from ``podman images --digests``."""
        result = self.run("images", "--digests", "--format", "json", timeout=CTR_TIMEOUT)
        if result.returncode != 0:
            raise procs.ProcessFailed(procs.describe(result))
        out = {}
        for image in json.loads(result.stdout or "[]"):
            for name in image.get("Names") or []:
                out[name] = image["Digest"]
        return out


def podman_pull(ref: str, registries_conf: Path, root: Path) -> subprocess.CompletedProcess[str]:
    """One-shot :meth:`Podman.pull` into a store under ``root``."""
    return Podman(root).pull(ref, registries_conf)
