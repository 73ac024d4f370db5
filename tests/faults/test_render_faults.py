"""Broken and hostile repositories: each fails the render with its exact one-line error, and returns nothing.

A render that raises returns no manifests, so no stage after it can apply anything (``renderers.render`` is
all or nothing); ``test_cli_sync_applies_nothing`` checks the same through ``gitsync sync`` against a cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus import CHART, ENV, Fault, Link, make_repo

from renderers import RenderError, render_env

ENV_YAML = f"{ENV}/env.yaml"
PROTECTED = (
    "is protected (the cluster's own or the agent's); only the agent's operator can allow it "
    "(agent.yaml allowProtectedNamespaces)"
)

NAMESPACES = [
    Fault(
        "env-namespace-kube-system",
        {ENV_YAML: "apps: [web]\nnamespace: kube-system\n"},
        f"{ENV_YAML}:2: namespace 'kube-system' {PROTECTED}",
    ),
    Fault(
        "env-namespace-kube-public",
        {ENV_YAML: "namespace: kube-public\napps: [web]\n"},
        f"{ENV_YAML}:1: namespace 'kube-public' {PROTECTED}",
    ),
    Fault(
        "env-namespace-kube-node-lease",
        {ENV_YAML: "namespace: kube-node-lease\napps: [web]\n"},
        f"{ENV_YAML}:1: namespace 'kube-node-lease' {PROTECTED}",
    ),
    Fault(
        "env-namespace-agent-own",
        {ENV_YAML: "namespace: gitsync-system\napps: [web]\n"},
        f"{ENV_YAML}:1: namespace 'gitsync-system' {PROTECTED}",
    ),
    Fault(
        "env-allowed-namespaces-kube-system",
        {ENV_YAML: "namespace: web-dev\napps: [web]\nallowedNamespaces: [monitoring, kube-system]\n"},
        f"{ENV_YAML}:3: allowedNamespaces: namespace 'kube-system' {PROTECTED}",
    ),
    Fault(
        "object-in-kube-system",
        {
            f"{CHART}/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\n"
            "metadata:\n  name: c\n  namespace: kube-system\n"
        },
        f"{CHART}/templates/cm.yaml:1: ConfigMap/c is in namespace 'kube-system', outside environment dev's namespace "
        "'web-dev' (list it in env.yaml allowed_namespaces to allow it)",
    ),
]

CASES = [*NAMESPACES]


@pytest.mark.parametrize("fault", [case.param() for case in CASES])
def test_render_fault_is_one_line_and_renders_nothing(tmp_path: Path, fault: Fault) -> None:
    repo = make_repo(tmp_path, fault.changes)
    with pytest.raises(RenderError) as raised:
        render_env(repo, "dev")
    assert str(raised.value) == fault.error.replace("{outside}", str(tmp_path / "outside"))


def test_the_operator_may_allow_a_protected_namespace(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {ENV_YAML: "namespace: kube-system\napps: [web]\n"})
    (rendered,) = render_env(repo, "dev", protected=frozenset({"kube-public"}))
    assert [m.id.namespace for m in rendered.manifests] == ["kube-system"]


def test_the_base_repository_renders(tmp_path: Path) -> None:
    (rendered,) = render_env(make_repo(tmp_path), "dev")
    assert [str(m.id) for m in rendered.manifests] == ["ConfigMap/web-dev/web"]


_ = Link  # used by the symlink cases below
