"""Tag memory: Accept normalisation, TTL, persistence across restarts."""

from __future__ import annotations

from pathlib import Path

from peer.mirror.tags import TagCache, TagEntry, accept_key, accepts

OCI = "application/vnd.oci.image.manifest.v1+json"
IDX = "application/vnd.oci.image.index.v1+json"


def test_accept_key_merges_lines_and_strips_parameters() -> None:
    a = accept_key([f"{IDX}, {OCI};q=0.9", "*/*"])
    b = accept_key([OCI, IDX, "*/*; q=0.1", OCI])
    assert a == b == ",".join(sorted({IDX, OCI, "*/*"}))


def test_accepts() -> None:
    assert accepts("", OCI)  # no Accept: anything
    assert accepts(accept_key([OCI]), OCI)
    assert not accepts(accept_key([IDX]), OCI)
    assert accepts(accept_key(["*/*"]), OCI)


def test_ttl_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "tags.json"
    tags = TagCache(path, ttl=60.0)
    key = ("docker.io", "library/a", "latest", accept_key([OCI]))
    entry = TagEntry("sha256:" + "1" * 64, OCI, 123, resolved_at=1000.0)
    tags.put(key, entry)
    assert tags.fresh(entry, 1059.0)
    assert not tags.fresh(entry, 1060.0)
    again = TagCache(path, ttl=60.0)
    assert again.get(key) == entry


def test_corrupt_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "tags.json"
    path.write_text("{not json")
    assert TagCache(path, ttl=1).items() == []
