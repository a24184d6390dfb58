"""Run leases (``LeaseRequest.count``): records, registry, wire format and HTTP."""

from __future__ import annotations

import httpx
import msgpack
import pytest

from tests.helpers.clock import Clock
from tracker import protocol as p
from tracker.app import TrackerApp
from tracker.errors import BadMessage, RegistryFull
from tracker.model import Policy
from tracker.records import Records
from tracker.registry import Registry
from tracker.store import MemoryStore

S = b"s" * 16
T0 = 1_000.0
MSGPACK = {"content-type": p.MEDIA_TYPE}


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def run(peer: str, index: int, count: int, ttl: float = 10, digest: str = d(1)) -> p.LeaseRequest:
    return p.LeaseRequest(
        digest=digest, piece_index=index, peer_id=peer, session=S, ttl=ttl, count=count
    )


def got(reply: p.LeaseReply) -> tuple[bool, str, float, int]:
    return (reply.granted, reply.holder, reply.expires_at, reply.count)


def record(peer: str, known: set[int], pieces: int = 16, digest: str = d(1)) -> p.PieceHashes:
    """A piece record of ``pieces`` pieces where only ``known`` are filled."""
    hashes = tuple(b"\x01" * 32 if i in known else b"" for i in range(pieces))
    return p.PieceHashes(
        digest=digest, size=pieces << 14, piece_size=1 << 14, hashes=hashes, peer_id=peer
    )


def holders(records: Records, now: float, digest: str = d(1)) -> dict[int, str]:
    """Live leases of ``digest``: piece index -> holder."""
    leases = records._leases.items()
    return {i: peer for (dg, i), (peer, until) in leases if dg == digest and until > now}


# --- records ----------------------------------------------------------------------------


def test_a_solo_node_gets_a_run_that_counts_once() -> None:
    records = Records(Policy())
    assert got(records.lease(run("a", 2, 8), T0)) == (True, "a", T0 + 10, 8)
    assert holders(records, T0) == dict.fromkeys(range(2, 10), "a")
    assert records._blob_leases[d(1)] == {2: T0 + 10}  # one cap entry: the first piece
    # the run's first piece is refused to others, as held (not capped); the others are
    # soft (see the soft-piece tests below), but a release by another peer takes none
    refused = records.lease(run("b", 2, 4), T0 + 1)
    assert refused == p.LeaseReply(granted=False, holder="a", expires_at=T0 + 10)
    refused = records.lease(run("b", 5, 1, ttl=0), T0 + 1)
    assert refused == p.LeaseReply(granted=False, holder="a", expires_at=T0 + 10)
    assert records.lease(run("b", 10, 1), T0 + 1).granted  # just past the run


def test_no_run_while_another_peer_fetches_the_blob() -> None:
    records = Records(Policy())
    assert records.lease(run("b", 20, 1), T0).granted  # b's origin fetch is in flight
    assert got(records.lease(run("a", 0, 8), T0)) == (True, "a", T0 + 10, 1)
    assert records.lease(run("b", 1, 1, digest=d(2)), T0).granted  # another blob: no matter
    records.put_pieces(record("b", {20}, pieces=32))  # b's fetch is done
    assert records.lease(run("a", 1, 8), T0 + 1).count == 8  # a's own fetch does not count
    # nor does an expired fetch of another peer
    assert records.lease(run("c", 40, 1, ttl=5), T0 + 1).granted
    assert records.lease(run("a", 9, 4), T0 + 2).count == 1
    assert records.lease(run("a", 13, 4), T0 + 6).count == 4


def test_a_run_stops_at_another_lease_and_the_record_end_not_at_recorded_hashes() -> None:
    records = Records(Policy())
    assert records.lease(run("b", 6, 3), T0).count == 3  # b: 6, 7, 8
    records.lease(run("b", 6, 1, ttl=0), T0)  # b releases 6: no fetch of b's in flight
    assert holders(records, T0) == {7: "b", 8: "b"}
    assert records.lease(run("a", 0, 20), T0).count == 7  # 0..6, stops at b's 7
    records.put_pieces(record("z", {10, 12}))
    # recorded hashes do not stop a run (a live lease of one would): 13..15, the record
    # has 16 pieces; then 9..12, up to a's own 13
    assert records.lease(run("a", 13, 20), T0).count == 3
    assert records.lease(run("a", 9, 20), T0).count == 4
    # a piece whose hash is recorded is granted as the first of a run too
    assert records.lease(run("a", 10, 1, ttl=0), T0).granted
    assert records.lease(run("a", 10, 20), T0 + 1).count == 1  # 11 is a's (not renewed)


def test_a_lone_node_refetching_a_recorded_blob_gets_full_runs() -> None:
    """Its earlier fetchers left long ago; the piece hashes stay recorded."""
    records = Records(Policy(max_origin_fetches=4))
    records.lease(run("a", 0, 64), T0)
    records.put_pieces(record("a", set(range(64)), pieces=100))
    records.lease(run("a", 64, 36), T0 + 1)
    records.put_pieces(record("a", set(range(100)), pieces=100))
    records.sweep(T0 + 400)  # a's leases are long gone; its hashes are not
    assert records.lease_count == 0
    assert records.get_pieces(d(1)) == record("a", set(range(100)), pieces=100)
    assert got(records.lease(run("b", 0, 64), T0 + 500)) == (True, "b", T0 + 510, 64)
    assert got(records.lease(run("b", 64, 64), T0 + 500)) == (True, "b", T0 + 510, 36)
    # a re-fetched piece is soft until b records it again (the record merges as before)
    assert soft(records) == set(range(1, 64)) | set(range(65, 100))
    assert records.put_pieces(record("b", set(range(64)), pieces=100)).stored is False
    assert soft(records) == set(range(65, 100))
    # b's second run still counts (by its head); its live leases refuse the pieces to
    # others, a recorded one with its real expiry
    assert records._blob_leases[d(1)] == {64: T0 + 510}
    assert got(records.lease(run("c", 3, 8), T0 + 501)) == (False, "b", T0 + 510, 1)


