"""How the simulator's report names things: sizes, rates, a scenario (``describe``) and
the code version a scenario runs (``version_label``: ``shipped``, ``before``, or what a
what-if changes against the nearest of ``bench.sim.model.VERSIONS``).
"""

from __future__ import annotations

import math
from typing import Any

from bench.sim.model import VERSIONS, Config

MBIT = 1e6 / 8


def size(n: int) -> str:
    if n % (1 << 30) == 0:
        return f"{n >> 30} GiB"
    if n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    return f"{n / 1e6:,.0f} MB"


def rate(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x / MBIT:,.0f} Mbit/s"


def describe(cfg: Config) -> str:
    plan = cfg.piece_plan()
    parts = [
        f"N = {cfg.nodes:,}",
        f"F = {cfg.size / (1 << 20):,.0f} MiB ({plan.count} pieces of {plan.piece_size >> 20} MiB)",
        f"u = d = {rate(cfg.up)}"
        if cfg.up == cfg.down
        else f"u = {rate(cfg.up)}, d = {rate(cfg.down)}",
        f"u_s = {rate(cfg.origin_up)}",
    ]
    if cfg.slow_fraction:
        parts.append(f"{cfg.slow_fraction:.0%} of nodes at ×{cfg.slow_factor:g}")
    if cfg.arrival == "rolling":
        parts.append(f"arrivals uniform over {cfg.spread:g} s")
    elif cfg.arrival == "stagger":
        parts.append(f"node k starts at k × {cfg.spread:.2f} s")
    if cfg.leave_fraction:
        parts.append(f"{cfg.leave_fraction:.0%} leave mid-transfer")
    if cfg.mode == "server":
        parts.append("no P2P (plain server)")
    return ", ".join(parts)


WHAT_IFS = (
    "origin_min_down",
    "max_links",
    "max_links_in",
    "seeders_accept_all",
    "lease_refuse_recorded",
    "lease_refuse_held",
    "capped_self_refused",
    "lease_cap",
    "early_lookup",
    "wait_first_lookup",
    "inflight_cap",
    "lease_renew",
    "lease_ttl",
    "piece_size",
    "piece_round_down",
    "origin_retry_max",
)


def _value(name: str, value: Any) -> str:
    if name == "origin_min_down" and value is not None:
        return f"no origin fetches below a {value / MBIT:,.0f} Mbit/s downlink"
    return f"{name}={value}"


def differences(cfg: Config, knobs: dict[str, Any]) -> list[str]:
    """What ``cfg`` changes against a code version's knobs (``bench.sim.model.VERSIONS``)."""
    ref = Config(**knobs)
    out = [
        _value(name, getattr(cfg, name))
        for name in WHAT_IFS
        if getattr(cfg, name) != getattr(ref, name)
    ]
    for key in sorted(set(cfg.scheduler) | set(ref.scheduler)):
        if cfg.scheduler.get(key) != ref.scheduler.get(key):
            out.append(f"{key}={cfg.scheduler.get(key, 'default')}")
    return out


def version_label(cfg: Config) -> str:
    """``shipped``, ``before (as of ...)``, or ``shipped, but ...`` for a what-if."""
    for label, knobs in VERSIONS.values():
        if not differences(cfg, knobs):
            return label
    # the version it differs least from (``shipped`` on a tie)
    label, knobs = min(
        (VERSIONS["shipped"], *VERSIONS.values()), key=lambda v: len(differences(cfg, v[1]))
    )
    return f"{label}, but " + ", ".join(differences(cfg, knobs))


def changes(cfg: Config) -> str:
    """Every knob ``cfg`` sets away from the model's defaults (for logs)."""
    return ", ".join(differences(cfg, {})) or "defaults"
