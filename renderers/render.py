"""The render stage: an app in an environment in, every manifest (or a ``RenderError``) out.

Pure and deterministic: reads only the repository snapshot it is given, and the same inputs give byte-identical
output and the same digest. All or nothing: a render that fails anywhere returns no manifests at all.

In an environment with ``promotion:`` (env.yaml), each app renders its chart (templates, values.yaml, chart.yaml
and the shared ``lib/``) from the tree of the commit pinned in ``promoted.yaml``, which the caller's ``trees``
callable supplies (``sha -> directory holding the repository at that commit``: Git's job, not the renderer's);
values layer as chart values.yaml (pinned), the pin's promoted values, the environment's override file (at the
head), then ``--set``. So rendering such an environment at commit C is a pure function of C and the pinned trees.

Bounded (``renderers.limits``): each render within its CPU time, output and node budgets, and at most
``RENDERS_AT_ONCE`` renders run at once in a process (they hold the GIL anyway), so the agent's workers together
cannot take more memory than that many hostile charts can.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitsync.model import AppEnv, Manifest
from renderers.cache import RenderCache, render_key
from renderers.environment import PROTECTED_NAMESPACES, Environment, Promotion, env_file, load_environment
from renderers.errors import AwaitingPromotion, RenderError
from renderers.inputs import Unkeyable, content_id, uses_revision
from renderers.promotion import Pin, pins_file, read_pins
from renderers.values import Values, read_values_file, read_yaml_file, relative, split_path

Trees = Callable[[str], Path]
"""A commit sha -> a directory holding the repository's tree at that commit (read-only for the renderer)."""
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
    pin: Pin | None = None
    """In an environment that receives promotions: the pin the chart was rendered from."""


def render_app(
    repo: Path,
    env: str,
    app: str,
    *,
    sets: Sequence[str] = (),
    revision: str | None = None,
    trees: Trees | None = None,
    pin: Pin | None = None,
    protected: frozenset[str] = PROTECTED_NAMESPACES,
    cache: RenderCache | None = None,
    environment: Environment | None = None,
) -> RenderedApp:
    """Render one app of environment ``env`` from the repository snapshot at ``repo``.

    ``trees`` is needed only when the environment receives promotions (see the module doc); an app there that
    has no pin yet raises ``AwaitingPromotion``. ``pin`` replaces the app's entry in ``promoted.yaml`` (what a
    proposed promotion or rollback would deploy; ``pin.app`` must be ``app``); it is a ``RenderError`` in an
    environment without ``promotion:``. ``protected``: namespaces the environment may not deploy to
    (``renderers.environment``). ``cache``: where outputs are kept by their inputs (``renderers.cache``).
    ``environment``: ``env`` as ``load_environment(repo, env, protected=protected)`` returned it, for a caller
    rendering many apps of an unchanged snapshot (the agent loads each env.yaml once per revision: one of 1,000
    apps is parsed in milliseconds, once per app it was most of a commit's render time).
    """
    if environment is None or environment.name != env:
        environment = load_environment(repo, env, protected=protected)
    pins = _pins(repo, environment)
    if pin is not None:
        if pin.app != app:
            raise ValueError(f"a pin for {pin.app} cannot render {app}")
        if environment.promotion is None:
            raise RenderError(
                relative(repo, env_file(repo, env)), f"{app}: cannot render a pin: {env} has no promotion: block"
            )
        pins = {**pins, app: pin}
    return _render(repo, environment, pins, app, sets, revision, trees, cache)


def render_env(
    repo: Path,
    env: str,
    *,
    apps: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    revision: str | None = None,
    trees: Trees | None = None,
    protected: frozenset[str] = PROTECTED_NAMESPACES,
    cache: RenderCache | None = None,
) -> tuple[RenderedApp, ...]:
    """Every app of ``env`` (in env.yaml order), or the named subset; the first error fails the whole call
    (``AwaitingPromotion`` included: render apps one by one to skip those)."""
    environment = load_environment(repo, env, protected=protected)
    pins = _pins(repo, environment)
    return tuple(
        _render(repo, environment, pins, app, sets, revision, trees, cache) for app in (apps or environment.apps)
    )


