"""The Redis store: the tracker's whole state in one Redis, shared by several replicas.

Every public method runs its blocking redis-py calls in a worker thread
(``trio.to_thread.run_sync``) and costs one or two round trips: mutations are Lua scripts
(``tracker.redis_scripts``, ``tracker.redis_lease``; atomic, so replicas need no locks)
and reads are pipelines. Times are the replicas' wall clocks, so replicas need
synchronised clocks (NTP) to agree on expiry to within the clock skew. redis-py's
connection pool is thread-safe; every redis-py error is mapped to
:class:`~tracker.errors.StoreUnavailable` here.
"""

from __future__ import annotations

import functools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

import msgpack
import redis
import trio

from tracker import protocol as p
from tracker import redis_activity, redis_admin, redis_lookup
from tracker import redis_scripts as lua
from tracker.activity import (
    PROGRESS_TTL_FACTOR,
    ErrorEvent,
    TrafficPoint,
    downloads,
    node_errors,
)
from tracker.errors import (
    PeerBanned,
    PeerConflict,
    RegistryFull,
    StoreUnavailable,
    TooManyRequests,
)
from tracker.model import (
    BlobDetail,
    BlobView,
    PeerView,
    Policy,
    Stats,
    TransferView,
)
from tracker.records import PIECE_RECORD_OVERHEAD, tag_key

LOGGER = logging.getLogger(__name__)
T = TypeVar("T")

#: Default key prefix; replicas that must share a view use the same one.
DEFAULT_PREFIX: Final = "shoal:"
#: Expired peers one sweep removes (a script blocks Redis while it runs; keep it short).
SWEEP_BATCH: Final = 1000
#: Seconds to wait for Redis on connect and on every command before calling it unavailable.
SOCKET_TIMEOUT: Final = 2.0
#: Lifetime in Redis of a blob's lease index (``bl:<digest>``) after its last grant: every
#: member has expired by then (no lease outlives MAX_LEASE_TTL).
_BLOB_LEASES_TTL: Final = int(p.MAX_LEASE_TTL) + 1


def _text(value: bytes) -> str:
    return value.decode()