def test_a_run_extends_over_expired_leases_and_drops_their_stale_cap_entries() -> None:
    records = Records(Policy(max_origin_fetches=0))  # no cap: expired entries stay a while
    assert records.lease(run("b", 3, 1, ttl=5), T0).granted
    assert records.lease(run("a", 0, 8), T0 + 6).count == 8
    assert records._blob_leases[d(1)] == {0: T0 + 16}
    assert records.lease(run("a", 0, 8), T0 + 7).count == 8  # renewal: still one cap entry
    assert records._blob_leases[d(1)] == {0: T0 + 17}


def test_a_run_counts_once_against_the_cap_until_its_last_piece_is_recorded() -> None:
    records = Records(Policy(max_origin_fetches=2))
    assert records.lease(run("a", 0, 8), T0).count == 8
    assert records.lease(run("b", 10, 8), T0).count == 1  # a's fetch is in flight
    assert records.lease(run("c", 20, 8), T0).capped  # a's run and b's piece: 2
    records.put_pieces(record("a", set(range(1, 8)), pieces=32))  # not the first piece
    assert records.lease(run("c", 20, 8), T0).capped
    records.put_pieces(record("a", {0}, pieces=32))  # the whole run now
    assert records._blob_leases[d(1)] == {10: T0 + 10}
    assert got(records.lease(run("c", 20, 8), T0 + 1)) == (True, "c", T0 + 11, 1)
    assert records.lease(run("c", 1, 1), T0 + 1).holder == "a"  # still refuses the run


def test_a_recorded_run_head_moves_the_cap_entry_to_the_first_unrecorded_piece() -> None:
    records = Records(Policy(max_origin_fetches=2))
    assert records.lease(run("a", 0, 8), T0).count == 8
    assert records.lease(run("b", 10, 1), T0).granted  # a's run and b's piece: 2
    records.put_pieces(record("a", {0}, pieces=32))  # the rest of a's run is in flight
    assert records._blob_leases[d(1)] == {1: T0 + 10, 10: T0 + 10}
    assert records.lease(run("c", 20, 8), T0).capped  # still 2
    assert records.lease(run("a", 0, 8), T0 + 2).count == 8  # a renewal refreshes it
    assert records._blob_leases[d(1)] == {1: T0 + 12, 10: T0 + 10}
    # a batch of records passes over the pieces it records (the writer's, soft or not)
    records.put_pieces(record("a", {0, 1, 2, 3}, pieces=32))
    assert records._blob_leases[d(1)] == {4: T0 + 12, 10: T0 + 10}
    assert soft(records) == {4, 5, 6, 7}
    # another peer's record of the run's pieces moves nothing
    records.put_pieces(record("b", {4, 5}, pieces=32))
    assert records._blob_leases[d(1)] == {4: T0 + 12, 10: T0 + 10}
    # the whole run recorded: no entry left, room for c
    records.put_pieces(record("a", set(range(4, 8)), pieces=32))
    assert records._blob_leases[d(1)] == {10: T0 + 10}
    assert got(records.lease(run("c", 20, 8), T0 + 3)) == (True, "c", T0 + 13, 1)


def test_a_cap_entry_moves_only_within_the_writers_run() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 3), T0)  # a: 0, 1, 2
    records.lease(run("a", 3, 1), T0)  # a: 3, on its own (a hard head with its own entry)
    assert records._blob_leases[d(1)] == {0: T0 + 10, 3: T0 + 10}
    records.put_pieces(record("a", {0, 1, 2}))  # run done; 3 is not part of it
    assert records._blob_leases[d(1)] == {3: T0 + 10}
    records.put_pieces(record("a", {3}))  # nothing of a's follows 3: no entry
    assert records._blob_leases[d(1)] == {}
    # a single lease recorded moves nothing: its next piece is not soft
    records.lease(run("a", 5, 1), T0 + 1)
    records.lease(run("a", 6, 1), T0 + 1)
    records.put_pieces(record("a", {5}))
    assert records._blob_leases[d(1)] == {6: T0 + 11}


def test_a_cut_run_released_leaves_no_cap_entry() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 8), T0)
    records.lease(run("b", 5, 1), T0 + 1)  # wanted: a's renewal cuts its run at 5
    assert records.lease(run("a", 0, 8), T0 + 2).count == 5
    records.put_pieces(record("a", set(range(4))))  # a's run counts by its 4 now
    assert records._blob_leases[d(1)] == {4: T0 + 12}
    records.put_pieces(record("a", {4}))  # ... then by 5, the cut (wanted, unrenewed)
    assert records._blob_leases[d(1)] == {5: T0 + 10}
    records.lease(run("a", 5, 3, ttl=0), T0 + 2)  # a releases the cut: the entry goes
    assert records._blob_leases[d(1)] == {}
    assert (soft(records), wanted(records)) == (set(), set())
    # a releasing pieces of its run before the entry gets there drops nothing else
    records.lease(run("a", 10, 6), T0 + 20)
    records.lease(run("a", 13, 3, ttl=0), T0 + 20)
    records.put_pieces(record("a", {10, 11, 12}))  # 13 is not a's any more: no entry
    assert records._blob_leases[d(1)] == {}


