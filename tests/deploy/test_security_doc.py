"""docs/security.md: the flags, variables and deploy paths it tells an operator to use exist."""

from __future__ import annotations

import re
from typing import Final

from tests.deploy.cluster import ROOT, cli_flags, env_flag

DOC: Final = ROOT / "docs" / "security.md"


def test_documented_flags_exist() -> None:
    text = DOC.read_text(encoding="utf-8")
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]+", text))
    flags |= {env_flag(v) for v in re.findall(r"\bSHOAL_[A-Z_]+\b", text)}
    known = cli_flags("peer") | cli_flags("tracker") | {"--src-creds", "--creds", "--config"}
    assert flags - known == set()
    assert {"--cluster-secret", "--upstream-credentials", "--tls-ca"} <= flags


def test_documented_paths_exist() -> None:
    text = DOC.read_text(encoding="utf-8")
    paths = set(re.findall(r"\bdeploy/(?:kubernetes|systemd)[\w./-]*\w", text))
    assert paths
    for path in paths:
        if path.endswith(("secrets.env", "private-registries.yaml")):
            continue  # the operator's own files
        assert (ROOT / path).exists(), path


def test_documented_secret_names_are_the_deployed_ones() -> None:
    text = DOC.read_text(encoding="utf-8")
    for manifest in ("peer-daemonset.yaml", "tracker.yaml"):
        deployed = (ROOT / "deploy/kubernetes/base" / manifest).read_text(encoding="utf-8")
        assert "name: shoal-secrets" in deployed
        assert "key: cluster-secret" in deployed
        assert "SHOAL_CLUSTER_SECRET" in deployed
    assert "`shoal-secrets`" in text
    assert "`cluster-secret`" in text
