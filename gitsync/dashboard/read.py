"""Gathering what the dashboard shows, from what the agent already keeps: reads only, nothing is ever written.

- the grid: one list per state part (``status``, ``history``, ``rollout``) across the namespaces, each
  ConfigMap parsed only when its resourceVersion moved, and read through the same ``History`` and
  ``describe_rollout`` as ``gitsync status`` and ``gitsync history`` (a ``StateStore`` answering from the list);
- one app-env: its three state documents, its inventory's objects with their health (ids and reasons only, never
  an object's content), the ready replicas of its rollout's tracks, and the analysis values seen so far;
- the Git ledger (``gitsync.audit`` rows), re-read at most every ``LEDGER_SECONDS``, each line's signature checked
  when allowed signers are known (``LedgerRows``' ``seal``);
- a release's rendered diff: the render at that revision against the one before, Secret values masked
  (``normalise.diff_text``) and any rendered secret value scrubbed from the text besides.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gitsync import inventory as inventories
from gitsync.adapters.commits import read_commits
from gitsync.adapters.gitwrite import Session
from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.state import LABEL_STATE, ConfigMapStateStore, document
from gitsync.audit import AuditRow, audit_rows, commits_of
from gitsync.cache import WatchCache
from gitsync.dashboard.view import Cell, Grid, LiveView, build_cell, build_grid, build_live, charted
from gitsync.errors import GitsyncError
from gitsync.health import WORKLOAD_KINDS, Health, Listed, assess, assess_workload
from gitsync.history import HISTORY_PART, STATUS_PART, History, Release, Status
from gitsync.ledger import LedgerEntry, Seal, SignersError
from gitsync.model import LABEL_APP, LABEL_ENV, LABEL_MANAGED_BY, MANAGER, AppEnv, Json, ObjectId
from gitsync.normalise import diff_text, normalise
from gitsync.ports import Ledger
from gitsync.promotion import topology
from gitsync.redact import scrub, secret_values_of
from gitsync.strategy.control import describe_rollout
from gitsync.strategy.executor import PART as ROLLOUT_PART
from gitsync.strategy.executor import made_deployments, made_for
from gitsync.strategy.policy import RolloutPolicy, parse_policy
from renderers import RenderedApp, render_app

__all__ = ["Board", "LedgerRows", "Renders", "env_order"]

LEDGER_SECONDS = 5.0
"""The ledger is fetched from the remote on a read; a page load within this of the last read reuses it."""
SERIES_LIMIT = 60
REREAD_ONE_BY_ONE = 10
RENDERS_KEPT = 64


def env_order(repo: Path) -> tuple[str, ...]:
    """The repository's environments, upstream before downstream (staging before prod), then by name."""
    upstream = topology(repo).upstream

    def depth(env: str) -> int:
        hops, seen = 0, {env}
        while env in upstream and upstream[env].from_env not in seen:
            env = upstream[env].from_env
            seen.add(env)
            hops += 1
        return hops

    names = [folder.name for folder in (repo / "environments").glob("*/") if (folder / "env.yaml").is_file()]
    return tuple(sorted(names, key=lambda env: (depth(env), env)))


class _Listed:
    """A ``StateStore`` (``load`` only) answering from one list of a part's ConfigMaps; each parsed once per
    resourceVersion (the parse cache outlives the list)."""

    def __init__(self, part: str, cache: dict[tuple[str, str], tuple[str, Json]]) -> None:
        self.part = part
        self._cache = cache
        self._docs: dict[tuple[str, str, str], tuple[Json, str]] = {}

    def fill(self, items: Iterable[Json]) -> None:
        for live in items:
            meta = live["metadata"]
            labels = meta.get("labels") or {}
            name = (str(meta["namespace"]), str(meta["name"]))
            version = str(meta["resourceVersion"])
            cached = self._cache.get(name)
            if cached is None or cached[0] != version:
                cached = (version, document(live, self.part)[0])
                self._cache[name] = cached
            key = (str(labels.get(LABEL_APP, "")), str(labels.get(LABEL_ENV, "")), name[0])
            self._docs[key] = (cached[1], version)

    def app_envs(self) -> list[tuple[AppEnv, str]]:
        return [(AppEnv(app, env), ns) for app, env, ns in self._docs if app and env]

    def load(self, key: AppEnv, namespace: str, part: str) -> tuple[Json, str]:
        return self._docs.get((key.app, key.env, namespace), ({}, ""))

    def version(self, key: AppEnv, namespace: str) -> str:
        return self.load(key, namespace, self.part)[1]

    def keys(self, env: str, namespace: str, part: str) -> frozenset[AppEnv]:
        return frozenset(key for key, ns in self.app_envs() if key.env == env and ns == namespace)

    def save(self, key: AppEnv, namespace: str, part: str, data: Json, version: str) -> str:
        raise TypeError("the dashboard writes nothing")

    def delete(self, key: AppEnv, namespace: str, part: str) -> None:
        raise TypeError("the dashboard writes nothing")


