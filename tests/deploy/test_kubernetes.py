"""deploy/kubernetes: schemas, rendering and the references between objects.

Every check runs on the rendered output of each overlay (base included), as a cluster
would receive it. Schemas come from ``kubernetes-validate``, which ships the OpenAPI
schemas of each Kubernetes release in the wheel, so this runs offline.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Final

import kubernetes_validate
import pytest
import yaml

from peer.config import PEER_FLAGS, add_flags, merged, parse_size, peer_config
from peer.mirror.allows import Rules
from tests.deploy.cluster import (
    KUBERNETES,
    ROOT,
    SHOAL_IMAGE,
    cli_flags,
    container,
    container_env,
    env_flag,
    expand,
    find,
    flag_name,
    flag_value,
    overlays,
    prepare_tree,
    unexpanded,
    workloads,
)
from tests.deploy.kustomize import CLUSTER_SCOPED, Obj, containers, load_documents, pod_spec, render
from tracker.config import parse_args as tracker_parse_args

#: The three Kubernetes minors supported upstream when kubernetes-validate 1.37 shipped.
KUBERNETES_VERSIONS: Final = ("1.35", "1.36", "1.37")
#: kubectl 1.27 bundles kustomize v5, whose output the comparison expects.
MIN_KUBECTL_MINOR: Final = 27


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_tree(tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="module", params=overlays())
def overlay(request: pytest.FixtureRequest, tree: Path) -> Path:
    path: Path = tree / "overlays" / request.param
    return path


@pytest.fixture(scope="module")
def objects(overlay: Path) -> list[Obj]:
    return render(overlay)


def _key(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def _shoal_containers(objects: list[Obj]) -> list[tuple[Obj, Obj]]:
    """(workload, container) for every container that runs the ``shoal`` entrypoint."""
    out = []
    for w in workloads(objects):
        spec = pod_spec(w)
        assert spec is not None
        for c in containers(spec):
            if c["image"].rsplit("/", 1)[-1].split(":")[0] == SHOAL_IMAGE and "command" not in c:
                out.append((w, c))
    return out


def _subcommand(args: list[str]) -> tuple[str, ...]:
    return (args[0], args[1]) if args[0] == "config" else (args[0],)


def test_overlays_exist() -> None:
    assert "production" in overlays()


def test_every_yaml_file_is_used() -> None:
    """No manifest lies in the tree unreferenced (and so silently never applied)."""
    used = set()
    for kfile in KUBERNETES.rglob("kustomization.yaml"):
        used.add(kfile)
        (k,) = load_documents(kfile)
        for entry in [*k.get("resources", []), *(p["path"] for p in k.get("patches", []))]:
            used.add((kfile.parent / entry).resolve())
    assert set(KUBERNETES.rglob("*.yaml")) - used == set()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_objects_validate_against_kubernetes_schemas(objects: list[Obj], version: str) -> None:
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{_key(obj)} invalid for Kubernetes {version}: {exc.message}")


def test_validation_rejects_a_broken_manifest(objects: list[Obj]) -> None:
    """The schema check above can fail: a typo'd field and a string port are refused."""
    peer = find(objects, "DaemonSet", "shoal-peer")
    broken = yaml.safe_load(yaml.safe_dump(peer))
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "5050"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)
    typo = yaml.safe_load(yaml.safe_dump(peer))
    typo["spec"]["template"]["spec"]["tolerration"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[-1], strict=True)