def test_renewing_a_run_renews_the_askers_leases_up_to_the_first_that_is_not() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 8), T0)
    assert got(records.lease(run("a", 0, 8), T0 + 5)) == (True, "a", T0 + 15, 8)
    assert records.lease(run("b", 0, 1), T0 + 12).holder == "a"  # renewed to T0 + 15
    assert holders(records, T0 + 14.9) == dict.fromkeys(range(8), "a")
    records.lease(run("a", 3, 1, ttl=0), T0 + 12)  # a releases piece 3 alone
    assert records.lease(run("b", 3, 1), T0 + 12).granted
    assert records.lease(run("a", 0, 8), T0 + 13).count == 3  # 0..2; a renewal never extends
    assert records.lease(run("b", 5, 1), T0 + 16).granted  # 4..7 were not renewed
    assert records.lease(run("a", 1, 2), T0 + 16).count == 2  # a run from inside: 1, 2


def test_renewing_a_run_keeps_single_leases_counting_against_the_cap() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 1), T0)
    records.lease(run("a", 1, 1), T0)
    assert records.lease(run("a", 0, 4), T0 + 1).count == 2  # renewal: no extension
    assert records._blob_leases[d(1)] == {0: T0 + 11, 1: T0 + 11}


def test_releasing_a_run_releases_only_the_askers_leases() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 3), T0)  # a: 0, 1, 2
    records.lease(run("b", 3, 1), T0)  # b: 3
    records.lease(run("a", 4, 1), T0)  # a: 4 (b's fetch in flight: no run)
    assert got(records.lease(run("a", 0, 8, ttl=0), T0 + 1)) == (True, "a", T0 + 1, 8)
    assert holders(records, T0 + 1) == {3: "b"}
    assert records._blob_leases[d(1)] == {3: T0 + 10}
    refused = records.lease(run("a", 3, 2, ttl=0), T0 + 1)  # b's first piece: refused
    assert got(refused) == (False, "b", T0 + 10, 1)


def test_a_run_is_shortened_not_refused_at_max_leases() -> None:
    records = Records(Policy(max_leases=5))
    assert records.lease(run("a", 0, 8), T0).count == 5
    with pytest.raises(RegistryFull):
        records.lease(run("a", 10, 8), T0)
    assert records.lease(run("a", 0, 8), T0 + 1).count == 5  # renewals need no room


def test_a_run_stops_at_the_last_piece_a_lease_can_name() -> None:
    records = Records(Policy())
    assert records.lease(run("a", p.MAX_PIECE_INDEX - 1, 64), T0).count == 2
    released = records.lease(run("a", p.MAX_PIECE_INDEX - 1, 64, ttl=0), T0)
    assert released.count == 64
    assert records.lease_count == 0


def test_a_refusal_and_a_cap_refusal_cover_one_piece() -> None:
    records = Records(Policy(max_origin_fetches=1))
    records.lease(run("a", 0, 4), T0)
    assert got(records.lease(run("b", 2, 4), T0)) == (False, "a", T0 + 10, 1)
    capped = records.lease(run("b", 8, 4), T0)
    assert (capped.capped, capped.count) == (True, 1)


def test_a_run_takes_a_live_lease_only_if_its_holder_is_not_alive() -> None:
    records = Records(Policy())
    assert records.lease(run("z", 3, 1), T0).granted
    records.put_pieces(record("z", {3}))  # z's fetch is done; its lease guards 3
    assert records.lease(run("a", 0, 8), T0 + 1).count == 3  # no alive: everyone is
    records.lease(run("a", 0, 8, ttl=0), T0 + 1)
    assert records.lease(run("a", 10, 1), T0 + 1).granted  # a's own, in flight
    reply = records.lease(run("a", 0, 16), T0 + 1, alive=lambda peer: False)
    assert reply.count == 10  # z's 3 dropped and taken; a's own 10 stops it regardless
    assert holders(records, T0 + 1) == dict.fromkeys(range(11), "a")
    assert records._soft[d(1)] == set(range(1, 10))
    assert records._blob_leases[d(1)] == {0: T0 + 11, 10: T0 + 11}


# --- registry ---------------------------------------------------------------------------


def announce(peer: str) -> p.Announce:
    return p.Announce(peer_id=peer, session=S, host="10.0.0.1", port=5051)


def test_a_dead_holders_leases_are_dropped_for_the_first_piece_and_by_runs() -> None:
    reg = Registry(Policy(peer_ttl=90.0))
    reg.announce(announce("a"), T0)
    reg.announce(announce("b"), T0)
    assert reg.lease(run("b", 4, 2, ttl=300), T0).count == 2  # b: 4, 5
    reg.lease(run("b", 4, 1, ttl=0), T0)  # released: b has no fetch in flight
    assert reg.lease(run("b", 6, 1, ttl=300), T0).granted  # b: 6, counting
    reg.announce(announce("a"), T0 + 80)
    # b is gone at T0 + 90: its cap entry of 6 (an unrecorded fetch nobody makes any more)
    # does not make a's run not solo; its lease of 6 is dropped when asked for, its 5 by a run
    assert reg.lease(run("a", 0, 4), T0 + 95).count == 4  # 0..3
    assert reg.lease(run("a", 6, 8), T0 + 95).count == 8  # dropped: 6..13
    assert reg.lease(run("a", 4, 8), T0 + 95).count == 2  # 4, 5 (b's 5 taken): at a's 6
    assert holders(reg.records, T0 + 95)[5] == "a"
    assert 5 in reg.records._soft[d(1)]


