"""``gitsync promote``, ``gitsync abort`` and ``gitsync retry``: a human's hand on a running rollout.

Each command writes its request into the app-env's rollout state (the agent applies it at its next step) and
then, unless ``--no-advance``, runs that step itself, so the commands work without an agent too. Concurrent
steps are safe: state writes are optimistic, and the loser of a race simply steps again later.
Exit status 0 on success, 2 when nothing could be done (render error, bad rollout values, no cluster).
"""

from __future__ import annotations

import getpass
from pathlib import Path

import click

from gitsync import log as logging
from gitsync.cli.sync import connect, env_option, fail, kubeconfig_option, repo_option
from gitsync.errors import GitsyncError
from gitsync.strategy.state import CommandName

app_option = click.option("--app", "app", required=True, help="The app whose rollout to act on.")
advance_option = click.option(
    "--advance/--no-advance",
    default=True,
    help="Run the next rollout step now (default), or only leave the request for the running agent.",
)


def _run(repo: Path, env: str, app: str, kubeconfig: Path | None, name: CommandName, advance: bool) -> None:
    import renderers
    from gitsync.adapters.clock import SystemClock
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.strategy import control, executor

    logging.configure("auto")
    try:
        rendered = renderers.render_app(repo, env, app)
        cluster = connect(kubeconfig)
        store = ConfigMapStateStore(cluster)
        clock = SystemClock()
        control.request(store, rendered.app_env, rendered.namespace, name, clock.now(), by=getpass.getuser())
        if not advance:
            click.echo(f"{rendered.app_env}: {name} requested; the agent applies it at its next step")
            return
        outcome = executor.advance(rendered, cluster, store, clock)
    except GitsyncError as e:
        fail(str(e))
    click.echo(f"{rendered.app_env}: {name}: {outcome.phase}: {outcome.message}")


@click.command("promote")
@repo_option
@env_option
@app_option
@click.option("--full", is_flag=True, help="Skip all remaining steps and analysis and promote now.")
@advance_option
@kubeconfig_option
def promote(repo: Path, env: str, app: str, full: bool, advance: bool, kubeconfig: Path | None) -> None:
    """Continue a paused rollout to its next step (or with --full, straight to the end)."""
    _run(repo, env, app, kubeconfig, CommandName.PROMOTE_FULL if full else CommandName.PROMOTE, advance)


@click.command("abort")
@repo_option
@env_option
@app_option
@advance_option
@kubeconfig_option
def abort(repo: Path, env: str, app: str, advance: bool, kubeconfig: Path | None) -> None:
    """Roll back a running rollout: traffic to the stable version, the new version marked failed."""
    _run(repo, env, app, kubeconfig, CommandName.ABORT, advance)


@click.command("retry")
@repo_option
@env_option
@app_option
@advance_option
@kubeconfig_option
def retry(repo: Path, env: str, app: str, advance: bool, kubeconfig: Path | None) -> None:
    """Start the aborted revision's rollout again from its first step."""
    _run(repo, env, app, kubeconfig, CommandName.RETRY, advance)