def test_renders_like_kubectl_kustomize(overlay: Path, objects: list[Obj]) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed; the PyYAML rendering was checked alone")
    version = subprocess.run(
        [kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=60
    )
    minor = int(json.loads(version.stdout)["clientVersion"]["minor"].rstrip("+"))
    if minor < MIN_KUBECTL_MINOR:
        pytest.skip(f"kubectl 1.{minor} bundles a kustomize older than v5")
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    theirs = {_key(o): o for o in yaml.safe_load_all(result.stdout) if o}
    ours = {_key(o): o for o in objects}
    assert sorted(ours) == sorted(theirs)
    for key, obj in ours.items():
        assert obj == theirs[key], key


def test_one_namespace(objects: list[Obj]) -> None:
    (namespace,) = [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"]
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == namespace, _key(obj)


def test_names_are_unique(objects: list[Obj]) -> None:
    keys = [_key(o) for o in objects]
    assert len(keys) == len(set(keys))


def test_workload_selectors_select_only_their_own_pods(objects: list[Obj]) -> None:
    pods = workloads(objects)
    for w in pods:
        selector = w["spec"]["selector"]["matchLabels"]
        selected = [o["metadata"]["name"] for o in pods if _selects(selector, _pod_labels(o))]
        assert selected == [w["metadata"]["name"]]


def _selector(obj: Obj) -> dict[str, str]:
    spec = obj["spec"]
    if obj["kind"] == "Service":
        selector: dict[str, str] = spec["selector"]
    elif obj["kind"] == "NetworkPolicy":
        selector = spec["podSelector"]["matchLabels"]
    else:
        selector = spec["selector"]["matchLabels"]
    return selector


@pytest.mark.parametrize("kind", ["Service", "PodDisruptionBudget", "NetworkPolicy"])
def test_selectors_select_one_workload(objects: list[Obj], kind: str) -> None:
    for obj in (o for o in objects if o["kind"] == kind):
        selected = [w for w in workloads(objects) if _selects(_selector(obj), _pod_labels(w))]
        assert len(selected) == 1, f"{kind}/{obj['metadata']['name']} selects {len(selected)}"


def _ports(c: Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in c.get("ports", [])}


def test_service_target_ports_exist(objects: list[Obj]) -> None:
    for svc in (o for o in objects if o["kind"] == "Service"):
        (w,) = [x for x in workloads(objects) if _selects(svc["spec"]["selector"], _pod_labels(x))]
        spec = pod_spec(w)
        assert spec is not None
        ports = {n: p for c in spec["containers"] for n, p in _ports(c).items()}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in ports or target in ports.values(), (svc["metadata"]["name"], target)


def test_network_policy_ports_are_served(objects: list[Obj]) -> None:
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]["matchLabels"]
        (w,) = [x for x in workloads(objects) if _selects(selector, _pod_labels(x))]
        spec = pod_spec(w)
        assert spec is not None
        served = {p for c in spec["containers"] for p in _ports(c).values()}
        for rule in policy["spec"]["ingress"]:
            for port in rule["ports"]:
                assert port["port"] in served, (policy["metadata"]["name"], port)


def test_secret_and_config_map_references_exist(objects: list[Obj]) -> None:
    def data_keys(kind: str, name: str) -> set[str]:
        obj = find(objects, kind, name)
        return set(obj.get("data", {})) | set(obj.get("stringData", {}))

    for w in workloads(objects):
        spec = pod_spec(w)
        assert spec is not None
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                data_keys("ConfigMap", volume["configMap"]["name"])
            if "secret" in volume:
                data_keys("Secret", volume["secret"]["secretName"])
        for c in containers(spec):
            for var in c.get("env", []):
                source = var.get("valueFrom", {})
                for kind, ref_key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    if ref_key in source:
                        ref = source[ref_key]
                        assert ref["key"] in data_keys(kind, ref["name"]), (c["name"], ref)


def test_volume_mounts_and_variables_resolve(objects: list[Obj]) -> None:
    for w in workloads(objects):
        spec = pod_spec(w)
        assert spec is not None
        volumes = {v["name"] for v in spec.get("volumes", [])}
        for c in containers(spec):
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, (c["name"], mount)
            defined = {var["name"] for var in c.get("env", [])}
            for text in [*c.get("command", []), *c.get("args", [])]:
                assert set(unexpanded(text)) <= defined, (c["name"], text)


def test_every_container_has_requests_and_a_memory_limit(objects: list[Obj]) -> None:
    for w in workloads(objects):
        spec = pod_spec(w)
        assert spec is not None
        for c in containers(spec):
            resources = c.get("resources", {})
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), c["name"]
            assert "memory" in resources.get("limits", {}), c["name"]


def test_shoal_containers_use_flags_the_cli_accepts(objects: list[Obj]) -> None:
    """Each ``--flag`` and ``SHOAL_*`` variable is one that ``shoal <cmd> --help`` lists."""
    checked = set()
    for _, c in _shoal_containers(objects):
        command = _subcommand(c["args"])
        accepted = cli_flags(*command)
        flags = {flag_name(a) for a in c["args"]} - {None}
        flags |= {env_flag(v["name"]) for v in c.get("env", []) if v["name"].startswith("SHOAL_")}
        assert flags <= accepted, (command, flags - accepted)
        checked.add(command)
    assert checked == {("peer",), ("tracker",), ("config", "containerd")}