def test_a_departed_holders_cap_entry_neither_stops_a_run_nor_caps() -> None:
    """A node's unrecorded origin fetch (its cap entry) counts while it is live: the blob
    is not solo for others, and it counts against the cap. Once the node is gone, neither."""
    reg = Registry(Policy(peer_ttl=90.0, max_origin_fetches=1))
    for peer in "abc":
        reg.announce(announce(peer), T0)
    assert reg.lease(run("b", 9, 1, ttl=300), T0).granted  # b's fetch of 9, in flight
    assert reg.lease(run("a", 0, 8), T0 + 1).capped  # b is live: capped
    reg.lease(run("a", 0, 1, ttl=0), T0 + 1)
    reg.leave(p.Leave(peer_id="b", session=S), T0 + 2)
    # b left: its entry does not cap a, nor stop its run; b's lease of 9 is a guard
    assert got(reg.lease(run("c", 0, 16), T0 + 12)) == (True, "c", T0 + 22, 16)
    assert holders(reg.records, T0 + 12)[9] == "c"  # a dead holder's lease: taken
    assert reg.records._blob_leases[d(1)] == {0: T0 + 22}


def test_a_departed_nodes_guard_leases_do_not_stop_a_lone_askers_run() -> None:
    """A pulls a blob alone, records it and leaves; its leases (guards until they expire)
    no longer cut B's runs to single pieces. A live holder's still do."""
    reg = Registry(Policy(peer_ttl=90.0))
    for peer in "abc":
        reg.announce(announce(peer), T0)
    assert reg.lease(run("a", 0, 16, ttl=15), T0).count == 16
    reg.records.put_pieces(record("a", set(range(16))))  # done: no cap entry left
    assert reg.records._blob_leases[d(1)] == {}
    assert reg.lease(run("c", 0, 4, ttl=15, digest=d(2)), T0 + 1).count == 4  # c: 0..3
    reg.leave(p.Leave(peer_id="a", session=S), T0 + 2)
    assert holders(reg.records, T0 + 2) == dict.fromkeys(range(16), "a")  # guards, live
    # b's run takes a's leases over (they were live, a is gone): one grant for the blob
    reply = reg.lease(run("b", 0, 64, ttl=15), T0 + 3)
    assert got(reply) == (True, "b", T0 + 18, 16)
    assert holders(reg.records, T0 + 3) == dict.fromkeys(range(16), "b")
    assert reg.records._blob_leases[d(1)] == {0: T0 + 18}  # the run's one cap entry
    assert reg.records._soft[d(1)] == set(range(1, 16))
    # c is alive: its recorded (guard) leases of d(2) still stop a run
    reg.lease(run("c", 0, 1, ttl=0, digest=d(2)), T0 + 3)  # c releases its head only
    reg.records.put_pieces(record("c", {1, 2, 3}, digest=d(2)))
    assert reg.lease(run("b", 0, 64, digest=d(2)), T0 + 4).count == 1  # at c's 1


# --- wire format ------------------------------------------------------------------------


def test_lease_count_is_optional_both_ways() -> None:
    req = p.LeaseRequest(digest=d(1), piece_index=3, peer_id="n", session=S, ttl=5.0)
    old = {"v": 1, "t": "lease", "digest": d(1), "piece_index": 3, "peer_id": "n",
           "session": S, "ttl": 5.0}  # fmt: skip
    assert msgpack.unpackb(p.encode(req)) == old  # count=1 is left out
    assert p.decode(p.LeaseRequest, msgpack.packb(old)).count == 1
    assert msgpack.unpackb(p.encode(run("n", 3, 9)))["count"] == 9
    reply = p.LeaseReply(granted=True, holder="n", expires_at=5.0)
    assert "count" not in msgpack.unpackb(p.encode(reply))
    for message in (
        run("n", 3, p.MAX_LEASE_RUN),
        p.LeaseReply(granted=True, holder="n", expires_at=5.0, count=p.MAX_LEASE_RUN),
    ):
        assert p.decode(type(message), p.encode(message)) == message


@pytest.mark.parametrize("count", [0, p.MAX_LEASE_RUN + 1, -1, True, 2.0, "2"])
def test_a_bad_lease_count_is_refused(count: object) -> None:
    raw = msgpack.unpackb(p.encode(run("n", 3, 2)))
    with pytest.raises(BadMessage, match="count"):
        p.decode(p.LeaseRequest, msgpack.packb({**raw, "count": count}))
    reply = msgpack.unpackb(p.encode(p.LeaseReply(granted=True, holder="n", expires_at=5.0)))
    with pytest.raises(BadMessage, match="count"):
        p.decode(p.LeaseReply, msgpack.packb({**reply, "count": count}))


# --- HTTP -------------------------------------------------------------------------------


async def test_run_leases_over_http(clock: Clock) -> None:
    app = TrackerApp(MemoryStore(Policy()), clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tracker"
    ) as client:

        async def post(body: bytes) -> httpx.Response:
            return await client.post("/v1/lease", content=body, headers=MSGPACK)

        for peer in "ab":
            r = await client.post("/v1/announce", content=p.encode(announce(peer)), headers=MSGPACK)
            assert r.status_code == 200
        r = await post(p.encode(run("a", 0, 16, digest=d(1))))
        reply = p.decode(p.LeaseReply, r.content)
        assert (reply.granted, reply.count, reply.expires_at) == (True, 16, clock.now + 10)
        # an old peer's request (no count) gets piece 0 refused, and a reply it can read
        old = msgpack.unpackb(p.encode(run("b", 0, 1)))
        assert "count" not in old
        r = await post(msgpack.packb(old))
        assert msgpack.unpackb(r.content) == {
            "v": 1, "t": "lease_reply", "granted": False, "holder": "a",
            "expires_at": clock.now + 10,
        }  # fmt: skip
        for bad in (0, p.MAX_LEASE_RUN + 1):
            r = await post(msgpack.packb({**old, "count": bad}))
            assert r.status_code == 400
            assert r.json()["error"] == "bad_message"
            assert "count" in r.json()["message"]
        metrics = (await client.get("/metrics")).text
        for outcome in ("granted", "held"):  # a run is one grant
            assert f'shoal_tracker_leases_total{{result="{outcome}"}} 1.0' in metrics


