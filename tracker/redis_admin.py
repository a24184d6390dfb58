"""Blocking Redis reads behind the admin API, the status page and /metrics.

Each function runs in a worker thread (``RedisStore`` calls them through
``trio.to_thread.run_sync``) and batches its commands in pipelines. ``r`` is a redis-py
client with ``decode_responses=False``; its stubs type replies loosely, hence ``Any``.
Key layout: see ``tracker.redis_scripts``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from tracker.model import BlobDetail, BlobView, HolderView, PeerView, Policy, Stats, TransferView

#: The msgpack row kept per peer in ``P info`` (see tracker.redis_scripts).
Info = tuple[str, int, int, int, int, int, int, int, int]


def _text(value: bytes) -> str:
    return value.decode()


def peer_rows(
    r: Any, prefix: str, policy: Policy, ids: list[bytes]
) -> tuple[list[Any], list[Any], list[Any]]:
    pipe = r.pipeline(transaction=False)
    pipe.hmget(prefix + "info", ids)
    pipe.zmscore(prefix + "seen", ids)
    pipe.hmget(prefix + "drain", ids)
    infos, seens, drains = pipe.execute()
    return infos, seens, drains


def peers(r: Any, prefix: str, policy: Policy, offset: int, limit: int) -> list[PeerView]:
    ids = sorted(r.hkeys(prefix + "info"))[offset : offset + limit]
    if not ids:
        return []
    infos, seens, drains = peer_rows(r, prefix, policy, ids)
    out = []
    for peer_id, raw, seen, drain in zip(ids, infos, seens, drains, strict=True):
        if raw is None or seen is None:
            continue
        i: Info = msgpack.unpackb(raw)
        out.append(
            PeerView(
                peer_id=_text(peer_id),
                host=i[0],
                port=i[1],
                last_seen=seen,
                expires_at=seen + policy.peer_ttl,
                held=i[7],
                in_progress=i[8],
                upload_slots=i[2],
                load=i[3],
                bytes_served=i[4],
                bytes_from_origin=i[5],
                bytes_from_peers=i[6],
                draining=drain is not None,
            )
        )
    return out


def blobs(r: Any, prefix: str, policy: Policy, offset: int, limit: int) -> list[BlobView]:
    digests = sorted(r.hkeys(prefix + "blobs"))[offset : offset + limit]
    pipe = r.pipeline(transaction=False)
    for d in digests:
        pipe.hget(prefix + "blobs", d)
        pipe.scard(prefix.encode() + b"c:" + d)
        pipe.hlen(prefix.encode() + b"i:" + d)
    rows = pipe.execute()
    return [
        BlobView(
            digest=_text(d),
            size=int(rows[3 * n] or 0),
            holders=rows[3 * n + 1],
            in_progress=rows[3 * n + 2],
        )
        for n, d in enumerate(digests)
    ]


def blob(r: Any, prefix: str, policy: Policy, digest: str) -> BlobDetail | None:
    pipe = r.pipeline(transaction=False)
    pipe.hget(prefix + "blobs", digest)
    pipe.smembers(prefix + "c:" + digest)
    pipe.hgetall(prefix + "i:" + digest)
    size, complete, partial = pipe.execute()
    if size is None:
        return None
    ids = sorted(complete) + sorted(set(partial) - set(complete))
    infos, seens, drains = peer_rows(r, prefix, policy, ids) if ids else ([], [], [])
    holders = []
    for peer_id, raw, seen, drain in zip(ids, infos, seens, drains, strict=True):
        if raw is None or seen is None:
            continue
        i: Info = msgpack.unpackb(raw)
        done = peer_id in complete
        holders.append(
            HolderView(
                peer_id=_text(peer_id),
                host=i[0],
                port=i[1],
                complete=done,
                bytes_held=int(size) if done else int(partial[peer_id]),
                last_seen=seen,
                draining=drain is not None,
            )
        )
    return BlobDetail(digest=digest, size=int(size), holders=tuple(holders))


def transfers(r: Any, prefix: str, policy: Policy, limit: int) -> list[TransferView]:
    ids = r.zrevrange(prefix + "seen", 0, -1)
    infos = r.hmget(prefix + "info", ids) if ids else []
    busy = [i for i, raw in zip(ids, infos, strict=True) if raw and msgpack.unpackb(raw)[8]]
    out: list[TransferView] = []
    sizes: dict[bytes, int] = {}
    for peer_id in busy:
        for digest, v in r.hgetall(prefix.encode() + b"pb:" + peer_id).items():
            if v == b"c" or len(out) >= limit:
                continue
            if digest not in sizes:
                sizes[digest] = int(r.hget(prefix + "blobs", digest) or 0)
            out.append(
                TransferView(
                    peer_id=_text(peer_id),
                    digest=_text(digest),
                    size=sizes[digest],
                    bytes_held=int(v),
                )
            )
        if len(out) >= limit:
            break
    return out


def forget_tags(r: Any, prefix: str, policy: Policy, digest: str) -> bool:
    keys = [k for k, d in r.hscan_iter(prefix + "tags_digest") if d == digest.encode()]
    if keys:
        pipe = r.pipeline(transaction=True)
        for h in ("tags", "tags_at", "tags_digest"):
            pipe.hdel(prefix + h, *keys)
        pipe.zrem(prefix + "tags_order", *keys)
        pipe.execute()
    return bool(keys)


def stats(r: Any, prefix: str, policy: Policy) -> Stats:
    pipe = r.pipeline(transaction=False)
    for cmd, key in (
        ("hvals", "info"),
        ("hlen", "blobs"),
        ("get", "holdings"),
        ("hlen", "pieces"),
        ("hlen", "tags"),
        ("zcard", "leases"),
    ):
        getattr(pipe, cmd)(prefix + key)
    infos, blobs, holdings, pieces, tags, leases = pipe.execute()
    rows: list[Info] = [msgpack.unpackb(raw) for raw in infos]
    return Stats(
        peers=len(rows),
        blobs=blobs,
        holdings=int(holdings or 0),
        in_progress=sum(r[8] for r in rows),
        bytes_served=sum(r[4] for r in rows),
        bytes_from_origin=sum(r[5] for r in rows),
        bytes_from_peers=sum(r[6] for r in rows),
        piece_records=pieces,
        tag_records=tags,
        leases=leases,
    )