def _pins(repo: Path, environment: Environment) -> Mapping[str, Pin]:
    """``promoted.yaml`` is read only where env.yaml declares ``promotion:``; elsewhere apps follow the head."""
    return read_pins(repo, environment) if environment.promotion is not None else {}


def _render(
    repo: Path,
    environment: Environment,
    pins: Mapping[str, Pin],
    app: str,
    sets: Sequence[str],
    revision: str | None,
    trees: Trees | None,
    cache: RenderCache | None = None,
) -> RenderedApp:
    if app not in environment.apps:
        raise RenderError(
            relative(repo, env_file(repo, environment.name)),
            f"app {app!r} is not in environment {environment.name} (apps: {', '.join(environment.apps) or 'none'})",
        )
    override_file = repo / "environments" / environment.name / "values" / f"{app}.yaml"
    overrides = read_values_file(repo, override_file)
    chart_root, pin, where = repo, None, relative(repo, pins_file(repo, environment.name))
    promoted: Mapping[str, Any] = {}
    if environment.promotion is not None:
        _check_not_overridden(repo, override_file, overrides, environment.promotion)
        pin = pins.get(app)
        if pin is None:
            raise AwaitingPromotion(where, f"{app} awaits promotion from {environment.promotion.from_env} (no pin yet)")
        if trees is None:
            raise RenderError(
                where,
                f"{app} is pinned to {pin.revision[:12]}, and this render was given no way to read that commit "
                "(a pinned environment renders from Git history: pass trees)",
            )
        chart_root, promoted = trees(pin.revision), pin.values
    key = _key(repo, chart_root, override_file, environment, app, sets, revision, pin) if cache is not None else None
    output = cache.get(AppEnv(app, environment.name), key) if cache is not None and key is not None else None
    if output is None:
        # Jinja and the template machinery (about 25 ms of imports) are loaded by the first render that needs them,
        # not by a command whose every render is a cache hit.
        from renderers.chart_render import render_chart

        try:
            with _RENDERING:
                output = render_chart(chart_root, environment, app, (promoted, overrides), sets, revision, pin)
        except RenderError as e:
            if pin is None:
                raise
            # The chart's paths and lines are those of the pinned commit, which may differ from the head's.
            raise RenderError(
                e.path, f"{e.problem} (chart as of {pin.revision[:12]}, pinned in {where})", e.line
            ) from e
        if cache is not None and key is not None:
            cache.put(AppEnv(app, environment.name), key, output)
    return RenderedApp(
        app_env=AppEnv(app, environment.name),
        namespace=environment.namespace,
        manifests=output.manifests,
        digest=output.digest,
        values=output.values,
        environment=environment,
        revision=revision,
        pin=pin,
    )


def _key(
    repo: Path,
    chart_root: Path,
    override_file: Path,
    environment: Environment,
    app: str,
    sets: Sequence[str],
    revision: str | None,
    pin: Pin | None,
) -> str | None:
    """The render cache key of an app-env (``renderers.cache``); None when its inputs cannot be keyed."""
    chart, lib = chart_root / "apps" / app, chart_root / "lib"
    try:
        parts = {
            "chart": content_id(chart, chart_root),
            "lib": content_id(lib, chart_root),
            "override": content_id(override_file, repo),
            "environment": environment,
            "app": app,
            "sets": sets,
            "pin": pin,
            "revision": (revision or "") if uses_revision(chart / "templates", lib) else None,
        }
    except Unkeyable:
        return None
    return render_key(parts)


def _check_not_overridden(repo: Path, override_file: Path, overrides: Values, promotion: Promotion) -> None:
    """A promoted value comes from the pin alone: the override file may not set it, nor replace a map holding it."""
    for path in promotion.values:
        keys = split_path(path)
        node: object = overrides
        for depth, key in enumerate(keys):
            if not isinstance(node, Mapping) or key not in node:
                break
            node = node[key]
            if depth == len(keys) - 1 or not isinstance(node, Mapping):
                _, lines = read_yaml_file(repo, override_file, what="values file", required=False, nested=True)
                dotted = ".".join(keys[: depth + 1])
                raise RenderError(
                    relative(repo, override_file),
                    f"{dotted} is promoted from {promotion.from_env} (env.yaml promotion.values: {path}), "
                    "so this environment's values may not set it",
                    lines.get(dotted, 1),
                )