def test_recording_a_piece_whose_lease_was_swept_is_fine() -> None:
    """A cap entry can outlive its swept lease while another of the blob is live."""
    records = Records(Policy())
    records.lease(run("a", 0, 1, ttl=5), T0)
    records.lease(run("a", 1, 1, ttl=100), T0)
    records.sweep(T0 + 50)  # drops the lease of 0, not yet its cap entry
    assert records.put_pieces(record("a", {0})).stored  # used to raise KeyError


# --- soft pieces: a run's extended pieces are preemptible -------------------------------


def soft(records: Records, digest: str = d(1)) -> set[int]:
    return set(records._soft.get(digest, set()))


def wanted(records: Records, digest: str = d(1)) -> set[int]:
    return set(records._wanted.get(digest, set()))


def test_a_soft_piece_asked_by_another_is_refused_for_now_and_marked_wanted() -> None:
    records = Records(Policy())
    assert records.lease(run("a", 0, 8), T0).count == 8
    assert soft(records) == set(range(1, 8))  # the head is hard
    # b asks for a's piece 3: refused, holder a, but expires_at == now (ask again soon)
    refused = records.lease(run("b", 3, 8), T0 + 1)
    assert refused == p.LeaseReply(granted=False, holder="a", expires_at=T0 + 1)
    assert (wanted(records), soft(records)) == ({3}, set(range(1, 8)))
    assert records.lease(run("c", 5, 1), T0 + 1.5).expires_at == T0 + 1.5
    assert wanted(records) == {3, 5}
    assert holders(records, T0 + 2) == dict.fromkeys(range(8), "a")  # nothing taken
    assert records._blob_leases[d(1)] == {0: T0 + 10}  # nor a cap entry made
    # asked again: still refused for now, still wanted
    assert got(records.lease(run("b", 3, 1), T0 + 2)) == (False, "a", T0 + 2, 1)
    assert wanted(records) == {3, 5}
    # a release by another peer is refused as held, and marks nothing
    assert got(records.lease(run("b", 4, 1, ttl=0), T0 + 2)) == (False, "a", T0 + 10, 1)
    assert wanted(records) == {3, 5}


def test_a_run_head_and_a_single_lease_are_refused_with_their_real_expiry() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 8), T0)
    records.lease(run("b", 20, 1), T0)  # b's fetch in flight: no run for c
    assert records.lease(run("c", 30, 8), T0).count == 1
    assert got(records.lease(run("d", 0, 4), T0 + 1)) == (False, "a", T0 + 10, 1)
    assert got(records.lease(run("d", 20, 1), T0 + 1)) == (False, "b", T0 + 10, 1)
    assert got(records.lease(run("d", 30, 1), T0 + 1)) == (False, "c", T0 + 10, 1)
    assert 0 not in soft(records)
    assert (wanted(records), soft(records)) == (set(), set(range(1, 8)))


def test_the_holders_renewal_reports_the_cut_at_the_first_wanted_piece() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 8), T0)
    records.lease(run("b", 5, 1), T0 + 1)  # wants a's 5
    records.lease(run("c", 6, 1), T0 + 1)  # and 6
    assert got(records.lease(run("a", 0, 8), T0 + 2)) == (True, "a", T0 + 12, 5)  # 0..4
    # the wanted pieces and the rest stay a's (not renewed) until a releases them
    assert {i: records._leases[(d(1), i)][1] for i in range(4, 8)} == {
        4: T0 + 12, 5: T0 + 10, 6: T0 + 10, 7: T0 + 10}  # fmt: skip
    assert holders(records, T0 + 2) == dict.fromkeys(range(8), "a")
    assert got(records.lease(run("b", 5, 1), T0 + 3)) == (False, "a", T0 + 3, 1)
    assert soft(records) == set(range(1, 8))  # a renewal makes nothing hard
    # a renewal from a later piece stops at a wanted piece too (never at 0 pieces)
    assert records.lease(run("a", 1, 7), T0 + 3).count == 4  # 1..4
    assert records.lease(run("a", 5, 3), T0 + 3).count == 1  # 5 only
    assert records._blob_leases[d(1)] == {0: T0 + 12}  # renewals made no cap entry


