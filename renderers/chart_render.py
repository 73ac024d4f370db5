"""Rendering one chart: its values layered, its templates run in the sandbox (or a plain app's files read), its
manifests built, checked unique and ordered, within the render's CPU time and node budgets (``renderers.limits``).

Separate from ``renderers.render`` so that only a render the cache cannot answer loads Jinja and the template
machinery: a ``gitsync diff`` whose every app-env is a cache hit does not pay for importing them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from gitsync.model import Manifest
from renderers import limits
from renderers.cache import RenderOutput
from renderers.chart import Chart, load_chart
from renderers.environment import Environment
from renderers.manifests import build_manifests, check_unique, digest, ordered
from renderers.plain import plain_documents
from renderers.promotion import Pin
from renderers.sandbox import time_limit
from renderers.templating import TemplateRun
from renderers.values import layer, read_values_file
from renderers.yamlio import node_budget

__all__ = ["render_chart"]


def render_chart(
    chart_root: Path,
    environment: Environment,
    app: str,
    layers: tuple[Mapping[str, Any], ...],
    sets: Sequence[str],
    revision: str | None,
    pin: Pin | None,
) -> RenderOutput:
    """The chart under ``chart_root`` rendered with ``layers`` on top of its values.yaml: values and manifests."""
    chart = load_chart(chart_root, app)
    values = layer((read_values_file(chart_root, chart.path / "values.yaml"), *layers), sets)
    variables = {
        "values": values,
        "release": {
            "app": app,
            "name": app,
            "env": environment.name,
            "namespace": environment.namespace,
            "revision": pin.revision if pin is not None else revision or "",
        },
        "chart": dict(chart.meta),
        "env": {"name": environment.name, "namespace": environment.namespace, "labels": dict(environment.labels)},
    }
    manifests: list[Manifest] = []
    with time_limit(limits.MAX_RENDER_SECONDS), node_budget(limits.MAX_RENDER_NODES):
        for path, line, body in _documents(chart_root, chart, variables):
            if body is not None:
                manifests.extend(build_manifests(body, path, line, environment, app))
    check_unique(manifests)
    in_order = ordered(manifests)
    return RenderOutput(values, in_order, digest(in_order))


def _documents(repo: Path, chart: Chart, variables: Mapping[str, Any]) -> Iterator[tuple[str, int, Any]]:
    """``(path, line, data)`` of each document: a plain app's files as they are, or a chart's rendered templates."""
    if chart.manifests:
        yield from plain_documents(repo, chart)
        return
    run = TemplateRun(repo, chart, variables)
    for name in chart.templates:
        rendered = run.render(name)
        for line, body in rendered.documents():
            yield rendered.path, line, body
