"""A plain-manifests app: each file of ``apps/<app>/manifests/`` read as the YAML (or JSON) it is. No Jinja.

What most teams start with and what upstream projects publish: the files are taken verbatim, so ``{{ }}`` in a
PrometheusRule or a Grafana dashboard needs no escaping. The environment still adds the ownership labels and
its ``labels``, places namespaced objects in its namespace and drops the metadata the API server writes
(``resourceVersion``, ``uid`` ...: ``renderers.manifests``). Pure apart from reading the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from renderers.chart import Chart
from renderers.errors import RenderError, UnreadableText, read_utf8
from renderers.values import relative
from renderers.yamlio import YamlError, load_manifests


def plain_documents(repo: Path, chart: Chart) -> Iterator[tuple[str, int, Any]]:
    """Every document of every manifest file as ``(repository-relative path, line, data)``, in path order."""
    root = chart.manifests_dir.resolve()
    for name in chart.manifests:
        path = chart.manifests_dir / name
        rel = relative(repo, path)
        if not path.resolve().is_relative_to(root):
            raise RenderError(rel, "is a symlink to outside the manifests/ folder")
        try:
            text = read_utf8(path)
        except UnreadableText as exc:  # not UTF-8, or too large
            raise RenderError(rel, exc.problem, exc.line) from None
        except OSError as exc:
            raise RenderError(rel, f"cannot read manifest: {exc}") from exc
        try:
            for line, data in load_manifests(text):
                yield rel, line, data
        except YamlError as exc:
            raise RenderError(rel, f"invalid YAML: {exc.problem}", exc.line) from None