def test_the_holder_releases_the_cut_and_the_next_asker_gets_it() -> None:
    records = Records(Policy(max_origin_fetches=4))
    records.lease(run("a", 0, 8), T0)
    records.lease(run("b", 5, 4), T0 + 1)  # refused for now, wanted
    assert records.lease(run("a", 0, 8), T0 + 1.5).count == 5  # the cut: 5
    # a got 0..4 (records them as they come) and releases 5..7 at once
    records.put_pieces(record("a", {3, 4}))
    assert got(records.lease(run("a", 5, 3, ttl=0), T0 + 1.5)) == (True, "a", T0 + 1.5, 3)
    assert (wanted(records), soft(records)) == (set(), {1, 2})
    # b asks again: a normal (hard) grant with a cap entry, no run (a's head is in flight)
    assert got(records.lease(run("b", 5, 4), T0 + 1.7)) == (True, "b", T0 + 11.7, 1)
    assert records._blob_leases[d(1)] == {0: T0 + 11.5, 5: T0 + 11.7}
    assert 5 not in soft(records)
    # a recorded piece of the run (hard now) is refused with its real expiry
    assert got(records.lease(run("c", 4, 1), T0 + 2)) == (False, "a", T0 + 11.5, 1)
    assert 4 not in wanted(records)
    # and a piece taken that way is hard: refused as held, never wanted
    assert got(records.lease(run("c", 5, 1), T0 + 2)) == (False, "b", T0 + 11.7, 1)
    assert wanted(records) == set()


def test_a_released_soft_piece_goes_to_the_next_asker_alone_while_contended() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 8), T0)
    records.put_pieces(record("a", set(range(5))))  # a's run counts by its 5 now
    assert records._blob_leases[d(1)] == {5: T0 + 10}
    assert records.lease(run("b", 5, 64), T0 + 1).granted is False  # contended to T0 + 11
    assert records.lease(run("c", 0, 1), T0 + 1).granted is False  # ... by c too
    assert records.lease(run("a", 0, 8), T0 + 1).count == 5
    records.lease(run("a", 5, 3, ttl=0), T0 + 1)  # a gives up 5..7, and the run's entry
    # b gets 5 alone: nobody else fetches the blob, but c was refused a lease of it (b's
    # own refusal would not count)
    assert got(records.lease(run("b", 5, 64), T0 + 2)) == (True, "b", T0 + 12, 1)
    assert records._blob_leases[d(1)] == {5: T0 + 12}
    assert (soft(records), wanted(records)) == (set(), set())
    records.put_pieces(record("b", {5}))
    assert records.lease(run("b", 6, 64), T0 + 10.9).count == 1
    # the refusal's TTL is over: b (its own fetch of 6 in flight) is solo, 7..15
    assert got(records.lease(run("b", 7, 64), T0 + 11)) == (True, "b", T0 + 21, 9)
    assert soft(records) >= set(range(8, 16))


def test_a_piece_recorded_by_its_holder_is_never_wanted() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 8), T0)
    records.lease(run("b", 3, 1), T0 + 1)  # wanted...
    records.put_pieces(record("a", {2, 3}))  # ...but a had it: recorded, hard, not wanted
    records.put_pieces(record("b", {4}))  # another peer's record does not make it hard
    assert (soft(records), wanted(records)) == ({1, 4, 5, 6, 7}, set())
    assert got(records.lease(run("b", 2, 1), T0 + 1)) == (False, "a", T0 + 10, 1)
    assert got(records.lease(run("b", 3, 4), T0 + 1)) == (False, "a", T0 + 10, 1)
    assert wanted(records) == set()
    assert got(records.lease(run("b", 4, 1), T0 + 1)) == (False, "a", T0 + 1, 1)
    assert wanted(records) == {4}
    # the renewal stops at the wanted 4; the recorded 2 and 3 stay hard
    assert records.lease(run("a", 0, 8), T0 + 2).count == 4  # 0..3
    assert soft(records) == {1, 4, 5, 6, 7}
    records.put_pieces(record("a", {4}))  # a had received 4 too: recorded, not released
    assert (soft(records), wanted(records)) == ({1, 5, 6, 7}, set())
    assert got(records.lease(run("b", 4, 1), T0 + 3)) == (False, "a", T0 + 10, 1)


def test_a_capped_asker_is_refused_as_capped_and_marks_nothing() -> None:
    records = Records(Policy(max_origin_fetches=2))
    records.lease(run("a", 0, 8), T0)
    assert records.lease(run("b", 20, 1), T0).granted  # a's run and b's piece: 2
    capped = records.lease(run("c", 5, 1), T0 + 1)
    assert capped == p.LeaseReply(granted=False, holder="a", expires_at=T0 + 10, capped=True)
    assert (holders(records, T0 + 1)[5], wanted(records)) == ("a", set())
    assert records.lease(run("a", 0, 8), T0 + 1).count == 8  # no cut
    records.put_pieces(record("b", {20}, pieces=32))  # b's fetch is done: room for one
    assert got(records.lease(run("c", 5, 1), T0 + 2)) == (False, "a", T0 + 2, 1)
    assert wanted(records) == {5}


def test_renewals_refresh_a_cap_entry_but_never_make_one() -> None:
    records = Records(Policy(max_origin_fetches=2))
    records.lease(run("a", 0, 4), T0)
    records.put_pieces(record("a", {0}))  # a's head is fetched: the entry moves to 1
    assert records._blob_leases[d(1)] == {1: T0 + 10}
    assert records.lease(run("a", 0, 4), T0 + 1).count == 4  # refreshes 1's entry
    assert records._blob_leases[d(1)] == {1: T0 + 11}
    records.put_pieces(record("a", {0, 1, 2, 3}))  # the whole run: no cap entry left
    assert records._blob_leases[d(1)] == {}
    assert records.lease(run("a", 0, 4), T0 + 1).count == 4
    assert records.lease(run("a", 2, 2), T0 + 1).count == 2  # from a (once) soft piece
    assert records._blob_leases[d(1)] == {}
    assert records.lease(run("b", 10, 1), T0 + 1).granted
    assert records.lease(run("b", 10, 1), T0 + 2).granted
    assert records._blob_leases[d(1)] == {10: T0 + 12}


