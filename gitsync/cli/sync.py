"""``gitsync sync``: render an environment (or one app) and apply it to the cluster, once.

Creates the environment's namespace when it is missing, as the agent does, and refuses one being deleted (every
create in it would fail until it is gone: exit 3); apps that install Namespaces or CRDs go first, so another app's
custom resources find their kind served. Apps that left the environment's ``env.yaml`` while gitsync still holds
their objects are then removed as the agent removes them (``departures``), or reported when not pruned. Progress
bars on a terminal, structured log events otherwise, and a one-line summary per app. Exit status, the rule of every
command that talks to a cluster (``exit_status``): 0 when every object synced, 2 when something needs a change of
input (render error, an object the server refuses, a conflict with another owner, forbidden), 3 when trying again
may succeed (cluster unreachable, HTTP 5xx or 429, a CRD not Established in time, a namespace being deleted);
``diff`` adds 1 for "changes found". Also home of what ``gitsync diff`` shares with it: rendering the targets,
connecting to the cluster, and the apps that left the environment; and of what every command that talks to a
cluster shares: the one-line failure, the exit rule, the console tables are printed to.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import click

from gitsync import log as logging
from gitsync.apply import ChangeSetEntry
from gitsync.errors import GitsyncError, NamespaceTerminatingError, Retry, TerminalError, retry_of, retry_of_all

if TYPE_CHECKING:  # importing these at run time pulls in the renderer and the Kubernetes client
    from rich.console import Console

    from gitsync.adapters.kube import KubeCluster
    from gitsync.model import AppEnv, ObjectId
    from gitsync.plan import ListSnapshot
    from gitsync.ports import LiveReader
    from gitsync.reconcile import Request
    from gitsync.result import ReconcileResult, Target
    from gitsync.sync import SyncResult
    from renderers import Environment, RenderedApp

T = TypeVar("T")
EXIT_ERROR = 2
"""Terminal: the input (repository, kubeconfig, a field another owner holds) must change first."""
EXIT_RETRY = 3
"""Transient: the same command may succeed later (network, HTTP 5xx or 429, a parent not ready in time)."""
PREVIEW_WORKERS = 4
"""Apps previewed at once by ``diff`` and ``status`` (each plan has its own pool of dry-runs)."""
LISTS = 8
"""Lists of live objects ``diff`` and ``status`` run at once, for all the environment's apps."""

