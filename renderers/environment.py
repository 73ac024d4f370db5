"""``environments/<env>/env.yaml``: where an environment's apps run and the settings that apply to all of them.

Unknown keys are errors (a typo such as ``prune_alow_empty`` must not silently keep the default), at any depth.
Reads the env.yaml it is asked for and checks that ``promotion.from`` names an environment that has one.

Protected namespaces (``PROTECTED_NAMESPACES``: the cluster's own, and the agent's) cannot be an environment's
``namespace`` nor one of its ``allowedNamespaces``: anyone who can merge to the repository could otherwise run a pod
as a powerful system ServiceAccount. Since every namespaced object must land in one of those two (see
``renderers.manifests``), no rendered object reaches a protected namespace. The agent's operator, not the
repository, may lift this for named namespaces (agent.yaml ``allowProtectedNamespaces``), by passing a smaller
``protected`` set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gitsync.model import LABEL_STATE, parse_duration
from renderers.errors import RenderError
from renderers.values import read_yaml_file, relative, split_path

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")

AGENT_NAMESPACE = "gitsync-system"
"""Where deploy/manifests installs the agent; the agent protects the namespace it actually runs in."""
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
PROTECTED_NAMESPACES = SYSTEM_NAMESPACES | {AGENT_NAMESPACE}
"""What ``load_environment`` refuses unless told otherwise (the CLI's rule; the agent computes its own)."""


class PromotionMode(StrEnum):
    """Who writes a promotion to Git (the promote stage reads it; the values are env.yaml's spelling)."""

    AUTO = "auto"
    """The agent commits the new pin to the tracked branch."""
    PULL_REQUEST = "pull-request"
    """The agent commits it on a branch; merging that branch is the promotion."""
    MANUAL = "manual"
    """The agent only reports the candidate; a person runs ``gitsync promote``."""


@dataclass(frozen=True, slots=True)
class Promotion:
    """``promotion:`` in a receiving environment's env.yaml: what it accepts from which environment, and how.

    Its apps render their charts at the revisions pinned in ``environments/<env>/promoted.yaml``
    (``renderers.promotion``), with ``values`` taken from the pin."""

    from_env: str
    """The upstream environment whose verified, soaked releases are promoted here (never this one)."""
    mode: PromotionMode
    soak_seconds: float
    """How long an upstream release must stay healthy and unchanged after it Succeeded to be a candidate."""
    values: tuple[str, ...]
    """Dotted value paths (``image.tag``) copied from the upstream environment's merged values into the pin.
    This environment's own override file may not set them (or anything inside them)."""


@dataclass(frozen=True, slots=True)
class Environment:
    """A parsed ``env.yaml``. The settings after ``labels`` are read by the stages named in each docstring."""

    name: str
    namespace: str
    """Every namespaced object of every app lands here unless it names one of ``allowedNamespaces``."""
    apps: tuple[str, ...]
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    """Added to ``metadata.labels`` of every object (never to selectors or pod templates)."""
    allowed_namespaces: tuple[str, ...] = ()
    """Other namespaces that namespaced objects may name explicitly (a ServiceMonitor in ``monitoring``)."""
    allow_cluster_scoped: bool = False
    """Cluster-scoped objects (ClusterRole, CRD, Namespace ...) reach the whole cluster: refused unless set."""
    cluster_scoped_kinds: tuple[str, ...] = ()
    """Custom resource kinds that are cluster-scoped; the renderer cannot ask the cluster, so it is told here."""
    prune: bool = True
    """Prune stage: delete objects that left the render."""
    prune_allow_empty: bool = False
    """Prune stage: an empty render (a deleted template folder, a bad branch) never prunes everything unless set."""
    self_heal: bool = True
    """Drift timer: re-apply when the cluster drifted from Git; ``false`` only reports the drift."""
    promotion: Promotion | None = None
    """Render and promote stages: set when this environment receives its apps' charts by promotion."""
    cluster: ClusterRef | None = None
    """The agent (``gitsync.runtime.clusters``): the cluster to apply to; None: the agent's home cluster."""


@dataclass(frozen=True, slots=True)
class ClusterRef:
    """``cluster: <name>`` (defined in the agent's ``clusters``) or ``cluster: {kubeconfigSecret: secret/key}``
    (a Secret in the agent's namespace; named after the Secret unless ``name`` is given). The agent's own
    ``clusters`` entry of the same name wins, so one repository serves both topologies."""

    name: str
    kubeconfig_secret: str = ""


# env.yaml spells keys in camelCase, like Kubernetes manifests and agent.yaml; the dataclass fields are snake_case.
_BOOL_KEYS = {
    "allowClusterScoped": "allow_cluster_scoped",
    "prune": "prune",
    "pruneAllowEmpty": "prune_allow_empty",
    "selfHeal": "self_heal",
}
_KNOWN = frozenset(
    {"namespace", "apps", "labels", "allowedNamespaces", "clusterScopedKinds", "promotion", "cluster", *_BOOL_KEYS}
)
_CLUSTER_KEYS = ("name", "kubeconfigSecret")
_PROMOTION_KEYS = ("from", "mode", "soak", "values")


def env_file(repo: Path, env: str) -> Path:
    return repo / "environments" / env / "env.yaml"


def load_environment(repo: Path, env: str, *, protected: frozenset[str] = PROTECTED_NAMESPACES) -> Environment:
    """Parse and check ``environments/<env>/env.yaml``; every problem is a ``RenderError`` at its line.

    ``namespace`` and ``allowedNamespaces`` may not name a namespace in ``protected`` (see the module doc).
    """
    path = env_file(repo, env)
    rel = relative(repo, path)
    if not _DNS_LABEL.match(env):
        raise RenderError(rel, f"environment name {env!r} is not a DNS label")
    data, lines = read_yaml_file(repo, path, what="environment file", required=True, nested=True)
    if not isinstance(data, dict):
        raise RenderError(rel, "env.yaml must be a mapping with at least namespace and apps", 1)

    def fail(key: str, problem: str) -> RenderError:
        return RenderError(rel, problem, lines.get(key, 1))

    for key in data:
        if key == "promoteTo":
            raise fail(
                key,
                "promoteTo was replaced by `promotion:` in the receiving environment's env.yaml "
                f"(promotion: {{from: {env}, mode: manual, soak: 10m, values: [image.tag]}})",
            )
        if key not in _KNOWN:
            raise fail(str(key), f"unknown key {key!r} (known: {', '.join(sorted(_KNOWN))})")
    namespace = data.get("namespace")
    if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace):
        raise fail("namespace", f"namespace must be a DNS label, got {namespace!r}")
    if namespace in protected:
        raise fail("namespace", _protected_problem(namespace))
    apps = _names(data, "apps", fail, required=True)
    if len(set(apps)) != len(apps):
        raise fail("apps", "apps lists an app twice")
    for app in apps:
        if not _DNS_LABEL.match(app):  # a folder under apps/: no path, as in the app-env's names and labels
            raise fail("apps", f"apps: {app!r} is not a DNS label (the name of a folder under apps/)")
    labels = data.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise fail("labels", 'labels must map names to strings (quote values like "true" or "1.0")')
    if LABEL_STATE in labels:
        raise fail("labels", f"labels: {LABEL_STATE} is reserved for gitsync's own state records")
    allowed_namespaces = _names(data, "allowedNamespaces", fail)
    for name in allowed_namespaces:
        if name in protected:
            raise fail("allowedNamespaces", f"allowedNamespaces: {_protected_problem(name)}")
    settings: dict[str, Any] = {}
    for key, field_name in _BOOL_KEYS.items():
        if key in data:
            if not isinstance(data[key], bool):
                raise fail(key, f"{key} must be true or false, got {data[key]!r}")
            settings[field_name] = data[key]
    return Environment(
        name=env,
        namespace=namespace,
        apps=apps,
        labels=MappingProxyType({str(k): v for k, v in labels.items()}),
        allowed_namespaces=allowed_namespaces,
        cluster_scoped_kinds=_names(data, "clusterScopedKinds", fail),
        promotion=_promotion(repo, env, data.get("promotion"), fail) if "promotion" in data else None,
        cluster=_cluster(data["cluster"], fail) if "cluster" in data else None,
        **settings,
    )


