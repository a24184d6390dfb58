"""Helpers for the deploy tests: render ``deploy/kubernetes``, find objects, ask the CLI.

The production overlay reads ``secrets.env``, which the repository does not hold (it is
the operator's); :func:`prepare_tree` copies the tree and writes one from the example,
as docs/deploy.md tells an operator to.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import re
import secrets
import shutil
from pathlib import Path
from typing import Final

from tests.deploy.kustomize import Obj, containers, pod_spec

ROOT: Final = Path(__file__).resolve().parents[2]
DEPLOY: Final = ROOT / "deploy"
KUBERNETES: Final = DEPLOY / "kubernetes"
SYSTEMD: Final = DEPLOY / "systemd"
#: The name the manifests give the shoal image; overlays map it to a registry.
SHOAL_IMAGE: Final = "shoal"
_VAR: Final = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def overlays() -> list[str]:
    return sorted(p.parent.name for p in (KUBERNETES / "overlays").glob("*/kustomization.yaml"))


def prepare_tree(dest: Path) -> Path:
    """A copy of deploy/kubernetes with every ``secrets.env`` made from its example."""
    tree = dest / "kubernetes"
    shutil.copytree(KUBERNETES, tree, ignore=shutil.ignore_patterns("secrets.env"))
    for example in tree.rglob("secrets.env.example"):
        lines = []
        for line in example.read_text(encoding="utf-8").splitlines():
            if line and not line.startswith("#"):
                key = line.partition("=")[0]
                lines.append(f"{key}={secrets.token_hex(16)}")
        example.with_name("secrets.env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tree


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def container(workload: Obj, name: str) -> Obj:
    spec = pod_spec(workload)
    assert spec is not None
    (found,) = [c for c in containers(spec) if c["name"] == name]
    return found


def workloads(objects: list[Obj]) -> list[Obj]:
    return [o for o in objects if pod_spec(o) is not None]


def secret_value(objects: list[Obj], name: str, key: str) -> str:
    secret = find(objects, "Secret", name)
    if key in secret.get("stringData", {}):
        return str(secret["stringData"][key])
    return base64.b64decode(secret["data"][key]).decode()


def container_env(
    objects: list[Obj], c: Obj, *, field_values: dict[str, str] | None = None
) -> dict[str, str]:
    """The container's environment as the kubelet would build it.

    ``fieldRef`` values come from ``field_values`` (by field path), Secrets and ConfigMaps
    from the rendered objects.
    """
    env: dict[str, str] = {}
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(str(var["value"]), env)
            continue
        source = var["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            env[var["name"]] = secret_value(objects, ref["name"], ref["key"])
        elif "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            env[var["name"]] = find(objects, "ConfigMap", ref["name"])["data"][ref["key"]]
        elif "fieldRef" in source:
            env[var["name"]] = (field_values or {}).get(source["fieldRef"]["fieldPath"], "x")
        else:
            raise AssertionError(f"unhandled env source {source}")
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command, args and env values."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)


def unexpanded(text: str) -> list[str]:
    return _VAR.findall(text)


def flag_name(arg: str) -> str | None:
    """``--cache-size=20GiB`` → ``--cache-size``; None for a non-flag."""
    return arg.split("=", 1)[0] if arg.startswith("--") else None


def flag_value(args: list[str], flag: str) -> str:
    """The value of the last ``--flag=value`` or ``--flag value`` in ``args``."""
    value = None
    for n, arg in enumerate(args):
        if arg == flag:
            value = args[n + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    assert value is not None, f"{flag} missing from {args}"
    return value


@functools.cache
def cli_help(*command: str) -> str:
    """What ``shoal <command...> --help`` prints, from the console script's ``main``.

    In-process (``peer.cli.main`` is what the ``shoal`` script calls): a Python start-up
    per command would cost the module seconds on a loaded machine.
    """
    from peer.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*command, "--help"])
        except SystemExit as exc:
            code = exc.code
    assert code in (0, None), f"shoal {' '.join(command)} --help: {err.getvalue()}"
    return out.getvalue()


def cli_flags(*command: str) -> set[str]:
    """Every ``--flag`` that ``shoal <command...> --help`` lists (``--no-x`` included)."""
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", cli_help(*command)))


def env_flag(variable: str) -> str:
    """``SHOAL_CACHE_SIZE`` → ``--cache-size``."""
    return "--" + variable.removeprefix("SHOAL_").lower().replace("_", "-")