def _peer_config_of(objects: list[Obj], c: Obj) -> Any:
    env = container_env(objects, c, field_values={"status.hostIP": "10.1.2.3",
                                                  "spec.nodeName": "node-1"})  # fmt: skip
    args = [expand(a, env) for a in c["args"][1:]]
    parser = argparse.ArgumentParser()
    add_flags(parser, PEER_FLAGS)
    parser.add_argument("--log-level")
    return peer_config(merged(parser.parse_args(args), PEER_FLAGS, environ=env))


def test_peer_settings_parse(objects: list[Obj]) -> None:
    """The peer's flags and environment, expanded as the kubelet does, are a valid config."""
    peer = find(objects, "DaemonSet", "shoal-peer")
    config = _peer_config_of(objects, container(peer, "peer"))
    assert config.advertise_addr == "10.1.2.3"
    assert config.node_id == "node-1"
    assert config.cluster_secret
    assert config.cache_size >= parse_size("1GiB")
    assert config.allows is not None
    assert config.tracker.startswith("http://")


def test_tracker_settings_parse(objects: list[Obj]) -> None:
    tracker = find(objects, "Deployment", "shoal-tracker")
    c = container(tracker, "tracker")
    config = tracker_parse_args(c["args"][1:], environ=container_env(objects, c))
    assert config.admin_token
    assert config.cluster_secret
    assert config.mdns is False
    assert config.store.startswith("redis://")


def test_trackers_share_one_store(objects: list[Obj]) -> None:
    """Two or more trackers, all on Redis (two memory stores would split the view)."""
    tracker = find(objects, "Deployment", "shoal-tracker")
    assert tracker["spec"]["replicas"] >= 2
    pdb = find(objects, "PodDisruptionBudget", "shoal-tracker")
    assert 1 <= pdb["spec"]["minAvailable"] < tracker["spec"]["replicas"]
    store = flag_value(container(tracker, "tracker")["args"], "--store")
    assert store.startswith("redis://")


def _service_port(objects: list[Obj], url: str) -> None:
    rest = url.partition("://")[2]
    host, _, port = rest.split("/")[0].partition(":")
    svc = find(objects, "Service", host)
    assert int(port) in [p["port"] for p in svc["spec"]["ports"]], url


def test_urls_name_services_and_their_ports(objects: list[Obj]) -> None:
    peer = find(objects, "DaemonSet", "shoal-peer")
    _service_port(objects, flag_value(container(peer, "peer")["args"], "--tracker"))
    tracker = find(objects, "Deployment", "shoal-tracker")
    _service_port(objects, flag_value(container(tracker, "tracker")["args"], "--store"))


def _listen_port(args: list[str], flag: str = "--listen") -> int:
    return int(flag_value(args, flag).rsplit(":", 1)[1])


def _probe_ports(c: Obj) -> set[int]:
    ports = _ports(c)
    out = set()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = c.get(probe, {})
        for kind in ("httpGet", "tcpSocket"):
            if kind in handler:
                port = handler[kind]["port"]
                out.add(ports[port] if isinstance(port, str) else port)
    return out


def test_probe_ports_are_the_listen_ports(objects: list[Obj]) -> None:
    peer = container(find(objects, "DaemonSet", "shoal-peer"), "peer")
    registry_port = _listen_port(peer["args"])
    assert _probe_ports(peer) == {registry_port}
    assert _ports(peer) == {
        "registry": registry_port,
        "p2p": _listen_port(peer["args"], "--p2p-listen"),
    }
    tracker = container(find(objects, "Deployment", "shoal-tracker"), "tracker")
    assert _probe_ports(tracker) == {_listen_port(tracker["args"])} == set(_ports(tracker).values())
    redis = container(find(objects, "Deployment", "shoal-redis"), "redis")
    redis_port = int(redis["args"][redis["args"].index("--port") + 1])
    assert _probe_ports(redis) <= {redis_port}
    assert set(_ports(redis).values()) == {redis_port}


