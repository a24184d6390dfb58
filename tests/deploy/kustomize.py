"""A small kustomize renderer: the subset ``deploy/kubernetes`` uses, in pure Python.

CI machines need not have ``kubectl``; this walks a kustomization with PyYAML so the
manifests can be checked everywhere. Where ``kubectl`` is installed the tests also render
with ``kubectl kustomize`` and require the two results to be equal, which keeps this
module honest.

Supported: ``resources`` (YAML files and directories holding a kustomization),
``namespace``, ``images``, ``configMapGenerator`` / ``secretGenerator`` (``files``,
``literals``, ``envs``; name hashes disabled), and ``patches`` given by ``path`` as
strategic-merge patches (maps merged, lists of named maps merged by ``name``). Any other
key raises :class:`Unsupported`, so a kustomization that outgrows this module fails
loudly instead of rendering wrong.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any, Final

import yaml

Obj = dict[str, Any]

_KNOWN_KEYS: Final = frozenset(
    {"apiVersion", "kind", "namespace", "resources", "images", "configMapGenerator",
     "secretGenerator", "patches"}
)  # fmt: skip
# Kinds that live outside namespaces, among those deploy/ uses or might.
CLUSTER_SCOPED: Final = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass",
     "CustomResourceDefinition", "PersistentVolume"}
)  # fmt: skip


class Unsupported(Exception):
    """The kustomization uses a feature this renderer does not implement."""


def load_documents(path: Path) -> list[Obj]:
    """Every non-empty YAML document in ``path``."""
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` would print (order aside)."""
    kfile = directory / "kustomization.yaml"
    (k,) = load_documents(kfile)
    unknown = set(k) - _KNOWN_KEYS
    if unknown:
        raise Unsupported(f"{kfile}: {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in k.get("resources", []):
        target = (directory / entry).resolve()
        objects += render(target) if target.is_dir() else load_documents(target)
    objects += [_config_map(directory, g) for g in k.get("configMapGenerator", [])]
    objects += [_secret(directory, g) for g in k.get("secretGenerator", [])]
    for patch in k.get("patches", []):
        _apply_patch(objects, directory, patch)
    if "namespace" in k:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    for image in k.get("images", []):
        _set_image(objects, image)
    return objects


def _generator_data(directory: Path, gen: Obj) -> dict[str, str]:
    if gen.get("options", {}).get("disableNameSuffixHash") is not True:
        raise Unsupported(f"generator {gen['name']}: name hashes (set disableNameSuffixHash)")
    extra = set(gen) - {"name", "files", "literals", "envs", "options"}
    if extra:
        raise Unsupported(f"generator {gen['name']}: {sorted(extra)}")
    data: dict[str, str] = {}
    for entry in gen.get("files", []):
        key, _, rel = entry.rpartition("=") if "=" in entry else ("", "", entry)
        path = directory / rel
        data[key or path.name] = path.read_text(encoding="utf-8")
    for literal in gen.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = value
    for env in gen.get("envs", []):
        for line in (directory / env).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                key, _, value = line.partition("=")
                data[key] = value
    return data


def _config_map(directory: Path, gen: Obj) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
            "data": _generator_data(directory, gen)}  # fmt: skip


def _secret(directory: Path, gen: Obj) -> Obj:
    data = {
        key: base64.b64encode(value.encode()).decode()
        for key, value in _generator_data(directory, gen).items()
    }
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": gen["name"]}, "data": data}  # fmt: skip


def _apply_patch(objects: list[Obj], directory: Path, patch: Obj) -> None:
    if set(patch) != {"path"}:
        raise Unsupported(f"patch {patch}: only 'path' (a strategic-merge patch file)")
    (doc,) = load_documents(directory / patch["path"])
    matches = [
        o
        for o in objects
        if o["kind"] == doc["kind"] and o["metadata"]["name"] == doc["metadata"]["name"]
    ]
    if len(matches) != 1:
        raise ValueError(f"patch {patch['path']} matches {len(matches)} objects")
    merged = strategic_merge(matches[0], doc)
    matches[0].clear()
    matches[0].update(merged)


def strategic_merge(base: Any, patch: Any) -> Any:
    """Maps merge key by key; lists whose items are all maps with a ``name`` merge by name.

    A merged list holds the patch's items first, then the base's others, as kustomize
    renders them (order matters where a ``$(VAR)`` names an earlier variable).

    Other lists, and scalars, are replaced. (Kubernetes' real merge keys differ for a few
    fields, ``containerPort`` for ports for instance; deploy/ patches only named lists.)
    """
    if isinstance(base, dict) and isinstance(patch, dict):
        out = copy.deepcopy(base)
        for key, value in patch.items():
            out[key] = strategic_merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        # As kustomize orders them: the patch's items (merged) first, then the others.
        by_name = {item["name"]: item for item in base}
        patched = [strategic_merge(by_name.get(item["name"], {}), item) for item in patch]
        names = {item["name"] for item in patch}
        return patched + [copy.deepcopy(i) for i in base if i["name"] not in names]
    return copy.deepcopy(patch)


def pod_spec(obj: Obj) -> Obj | None:
    """The pod template's spec of a workload, or None for other kinds."""
    if obj["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job", "ReplicaSet"):
        spec: Obj = obj["spec"]["template"]["spec"]
        return spec
    return None


def containers(spec: Obj) -> list[Obj]:
    """Init containers then containers."""
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _set_image(objects: list[Obj], image: Obj) -> None:
    for obj in objects:
        spec = pod_spec(obj)
        for container in containers(spec) if spec else []:
            name, tag = container["image"], ""
            if ":" in name.rsplit("/", 1)[-1]:
                name, tag = name.rsplit(":", 1)
            if name != image["name"]:
                continue
            new = image.get("newName", name)
            new_tag = image.get("newTag", tag)
            container["image"] = f"{new}:{new_tag}" if new_tag else new
            if "digest" in image:
                container["image"] = f"{new}@{image['digest']}"
