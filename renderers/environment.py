"""``environments/<env>/env.yaml``: where an environment's apps run and the settings that apply to all of them.

Unknown keys are errors (a typo such as ``prune_alow_empty`` must not silently keep the default).

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
from pathlib import Path
from types import MappingProxyType
from typing import Any

from renderers.errors import RenderError
from renderers.values import read_yaml_file, relative

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")

AGENT_NAMESPACE = "gitsync-system"
"""Where deploy/manifests installs the agent; the agent protects the namespace it actually runs in."""
SYSTEM_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})
PROTECTED_NAMESPACES = SYSTEM_NAMESPACES | {AGENT_NAMESPACE}
"""What ``load_environment`` refuses unless told otherwise (the CLI's rule; the agent computes its own)."""


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
    promote_to: str | None = None
    """Promote stage: the environment that receives this one's values once a release here is verified."""


# env.yaml spells keys in camelCase, like Kubernetes manifests and agent.yaml; the dataclass fields are snake_case.
_BOOL_KEYS = {
    "allowClusterScoped": "allow_cluster_scoped",
    "prune": "prune",
    "pruneAllowEmpty": "prune_allow_empty",
    "selfHeal": "self_heal",
}
_KNOWN = frozenset({"namespace", "apps", "labels", "allowedNamespaces", "clusterScopedKinds", "promoteTo", *_BOOL_KEYS})


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
    data, lines = read_yaml_file(repo, path, what="environment file", required=True)
    if not isinstance(data, dict):
        raise RenderError(rel, "env.yaml must be a mapping with at least namespace and apps", 1)

    def fail(key: str, problem: str) -> RenderError:
        return RenderError(rel, problem, lines.get(key, 1))

    for key in data:
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
    labels = data.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise fail("labels", 'labels must map names to strings (quote values like "true" or "1.0")')
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
    promote_to = data.get("promoteTo")
    if promote_to is not None and not (isinstance(promote_to, str) and _DNS_LABEL.match(promote_to)):
        raise fail("promoteTo", f"promoteTo must name an environment, got {promote_to!r}")
    return Environment(
        name=env,
        namespace=namespace,
        apps=apps,
        labels=MappingProxyType({str(k): v for k, v in labels.items()}),
        allowed_namespaces=allowed_namespaces,
        cluster_scoped_kinds=_names(data, "clusterScopedKinds", fail),
        promote_to=promote_to,
        **settings,
    )


def _protected_problem(namespace: str) -> str:
    return (
        f"namespace {namespace!r} is protected (the cluster's own or the agent's); "
        "only the agent's operator can allow it (agent.yaml allowProtectedNamespaces)"
    )


def _names(
    data: Mapping[str, Any], key: str, fail: Callable[[str, str], RenderError], *, required: bool = False
) -> tuple[str, ...]:
    value = data.get(key)
    if value is None and not required:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise fail(key, f"{key} must be a list of names, got {value!r}")
    return tuple(value)
