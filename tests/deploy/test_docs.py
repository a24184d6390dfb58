"""docs/deploy.md: the commands it tells an operator to run exist, with flags that exist."""

from __future__ import annotations

import re
import shlex
from typing import Final

from tests.deploy.cluster import (
    DEPLOY,
    KUBERNETES,
    ROOT,
    cli_flags,
    cli_help,
    flag_name,
)

DOC: Final = ROOT / "docs" / "deploy.md"
COMMANDS_WITH_A_MODE: Final = {"config"}  # `shoal config containerd|podman|docker`


def shoal_command_names() -> set[str]:
    """The commands ``shoal --help`` lists."""
    listing = cli_help().split("commands:", 1)[1]
    return set(re.findall(r"^  ([a-z]+) ", listing, re.M))


def shoal_commands() -> list[list[str]]:
    """Each ``shoal ...`` invocation in the doc's shell blocks and inline code."""
    text = DOC.read_text(encoding="utf-8")
    snippets = re.findall(r"^[ ]*```sh\n(.*?)^[ ]*```", text, re.M | re.S)
    lines = [ln for s in snippets for ln in s.replace("\\\n", " ").splitlines()]
    lines += re.findall(r"`((?:/opt/shoal/bin/)?shoal [a-z][^`]*)`", text.replace("\n", " "))
    out = []
    for line in lines:
        words = shlex.split(line, comments=True)
        for n, word in enumerate(words):
            if word.rsplit("/", 1)[-1] == "shoal" and n + 1 < len(words):
                rest = []
                for w in words[n + 1 :]:
                    if w in ("|", "&&", ";", ">", "2>&1"):
                        break
                    rest.append(w)
                if rest and rest[0] in shoal_command_names():
                    out.append(rest)
    return out


def test_doc_names_shoal_commands() -> None:
    names = {c[0] for c in shoal_commands()}
    assert {"config", "status", "verify", "peer"} <= names


def _command(argv: list[str]) -> tuple[str, ...]:
    if argv[0] in COMMANDS_WITH_A_MODE and len(argv) > 1 and not argv[1].startswith("-"):
        return tuple(argv[:2])
    return tuple(argv[:1])


def test_documented_flags_exist() -> None:
    commands = shoal_commands()
    wrong = []
    for argv in commands:
        unknown = {flag_name(a) for a in argv} - {None} - cli_flags(*_command(argv))
        if unknown:
            wrong.append(f"shoal {' '.join(argv)}: {sorted(unknown)}")
    assert wrong == []


def test_doc_paths_exist() -> None:
    """Every ``deploy/...`` path the doc names is in the repository."""
    text = DOC.read_text(encoding="utf-8")
    paths = set(re.findall(r"\bdeploy/(?:kubernetes|systemd|Containerfile)[\w./-]*\w", text))
    assert paths
    for path in paths:
        if path.endswith("secrets.env"):
            continue  # the operator's own file
        assert (ROOT / path).exists(), path
    assert (DEPLOY / "Containerfile").name in text
    assert KUBERNETES.name in text
