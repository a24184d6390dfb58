"""Node identity kept in the data directory: the peer id and the tracker session."""

from __future__ import annotations

import stat
from pathlib import Path

from peer.config import PeerConfig
from peer.mesh.node import node_id, node_session


def test_session_survives_a_restart(tmp_path: Path) -> None:
    """A node that crashed comes back under its old session, so the tracker takes it back."""
    config = PeerConfig(data=tmp_path)
    first = node_session(config)
    assert 8 <= len(first) <= 32
    assert node_session(config) == first
    assert stat.S_IMODE((tmp_path / "session").stat().st_mode) == 0o600


def test_unreadable_session_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "session").write_text("not hex\n")
    config = PeerConfig(data=tmp_path)
    session = node_session(config)
    assert (tmp_path / "session").read_text().strip() == session.hex()


def test_node_id_survives_a_restart(tmp_path: Path) -> None:
    config = PeerConfig(data=tmp_path)
    assert node_id(config) == node_id(config)