def _cluster(raw: Any, fail: Callable[[str, str], RenderError]) -> ClusterRef:
    if isinstance(raw, str) and _DNS_LABEL.match(raw):
        return ClusterRef(raw)
    if not isinstance(raw, dict):
        raise fail("cluster", f"cluster must be a cluster name or {{kubeconfigSecret: <secret>/<key>}}, got {raw!r}")
    for key in raw:
        if key not in _CLUSTER_KEYS:
            raise fail(f"cluster.{key}", f"unknown key cluster.{key} (known: {', '.join(_CLUSTER_KEYS)})")
    secret = raw.get("kubeconfigSecret", "")
    if secret and (not isinstance(secret, str) or not re.fullmatch(r"[^/\s]+/[^/\s]+", secret)):
        raise fail("cluster.kubeconfigSecret", f"cluster.kubeconfigSecret must be <secret>/<key>, got {secret!r}")
    name = raw.get("name") or (secret.partition("/")[0] if secret else None)
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        raise fail("cluster.name" if "name" in raw else "cluster", f"cluster.name must be a DNS label, got {name!r}")
    return ClusterRef(name, secret)


def _protected_problem(namespace: str) -> str:
    return (
        f"namespace {namespace!r} is protected (the cluster's own or the agent's); "
        "only the agent's operator can allow it (agent.yaml allowProtectedNamespaces)"
    )


