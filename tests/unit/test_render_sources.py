"""Where an app's objects come from, as a user of kubectl or Helm expects it: List documents, plain-manifest
apps, templates in subfolders, files included verbatim, and content that merely looks like a template."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitsync.model import LABEL_APP, LABEL_ENV, LABEL_MANAGED_BY
from renderers import RenderError, render_app


def make_app(root: Path, files: dict[str, str], env: str = "namespace: web-dev\napps: [web]\n") -> Path:
    """An app ``web`` in environment ``dev`` made of ``files`` (paths relative to ``apps/web/``)."""
    app = root / "apps" / "web"
    for name, text in files.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    (root / "environments" / "dev").mkdir(parents=True, exist_ok=True)
    (root / "environments" / "dev" / "env.yaml").write_text(env)
    return root


def ids(root: Path) -> list[str]:
    return [str(m.id) for m in render_app(root, "dev", "web").manifests]


def error(root: Path) -> str:
    with pytest.raises(RenderError) as err:
        render_app(root, "dev", "web")
    assert "\n" not in str(err.value)
    return str(err.value)


CHART = "name: web\n"


def test_a_v1_list_stands_for_its_items_as_kubectl_expands_them(tmp_path: Path) -> None:
    listing = (
        "apiVersion: v1\nkind: List\nmetadata: {}\nitems:\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
        "- apiVersion: v1\n  kind: ServiceList\n  items:\n"
        "  - {apiVersion: v1, kind: Service, metadata: {name: s}, spec: {ports: [{port: 80}]}}\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: web-dev}}\n"
    )
    root = make_app(tmp_path, {"chart.yaml": CHART, "templates/all.yaml": listing})
    rendered = render_app(root, "dev", "web")
    assert [str(m.id) for m in rendered.manifests] == [
        "ConfigMap/web-dev/a",
        "ConfigMap/web-dev/b",
        "Service/web-dev/s",
    ]
    for manifest in rendered.manifests:
        labels = manifest.body["metadata"]["labels"]
        assert (labels[LABEL_MANAGED_BY], labels[LABEL_APP], labels[LABEL_ENV]) == ("gitsync", "web", "dev")
        assert manifest.source == "apps/web/templates/all.yaml:1"