def test_release_expiry_sweep_and_drop_forget_the_soft_and_wanted_marks() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 8), T0)
    for index in (2, 4, 6):
        records.lease(run("b", index, 1), T0)
    assert wanted(records) == {2, 4, 6}
    records.lease(run("a", 2, 2, ttl=0), T0)  # releases 2 and 3
    assert (soft(records), wanted(records)) == ({1, 4, 5, 6, 7}, {4, 6})
    records.drop_lease(d(1), 4)
    assert (soft(records), wanted(records)) == ({1, 5, 6, 7}, {6})
    records.lease(run("a", 0, 64, ttl=0), T0)
    assert (records.lease_count, soft(records), wanted(records)) == (0, set(), set())
    # (the blob is contended until T0 + 10 by b's refusals: no runs before)
    assert records.lease(run("a", 0, 8, ttl=5), T0 + 10).count == 8
    records.lease(run("b", 3, 1), T0 + 11)  # contended until T0 + 21
    records.sweep(T0 + 15)
    assert (records.lease_count, records._soft, records._wanted) == (0, {}, {})
    assert records._contended == {d(1): {"b": T0 + 21}}
    records.sweep(T0 + 21)
    assert records._contended == {}
    # an expired, unswept wanted soft lease granted anew as a first piece is hard
    assert records.lease(run("a", 0, 8, ttl=5), T0 + 30).count == 8
    records.lease(run("b", 3, 1), T0 + 31)
    records.lease(run("b", 5, 1), T0 + 31)
    assert got(records.lease(run("b", 3, 1), T0 + 36)) == (True, "b", T0 + 46, 1)
    assert (3 in soft(records), wanted(records)) == (False, {5})
    assert got(records.lease(run("c", 3, 1), T0 + 37)) == (False, "b", T0 + 46, 1)
    # or as part of a new run (once b's refusals at T0 + 31 no longer contend; c's own
    # at T0 + 37 never does for c): soft again, not wanted
    records.lease(run("b", 3, 1, ttl=0), T0 + 37)
    assert records.lease(run("c", 4, 2), T0 + 47).count == 2
    assert (soft(records) >= {5}, wanted(records)) == (True, set())


def test_a_soft_piece_of_a_dead_holder_is_dropped_first() -> None:
    reg = Registry(Policy(peer_ttl=90.0, max_origin_fetches=2))
    for peer in "ab":
        reg.announce(announce(peer), T0)
    assert reg.lease(run("a", 0, 8, ttl=300), T0).count == 8
    assert reg.lease(run("b", 12, 1), T0 + 1).granted
    assert reg.lease(run("b", 3, 1), T0 + 1).capped  # a's run and b's 12 are in flight
    reg.announce(announce("b"), T0 + 20)
    reg.records.put_pieces(record("b", {12}))  # b's fetch is done: room for one
    assert reg.lease(run("b", 3, 1), T0 + 21).expires_at == T0 + 21  # wanted
    reg.lease(run("b", 9, 1, ttl=300), T0 + 21)  # b's own fetch in flight: 2 again
    reg.announce(announce("b"), T0 + 80)
    # a is gone: its soft 3 is dropped (and its mark), and its run's head no longer
    # counts against the cap (nobody is fetching it): b's 9 alone is in flight
    assert reg.lease(run("b", 3, 1), T0 + 95).granted
    assert (3 in soft(reg.records), wanted(reg.records)) == (False, set())
    assert reg.lease(run("b", 4, 1), T0 + 95).capped  # b's own 3 and 9: 2 in flight


# --- contended blobs: a refusal of a lease stops others' runs of the blob for a lease TTL -


def contended(records: Records, digest: str = d(1)) -> dict[str, float]:
    """The contended marks of ``digest``: refused peer -> until."""
    return records._contended.get(digest, {})


def test_a_refusal_makes_the_blob_contended_for_the_askers_ttl() -> None:
    records = Records(Policy())
    assert records.lease(run("a", 0, 8), T0).count == 8
    assert contended(records) == {}  # a grant never contends
    # b asks for a's soft 5: refused for now; d(1) is contended until T0 + 1 + b's TTL
    assert records.lease(run("b", 5, 1, ttl=15), T0 + 1).expires_at == T0 + 1
    assert contended(records) == {"b": T0 + 16}
    # renewals and releases are unaffected: a's renewal is cut at 5 only, a releases 5..7
    assert got(records.lease(run("a", 0, 8), T0 + 2)) == (True, "a", T0 + 12, 5)
    records.put_pieces(record("a", set(range(5)), pieces=64))
    assert records.lease(run("a", 5, 3, ttl=0), T0 + 2).count == 3
    # a looks solo (nobody else fetches the blob), but it is contended: single pieces
    assert got(records.lease(run("a", 8, 64), T0 + 3)) == (True, "a", T0 + 13, 1)
    assert got(records.lease(run("b", 20, 64, digest=d(2)), T0 + 3)) == (True, "b", T0 + 13, 64)
    # a held refusal contends too; a shorter TTL keeps the later end, a longer one extends it
    assert got(records.lease(run("c", 8, 1, ttl=20), T0 + 3)) == (False, "a", T0 + 13, 1)
    assert contended(records) == {"b": T0 + 16, "c": T0 + 23}
    assert records.lease(run("c", 8, 1, ttl=2), T0 + 4).holder == "a"
    assert contended(records) == {"b": T0 + 16, "c": T0 + 23}
    assert records.lease(run("c", 8, 1, ttl=20), T0 + 4).holder == "a"
    assert contended(records) == {"b": T0 + 16, "c": T0 + 24}
    records.put_pieces(record("a", {8}, pieces=64))
    assert records.lease(run("a", 9, 64), T0 + 23.9).count == 1
    # the TTL is over: runs come back (a's own fetch of 9 does not count): 10..63
    assert got(records.lease(run("a", 10, 64), T0 + 24)) == (True, "a", T0 + 34, 54)
    records.sweep(T0 + 24)
    assert records._contended == {}  # swept


