"""``gitsync sync``: render an environment (or one app) and apply it to the cluster, once.

Creates the environment's namespace when it is missing, as the agent does. Progress bars on a terminal, structured
log events otherwise, and a one-line summary per app. Exit status 0 when every object synced, 1 when any object
failed, 2 when nothing could be tried (render error, no cluster). Also home of what ``gitsync diff`` shares with
it: rendering the targets and connecting to the cluster.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from gitsync import log as logging
from gitsync.apply import ChangeSetEntry
from gitsync.errors import GitsyncError, TerminalError

if TYPE_CHECKING:  # importing these at run time pulls in the renderer and the Kubernetes client
    from gitsync.adapters.kube import KubeCluster
    from gitsync.plan import ListSnapshot
    from renderers import RenderedApp

EXIT_FAILED = 1
EXIT_ERROR = 2

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


def render(repo: Path, env: str, app: str | None) -> tuple[RenderedApp, ...]:
    import renderers

    if app is not None:
        return (renderers.render_app(repo, env, app),)
    return renderers.render_env(repo, env)


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


class ReadAhead:
    """Reads the cluster in worker threads while the main thread renders, for ``diff`` and ``sync``: connects,
    checks the environment's namespace and lists what each app's stored inventory holds, so the server prepares
    the lists during the render. Lists are metadata first (``ListSnapshot(versions_first=True)``): objects the
    dry-run memo knows at their current resourceVersion are never fetched, as neither command needs their
    content. A failure here is raised by ``cluster()`` after the render, so a render error is reported first.
    """

    def __init__(self, repo: Path, env: str, app: str | None, kubeconfig: Path | None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=8)
        self._snapshots: dict[str, ListSnapshot] = {}
        self.missing: frozenset[str] = frozenset()
        """Namespaces of the environment that do not exist yet (a sync creates them)."""
        self._connected = self._pool.submit(self._read, repo, env, app, kubeconfig)

    def cluster(self) -> KubeCluster:
        return self._connected.result()

    def snapshot(self, app: str) -> ListSnapshot:
        from gitsync.plan import ListSnapshot

        found = self._snapshots.get(app)
        return found if found is not None else ListSnapshot(self.cluster(), versions_first=True)

    def close(self, *, abandon: bool = False) -> None:
        """``abandon``: an error ends the command; reads still queued are dropped rather than waited for."""
        self._pool.shutdown(wait=not abandon, cancel_futures=abandon)

    def _read(self, repo: Path, env: str, app: str | None, kubeconfig: Path | None) -> KubeCluster:
        import renderers
        from gitsync import inventory
        from gitsync.adapters.state import ConfigMapStateStore
        from gitsync.model import AppEnv
        from gitsync.plan import ListSnapshot
        from gitsync.sync import namespace_exists

        cluster = connect(kubeconfig)
        with contextlib.suppress(GitsyncError, renderers.RenderError):  # raised again where they are reported
            environment = renderers.load_environment(repo, env)
            if not namespace_exists(cluster, environment.namespace):
                self.missing = frozenset({environment.namespace})
            store = ConfigMapStateStore(cluster)
            for name in environment.apps if app is None else (app,):
                snapshot = self._snapshots[name] = ListSnapshot(cluster, versions_first=True)
                stored = inventory.load(store, AppEnv(name, env), environment.namespace)
                snapshot.prefetch(stored.objects, self._pool)
        return cluster


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


@click.command("sync")
@repo_option
@env_option
@app_option
@click.option("--prune/--no-prune", default=None, help="Delete objects that left the render (default: the env's).")
@click.option("--dry-run", is_flag=True, help="Plan with server-side dry-run; change nothing.")
@click.option("--force", is_flag=True, help="Take over fields owned by other field managers.")
@kubeconfig_option
def command(
    repo: Path, env: str, app: str | None, prune: bool | None, dry_run: bool, force: bool, kubeconfig: Path | None
) -> None:
    """Apply what the repository renders for an environment, with server-side apply.

    A canary or blue-green workload advances one rollout step per run, as in the agent; run again (or
    `gitsync promote`) to go on."""
    from gitsync.adapters.clock import SystemClock
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.strategy.executor import advance, owned
    from gitsync.sync import ensure_namespace, sync_app

    interactive = sys.stdout.isatty()
    # A terminal gets the progress bar and the summary; anything else (CI) a structured event per object.
    logging.configure("auto", level="WARNING" if interactive else "INFO")
    ahead = ReadAhead(repo, env, app, kubeconfig)
    try:
        targets = render(repo, env, app)
        cluster = ahead.cluster()
        store = ConfigMapStateStore(cluster)
        if not dry_run:  # as the agent does (agent.yaml createNamespaces): a fresh cluster needs no kubectl first
            for namespace in sorted({rendered.namespace for rendered in targets}):
                if ensure_namespace(cluster, namespace):
                    click.echo(f"Namespace/{namespace}: created")
        results = []
        rollouts: list[str] = []
        for rendered in targets:
            # Under canary or blue-green the workload goes through one rollout step, exactly as the agent does;
            # sync applies the rest. A dry run only leaves the rollout's objects out.
            if dry_run:
                exclude = owned(rendered)
            else:
                step = advance(rendered, cluster, store, SystemClock())
                exclude = step.exclude
                if exclude:
                    rollouts.append(f"{rendered.app_env}: rollout {step.phase}: {step.message}")
            with progress_for(str(rendered.app_env), interactive and not dry_run) as tick:
                results.append(
                    sync_app(
                        rendered,
                        cluster,
                        store,
                        prune=rendered.environment.prune if prune is None else prune,
                        dry_run=dry_run,
                        force=force,
                        exclude=exclude,
                        live=ahead.snapshot(rendered.app_env.app),
                        progress=tick,
                        new_namespace=dry_run and rendered.namespace in ahead.missing,
                    )
                )
    except GitsyncError as e:
        ahead.close(abandon=True)
        fail(str(e))
    ahead.close()
    for result in results:
        click.echo(result.summary())
        for entry in result.failures:
            click.echo(f"  {entry.error}", err=True)
    for line in rollouts:
        click.echo(line)
    if not all(r.ok for r in results):
        sys.exit(EXIT_FAILED)
