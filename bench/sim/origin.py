"""The origin side of the model: an origin request's lease (granted, refused or capped),
runs of pieces in one request and their checks, lease renewals, and the request's start."""

from __future__ import annotations

from bench.sim.config import DIGEST, EPOCH
from bench.sim.peering import PeerSide
from bench.sim.state import _Node, _Req
from peer.mesh import fetch as _fetch
from peer.mesh.fetch import LEASE_TTL, RUN_CHECK
from peer.mesh.fetch_origin import INSIST_AFTER, RUN_CHECK_ALONE
from peer.mesh.scheduler import ORIGIN
from tracker import protocol as p


class OriginSide(PeerSide):
    """Origin requests, runs, renewals and refusals (on :class:`PeerSide`)."""

    # -- origin --------------------------------------------------------------------------
    def _request_origin(self, node: _Node, req: _Req, t: float) -> None:
        self.counters["requests_origin"] += 1
        cfg = self.cfg
        if cfg.mode == "mesh":
            if cfg.lease_cap is not None and self._capped(node, req, t):
                return
            want = self._run_wanted(node, req.piece) if cfg.origin_runs else 1
            # as BlobFetch: insist after INSIST_AFTER capped refusals if no peer has it
            insist = (
                node.capped_streak >= INSIST_AFTER
                and node.sched is not None
                and not node.sched.availability(req.piece)
            )
            lease = p.LeaseRequest(
                digest=DIGEST, piece_index=req.piece, peer_id=node.name,
                session=node.session, ttl=cfg.lease_ttl, count=want, insist=insist,
            )  # fmt: skip
            reply = self._timed("lease", self.registry.lease, lease, EPOCH + t)
            # as Swarm.lease: a refusal naming ourselves counts as a grant (even a capped one)
            mine = reply.holder == node.name and not (
                cfg.capped_self_refused and getattr(reply, "capped", False)
            )
            if not reply.granted and not mine:
                self.counters["lease_refused"] += 1
                # a refusal for the blob's cap pauses the origin (expires None), one for the
                # piece backs that piece off; it arrives one tracker round trip (one step) later
                capped = getattr(reply, "capped", False)
                expires = None if capped else reply.expires_at - EPOCH
                self._push(t + self.dt, "refused", (req, reply.holder, expires))
                return
            node.capped_streak = 0
            self.inflight_leases[req.piece] = (reply.expires_at - EPOCH, node.name)
            if reply.granted and min(reply.count, want) > 1:
                self._run(node, req, min(reply.count, want), t)
            if cfg.lease_renew or cfg.lease_cap is not None:
                self._push(t + cfg.lease_ttl / 2, "renew", req)
        req.start_at = t + cfg.origin_rtt
        self._push(req.start_at, "origin_start", req)

    def _run_wanted(self, node: _Node, index: int) -> int:
        """As ``BlobFetch._run_wanted``: the piece and the pending ones after it (one until
        a piece came from the origin)."""
        assert node.sched is not None
        if not node.from_origin:
            return 1
        limit = min(p.MAX_LEASE_RUN, max(1, _fetch.RUN_BYTES // self.plan.piece_size))
        n = 1
        while n < limit and node.sched.is_pending(index + n):
            n += 1
        return n

    def _run(self, node: _Node, head: _Req, count: int, t: float) -> None:
        """The lease of ``head`` covers ``count`` pieces: one origin request for all."""
        assert node.sched is not None
        self.counters["origin_runs"] += 1
        span = range(head.piece, head.piece + count)
        taken = set(node.sched.extend_origin(head.piece, span, t))
        group = [head]
        for index in span[1:]:
            req = _Req(node.id, ORIGIN, index, t)
            if index in taken:  # else a spare copy: in flight elsewhere, or ours already
                self._out_add(node, req)
            group.append(req)
        for req in group:
            req.group = group

    def _check_run(self, node: _Node, req: _Req, t: float) -> None:
        """As ``BlobFetch._renew``: renew the run (after its 1st, 2nd, 4th... piece, every
        piece while peers are linked, and every ``RUN_CHECK``, ``RUN_CHECK_ALONE`` while
        the node has no link) and stop it where the tracker
        says other nodes want the rest (after ``req``, the piece delivered or on the wire,
        at the earliest). The renewal's round trip is not modelled: the cut is at once."""
        group = req.group
        assert group is not None
        assert node.sched is not None
        head = group[0]
        head.renewed = t
        lease = p.LeaseRequest(
            digest=DIGEST, piece_index=head.piece, peer_id=node.name, session=node.session,
            ttl=self.cfg.lease_ttl, count=len(group),
        )  # fmt: skip
        reply = self._timed("lease", self.registry.lease, lease, EPOCH + t)
        if not reply.granted:
            return
        end = max(head.piece + reply.count, req.piece + 1)
        cut = [r for r in group if r.piece >= end]
        if not cut:
            return
        self.counters["runs_cut"] += 1
        del group[len(group) - len(cut) :]
        for member in cut:
            wasted = self.net.cancel(member.ch, member)
            self.counters["wasted_bytes"] += wasted
            if not wasted:  # never left the origin: not a fetch (of a duplicate) after all
                self.origin_fetched[member.piece] -= 1
            member.ch = -1
            member.group = None
            if node.out.get((ORIGIN, member.piece)) is member:
                self._out_del(node, member)
                node.sched.on_busy(ORIGIN, member.piece, t, 0.0)
            self._release(member, t)
        node.dirty = True

    def _run_timer(self, head: _Req, t: float) -> None:
        """``RUN_CHECK`` after the run's last renewal (``RUN_CHECK_ALONE`` while the node has
        no link): check it, if it has pieces to cut."""
        group = head.group
        node = self.nodes[head.node]
        if group is None or node.dead or node.sched is None:
            return
        on_wire = [r for r in group if r.ch >= 0]
        check = RUN_CHECK if node.links else RUN_CHECK_ALONE
        if len(on_wire) > 1 and t >= head.renewed + check:
            self._check_run(node, on_wire[0], t)
        if len(on_wire) > 1:
            self._push(max(t, head.renewed) + check, "run_check", head)

    @staticmethod
    def _run_going(node: _Node, req: _Req) -> bool:
        """Another request of ``req``'s origin run still waits for its piece."""
        return req.group is not None and any(
            r is not req and node.out.get((ORIGIN, r.piece)) is r for r in req.group
        )

    def _renew(self, req: _Req, t: float) -> None:
        node = self.nodes[req.node]
        mine = node.out.get((ORIGIN, req.piece)) is req or self._run_going(node, req)
        if not mine or node.dead:
            return
        lease = p.LeaseRequest(
            digest=DIGEST, piece_index=req.piece, peer_id=node.name, session=node.session,
            ttl=self.cfg.lease_ttl, count=len(req.group or [req]),
        )  # fmt: skip
        reply = self._timed("lease", self.registry.lease, lease, EPOCH + t)
        if reply.granted:
            self.inflight_leases[req.piece] = (reply.expires_at - EPOCH, node.name)
            self._push(t + self.cfg.lease_ttl / 2, "renew", req)

    def _refused(self, req: _Req, holder: str, expires: float | None, t: float) -> None:
        node = self.nodes[req.node]
        if node.out.get((ORIGIN, req.piece)) is not req or node.sched is None:
            return
        self._out_del(node, req)
        holder_id = int(holder[5:])
        if self.cfg.lease_refuse_recorded:  # what-if: the refusal carries the address
            self._link(node, self.nodes[holder_id], t, force=True)
        elif holder_id in node.known:  # Swarm.want_link (within max_links, if capped)
            self._link(node, self.nodes[holder_id], t)
        if expires is None:  # lease cap: back the origin off for every piece
            pause = getattr(node.sched, "pause_origin", None)
            if pause is not None:  # as BlobFetch does (fetch.ORIGIN_RETRY, ORIGIN_RETRY_MAX)
                wait = self.cfg.origin_retry
                if self.cfg.origin_retry_max is not None:
                    wait = min(wait * 2**node.capped_streak, self.cfg.origin_retry_max)
                    wait *= self.jitter.uniform(0.5, 1.5)
                    node.capped_streak += 1
                node.sched.on_busy(ORIGIN, req.piece, req.issued, wait)
                pause(req.issued, wait)
            else:
                assert node.bits is not None
                for index in range(self.n_pieces):
                    if index not in node.bits and (ORIGIN, index) not in node.out:
                        node.sched.on_busy(ORIGIN, index, t, self.cfg.origin_retry)
        else:
            wait = min(max(expires - t, 0.2), LEASE_TTL)
            node.sched.on_busy(ORIGIN, req.piece, req.issued, wait)
        node.dirty = True

    def _origin_start(self, req: _Req, t: float) -> None:
        node = self.nodes[req.node]
        if node.out.get((ORIGIN, req.piece)) is not req and not self._run_going(node, req):
            self._release(req, t)  # cancelled before its first byte
            return
        self.counters["origin_fetches"] += 1
        ch = self.net.open(self.origin, node.id)
        if req.group is not None:
            self._push(t + (RUN_CHECK if node.links else RUN_CHECK_ALONE), "run_check", req)
        for member in req.group or [req]:
            self.origin_fetched[member.piece] += 1
            if self.origin_fetched[member.piece] > 1:
                self.counters["origin_duplicate"] += 1
            member.ch = ch
            self.net.push(ch, member, self.plan.length(member.piece))
        self.origin_open += 1
        self.counters["origin_peak"] = max(self.counters["origin_peak"], self.origin_open)