def test_a_capped_refusal_contends_for_others_not_for_the_asker() -> None:
    """A lone node is never refused by its own leases, so its own refusals (another
    peer's fetch in flight, since done) do not stop its runs; they stop others' runs."""
    records = Records(Policy(max_origin_fetches=1))
    assert records.lease(run("a", 0, 1), T0).granted
    capped = records.lease(run("b", 5, 8), T0 + 1)
    assert (capped.capped, contended(records)) == (True, {"b": T0 + 11})
    records.put_pieces(record("a", {0}))  # a's fetch is done: nothing in flight
    # b's own refusal does not count: a run, 5..12
    assert got(records.lease(run("b", 5, 8), T0 + 2)) == (True, "b", T0 + 12, 8)
    assert records.lease(run("a", 1, 8), T0 + 2).capped  # b's run is the fetch in flight
    assert contended(records) == {"b": T0 + 11, "a": T0 + 12}
    records.put_pieces(record("b", set(range(5, 13))))  # b's run is done
    # b's refusal counts for a until T0 + 11 (a's own never does)
    assert records.lease(run("a", 13, 8), T0 + 10.5).count == 1
    assert records.lease(run("a", 13, 1, ttl=0), T0 + 10.5).granted
    assert records.lease(run("a", 13, 8), T0 + 11).count == 3  # 13..15: the record's end
    # and a's refusal (until T0 + 12) still counts for b
    assert records.lease(run("a", 13, 3, ttl=0), T0 + 11).count == 3
    assert records.lease(run("b", 13, 8), T0 + 11.5).count == 1
    assert records.lease(run("b", 13, 1, ttl=0), T0 + 11.5).granted
    assert records.lease(run("b", 13, 8), T0 + 12).count == 3


def test_a_departed_peers_refusal_does_not_contend() -> None:
    """B (its origin down) was refused A's leases and both left: C, alone, gets full runs.
    A live peer's refusal still contends; liveness is the registry's (left or expired)."""
    reg = Registry(Policy(peer_ttl=30.0, min_announce_gap=0.0))
    for peer in "abc":
        reg.announce(announce(peer), T0)
    assert reg.lease(run("a", 0, 16, ttl=15), T0).count == 16
    assert not reg.lease(run("b", 0, 1, ttl=15), T0 + 1).granted  # held by a
    assert not reg.lease(run("b", 3, 1, ttl=15), T0 + 1).granted  # a's soft 3: for now
    reg.records.put_pieces(record("a", set(range(16))))
    assert contended(reg.records) == {"b": T0 + 16}
    reg.leave(p.Leave(peer_id="a", session=S), T0 + 2)
    # b is live: its refusal contends for c (a's guard leases are taken: a left)
    assert got(reg.lease(run("c", 0, 64, ttl=15), T0 + 3)) == (True, "c", T0 + 18, 1)
    reg.lease(run("c", 0, 1, ttl=0), T0 + 3)
    # ...but not for b itself: a lone node is never refused by its own leases
    assert got(reg.lease(run("b", 0, 64, ttl=15), T0 + 4)) == (True, "b", T0 + 19, 16)
    reg.lease(run("b", 0, 16, ttl=0), T0 + 4)
    reg.leave(p.Leave(peer_id="b", session=S), T0 + 5)
    # b left: its refusal no longer counts, c gets the whole blob at once
    assert got(reg.lease(run("c", 0, 64, ttl=15), T0 + 6)) == (True, "c", T0 + 21, 16)
    reg.lease(run("c", 0, 16, ttl=0), T0 + 6)
    # a live peer's refusal counts until its announces stop (peer_ttl)
    reg.announce(announce("a"), T0 + 7)
    assert reg.lease(run("a", 0, 1, ttl=15), T0 + 7).granted
    assert not reg.lease(run("c", 0, 1, ttl=30), T0 + 8).granted  # held by a
    reg.lease(run("a", 0, 1, ttl=0), T0 + 9)
    reg.announce(announce("a"), T0 + 20)
    assert got(reg.lease(run("a", 0, 64), T0 + 20)) == (True, "a", T0 + 30, 1)
    reg.lease(run("a", 0, 1, ttl=0), T0 + 20)
    # c's last announce was at T0: gone at T0 + 30 (its mark lasts to T0 + 38)
    reg.announce(announce("a"), T0 + 31)
    assert got(reg.lease(run("a", 0, 64), T0 + 31)) == (True, "a", T0 + 41, 16)


def test_a_release_never_contends() -> None:
    records = Records(Policy())
    records.lease(run("a", 0, 8), T0)
    assert got(records.lease(run("b", 0, 1, ttl=0), T0)) == (False, "a", T0 + 10, 1)  # head
    assert got(records.lease(run("b", 3, 2, ttl=0), T0)) == (False, "a", T0 + 10, 1)  # soft
    assert records.lease(run("a", 0, 8, ttl=0), T0).count == 8
    assert records._contended == {}
    assert records.lease(run("b", 0, 8), T0 + 1).count == 8
    # nor does a grant while another peer's lease is live (nor a renewal)
    assert records.lease(run("c", 20, 8), T0 + 1).count == 1
    assert records.lease(run("b", 0, 8), T0 + 2).count == 8
    assert records._contended == {}