def test_healthz_probes(objects: list[Obj]) -> None:
    peer = container(find(objects, "DaemonSet", "shoal-peer"), "peer")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert peer[probe]["httpGet"]["path"] == "/healthz"
    tracker = container(find(objects, "Deployment", "shoal-tracker"), "tracker")
    assert tracker["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_scrape_annotations_point_at_metrics(objects: list[Obj]) -> None:
    for name, kind, cname in (("shoal-peer", "DaemonSet", "peer"),
                              ("shoal-tracker", "Deployment", "tracker")):  # fmt: skip
        w = find(objects, kind, name)
        notes = w["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/path"] == "/metrics"
        assert int(notes["prometheus.io/port"]) == _listen_port(container(w, cname)["args"])


def test_peer_daemonset_reaches_every_node(objects: list[Obj]) -> None:
    peer = find(objects, "DaemonSet", "shoal-peer")
    spec = peer["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"operator": "Exists"} in spec["tolerations"]
    # The registry port serves the node's own containerd at 127.0.0.1.
    host = flag_value(container(peer, "peer")["args"], "--listen").rsplit(":", 1)[0]
    assert host in ("0.0.0.0", "127.0.0.1")


def test_init_container_writes_hosts_toml_for_this_peer(objects: list[Obj]) -> None:
    """--mirror is this peer's registry port; --out is the mount of containerd's config_path."""
    peer = find(objects, "DaemonSet", "shoal-peer")
    spec = peer["spec"]["template"]["spec"]
    init = container(peer, "containerd-config")
    assert [c["name"] for c in spec["initContainers"]][-1] == "containerd-config"
    assert init["args"][:2] == ["config", "containerd"]
    mirror = flag_value(init["args"], "--mirror")
    assert mirror == f"http://127.0.0.1:{_listen_port(container(peer, 'peer')['args'])}"
    out = flag_value(init["args"], "--out")
    (mount,) = [m for m in init["volumeMounts"] if m["mountPath"] == out]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["hostPath"]["path"] == "/etc/containerd/certs.d"
    # The cache on the node's disk, owned by the peer's uid before the peer starts.
    cache = container(peer, "cache-owner")
    uid = container(peer, "peer")["securityContext"]["runAsUser"]
    assert cache["command"][:2] == ["chown", f"{uid}:{uid}"]
    data = flag_value(container(peer, "peer")["args"], "--data")
    assert cache["command"][2] == data
    (vol,) = [v for v in spec["volumes"] if v["name"] == "cache"]
    assert "hostPath" in vol


def test_registries_in_hosts_toml_are_allowed(objects: list[Obj]) -> None:
    """Every registry the runtime is pointed at has rules in the allows.txt ConfigMap."""
    peer = find(objects, "DaemonSet", "shoal-peer")
    registries = flag_value(container(peer, "containerd-config")["args"], "--registries")
    text = find(objects, "ConfigMap", "shoal-allows")["data"]["allows.txt"]
    rules = Rules.parse(text)
    for registry in registries.split(","):
        prefixes = {r.split("/")[0] for r in [*rules.exact, *rules.one_level, *rules.any_depth]}
        assert registry in prefixes, registry
    assert rules.allows("docker.io/library/alpine")


def test_allows_config_map_is_the_repository_allows_txt(objects: list[Obj]) -> None:
    """kustomize refuses files outside the kustomization, so base/ holds a copy: keep it equal."""
    data = find(objects, "ConfigMap", "shoal-allows")["data"]["allows.txt"]
    assert data == (ROOT / "allows.txt").read_text(encoding="utf-8"), (
        "deploy/kubernetes/base/allows.txt differs from allows.txt: "
        "cp allows.txt deploy/kubernetes/base/allows.txt"
    )
    peer = container(find(objects, "DaemonSet", "shoal-peer"), "peer")
    allows = Path(flag_value(peer["args"], "--allows"))
    (mount,) = [m for m in peer["volumeMounts"] if m["mountPath"] == str(allows.parent)]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"


def test_containers_run_unprivileged(objects: list[Obj]) -> None:
    for w in workloads(objects):
        spec = pod_spec(w)
        assert spec is not None
        assert spec.get("automountServiceAccountToken") is False, w["metadata"]["name"]
        for c in containers(spec):
            ctx = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
            assert ctx.get("allowPrivilegeEscalation") is False, c["name"]
            assert ctx.get("readOnlyRootFilesystem") is True, c["name"]
            assert ctx["capabilities"]["drop"] == ["ALL"], c["name"]
            assert "privileged" not in ctx, c["name"]
            if c["name"] not in ("cache-owner", "containerd-config"):
                assert ctx.get("runAsNonRoot") is True, c["name"]
                assert ctx["runAsUser"] != 0, c["name"]
