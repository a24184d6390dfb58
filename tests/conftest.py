"""Fixtures shared by the whole suite. Bodies stay thin; the machinery is in tests/helpers/.

Real-parts fixtures (each skips, with the package to install, only when its binary is
absent; ``SHOAL_REQUIRE_BINARIES=1`` turns those skips into failures):

* ``registry`` (session) / ``fresh_registry`` (function): a running ``docker-registry``
  upstream, see :class:`tests.helpers.registry.Registry`. The session one is shared, so
  push under names of your own (``registry.new_repo()``).
* ``containerd`` (function): a private containerd, see :class:`tests.helpers.runtimes.Containerd`.
  Function-scoped on purpose: a fresh content store, so every pull really goes out.
* ``skopeo`` / ``podman`` (function): the clients with private policy and storage.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import procs
from tests.helpers.registry import Registry
from tests.helpers.runtimes import Containerd, Podman, Skopeo


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One ``docker-registry`` for the whole session."""
    procs.require_binary("docker-registry", "docker-registry")
    with Registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture
def fresh_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An empty ``docker-registry`` of the test's own."""
    procs.require_binary("docker-registry", "docker-registry")
    with Registry(tmp_path_factory.mktemp("fresh-registry")) as reg:
        yield reg


@pytest.fixture
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A private containerd daemon with an empty content store."""
    procs.require_binary("containerd", "containerd")
    procs.require_binary("ctr", "containerd")
    procs.require_root("containerd")
    with Containerd(tmp_path_factory.mktemp("containerd")) as daemon:
        yield daemon


@pytest.fixture
def skopeo(tmp_path_factory: pytest.TempPathFactory) -> Skopeo:
    procs.require_binary("skopeo", "skopeo")
    return Skopeo(tmp_path_factory.mktemp("skopeo"))


@pytest.fixture
def podman(tmp_path_factory: pytest.TempPathFactory) -> Podman:
    """Rootful podman with a private vfs store; its state is discarded with the temp dir."""
    procs.require_binary("podman", "podman")
    procs.require_root("podman")
    return Podman(tmp_path_factory.mktemp("podman"))