class RedisStore:
    """A :class:`~tracker.store.Store` in Redis (see the module docstring).

    Args:
        client: A redis-py client with ``decode_responses=False``.
        policy: Timing and caps.
        prefix: Key prefix shared by the replicas.
        rng: Randomness for lookup sampling.
    """

    def __init__(
        self,
        client: redis.Redis,
        policy: Policy | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        rng: random.Random | None = None,
    ) -> None:
        self._r: Any = client  # redis-py stubs type replies loosely; we use raw bytes
        self.policy = policy or Policy()
        self.kind = "redis"
        self._p = prefix
        self._scripts: dict[str, Any] = {
            name: client.register_script(getattr(lua, name)) for name in lua.SCRIPTS
        }
        self._scripts.update(
            (name, client.register_script(src)) for name, src in redis_activity.SCRIPTS.items()
        )
        self._rng = rng or random.Random()

    @classmethod
    def from_url(
        cls, url: str, policy: Policy | None = None, *, prefix: str = DEFAULT_PREFIX
    ) -> RedisStore:
        """Connect lazily to ``redis://HOST:PORT/DB`` or ``unix:///path.sock``."""
        client = redis.Redis.from_url(
            url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
        )
        return cls(client, policy, prefix=prefix)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await trio.to_thread.run_sync(functools.partial(fn, *args))
        except redis.RedisError as exc:
            LOGGER.warning("redis store: %s: %s", type(exc).__name__, exc)
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from None

    def _script(self, name: str, *args: Any) -> Any:
        return self._scripts[name](args=[self._p, *args])

    # --- peer protocol ------------------------------------------------------------------

    async def announce(self, a: p.Announce, now: float) -> p.AnnounceReply:
        """See :meth:`tracker.registry.Registry.announce`."""
        held = {b.digest: b.size for b in a.held}
        partial = {b.digest: b for b in a.in_progress if b.digest not in held}
        info = msgpack.packb(
            [
                a.host,
                a.port,
                a.upload_slots,
                a.load,
                a.bytes_served,
                a.bytes_from_origin,
                a.bytes_from_peers,
                len(held),
                len(partial),
            ]
        )
        args: list[object] = [a.peer_id, a.session, repr(now), self.policy.peer_ttl]
        args += [self.policy.min_announce_gap, self.policy.max_peers, self.policy.max_holdings]
        args += [info, len(held)]
        for digest, size in held.items():
            args += [digest, size]
        args.append(len(partial))
        for b in partial.values():
            args += [b.digest, b.size, b.bytes_held]
        out = await self._run(self._script, "ANNOUNCE", *args)
        status = out[0]
        if status == b"banned":
            raise PeerBanned(f"peer id {a.peer_id!r} is banned")
        if status == b"conflict":
            raise PeerConflict(f"peer id {a.peer_id!r} is live under another session")
        if status == b"slow":
            raise TooManyRequests("announce again later", retry_after=float(out[1]))
        if status == b"full":
            raise RegistryFull(f"too many {_text(out[1])}")
        await self._activity(a, now)
        return p.AnnounceReply(
            interval=self.policy.announce_interval,
            peer_ttl=self.policy.peer_ttl,
            draining=bool(out[1]),
        )

    async def _activity(self, a: p.Announce, now: float) -> None:
        """Progress and reported errors of an accepted announce (``tracker.activity``)."""
        held = downloads(a)
        if held:
            ttl = PROGRESS_TTL_FACTOR * self.policy.peer_ttl
            args = redis_activity.progress_args(self._p, a.peer_id, held, now, ttl)
            await self._run(self._scripts["PROGRESS"], (), args)
        if a.errors:
            await self.note_errors(node_errors(a, now))

    async def leave(self, msg: p.Leave, now: float) -> None:
        """See :meth:`tracker.registry.Registry.leave`."""
        args = (msg.peer_id, msg.session, repr(now), self.policy.peer_ttl)
        if await self._run(self._script, "LEAVE", *args) == b"conflict":
            raise PeerConflict(f"peer id {msg.peer_id!r} is live under another session")

    async def lookup(self, q: p.Lookup, now: float) -> p.LookupReply:
        """See :meth:`tracker.registry.Registry.lookup`."""
        args = (self._r, self._p, self.policy, self._rng, q, now)
        return await self._run(redis_lookup.lookup, *args)

    async def put_pieces(self, record: p.PieceHashes) -> p.PiecesPutReply:
        """See :meth:`tracker.records.Records.put_pieces` (merged by ``PUT_PIECES``)."""
        content = msgpack.packb(
            [record.size, record.piece_size, list(record.hashes)], use_bin_type=True
        )
        # Every hash is a bin 8 of 0 or 32 bytes: a 2-byte header and the value.
        head = len(content) - sum(2 + len(h) for h in record.hashes)
        cost = PIECE_RECORD_OVERHEAD + 32 * len(record.hashes)
        # The writer's fetches of these pieces are done (even without a cap: a run is only
        # granted while no other peer's fetch of the blob is in flight).
        flags = "".join("1" if h else "0" for h in record.hashes)
        await self._run(self._script, "LEASES_DONE", record.digest, record.peer_id, flags)
        args = (record.digest, content, record.peer_id, cost, self.policy.max_piece_bytes, head)
        stored, conflict = await self._run(self._script, "PUT_PIECES", *args)
        return p.PiecesPutReply(stored=bool(stored), conflict=bool(conflict))

    async def get_pieces(self, digest: str) -> p.PieceHashes | None:
        """See :meth:`tracker.records.Records.get_pieces`."""

        def get() -> tuple[bytes | None, bytes | None]:
            pipe = self._r.pipeline(transaction=False)
            pipe.hget(self._p + "pieces", digest)
            pipe.hget(self._p + "pieces_by", digest)
            content, by = pipe.execute()
            return content, by

        content, by = await self._run(get)
        if content is None or by is None:
            return None
        size, piece_size, hashes = msgpack.unpackb(content)
        return p.PieceHashes(
            digest=digest, size=size, piece_size=piece_size, hashes=tuple(hashes), peer_id=_text(by)
        )

    async def put_tag(self, record: p.TagRecord) -> bool:
        """See :meth:`tracker.records.Records.put_tag`."""
        args = ("\0".join(tag_key(record)), p.encode(record), repr(record.resolved_at))
        stored = await self._run(
            self._script, "PUT_TAG", *args, self.policy.max_tags, record.digest
        )
        return bool(stored)

    async def get_tag(self, q: p.TagQuery) -> p.TagRecord | None:
        """See :meth:`tracker.records.Records.get_tag`."""
        raw = await self._run(self._r.hget, self._p + "tags", "\0".join(tag_key(q)))
        return None if raw is None else p.decode(p.TagRecord, raw)

    async def lease(self, req: p.LeaseRequest, now: float) -> p.LeaseReply:
        """See :meth:`tracker.registry.Registry.lease`."""
        member = f"{req.digest}#{req.piece_index}"
        expires = repr(now + req.ttl)
        args = (member, req.peer_id, req.session, repr(now), req.ttl, expires)
        end = min(req.piece_index + req.count, p.MAX_PIECES)
        blob = (req.digest, req.piece_index, self.policy.max_origin_fetches, _BLOB_LEASES_TTL)
        out = await self._run(
            self._script,
            "LEASE",
            *args,
            self.policy.max_leases,
            self.policy.peer_ttl,
            *blob,
            end,
            "1" if req.insist else "0",
        )
        if out[0] == b"conflict":
            raise PeerConflict(f"peer id {req.peer_id!r} is live under another session")
        if out[0] == b"full":
            raise RegistryFull("too many live leases")
        if out[0] in (b"held", b"capped"):
            return p.LeaseReply(
                granted=False,
                holder=_text(out[1]),
                expires_at=float(out[2]),
                capped=out[0] == b"capped",
            )
        count = req.count if req.ttl == 0 else int(out[2])
        return p.LeaseReply(granted=True, holder=req.peer_id, expires_at=float(out[1]), count=count)

    # --- admin (the blocking reads live in tracker.redis_admin) --------------------------

    async def peers(self, now: float, *, offset: int, limit: int) -> list[PeerView]:
        """See :meth:`tracker.registry.Registry.peers`."""
        await self.sweep(now)
        return await self._run(redis_admin.peers, self._r, self._p, self.policy, offset, limit)

    async def blobs(self, now: float, *, offset: int, limit: int) -> list[BlobView]:
        """See :meth:`tracker.registry.Registry.blobs`."""
        await self.sweep(now)
        return await self._run(redis_admin.blobs, self._r, self._p, self.policy, offset, limit)

    async def blob(self, digest: str, now: float) -> BlobDetail | None:
        """See :meth:`tracker.registry.Registry.blob`."""
        await self.sweep(now)
        return await self._run(redis_admin.blob, self._r, self._p, self.policy, digest)

    async def transfers(self, now: float, *, limit: int) -> list[TransferView]:
        """See :meth:`tracker.registry.Registry.transfers`."""
        await self.sweep(now)
        views = await self._run(redis_admin.transfers, self._r, self._p, self.policy, limit)
        return await self._run(redis_activity.with_progress, self._r, self._p, views)

    async def drain(self, peer_id: str, now: float) -> bool:
        """See :meth:`tracker.registry.Registry.drain`."""

        def drain() -> bool:
            seen = self._r.zscore(self._p + "seen", peer_id)
            if seen is None or seen <= now - self.policy.peer_ttl:
                return False
            self._r.hset(self._p + "drain", peer_id, "1")
            return True

        return await self._run(drain)

    async def ban(self, peer_id: str, now: float) -> None:
        """See :meth:`tracker.registry.Registry.ban`."""
        await self._run(self._script, "BAN", peer_id, repr(now + self.policy.ban_seconds))

    async def forget(self, digest: str) -> bool:
        """See :meth:`tracker.registry.Registry.forget`."""
        found = bool(await self._run(self._script, "FORGET", digest))
        return (
            await self._run(redis_admin.forget_tags, self._r, self._p, self.policy, digest) or found
        )

    async def stats(self, now: float) -> Stats:
        """See :meth:`tracker.registry.Registry.stats`."""
        await self.sweep(now)
        return await self._run(redis_admin.stats, self._r, self._p, self.policy)

    async def note_errors(self, events: Sequence[ErrorEvent]) -> None:
        """See :meth:`tracker.activity.Activity.note_errors`."""
        await self._run(redis_activity.note_errors, self._r, self._p, events)

    async def errors(self, *, limit: int) -> list[ErrorEvent]:
        """See :meth:`tracker.activity.Activity.errors`."""
        return await self._run(redis_activity.errors, self._r, self._p, limit)

    async def sample_traffic(self, now: float, *, interval: float) -> bool:
        """See :meth:`tracker.store.MemoryStore.sample_traffic`."""
        stats = await self.stats(now)
        point = TrafficPoint(
            at=now,
            bytes_from_origin=stats.bytes_from_origin,
            bytes_from_peers=stats.bytes_from_peers,
        )
        args = redis_activity.sample_args(self._p, point, interval)
        return bool(await self._run(self._scripts["SAMPLE"], (), args))

    async def traffic(self) -> list[TrafficPoint]:
        """See :meth:`tracker.activity.Activity.traffic`."""
        return await self._run(redis_activity.traffic, self._r, self._p)

    async def recent_tags(self, *, limit: int) -> list[p.TagRecord]:
        """See :meth:`tracker.records.Records.recent_tags`."""
        return await self._run(redis_activity.recent_tags, self._r, self._p, limit)

    async def details(self, digests: Sequence[str], now: float) -> dict[str, BlobDetail]:
        """See :meth:`tracker.store.MemoryStore.details` (two pipelines for them all)."""
        await self.sweep(now)
        args = (self._r, self._p, self.policy, list(digests))
        return await self._run(redis_activity.details, *args)

    async def sweep(self, now: float) -> int:
        """See :meth:`tracker.registry.Registry.sweep` (at most ``SWEEP_BATCH`` peers a call)."""
        deadline = repr(now - self.policy.peer_ttl)
        removed = await self._run(self._script, "SWEEP", deadline, SWEEP_BATCH, repr(now))
        return int(removed)

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless Redis answers PING."""
        await self._run(self._r.ping)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._run(self._r.close)
