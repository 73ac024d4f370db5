"""Plan a change: render every app of every environment at two commits and compare. Pure but for the trees.

Reads only the directories ``trees`` gives (``sha -> the repository's tree at that commit``, the renderer's
``renderers.render.Trees``): no cluster, network or clock, so a pull request is planned from Git alone.

What each environment gets, as the agent would do it:
- an environment following the branch renders everything at ``head``, so its ``objects`` are the head render
  against the base render;
- an environment with ``promotion:`` renders each chart at the commit pinned in its ``promoted.yaml`` (of that
  side), so a chart or promoted-value change does not reach it on merge. That part is ``pending``: the app
  rendered at ``head`` with a pin made from the upstream environment's release at ``base`` and at ``head``
  (its promoted values as ``renderers.promotion.promoted_values`` takes them), compared. Holding everything but
  the pin at ``head`` keeps the environment's own value changes out of ``pending``: those are in ``objects``.

``live`` (``gitsync plan --live``) is the one way in for a cluster: a callable the composing layer gives, which
compares one head render with what runs (server-side dry-run), so this package stays free of clients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gitsync.change_plan.model import AppPlan, Change, ChangePlan, ObjectDiff, Rollout
from gitsync.errors import GitsyncError
from gitsync.model import Manifest, ObjectId, apply_order
from gitsync.normalise import diff_text
from gitsync.promote import rendered_change
from gitsync.redact import scrub, secret_values_of
from renderers import AwaitingPromotion, Environment, RenderError, load_environment, render_app
from renderers.promotion import Pin, env_yaml_errors, promoted_values
from renderers.render import RenderedApp, Trees

__all__ = ["Live", "plan_change"]

Live = Callable[[RenderedApp], tuple[tuple[ObjectDiff, ...], str]]
"""The head render of one app-env -> how it differs from the cluster and the error of any object the server
refused ("" for none): ``gitsync.cli.plan`` dry-runs it."""

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class _Side:
    """One app rendered at one commit: manifests and values, or why not (awaiting promotion, an error)."""

    manifests: tuple[Manifest, ...] = ()
    values: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, hash=False)
    note: str = ""
    error: str = ""
    rendered: RenderedApp | None = field(default=None, hash=False)


def plan_change(trees: Trees, base: str, head: str, env: str | None = None, *, live: Live | None = None) -> ChangePlan:
    """What merging ``head`` into ``base`` (both full commit ids) does to every environment, or to ``env`` only.

    ``trees``: commit id -> the GitOps repository's tree at that commit (``gitsync.adapters.trees.LocalTrees``
    for a local checkout; the agent's ``Source.tree``). ``live``: also compare each head render with the cluster.
    Never raises for the repository's content: a render error at ``head`` is that app's ``error`` (at ``base``,
    a ``note``: the change may be its fix). Errors of ``trees`` (a commit not there) and of ``live`` are raised.
    """
    return _Planner(trees, base, head, live).plan(env)


class _Planner:
    """One plan's renders, each made once (the pending part reuses the upstream environment's renders)."""

    def __init__(self, trees: Trees, base: str, head: str, live: Live | None) -> None:
        self.trees = _memoised(trees)
        self.base, self.head = base, head
        self.live = live
        self._renders: dict[tuple[str, str, str], _Side] = {}
        self._environments: dict[tuple[str, str], Environment | str | None] = {}

    def plan(self, only: str | None) -> ChangePlan:
        names = sorted(set(_environment_names(self.trees(self.base))) | set(_environment_names(self.trees(self.head))))
        if only is not None:
            names = [only]
        apps: list[AppPlan] = []
        unchanged: list[str] = []
        for name in self._upstream_first(names):
            for app in self._app_plans(name):
                if app.has_changes or app.note or app.error:
                    apps.append(app)
                else:
                    unchanged.append(app.key)
        secrets = secret_values_of(m.body for side in self._renders.values() for m in side.manifests)
        return ChangePlan(self.base, self.head, tuple(_scrubbed(a, secrets) for a in apps), tuple(unchanged))

    def _upstream_first(self, names: Sequence[str]) -> list[str]:
        """Environments ordered so that one comes after the environment it takes promotions from."""

        def depth(name: str, seen: frozenset[str] = frozenset()) -> int:
            environment = self.environment(self.head, name)
            if not isinstance(environment, Environment) or environment.promotion is None or name in seen:
                return 0
            return 1 + depth(environment.promotion.from_env, seen | {name})

        return sorted(names, key=lambda name: (depth(name), name))

    def environment(self, sha: str, name: str) -> Environment | str | None:
        """``env.yaml`` of ``name`` at ``sha``: parsed, its one-line error, or None when there is none."""
        key = (sha, name)
        if key not in self._environments:
            root = self.trees(sha)
            if not (root / "environments" / name / "env.yaml").is_file():
                self._environments[key] = None
            else:
                try:
                    self._environments[key] = load_environment(root, name)
                except (RenderError, GitsyncError) as e:
                    self._environments[key] = str(e)
        return self._environments[key]

    def _app_plans(self, name: str) -> list[AppPlan]:
        before, after = self.environment(self.base, name), self.environment(self.head, name)
        if isinstance(after, str):
            return [AppPlan(name, "", error=after)]
        if after is None and before is None:
            return [AppPlan(name, "", error=f"environments/{name}/env.yaml: no such environment at base or head")]
        names = [*_apps(after)] + [a for a in _apps(before) if a not in _apps(after)]
        return [self._app_plan(name, app, after) for app in names]

    def _app_plan(self, env: str, app: str, environment: Environment | None) -> AppPlan:
        old, new = self.render(self.base, env, app), self.render(self.head, env, app)
        notes = [n for n in (new.note, f"at base: {old.error}" if old.error else "") if n]
        plan = AppPlan(env, app, note="; ".join(notes), error=new.error)
        if new.error:
            return plan
        if self.live is not None and new.rendered is not None:
            live, refused = self.live(new.rendered)
            plan = replace(plan, live=live, error=refused)
        # An app awaiting its first promotion at the head is not deployed by the merge, and nothing of what runs
        # is deleted for it either: its objects do not change.
        objects = () if new.note else _diffs(old.manifests, new.manifests, ("base", "head"))
        if objects:
            images = rendered_change(old.manifests, new.manifests).images
            plan = replace(plan, objects=objects, images=images)
            try:
                plan = replace(plan, rollout=_rollout(old.manifests, new.manifests, new.values, plan.key))
            except GitsyncError as e:
                return replace(plan, error=str(e))
        if environment is not None and environment.promotion is not None:
            plan = self._pending(plan, environment)
        return plan

    def render(self, sha: str, env: str, app: str, pin: Pin | None = None) -> _Side:
        """``app`` of ``env`` rendered at ``sha`` (with ``pin`` instead of its entry in promoted.yaml), once."""
        key = (sha, env, app) if pin is None else (sha, env, f"{app}\0{pin.revision}")
        if key not in self._renders:
            self._renders[key] = self._render(sha, env, app, pin)
        return self._renders[key]

    def _render(self, sha: str, env: str, app: str, pin: Pin | None) -> _Side:
        environment = self.environment(sha, env)
        if not isinstance(environment, Environment) or app not in environment.apps:
            return _Side()
        try:
            rendered = render_app(self.trees(sha), env, app, revision=sha, trees=self.trees, pin=pin)
        except AwaitingPromotion as e:
            return _Side(note=e.problem)
        except (RenderError, GitsyncError) as e:
            return _Side(error=str(e))
        return _Side(rendered.manifests, rendered.values, rendered=rendered)

    def _pending(self, plan: AppPlan, environment: Environment) -> AppPlan:
        """What the next promotion of ``plan.app`` into ``environment`` brings because of this change."""
        assert environment.promotion is not None
        upstream, paths = environment.promotion.from_env, environment.promotion.values
        sides: list[_Side] = []
        for sha in (self.base, self.head):
            source = self.render(sha, upstream, plan.app)
            if source.error and sha == self.head:
                # No release of the app can come from upstream at the head (its row says why): nothing this change
                # brings can be promoted, and nothing of what the pinned environment runs is removed for it.
                return plan
            if source.error:
                # Broken upstream at the base: compare with the pin the environment runs at the head.
                sides.append(self.render(self.head, plan.env, plan.app))
                continue
            if source.rendered is None:
                sides.append(_Side())
                continue
            try:
                # The paths are the head's env.yaml (``environment``): an error points at its line there.
                taken = promoted_values(source.values, paths, env_yaml_errors(self.trees(self.head), plan.env))
                pin = Pin(plan.app, sha, upstream, taken)
            except RenderError as e:
                sides.append(_Side(error=str(e)))
                continue
            sides.append(self.render(self.head, plan.env, plan.app, pin))
        before, after = sides
        if after.error:
            note = f"after promotion from {upstream}: {after.error}"
            return replace(plan, note="; ".join(n for n in (plan.note, note) if n))
        pending = _diffs(before.manifests, after.manifests, ("pinned", "promoted"))
        if not pending:
            return plan
        try:
            rollout = _rollout(before.manifests, after.manifests, after.values, plan.key)
        except GitsyncError as e:
            return replace(plan, error=str(e))
        return replace(plan, pending=pending, promotion_from=upstream, pending_rollout=rollout)


def _memoised(trees: Trees) -> Trees:
    """``trees`` asked once per commit (``LocalTrees`` runs git for each call, even when its cache has the tree)."""
    known: dict[str, Path] = {}

    def tree(sha: str) -> Path:
        if sha not in known:
            known[sha] = trees(sha)
        return known[sha]

    return tree


def _environment_names(root: Path) -> tuple[str, ...]:
    return tuple(p.parent.name for p in (root / "environments").glob("*/env.yaml"))


def _apps(environment: Environment | str | None) -> tuple[str, ...]:
    return environment.apps if isinstance(environment, Environment) else ()


def _diffs(before: Sequence[Manifest], after: Sequence[Manifest], labels: tuple[str, str]) -> tuple[ObjectDiff, ...]:
    """Each object added, changed or removed from ``before`` to ``after``, in apply order."""
    old = {m.id: m for m in before}
    new = {m.id: m for m in after}
    diffs = []
    for ref in sorted(old.keys() | new.keys(), key=apply_order):
        a, b = old.get(ref), new.get(ref)
        if a is not None and b is not None and a.fingerprint == b.fingerprint:
            continue
        change = Change.ADDED if a is None else Change.REMOVED if b is None else Change.CHANGED
        text = diff_text(ref, a.body if a else None, b.body if b else None, labels)
        diffs.append(ObjectDiff(str(ref), change, text))
    return tuple(diffs)


def _rollout(before: Sequence[Manifest], after: Sequence[Manifest], values: Mapping[str, Any], key: str) -> Rollout:
    """The rollout the change starts: the app's strategy when its workload's pod template changes (a direct
    first deployment when the workload is new), rolling when only another Deployment's does, none otherwise."""
    from gitsync.strategy.policy import Strategy, parse_policy

    old = {m.id: m for m in before}
    moved = [m.id for m in after if _is_deployment(m.id) and _template(old.get(m.id)) != _template(m)]
    if not moved:
        return Rollout.NONE
    policy = parse_policy(values, source=f"{key}: values")
    deployments = [m.id for m in after if _is_deployment(m.id)]
    named = [d for d in deployments if d.name == policy.workload] if policy.workload else deployments
    workload = named[0] if len(named) == 1 else None
    if policy.strategy is Strategy.ROLLING or workload not in moved:
        return Rollout.ROLLING
    if workload not in old:
        return Rollout.FIRST
    return Rollout.CANARY if policy.strategy is Strategy.CANARY else Rollout.BLUE_GREEN


def _is_deployment(ref: ObjectId) -> bool:
    return ref.kind == "Deployment" and ref.group == "apps"


def _template(manifest: Manifest | None) -> Any:
    return None if manifest is None else (manifest.body.get("spec") or {}).get("template")


def _scrubbed(plan: AppPlan, secrets: Iterable[str]) -> AppPlan:
    """``plan`` with every rendered Secret value, wherever it appears (an env var, an error), replaced by ``***``:
    Secret objects' own diffs are masked already (``gitsync.normalise.mask_secret``)."""
    values = tuple(secrets)
    if not values:
        return plan

    def clean(diffs: tuple[ObjectDiff, ...]) -> tuple[ObjectDiff, ...]:
        return tuple(replace(d, diff=scrub(d.diff, values)) for d in diffs)

    return replace(
        plan,
        objects=clean(plan.objects),
        pending=clean(plan.pending),
        live=None if plan.live is None else clean(plan.live),
        images=tuple((scrub(a, values), scrub(b, values)) for a, b in plan.images),
        note=scrub(plan.note, values),
        error=scrub(plan.error, values),
    )