def _name(item: Json) -> tuple[str, str]:
    return str(item["metadata"]["namespace"]), str(item["metadata"]["name"])


def _ref(item: Json) -> ObjectId:
    return ObjectId("", "ConfigMap", *_name(item))


def _moved(item: Json, parsed: Mapping[tuple[str, str], tuple[str, Json]]) -> bool:
    cached = parsed.get(_name(item))
    return cached is None or cached[0] != str(item["metadata"]["resourceVersion"])


class LedgerRows:
    """The audit rows of a repository's ledger (``ports.Ledger``) joined with the commits it names, read from
    ``session`` (the agent's bare cache, or a person's clone); cached for ``LEDGER_SECONDS``. With ``seal`` (the
    agent's ``repo.verify.allowedSignersFile``, ``gitsync dashboard --allowed-signers``) each row carries its
    line's signature state, as ``gitsync audit --allowed-signers`` shows it; while the allowed signers file cannot
    be used the rows carry none and ``problem`` says why (one line naming the file)."""

    def __init__(self, ledger: Ledger, session: Session, seal: Callable[[LedgerEntry], Seal] | None = None) -> None:
        self._ledger = ledger
        self._session = session
        self._seal = seal
        self._lock = threading.Lock()
        self._read_at = -LEDGER_SECONDS
        self._rows: tuple[AuditRow, ...] = ()
        self.problem = ""

    def __call__(self) -> tuple[AuditRow, ...]:
        with self._lock:
            if time.monotonic() - self._read_at >= LEDGER_SECONDS:
                notes: Mapping[str, tuple[LedgerEntry, ...]] = self._ledger.read()
                with self._session() as run:
                    commits = commits_of(notes, lambda shas: read_commits(run, shas))
                try:
                    self._rows, self.problem = audit_rows(notes, commits, seal=self._seal), ""
                except SignersError as e:
                    self._rows, self.problem = audit_rows(notes, commits), str(e)
                self._read_at = time.monotonic()
            return self._rows


class Renders:
    """Renders an app-env as of a commit: ``tree(sha)`` is the repository's tree at that commit (the agent's
    snapshots, or the clone's ``LocalTrees``), which is also where pinned charts are read. Renders are kept per
    (app-env, commit): they never change."""

    def __init__(self, tree: Callable[[str], Path]) -> None:
        self._tree = tree
        self._memo: dict[tuple[AppEnv, str], RenderedApp | None] = {}

    def render(self, key: AppEnv, revision: str) -> RenderedApp | None:
        """None when it cannot be rendered (no such commit here, a render error): the page then goes without."""
        if not revision:
            return None
        memo = (key, revision)
        if memo not in self._memo:
            try:
                # Only read, never applied: a namespace the agent is told to refuse does not hide its releases.
                rendered: RenderedApp | None = render_app(
                    self._tree(revision), key.env, key.app, revision=revision, trees=self._tree, protected=frozenset()
                )
            except (GitsyncError, OSError, ValueError):
                rendered = None
            if len(self._memo) >= RENDERS_KEPT:
                self._memo.pop(next(iter(self._memo)))  # the oldest: pages look at recent releases
            self._memo[memo] = rendered
        return self._memo[memo]

    def policy(self, key: AppEnv, revision: str) -> RolloutPolicy | None:
        rendered = self.render(key, revision)
        if rendered is None:
            return None
        try:
            return parse_policy(rendered.values, source=f"{key}: values")
        except GitsyncError:
            return None

    def diff(self, key: AppEnv, before: str, after: str) -> str:
        """The rendered change from ``before`` to ``after``, object by object; Secret values masked."""
        old, new = self.render(key, before), self.render(key, after)
        if new is None:
            return ""
        olds = {m.id: m.body for m in old.manifests} if old is not None else {}
        news = {m.id: m.body for m in new.manifests}
        values = secret_values_of([*olds.values(), *news.values()])
        parts = []
        for ref in sorted(set(olds) | set(news), key=str):
            before_body, after_body = olds.get(ref), news.get(ref)
            if before_body != after_body:
                text = diff_text(
                    ref, normalise(before_body) if before_body else None, normalise(after_body) if after_body else None
                )
                parts.append(
                    text.replace(f"live/{ref}", f"{before[:7] or 'none'}/{ref}").replace(
                        f"desired/{ref}", f"{after[:7]}/{ref}"
                    )
                )
        return scrub("".join(parts), values)


