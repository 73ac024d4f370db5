"""``gitsync rollout status``, ``gitsync rollout promote``, ``gitsync rollout abort``, ``gitsync rollout retry``:
what a rollout is doing, and a human's hand on a running rollout (``gitsync promote`` is environment promotion, a
different thing: it pins a release for a receiving environment in Git).

Each of promote, abort and retry writes its request into the app-env's rollout state (the agent applies it at its
next step) and then, unless ``--no-advance``, runs that step itself, so the commands work without an agent too.
Concurrent steps are safe: state writes are optimistic, and the loser of a race simply steps again later (a
command whose own step loses to the agent's says the request is the agent's to apply, and exits 0).
Exit status 0 on success, 2 when nothing could be done (render error, bad rollout values, no cluster, or no
rollout in a phase where the command means something: promote and abort need a running one, retry an aborted one).
``status`` only reads, and exits 1 for an aborted rollout.
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gitsync import log as logging
from gitsync.cli.render import policy_error_line
from gitsync.cli.sync import connect, env_option, fail, fail_on, kubeconfig_option, repo_option
from gitsync.errors import GitsyncError, StaleError
from gitsync.strategy.policy import PolicyError, parse_policy
from gitsync.strategy.state import ACTIVE_PHASES, CommandName, Phase

if TYPE_CHECKING:  # importing it at run time pulls in the renderer
    from renderers import RenderedApp

app_option = click.option("--app", "app", required=True, help="The app whose rollout to act on.")
_ACCEPTED_IN = {
    CommandName.PROMOTE: ACTIVE_PHASES,
    CommandName.PROMOTE_FULL: ACTIVE_PHASES,
    CommandName.ABORT: ACTIVE_PHASES,
    CommandName.RETRY: frozenset({Phase.ABORTED}),
}
"""The phases a command means something in; elsewhere it is refused rather than left pending. (An ``abort`` of
an app whose Deployment the executor never ran would otherwise start a rollout to then abort it.)"""
advance_option = click.option(
    "--advance/--no-advance",
    default=True,
    help="Run the next rollout step now (default), or only leave the request for the running agent.",
)


def _render(repo: Path, env: str, app: str) -> RenderedApp:
    """The app rendered at the checkout's revision, as `gitsync sync` records it: a rollout a step starts (a retry,
    a new template) names its commit, and a chart that puts the revision in the pod template renders the same."""
    import renderers
    from gitsync.adapters.checkout import LocalCheckout
    from gitsync.adapters.trees import LocalTrees

    revision = LocalCheckout(repo).resolve().revision or None
    return renderers.render_app(repo, env, app, revision=revision, trees=LocalTrees(repo))


def _run(repo: Path, env: str, app: str, kubeconfig: Path | None, name: CommandName, advance: bool) -> None:
    from gitsync.adapters.clock import SystemClock
    from gitsync.adapters.http_check import HttpClient
    from gitsync.adapters.prometheus import PrometheusClient
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.analysis.measure import Measurer
    from gitsync.strategy import control, executor

    logging.configure("auto")
    try:
        rendered = _render(repo, env, app)
        cluster = connect(kubeconfig)
        store = ConfigMapStateStore(cluster)
        clock = SystemClock()
        parse_policy(rendered.values, source=f"{rendered.app_env}: values")  # a broken block leaves no request
        phase = Phase(control.describe_rollout(store, rendered.app_env, rendered.namespace).get("phase", "Idle"))
        if phase not in _ACCEPTED_IN[name]:
            fail(f"{rendered.app_env}: nothing to {name}: the rollout is {phase}")
        control.request(store, rendered.app_env, rendered.namespace, name, clock.now(), by=getpass.getuser())
        if not advance:
            click.echo(f"{rendered.app_env}: {name} requested; the agent applies it at its next step")
            return
        try:
            outcome = executor.advance(
                rendered, cluster, store, clock, measurer=Measurer(PrometheusClient(), HttpClient())
            )
        except StaleError:
            # The agent stepped the rollout at the same moment and its write won: it read the state after this
            # request was written (writes are optimistic), so the request is in its hands, as with --no-advance.
            click.echo(f"{rendered.app_env}: {name} requested; the agent, stepping it now, applies it")
            return
    except PolicyError as e:
        fail(policy_error_line(repo, rendered, e))
    except GitsyncError as e:
        fail_on(e)
    click.echo(f"{rendered.app_env}: {name}: {outcome.phase}: {outcome.message}")


@click.group("rollout")
def group() -> None:
    """Show a canary or blue-green rollout, or act on it: promote it a step, abort it, retry an aborted one."""


@group.command("status")
@repo_option
@env_option
@app_option
@kubeconfig_option
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True)
def status(repo: Path, env: str, app: str, kubeconfig: Path | None, output: str) -> None:
    """Show the rollout: phase, step, weight, each check's latest value, why it aborted, and its last rollouts.

    Exit status 0, or 1 when the rollout is Aborted (the new version is not running: as `kubectl argo rollouts
    status` exits 1 for a Degraded rollout); 2 or 3 when it cannot be read.
    """
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.cli.status import located_checks, rollout_lines
    from gitsync.strategy import control

    logging.configure("auto", level="ERROR")
    try:
        rendered = _render(repo, env, app)
        store = ConfigMapStateStore(connect(kubeconfig))
        rollout = located_checks(repo, rendered, control.describe_rollout(store, rendered.app_env, rendered.namespace))
        progressive = parse_policy(rendered.values, source=f"{rendered.app_env}: values").progressive
    except PolicyError as e:
        fail(policy_error_line(repo, rendered, e))
    except GitsyncError as e:
        fail_on(e)
    if output == "json":
        click.echo(json.dumps(rollout, indent=2))
    else:
        key = rendered.app_env
        quiet = (
            str(rollout.get("message") or "nothing rolled out yet")
            if progressive
            else "the rolling strategy: Kubernetes rolls the Deployment"
        )
        lines = rollout_lines(rollout) or [f"rollout {rollout.get('phase', Phase.IDLE.value)}: {quiet}"]
        for entry in reversed(rollout.get("history", [])):
            reason = f": {entry['reason']}" if entry.get("reason") else ""
            lines.append(f"  history: {entry['outcome']} {entry['revision'][:12] or entry['targetHash']}{reason}")
        for line in lines:
            click.echo(f"{key}: {line}")
    if rollout.get("phase") == Phase.ABORTED.value:
        sys.exit(1)


@group.command("promote")
@repo_option
@env_option
@app_option
@click.option("--full", is_flag=True, help="Skip all remaining steps and analysis and promote now.")
@advance_option
@kubeconfig_option
def promote(repo: Path, env: str, app: str, full: bool, advance: bool, kubeconfig: Path | None) -> None:
    """Continue a paused rollout to its next step (or with --full, straight to the end)."""
    _run(repo, env, app, kubeconfig, CommandName.PROMOTE_FULL if full else CommandName.PROMOTE, advance)


@group.command("abort")
@repo_option
@env_option
@app_option
@advance_option
@kubeconfig_option
def abort(repo: Path, env: str, app: str, advance: bool, kubeconfig: Path | None) -> None:
    """Roll back a running rollout: traffic to the stable version, the new version marked failed."""
    _run(repo, env, app, kubeconfig, CommandName.ABORT, advance)


@group.command("retry")
@repo_option
@env_option
@app_option
@advance_option
@kubeconfig_option
def retry(repo: Path, env: str, app: str, advance: bool, kubeconfig: Path | None) -> None:
    """Start the aborted revision's rollout again from its first step."""
    _run(repo, env, app, kubeconfig, CommandName.RETRY, advance)