repo_option = click.option(
    "--repo", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True, help="GitOps repository."
)
env_option = click.option("--env", "env", required=True, help="Environment name (environments/<env>).")
app_option = click.option("--app", "app", default=None, help="Only this app (default: every app of the environment).")
kubeconfig_option = click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="KUBECONFIG",
    default=None,
    help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster service account).",
)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """One line on stderr and the exit status; never a traceback for an error a user can fix."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


PIPE_WIDTH = 2000
"""Columns of a table printed anywhere but a terminal, where rich would assume 80 and wrap: wide enough that a
row (an audit row's author, subject and evidence together) stays one line for grep and scripts. Rich pads a
borderless table to its columns' widths, not to the console's, so a narrow table stays narrow."""


def table_console() -> Console:
    """The console a command prints its tables to: the terminal's width on a terminal; piped or captured, a wide
    one, so a long reason, name or revision stays on its line for grep and scripts instead of folding at 80."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


def exit_status(retry: Retry) -> int:
    """The one exit rule for failures: 2 for terminal, 3 for transient (``errors.Retry``)."""
    return EXIT_RETRY if retry is Retry.TRANSIENT else EXIT_ERROR


def fail_on(error: GitsyncError) -> NoReturn:
    """``fail`` with the exit status of the error's class."""
    fail(str(error), exit_status(retry_of(error)))


def render(
    repo: Path, environment: Environment, app: str | None, revision: str | None = None
) -> tuple[RenderedApp, ...]:
    """The environment's apps (or one) from the local checkout; apps awaiting promotion are noted and left out."""
    from gitsync.cli.render import render_apps

    return render_apps(repo, environment, (app,) if app else (), revision=revision)


def connect(kubeconfig: Path | None) -> KubeCluster:
    """The cluster client; a kubeconfig that cannot be read is a one-line ``TerminalError`` naming the file."""
    import yaml

    from gitsync.adapters.kube import KubeCluster

    where = kubeconfig or "~/.kube/config"
    if kubeconfig is not None and os.pathsep not in str(kubeconfig) and not kubeconfig.exists():
        raise TerminalError(f"{kubeconfig}: kubeconfig file does not exist")
    try:
        return KubeCluster(kubeconfig)
    except yaml.MarkedYAMLError as e:  # the client's loader lets these through as multi-line tracebacks
        line = f":{e.problem_mark.line + 1}" if e.problem_mark is not None else ""
        raise TerminalError(f"{where}{line}: cannot load cluster configuration: invalid YAML: {e.problem}") from e
    except (yaml.YAMLError, TypeError, AttributeError, KeyError) as e:  # YAML, but not shaped like a kubeconfig
        raise TerminalError(f"{where}: cannot load cluster configuration: not a kubeconfig ({e})") from e


def namespaces_to_create(cluster: KubeCluster, targets: Sequence[RenderedApp]) -> frozenset[str]:
    """The environment namespaces that do not exist yet: a sync creates them first, so a dry run plans their
    objects as creates rather than failing on every one."""
    from gitsync.sync import namespace_exists

    return frozenset(ns for ns in {r.namespace for r in targets} if not namespace_exists(cluster, ns))


def absent_namespaces(cluster: KubeCluster, namespaces: Collection[str]) -> frozenset[str]:
    """Those of ``namespaces`` that do not exist, each read once; a ``NamespaceTerminatingError`` (transient) for
    the first being deleted: the API server refuses every create in it until its deletion finishes, which may wait
    on finalizers for long. Refused before anything is applied, in one line; once it is gone, the next sync creates
    it anew. Without permission to read namespaces, taken to exist (``sync.namespace_exists``), and left to the
    creates to say."""
    from gitsync.errors import ForbiddenError
    from gitsync.model import ObjectId

    absent = set()
    for namespace in sorted(namespaces):
        ref = ObjectId("", "Namespace", "", namespace)
        try:
            live = cluster.get(ref)
        except ForbiddenError:
            logging.get("gitsync.cli").info(
                "namespace.unchecked", namespace=namespace, reason="no permission to read namespaces"
            )
            continue
        if live is None:
            absent.add(namespace)
        elif since := live.get("metadata", {}).get("deletionTimestamp"):
            raise NamespaceTerminatingError(
                f"{ref}: being deleted (Terminating since {since}): nothing can be created in it until the deletion "
                "finishes; sync again then, and the namespace is created anew"
            )
    return frozenset(absent)


def departures(cluster: KubeCluster, environment: Environment, prune: bool | None) -> list[tuple[AppEnv, Target]]:
    """The app-envs gitsync holds state for in the environment's namespace whose app ``env.yaml`` no longer lists
    (found as the agent finds them, ``inventory.departed``), each with its removal target: pruned as ``env.yaml``'s
    ``prune`` says, or ``prune`` (``--prune/--no-prune``) when given, but never when the file lists no apps at all
    without ``pruneAllowEmpty: true`` (``Target.removed_from``)."""
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.inventory import departed

    left = departed(ConfigMapStateStore(cluster), environment.name, environment.namespace, environment.apps)
    if not left:
        return []  # the common case, without importing the reconcile's vocabulary (~50 ms of a no-op diff)
    from gitsync.result import Target

    target = Target(
        environment.namespace,
        prune=environment.prune if prune is None else prune,
        self_heal=environment.self_heal,
    ).removed_from(environment.apps, prune_allow_empty=environment.prune_allow_empty)
    return [(key, target) for key in sorted(left)]


def preview_departure(cluster: KubeCluster, key: AppEnv, target: Target, revision: str) -> SyncResult | str:
    """What a sync does to an app that left its environment: a dry run of its removal (its objects as deletes),
    or, when it is not pruned, the line that says its objects stay (``record.orphaned_message``)."""
    from gitsync import inventory as inventories
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.record import orphaned_message
    from gitsync.removal import preview as preview_removal

    store = ConfigMapStateStore(cluster)
    if target.prune:
        return preview_removal(cluster, store, key, target.namespace, revision)
    kept = len(inventories.load(store, key, target.namespace).objects)
    return f"{key}: {orphaned_message(key, target, kept)}"


def preview(
    rendered: RenderedApp,
    cluster: KubeCluster,
    *,
    live: LiveReader | None = None,
    new_namespace: bool = False,
    new_kinds: Collection[tuple[str, str]] = (),
) -> SyncResult:
    """A dry-run sync of ``rendered`` as the agent keeps it in the cluster: what ``diff`` and ``status`` compare.
    A canary or blue-green workload is compared as the rollout executor applies it (``executor.as_kept``), not as
    plainly rendered, which would show every such app out of sync. ``new_kinds``: kinds whose CRDs other apps of
    the environment render, planned as creates while not served."""
    from dataclasses import replace

    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.sync import sync_app

    store = ConfigMapStateStore(cluster)
    moved: frozenset[ObjectId] = frozenset()
    rollout = rendered.values.get("rollout")
    if isinstance(rollout, Mapping) and rollout.get("strategy") not in (None, "rolling"):
        from gitsync.strategy.executor import as_kept  # ~40 ms of imports only a progressive app needs

        manifests, moved = as_kept(rendered, cluster, store)
        rendered = replace(rendered, manifests=manifests)
    return sync_app(
        rendered,
        cluster,
        store,
        prune=True,
        dry_run=True,
        exclude=moved,
        live=live,
        new_namespace=new_namespace,
        new_kinds=new_kinds,
    )


def previews(
    repo: Path, environment: Environment, app: str | None, kubeconfig: Path | None, *, listed: bool
) -> tuple[KubeCluster, list[tuple[RenderedApp, SyncResult]]]:
    """Render the environment (or one app) and ``preview`` each app against the cluster, planning an environment
    whose namespace is missing as creates. ``listed``: read live objects from lists (``snapshot``), as diff does.
    All or nothing, as ``kubectl diff``: the first app's error (in ``env.yaml`` order) is raised for all of them."""
    cluster, previewed = previews_each(render(repo, environment, app), kubeconfig, listed=listed)
    results: list[tuple[RenderedApp, SyncResult]] = []
    for rendered, result in previewed:
        if isinstance(result, GitsyncError):
            raise result
        results.append((rendered, result))
    return cluster, results


def previews_each(
    targets: Sequence[RenderedApp], kubeconfig: Path | None, *, listed: bool
) -> tuple[KubeCluster, list[tuple[RenderedApp, SyncResult | GitsyncError]]]:
    """``previews`` of rendered ``targets``, but each app's own failure (a dry-run the API server could not
    answer: HTTP 5xx, a webhook it could not call) is that app's answer instead of the environment's, so the
    others are still shown (``status``). What concerns the whole environment (no cluster) is raised."""
    from gitsync.plan import defined_kind

    cluster = connect(kubeconfig)
    missing = namespaces_to_create(cluster, targets)
    kinds = {k for r in targets for m in r.manifests if (k := defined_kind(m)) is not None}
    live = snapshot(cluster) if listed else None  # one list per kind for all apps: a preview writes nothing

    def one(r: RenderedApp) -> tuple[RenderedApp, SyncResult | GitsyncError]:
        try:
            return r, preview(r, cluster, live=live, new_namespace=r.namespace in missing, new_kinds=kinds)
        except GitsyncError as e:
            return r, e

    # Apps are previewed side by side, so their requests overlap instead of queueing app after app; every kind
    # of the environment is listed up front on one pool, not by each app's plan on a pool of its own.
    with ThreadPoolExecutor(max_workers=PREVIEW_WORKERS) as pool, ThreadPoolExecutor(max_workers=LISTS) as lists:
        if live is not None:
            live.prefetch((m.id for r in targets for m in r.manifests), lists)
        return cluster, list(pool.map(one, targets))


def snapshot(cluster: KubeCluster) -> ListSnapshot:
    """What ``diff`` and ``sync`` read live objects from: lists, metadata first, as neither needs the content of
    an object the dry-run memo knows at its current resourceVersion."""
    from gitsync.plan import ListSnapshot

    return ListSnapshot(cluster, versions_first=True)


@contextmanager
def progress_for(label: str, enabled: bool) -> Iterator[Callable[[ChangeSetEntry], None] | None]:
    """A rich progress display advanced once per applied or deleted object, or None when not on a terminal."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.completed} changed"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)

        def advance(entry: ChangeSetEntry) -> None:
            bar.update(task, advance=1, description=f"{entry.action} {entry.id}")

        yield advance


def always(value: T) -> Callable[..., T]:
    """A stage that answers ``value`` whatever it is asked (the CLI hands the reconcile what it already has)."""

    def stage(*_args: object) -> T:
        return value

    return stage


@click.command("sync")
@repo_option
@env_option
@app_option
@click.option(
    "--prune/--no-prune",
    default=None,
    help="Delete objects that left the render, and apps no longer listed in env.yaml (default: the env's prune).",
)
@click.option("--dry-run", is_flag=True, help="Plan with server-side dry-run; change nothing.")
@click.option("--force", is_flag=True, help="Take over fields owned by other field managers.")
@kubeconfig_option
def command(
    repo: Path, env: str, app: str | None, prune: bool | None, dry_run: bool, force: bool, kubeconfig: Path | None
) -> None:
    """Apply what the repository renders for an environment, with server-side apply.

    Each app goes through the agent's own reconcile (``gitsync.reconcile``) and is recorded like the agent records
    it (status, history, Events), so `gitsync status` shows what this sync did. A canary or blue-green workload
    advances one rollout step per run, as in the agent; run again (or `gitsync rollout promote`) to go on.

    An app no longer listed in env.yaml whose objects gitsync still holds (all such apps, or the one --app names)
    is removed as the agent removes it: its objects deleted when the environment prunes (or with --prune), else
    reported as orphaned."""
    from gitsync.adapters.checkout import LocalCheckout
    from gitsync.adapters.clock import SystemClock
    from gitsync.adapters.http_check import HttpClient
    from gitsync.adapters.prometheus import PrometheusClient
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.analysis.measure import Measurer
    from gitsync.events import EventSink
    from gitsync.history import History
    from gitsync.reconcile import Request, Stages, reconcile
    from gitsync.record import Recorder, default_sinks
    from gitsync.result import Kind, Target
    from gitsync.strategy.executor import RolloutExecutor, owned
    from gitsync.sync import create_namespace
    from renderers import load_environment

    interactive = sys.stdout.isatty()
    # A terminal gets the progress bar and the summary; anything else (CI) a structured event per object.
    logging.configure("auto", level="WARNING" if interactive else "INFO")
    source = LocalCheckout(repo)
    revision = source.resolve().revision or None
    try:
        environment = load_environment(repo, env)  # once: the renders and the departures read it
        # --app naming an app that left env.yaml: its removal, as a whole-environment sync would do it
        departed = app is not None and app not in environment.apps
        # all or nothing: a render error anywhere touches no cluster; apps with Namespaces or CRDs go first
        rendered_apps = [] if departed else render(repo, environment, app, revision)
        targets = sorted(rendered_apps, key=installs_parents, reverse=True)
        cluster = connect(kubeconfig)
        # apps no longer listed (all of them, or the departed one named), removed after the listed ones are synced
        left = departures(cluster, environment, prune) if app is None or departed else []
        left = [(key, target) for key, target in left if app in (None, key.app)]
        if departed and not left:
            raise TerminalError(
                f"environments/{env}/env.yaml: app {app!r} is not in environment {env}, "
                f"and gitsync holds nothing of it in the cluster"
            )
        # each namespace read once: one being deleted refused, the missing ones of the rendered apps created
        rendered_in = {r.namespace for r in targets}
        absent = absent_namespaces(cluster, rendered_in | {t.namespace for _, t in left}) & rendered_in
        missing = absent if dry_run else frozenset()
        if not dry_run:  # as the agent does (agent.yaml createNamespaces): a fresh cluster needs no kubectl first
            for namespace in sorted(absent):
                if create_namespace(cluster, namespace):
                    click.echo(f"Namespace/{namespace}: created")
    except GitsyncError as e:
        fail_on(e)
    store = ConfigMapStateStore(cluster)
    clock = SystemClock()
    history = History(store)
    recorder = Recorder(default_sinks(history, EventSink(cluster, clock), agent=False))
    rollouts = RolloutExecutor(cluster, store, measurer=Measurer(PrometheusClient(), HttpClient()))
    retries: list[Retry | None] = []

    def run(target: Target, request: Request, rendered: RenderedApp | None = None) -> ReconcileResult | None:
        """The agent's reconcile of one app-env (an app that left its environment renders nothing); a failure
        to record it is one line and its class, as for the agent."""
        stages = Stages(
            source=source,
            locate=always(target),
            cluster=cluster,
            store=store,
            clock=clock,
            status=history,
            recorder=recorder,
            rollouts=rollouts,
            live=snapshot(cluster),
            preview=owned,
        )
        try:
            return reconcile(replace(stages, render=always(rendered)) if rendered else stages, request)
        except GitsyncError as e:  # recording it failed (the API went away, the namespace is being deleted)
            click.echo(f"error: {e}", err=True)
            retries.append(retry_of(e))
            return None

    for rendered in targets:
        target = Target(rendered.namespace, prune=rendered.environment.prune, self_heal=rendered.environment.self_heal)
        with progress_for(str(rendered.app_env), interactive and not dry_run) as tick:
            request = Request(
                rendered.app_env,
                skip_current=False,
                apply=not dry_run,
                force=force,
                prune=prune,
                new_namespace=rendered.namespace in missing,
                progress=tick,
            )
            result = run(target, request, rendered)
        if result is None:
            continue
        if result.sync is None:
            click.echo(f"error: {result.error}", err=True)
            retries.append(result.error_class or Retry.TERMINAL)
            continue
        click.echo(result.sync.summary())
        sources = {m.id: m.source for m in rendered.manifests}  # each refusal at its template's file:line
        for entry in result.sync.failures:
            where = sources.get(entry.id)
            click.echo(f"  {where}: {entry.error}" if where else f"  {entry.error}", err=True)
        retries.append(result.sync.retry)
        if result.kind is Kind.RELEASE and result.rollout is not None and result.rollout.exclude and not dry_run:
            click.echo(f"{rendered.app_env}: rollout {result.rollout.phase}: {result.rollout.message}")
    for key, target in left:
        retries.append(_remove(key, target, run, dry_run=dry_run))
    retry = retry_of_all(retries)
    if retry is not None:
        sys.exit(exit_status(retry))


def _remove(
    key: AppEnv, target: Target, run: Callable[[Target, Request], ReconcileResult | None], *, dry_run: bool
) -> Retry | None:
    """Sync an app that left its environment as the agent does (``Kind.REMOVED``: its whole inventory pruned with
    every guard, and recorded; or only reported when it is not pruned), printing one line; a dry run plans it."""
    from gitsync.reconcile import Request
    from gitsync.result import Kind

    listed = f"no longer listed in environments/{key.env}/env.yaml"
    result = run(target, Request(key, skip_current=False, apply=not dry_run))
    if result is None:
        return None  # said by run
    if result.kind is Kind.ORPHANED:
        from gitsync.record import orphaned_message

        hint = "" if target.emptied else f" (gitsync sync --env {key.env} --app {key.app} --prune deletes them)"
        click.echo(f"{key}: {orphaned_message(key, target, result.kept)}{hint}")
        return None
    if result.sync is not None:
        click.echo(f"{result.sync.summary()} ({listed})")
        for entry in result.sync.failures:
            click.echo(f"  {entry.error}", err=True)
    if result.kind is Kind.FAILED:
        if result.sync is None:
            click.echo(f"error: {key}: {listed}, its removal failed: {result.error}", err=True)
        return result.error_class or Retry.TERMINAL
    return None


def installs_parents(rendered: RenderedApp) -> bool:
    """Whether an app renders Namespaces or CRDs, which other apps' objects may live in or be instances of."""
    from gitsync.plan import PARENT_KINDS

    return any(m.id.kind in PARENT_KINDS for m in rendered.manifests)
