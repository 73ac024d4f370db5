"""The render stage: an app in an environment in, every manifest (or a ``RenderError``) out.

Pure and deterministic: reads only the repository snapshot it is given, and the same inputs give byte-identical
output and the same digest. All or nothing: a render that fails anywhere returns no manifests at all.

Bounded (``renderers.limits``): each render within its CPU time, output and node budgets, and at most
``RENDERS_AT_ONCE`` renders run at once in a process (they hold the GIL anyway), so the agent's workers together
cannot take more memory than that many hostile charts can.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitsync.model import AppEnv, Manifest
from renderers import limits
from renderers.chart import load_chart
from renderers.environment import PROTECTED_NAMESPACES, Environment, env_file, load_environment
from renderers.errors import RenderError
from renderers.manifests import build_manifest, check_unique, digest, ordered
from renderers.sandbox import time_limit
from renderers.templating import TemplateRun
from renderers.values import layer, read_values_file, relative
from renderers.yamlio import node_budget

RENDERS_AT_ONCE = 2
_RENDERING = threading.BoundedSemaphore(RENDERS_AT_ONCE)


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


def render_app(
    repo: Path,
    env: str,
    app: str,
    *,
    sets: Sequence[str] = (),
    revision: str | None = None,
    protected: frozenset[str] = PROTECTED_NAMESPACES,
) -> RenderedApp:
    """Render one app of environment ``env`` from the repository snapshot at ``repo``.

    ``protected``: namespaces the environment may not deploy to (``renderers.environment``).
    """
    environment = load_environment(repo, env, protected=protected)
    return _render(repo, environment, app, sets, revision)


def render_env(
    repo: Path,
    env: str,
    *,
    apps: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    revision: str | None = None,
    protected: frozenset[str] = PROTECTED_NAMESPACES,
) -> tuple[RenderedApp, ...]:
    """Every app of ``env`` (in env.yaml order), or the named subset; the first error fails the whole call."""
    environment = load_environment(repo, env, protected=protected)
    return tuple(_render(repo, environment, app, sets, revision) for app in (apps or environment.apps))


def _render(repo: Path, environment: Environment, app: str, sets: Sequence[str], revision: str | None) -> RenderedApp:
    if app not in environment.apps:
        raise RenderError(
            relative(repo, env_file(repo, environment.name)),
            f"app {app!r} is not in environment {environment.name} (apps: {', '.join(environment.apps) or 'none'})",
        )
    with _RENDERING:
        return _render_chart(repo, environment, app, sets, revision)


def _render_chart(
    repo: Path, environment: Environment, app: str, sets: Sequence[str], revision: str | None
) -> RenderedApp:
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
    run = TemplateRun(repo, chart, variables)
    manifests = []
    with time_limit(limits.MAX_RENDER_SECONDS), node_budget(limits.MAX_RENDER_NODES):
        for name in chart.templates:
            rendered = run.render(name)
            for line, body in rendered.documents():
                if body is not None:
                    manifests.append(build_manifest(body, rendered.path, line, environment, app))
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