def _promotion(repo: Path, env: str, raw: Any, fail: Callable[[str, str], RenderError]) -> Promotion:
    if not isinstance(raw, dict):
        raise fail("promotion", f"promotion must be a mapping with from, mode, soak and values, got {raw!r}")
    for key in raw:
        if key not in _PROMOTION_KEYS:
            raise fail(f"promotion.{key}", f"unknown key promotion.{key} (known: {', '.join(_PROMOTION_KEYS)})")
    source = raw.get("from")
    if not isinstance(source, str) or not _DNS_LABEL.match(source) or source == env:
        raise fail(
            "promotion.from" if "from" in raw else "promotion",
            f"promotion.from must name another environment, got {source!r}",
        )
    if not env_file(repo, source).is_file():
        raise fail(
            "promotion.from",
            f"promotion.from: environment {source!r} does not exist (no {relative(repo, env_file(repo, source))})",
        )
    modes = ", ".join(m.value for m in PromotionMode)
    try:
        mode = PromotionMode(raw.get("mode", PromotionMode.MANUAL.value))
    except ValueError:
        raise fail("promotion.mode", f"promotion.mode must be one of {modes}, got {raw.get('mode')!r}") from None
    try:
        soak = parse_duration(raw.get("soak", 0))
    except ValueError:
        raise fail(
            "promotion.soak", f"promotion.soak must be a duration like 30s, 10m or 1h, got {raw.get('soak')!r}"
        ) from None
    paths = raw.get("values") or []
    if not isinstance(paths, list):
        raise fail("promotion.values", f"promotion.values must be a list of dotted value paths, got {paths!r}")
    keys: list[tuple[str, ...]] = []
    for index, path in enumerate(paths):
        where = f"promotion.values.{index}"
        split = split_path(path) if isinstance(path, str) else ()
        if not split:
            raise fail(where, f"promotion.values: {path!r} is not a dotted value path like image.tag")
        clash = next((p for p in keys if p == split[: len(p)] or split == p[: len(split)]), None)
        if clash is not None:
            raise fail(where, f"promotion.values: {path} overlaps {'.'.join(clash)} (list each value once)")
        keys.append(split)
    return Promotion(from_env=source, mode=mode, soak_seconds=soak, values=tuple(paths))


def _names(
    data: Mapping[str, Any], key: str, fail: Callable[[str, str], RenderError], *, required: bool = False
) -> tuple[str, ...]:
    value = data.get(key)
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise fail(key, f"{key} must be a list of names, got {value!r}")
    return tuple(value)
