"""The render stage: an app in an environment in, every manifest (or a ``RenderError``) out.

Pure and deterministic: reads only the repository snapshot it is given, and the same inputs give byte-identical
output and the same digest. All or nothing: a render that fails anywhere returns no manifests at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitsync.model import AppEnv, Manifest
from renderers.chart import Chart, load_chart
from renderers.environment import Environment, env_file, load_environment
from renderers.errors import RenderError
from renderers.manifests import build_manifests, check_unique, digest, ordered
from renderers.plain import plain_documents
from renderers.templating import TemplateRun
from renderers.values import layer, read_values_file, relative


@dataclass(frozen=True, slots=True)
class RenderedApp:
    """The release identity of one app in one environment: its manifests and their digest."""

    app_env: AppEnv
    namespace: str
    manifests: tuple[Manifest, ...]
    """Sorted by ``gitsync.model.apply_order``, ownership labels set, namespaced objects placed."""
    digest: str
    """``sha256:<hex>`` over the canonical form of ``manifests``: changes exactly when the output does."""
    values: Mapping[str, Any] = field(hash=False, compare=False)
    """The merged values the templates saw; ``values["rollout"]`` configures the rollout strategy."""
    environment: Environment = field(compare=False)
    revision: str | None = None


def render_app(repo: Path, env: str, app: str, *, sets: Sequence[str] = (), revision: str | None = None) -> RenderedApp:
    """Render one app of environment ``env`` from the repository snapshot at ``repo``."""
    environment = load_environment(repo, env)
    return _render(repo, environment, app, sets, revision)


def render_env(
    repo: Path,
    env: str,
    *,
    apps: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    revision: str | None = None,
) -> tuple[RenderedApp, ...]:
    """Every app of ``env`` (in env.yaml order), or the named subset; the first error fails the whole call."""
    environment = load_environment(repo, env)
    return tuple(_render(repo, environment, app, sets, revision) for app in (apps or environment.apps))


def _render(repo: Path, environment: Environment, app: str, sets: Sequence[str], revision: str | None) -> RenderedApp:
    if app not in environment.apps:
        raise RenderError(
            relative(repo, env_file(repo, environment.name)),
            f"app {app!r} is not in environment {environment.name} (apps: {', '.join(environment.apps) or 'none'})",
        )
    chart = load_chart(repo, app)
    values = layer(
        read_values_file(repo, chart.path / "values.yaml"),
        read_values_file(repo, repo / "environments" / environment.name / "values" / f"{app}.yaml"),
        sets,
    )
    variables = {
        "values": values,
        "release": {
            "app": app,
            "name": app,
            "env": environment.name,
            "namespace": environment.namespace,
            "revision": revision or "",
        },
        "chart": dict(chart.meta),
        "env": {"name": environment.name, "namespace": environment.namespace, "labels": dict(environment.labels)},
    }
    manifests: list[Manifest] = []
    for path, line, body in _documents(repo, chart, variables):
        if body is not None:
            manifests.extend(build_manifests(body, path, line, environment, app))
    check_unique(manifests)
    result = ordered(manifests)
    return RenderedApp(
        app_env=AppEnv(app, environment.name),
        namespace=environment.namespace,
        manifests=result,
        digest=digest(result),
        values=values,
        environment=environment,
        revision=revision,
    )


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
