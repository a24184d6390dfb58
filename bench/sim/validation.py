"""The simulator against the real shaped swarm: bench/swarm.py's sections of
docs/benchmarks.md read back (setup, p50 per mode, CPU pressure, the code measured), and
the ±15%-on-p50 comparison table and summary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from bench.sim.model import Result


def swarm_sections(doc: Path) -> list[str]:
    """Names of bench/swarm.py's sections in docs/benchmarks.md (``swarm``, ``swarm-40mbit``...)."""
    if not doc.exists():
        return []
    return re.findall(r"<!-- bench:(swarm[\w-]*) -->", doc.read_text())


def swarm_section(doc: Path, name: str = "swarm") -> str | None:
    """The text of one of bench/swarm.py's sections, if there is one."""
    if not doc.exists():
        return None
    pattern = rf"<!-- bench:{re.escape(name)} -->(.*?)<!-- /bench:{re.escape(name)} -->"
    m = re.search(pattern, doc.read_text(), re.S)
    return m.group(1) if m else None


def swarm_setup(doc: Path, name: str = "swarm") -> tuple[int, float, float] | None:
    """(N, F in MiB, U in Mbit/s) that bench/swarm.py measured, read from its section."""
    text = swarm_section(doc, name)
    if text is None:
        return None
    n = re.search(r"N = (\d+) nodes", text)
    f = re.search(r"F = (\d+(?:\.\d+)?) MiB", text)
    u = re.search(r"U = (\d+(?:\.\d+)?) Mbit/s", text)
    if not (n and f and u):
        return None
    return int(n.group(1)), float(f.group(1)), float(u.group(1))


def swarm_rows(doc: Path, name: str = "swarm") -> dict[str, dict[str, str]]:
    """The first table of a swarm section with a p50 column: mode -> {column: cell}."""
    text = swarm_section(doc, name)
    if text is None:
        return {}
    out: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            if header is not None and out:
                break
            continue
        cells = [c.strip().strip("*").strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            if any(c.lower().startswith("p50") for c in cells):
                header = [c.lower() for c in cells]
            continue
        key = next((k for k in ("plain", "flash", "rolling") if k in cells[0].lower()), None)
        if key is not None and key not in out:
            out[key] = dict(zip(header, cells, strict=False))
    return out


def swarm_p50(doc: Path, name: str = "swarm") -> dict[str, float]:
    """p50 (s) per mode (plain, flash, rolling) of a bench/swarm.py section."""
    out: dict[str, float] = {}
    for key, cells in swarm_rows(doc, name).items():
        cell = next((v for k, v in cells.items() if k.startswith("p50") and "/" not in k), "")
        value = re.match(r"^([0-9]+(?:\.[0-9]+)?)", cell)
        if value:
            out[key] = float(value.group(1))
    return out


def swarm_code(doc: Path, name: str = "swarm") -> str | None:
    """The commit a bench/swarm.py section measured ("Code measured: <sha>")."""
    text = swarm_section(doc, name)
    m = re.search(r"Code measured: ([0-9a-f]{7,40})", text or "")
    return m.group(1) if m else None


def swarm_pressure(cells: dict[str, str]) -> float | None:
    """The measured CPU pressure of a swarm row, as a fraction (None if not recorded)."""
    cell = next((v for k, v in cells.items() if "pressure" in k), "")
    m = re.match(r"^([0-9]+(?:\.[0-9]+)?)%", cell)
    return float(m.group(1)) / 100 if m else None


#: A real run whose CPU pressure was at least this was limited by the CPU, not the network.
CPU_BOUND: float = 0.9


def agreement(sim: float, real: float | None, pressure: float | None) -> str:
    """The ±15% criterion on p50 for one validation row."""
    if real is None:
        return "– (not measured)"
    err = sim / real - 1
    if abs(err) <= 0.15:
        return f"{err:+.0%}: **within** ±15%"
    why = ""
    if pressure is not None and pressure >= CPU_BOUND and sim < real:
        why = f" (the real run waited for a CPU: pressure {pressure:.0%})"
    return f"{err:+.0%}: **outside** ±15%{why}"


def validation_table(
    results: Sequence[tuple[str, Result]],
    rows: dict[str, dict[str, str]],
    measured: dict[str, float],
) -> str:
    lines = [
        "| run | simulated p50 | simulated max | simulated egress / F | measured p50 "
        "| measured egress / F | measured CPU pressure | sim vs real p50 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, r in results:
        key = next(k for k in ("plain", "flash", "rolling") if k in label)
        real = measured.get(key)
        cells = rows.get(key, {})
        egress = next((v for k, v in cells.items() if "egress" in k), "–")
        cpu = next((v for k, v in cells.items() if "pressure" in k), "–")
        lines.append(
            f"| {label} | {r.pct(50):.1f} s | {r.times.max():.1f} s "
            f"| {r.origin_bytes / r.cfg.size:.2f} | {f'{real:.1f} s' if real else '–'} | {egress} "
            f"| {cpu} | {agreement(r.pct(50), real, swarm_pressure(cells))} |"
        )
    return "\n".join(lines)


def validation_summary(validation: dict[str, list[tuple[str, Result]]], doc: Path) -> str:
    """One sentence per section: which rows meet ±15% and why the others do not."""
    lines = []
    for name, runs in validation.items():
        measured = swarm_p50(doc, name)
        rows = swarm_rows(doc, name)
        within, outside, cpu = [], [], []
        for label, r in runs:
            key = next(k for k in ("plain", "flash", "rolling") if k in label)
            real = measured.get(key)
            if real is None:
                continue
            ok = abs(r.pct(50) / real - 1) <= 0.15
            (within if ok else outside).append(key)
            pressure = swarm_pressure(rows.get(key, {}))
            if not ok and pressure is not None and pressure >= CPU_BOUND:
                cpu.append(f"{key} ({pressure:.0%})")
        if not within and not outside:
            continue
        text = f"- `{name}`: within ±15%: {', '.join(within) or 'none'}"
        if outside:
            text += f"; outside: {', '.join(outside)}"
            if cpu:
                text += (
                    f". The real runs outside were CPU-bound ({', '.join(cpu)} CPU pressure): "
                    "the nodes waited for a CPU, which the simulator does not model, so these "
                    "rows say nothing about the network model"
                )
        lines.append(text + ".")
    return "\n".join(lines) + "\n"