def _normalised(body: Json | None) -> Json | None:
    return normalise(body) if body is not None else None


@dataclass(frozen=True, slots=True)
class ObjectHealth:
    ref: str
    health: str
    reason: str


class Board:
    """Everything the pages show, read through the ``Cluster`` port. Thread-safe: every request thread reads."""

    def __init__(
        self,
        cluster: KubeCluster,
        *,
        env_order: Sequence[str] = (),
        ledger: LedgerRows | None = None,
        renders: Renders | None = None,
        scope: Callable[[], Iterable[str]] | None = None,
        cache: WatchCache | None = None,
    ) -> None:
        """``scope``: the namespaces to read state from, for credentials that may not list ConfigMaps across
        the cluster (the agent's least-privilege RBAC); None lists across all namespaces in one request."""
        self._cluster = cluster
        self._scope = scope
        self._cache = cache
        self.store = ConfigMapStateStore(cluster, cache)
        self.env_order = tuple(env_order)
        self._ledger = ledger
        self.renders = renders
        self._parsed: dict[str, dict[tuple[str, str], tuple[str, Json]]] = {}
        self._namespaces: dict[AppEnv, str] = {}
        self._cells: dict[AppEnv, tuple[tuple[str, ...], Cell]] = {}
        self._series: dict[AppEnv, dict[str, list[tuple[int, float]]]] = {}
        self._lock = threading.Lock()

    # -- the grid ----------------------------------------------------------------------------------------------

    def _listed(self, part: str) -> _Listed:
        """One part's ConfigMaps: from the agent's watch cache when it has one (no request: the grid is rebuilt
        every two seconds while a page is open); otherwise listed as metadata, then only those whose
        resourceVersion moved are read, one by one, or all in one list when more than ``REREAD_ONE_BY_ONE``
        moved (the first load)."""
        selector = f"{LABEL_STATE}={part},{LABEL_MANAGED_BY}={MANAGER}"
        with self._lock:
            parsed = self._parsed.setdefault(part, {})
            listed = _Listed(part, parsed)
            for namespace in sorted(self._scope()) if self._scope is not None else [""]:
                if self._cache is not None:
                    cached = self._cache.objects("", "ConfigMap", namespace)
                    listed.fill(i for i in cached if (i["metadata"].get("labels") or {}).get(LABEL_STATE) == part)
                    continue
                heads = self._cluster.list("", "ConfigMap", namespace, selector, metadata_only=True).items
                moved = [h for h in heads if _moved(h, parsed)]
                if len(moved) > REREAD_ONE_BY_ONE:
                    listed.fill(self._cluster.list("", "ConfigMap", namespace, selector).items)
                    continue
                fresh = {_name(h): self._cluster.get(_ref(h)) for h in moved}
                items = (fresh.get(_name(h), h) for h in heads)  # unmoved: the metadata finds the parsed document
                listed.fill(item for item in items if item is not None)
        return listed

    def grid(self) -> Grid:
        statuses, histories, rollouts = (self._listed(p) for p in (STATUS_PART, HISTORY_PART, ROLLOUT_PART))
        cells: list[Cell] = []
        for key, namespace in statuses.app_envs():
            versions = (namespace, *(listed.version(key, namespace) for listed in (statuses, histories, rollouts)))
            cached = self._cells.get(key)
            if cached is None or cached[0] != versions:  # built again only when one of its documents moved
                status = History(statuses).status(key, namespace)
                releases = History(histories).releases(key, namespace)
                cell = build_cell(status, namespace, releases, describe_rollout(rollouts, key, namespace))
                cached = self._cells[key] = (versions, cell)
            cells.append(cached[1])
            self._namespaces[key] = namespace
        return build_grid(cells, self.env_order)

    def namespaces(self) -> frozenset[str]:
        """Where the app-envs' state lives (what a person must be allowed to read to see the board)."""
        if not self._namespaces:
            self.grid()
        return frozenset(self._namespaces.values())

    def namespace(self, key: AppEnv) -> str | None:
        if key not in self._namespaces:
            self.grid()
        return self._namespaces.get(key)

    # -- one app-env -------------------------------------------------------------------------------------------

    def status(self, key: AppEnv, namespace: str) -> Status:
        return History(self.store).status(key, namespace)

    def releases(self, key: AppEnv, namespace: str) -> tuple[Release, ...]:
        return History(self.store).releases(key, namespace)

    def live(self, key: AppEnv, namespace: str, repo: str) -> LiveView:
        """The rollout now; each analysis value measured since the dashboard first looked is kept for its chart."""
        rollout = describe_rollout(self.store, key, namespace)
        with self._lock:
            seen = self._series.setdefault(key, {})
            for check in rollout.get("analysis", []):
                value = charted(check.get("value"))
                if value is not None:
                    points = seen.setdefault(str(check["check"]), [])
                    if not points or points[-1][0] != check["measurements"]:
                        points.append((int(check["measurements"]), value))
                        del points[:-SERIES_LIMIT]
            series = {name: [v for _, v in points] for name, points in seen.items()}
        replicas: dict[str, int] = {}
        for deployment in self._made(key, namespace) if rollout else ():
            name = str(deployment["metadata"]["name"])
            track = next((t for t in ("canary", "blue", "green") if name.endswith(f"-{t}")), "stable")
            replicas[track] = replicas.get(track, 0) + int((deployment.get("status") or {}).get("readyReplicas") or 0)
        revision = str(rollout.get("revision") or self.status(key, namespace).release_revision)
        policy = self.renders.policy(key, revision) if self.renders is not None and revision else None
        return build_live(key, rollout, policy, replicas, series, repo)

    def _made(self, key: AppEnv, namespace: str) -> tuple[Json, ...]:
        """The rollout's Deployments: from the agent's watch cache when it serves the board, else listed."""
        if self._cache is None:
            return made_deployments(self._cluster, key, namespace)
        return tuple(d for d in self._cache.objects("apps", "Deployment", namespace) if made_for(d, key))

    def objects(self, key: AppEnv, namespace: str) -> tuple[ObjectHealth, ...]:
        """Each object of the inventory with its health and reason (never its content)."""
        refs = sorted(inventories.load(self.store, key, namespace).objects, key=str)
        reader = Listed(self._cluster) if self._cache is None else self._cache
        out = []
        for ref in refs:
            live = reader.get(ref)
            health: Health
            if ref.kind in WORKLOAD_KINDS and live is not None and ref.namespace:
                health = assess_workload(live, reader.pods(ref.namespace))
            else:
                health = assess(live)
            out.append(ObjectHealth(str(ref), str(health.status), health.reason))
        return tuple(out)

    # -- Git ---------------------------------------------------------------------------------------------------

    def ledger(self) -> tuple[AuditRow, ...]:
        """The ledger's rows, newest first (empty without a ledger, or when it cannot be read now)."""
        if self._ledger is None:
            return ()
        try:
            return tuple(self._ledger())
        except GitsyncError:
            return ()

    def ledger_problem(self) -> str:
        """Why the ledger's signatures are not shown though allowed signers were given ("" when they are)."""
        return self._ledger.problem if self._ledger is not None else ""

    def diff(self, key: AppEnv, namespace: str, revision: str) -> str | None:
        """The rendered change a release brought (None: no repository to render from)."""
        if self.renders is None:
            return None
        revisions = [r.revision for r in self.releases(key, namespace)]  # newest first
        later = revisions.index(revision) if revision in revisions else len(revisions)
        before = next((r for r in revisions[later:] if r != revision), "")
        return self.renders.diff(key, before, revision)
