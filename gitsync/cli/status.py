"""``gitsync status``: per app of an environment, is the cluster in sync with the repository and is it healthy?

One row per app: the sync state from a plan (server-side dry-run, as ``gitsync diff``: Synced when nothing would
change), the health of its worst object with the reason (workloads judged with their pods, so a crash-looping
release shows as Degraded at once), and the revision and digest last applied (from the inventory). When the agent
runs, it also keeps a ``status`` document per app-env (``gitsync.history.Status``: the last attempt's result and
error); ``AppStatus.agent`` carries it whole into the JSON, and the table shows its result and error. A canary or
blue-green rollout adds its phase, step, weight and latest analysis values (``AppStatus.rollout``). An environment an
agent applies to another cluster than its own (``cluster:``) is planned against ``--kubeconfig`` (that cluster)
while the agent's records are read from ``--home-kubeconfig`` (the agent's cluster); the table names the cluster.
Reads only: nothing is written, not even an inventory.

Degrades per app, as Argo CD's app list does: an app that does not render (a template error) or whose preview
fails (a dry-run the API server could not answer, such as an admission webhook it could not call) still gets its
row, SYNC and HEALTH Unknown, with what gitsync recorded of it (the applied revision, the agent's last result) and
its error on a line under the table (``-o json``: in its ``errors``). An app of a receiving environment that awaits
its first promotion gets its row too, the reason saying so, with the agent's promotion line under the table (why
it is not promoted yet, or why its promotion failed). Exit status 0 when every app's status could be read
(whatever it says); after the table, 3 when an app's preview failed in a way worth retrying, else 2; 2 (one line,
no table) when nothing can be shown: an env.yaml that does not load, no cluster.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gitsync import log as logging
from gitsync.cli.sync import (
    app_option,
    env_option,
    exit_status,
    fail_on,
    kubeconfig_option,
    previews_each,
    repo_option,
    table_console,
)
from gitsync.errors import GitsyncError, retry_of, retry_of_all
from gitsync.health import WORKLOAD_KINDS, Health, assess_app
from gitsync.history import History, Status
from gitsync.model import AppEnv, HealthStatus, Json, SyncState

if TYPE_CHECKING:  # importing these at run time pulls in the renderer and the Kubernetes client
    from gitsync.adapters.kube import KubeCluster
    from gitsync.sync import SyncResult
    from renderers import RenderedApp

__all__ = ["AppStatus", "app_status", "command", "sync_state", "unplanned_status"]


@dataclass(frozen=True, slots=True)
class AppStatus:
    app: str
    env: str
    namespace: str
    sync: SyncState
    health: Health
    revision: str
    """Last applied revision, from the inventory ("" when never synced)."""
    digest: str
    rendered_digest: str
    changes: str
    """The plan's summary line (N to create, M to change, ...)."""
    errors: tuple[str, ...]
    agent: Status
    """What the agent last recorded (state part ``status``: last result and error); defaults when none ran."""
    rollout: Json
    """``control.describe_rollout``: phase, step, weight and the latest analysis values; ``{}`` without one."""

    def to_json(self) -> Json:
        return {
            "app": self.app,
            "env": self.env,
            "namespace": self.namespace,
            "sync": str(self.sync),
            "changes": self.changes,
            "health": str(self.health.status),
            "healthReason": self.health.reason,
            "revision": self.revision,
            "digest": self.digest,
            "renderedDigest": self.rendered_digest,
            "errors": list(self.errors),
            "agent": self.agent.to_json(),
            "rollout": self.rollout,
        }


@click.command("status")
@repo_option
@env_option
@app_option
@kubeconfig_option
@click.option(
    "--home-kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The agent's own cluster, where it keeps its records, when it applies this environment to another one.",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
def command(
    repo: Path, env: str, app: str | None, kubeconfig: Path | None, home_kubeconfig: Path | None, output: str
) -> None:
    """Show sync state, health and the applied revision of each app of an environment."""
    from gitsync.cli.render import render_each
    from gitsync.cli.sync import connect
    from renderers import AwaitingPromotion, RenderedApp, load_environment

    # stdout is the table; the command prints each error once itself (the warning event would repeat them as JSON)
    logging.configure("auto", level="ERROR")
    try:
        environment = load_environment(repo, env)
        outcomes = render_each(repo, environment, (app,) if app else ())
        targets = [outcome for _, outcome in outcomes if isinstance(outcome, RenderedApp)]
        cluster, planned = previews_each(targets, kubeconfig, listed=False)
        home = connect(home_kubeconfig) if home_kubeconfig is not None else cluster
    except GitsyncError as e:
        fail_on(e)
    failures: list[GitsyncError] = []

    def status_of(rendered: RenderedApp, result: SyncResult | GitsyncError) -> AppStatus:
        """The app's status, or the row that says why it could not be gathered: every app gets one."""
        if isinstance(result, GitsyncError):
            error = result
        else:
            try:
                return located(repo, rendered, app_status(rendered, cluster, result, home))
            except GitsyncError as e:
                error = e
        failures.append(error)
        row = unplanned_status(rendered.app_env, rendered.namespace, cluster, error, home, digest=rendered.digest)
        return located(repo, rendered, row)

    def unrendered(name: str, error: GitsyncError) -> AppStatus:
        """The row of an app that did not render: awaiting its first promotion (not a failure: nothing is due
        yet), or its own render error (a failure, as it cannot be compared)."""
        if not isinstance(error, AwaitingPromotion):
            failures.append(error)
        return unplanned_status(AppEnv(name, env), environment.namespace, cluster, error, home)

    previewed = iter(planned)
    rows = [
        unrendered(name, outcome) if isinstance(outcome, GitsyncError) else status_of(*next(previewed))
        for name, outcome in outcomes
    ]
    if output == "json":
        click.echo(json.dumps({"env": env, "apps": [row.to_json() for row in rows]}, indent=2))
    else:
        _table(env, rows)
    retry = retry_of_all(retry_of(e) for e in failures)
    if retry is not None:
        sys.exit(exit_status(retry))


def located(repo: Path, rendered: RenderedApp, status: AppStatus) -> AppStatus:
    """``status`` with its rollout's checks ``located_checks``."""
    return replace(status, rollout=located_checks(repo, rendered, status.rollout)) if status.rollout else status


def located_checks(repo: Path, rendered: RenderedApp, rollout: Json) -> Json:
    """A check whose message starts with the field of the values at fault (a query Prometheus refused:
    ``rollout.analysis.checks[1].query: ...``) names the values file and line instead, as a bad ``rollout:`` block
    does: the agent that measured it had no checkout at hand."""
    from gitsync.cli.render import policy_error_line
    from gitsync.strategy.policy import PolicyError

    checks = []
    for check in rollout.get("analysis", []):
        field, sep, problem = str(check.get("message") or "").partition(": ")
        if sep and field.startswith("rollout.") and " " not in field:
            error = PolicyError(check["message"], field=field, problem=problem)
            check = {**check, "message": policy_error_line(repo, rendered, error)}
        checks.append(check)
    return {**rollout, "analysis": checks} if checks else rollout


def app_status(
    rendered: RenderedApp, cluster: KubeCluster, result: SyncResult, home: KubeCluster | None = None
) -> AppStatus:
    """Gather one app-env's status from its dry-run plan (``previews``): the live objects the plan read, pods and
    ReplicaSets of their namespaces, the inventory and the agent's status document (read from ``home``, the
    agent's cluster, when that is not ``cluster``)."""
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.strategy.control import describe_rollout

    store = ConfigMapStateStore(home or cluster)
    live = {c.id: c.live for c in result.plan.changes if c.desired is not None}
    namespaces = sorted({ref.namespace for ref in live if ref.kind in WORKLOAD_KINDS and ref.namespace})
    pods = [p for ns in namespaces for p in cluster.list("", "Pod", ns).items]
    replica_sets = [rs for ns in namespaces for rs in cluster.list("apps", "ReplicaSet", ns).items]
    return AppStatus(
        app=rendered.app_env.app,
        env=rendered.app_env.env,
        namespace=rendered.namespace,
        sync=sync_state(result),
        health=assess_app(live, pods, replica_sets, finished=result.plan.finished_jobs),
        revision=result.inventory.revision,
        digest=result.inventory.digest,
        rendered_digest=rendered.digest,
        changes=result.plan.summary(),
        errors=tuple(c.error for c in result.plan.errors if c.error),
        agent=History(store).status(rendered.app_env, rendered.namespace),
        rollout=describe_rollout(store, rendered.app_env, rendered.namespace),
    )


def unplanned_status(
    key: AppEnv,
    namespace: str,
    cluster: KubeCluster,
    error: GitsyncError,
    home: KubeCluster | None = None,
    *,
    digest: str = "",
) -> AppStatus:
    """The row of an app whose status could not be gathered (it did not render, or its preview failed): sync and
    health Unknown, as nothing was compared, ``error`` in one line, and what gitsync recorded of the app (the
    applied revision and digest, the agent's status with its promotion line, the rollout) when those records can
    still be read. An app awaiting its first promotion is no error: the reason column says so. ``digest``: the
    render's, when there is one."""
    from gitsync import inventory as inventories
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.strategy.control import describe_rollout
    from renderers import AwaitingPromotion

    store = ConfigMapStateStore(home or cluster)
    try:
        applied = inventories.load(ConfigMapStateStore(cluster), key, namespace)
        revision, applied_digest = applied.revision, applied.digest
        agent, rollout = History(store).status(key, namespace), describe_rollout(store, key, namespace)
    except GitsyncError:  # the error the row shows says enough
        revision, applied_digest, agent, rollout = "", "", Status(key.app, key.env), {}
    awaiting = error.problem if isinstance(error, AwaitingPromotion) else ""
    return AppStatus(
        app=key.app,
        env=key.env,
        namespace=namespace,
        sync=SyncState.UNKNOWN,
        health=Health(HealthStatus.UNKNOWN, awaiting),
        revision=revision,
        digest=applied_digest,
        rendered_digest=digest,
        changes="",
        errors=() if awaiting else (" ".join(str(error).split()),),
        agent=agent,
        rollout=rollout,
    )


def sync_state(result: SyncResult) -> SyncState:
    """Unknown when the plan could not be made for some object, else OutOfSync when anything would change."""
    if result.plan.errors:
        return SyncState.UNKNOWN
    return SyncState.OUT_OF_SYNC if result.plan.has_changes else SyncState.SYNCED


_HEALTH_STYLE = {"Healthy": "green", "Progressing": "cyan", "Suspended": "blue", "Missing": "yellow"}
_SYNC_STYLE = {SyncState.SYNCED: "green", SyncState.OUT_OF_SYNC: "yellow"}


def _table(env: str, rows: Sequence[AppStatus]) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"gitsync status: {env}", title_justify="left")
    for column in ("APP", "NAMESPACE", "SYNC", "HEALTH", "REASON", "REVISION", "DIGEST", "LAST RESULT"):
        table.add_column(column, overflow="fold")
    for row in rows:
        sync_style = _SYNC_STYLE.get(row.sync, "red")
        health_style = _HEALTH_STYLE.get(str(row.health.status), "red")
        last = row.agent.result + (f": {row.agent.last_error}" if row.agent.last_error else "")
        table.add_row(
            row.app,
            row.namespace,
            f"[{sync_style}]{row.sync}[/]"
            + (f"\n{row.changes}" if row.changes and row.sync is not SyncState.SYNCED else ""),
            f"[{health_style}]{row.health.status}[/]",
            Text(row.health.reason or "-"),  # user data: never read as markup
            row.revision[:12] or "-",
            row.digest.removeprefix("sha256:")[:12] or "-",
            Text(last or "-"),
        )
    console = table_console()
    console.print(table)
    for row in rows:  # each a line of its own, never folded (soft_wrap), whatever its length: one grep finds it
        if row.agent.cluster:
            console.print(Text(f"{row.app}: applied to cluster {row.agent.cluster}"), soft_wrap=True)
        if row.agent.promotion:  # a receiving environment: what the promote stage last did
            console.print(Text(f"{row.app}: promotion {row.agent.promotion}"), soft_wrap=True)
        for line in rollout_lines(row.rollout):
            console.print(Text(f"{row.app}: {line}"), soft_wrap=True)
        for error in row.errors:
            console.print(Text(f"{row.app}: {error}", style="red"), soft_wrap=True)


def rollout_lines(rollout: Json) -> list[str]:
    """The rollout in a few lines: phase, step and weight, then each check's latest verdict and value."""
    from gitsync.strategy.state import step_label

    if not rollout:
        return []
    quiet = rollout.get("strategy") == "rolling" or (rollout["phase"] == "Idle" and "pendingCommand" not in rollout)
    if quiet and "retiring" not in rollout:
        return []
    if rollout.get("strategy") == "rolling":
        return [f"rollout: {rollout['message']}", f"  retiring: {', '.join(rollout['retiring'])}"]
    step = step_label(rollout["phase"], int(rollout["step"]), int(rollout.get("steps", 0)))
    head = ", ".join(part for part in (f"rollout {rollout['phase']}", step, f"weight {rollout['weight']}%") if part)
    lines = [head + (f": {rollout['message']}" if rollout.get("message") else "")]
    if rollout.get("retiring"):
        lines.append(f"  retiring: {', '.join(rollout['retiring'])} (the old strategy's, removed once stable is Ready)")
    if rollout.get("abortReason"):
        lines.append(f"  aborted: {rollout['abortReason']}")
    for check in rollout.get("analysis", []):
        value = "" if check["value"] is None else f", value {check['value']}"
        lines.append(
            f"  check {check['check']} ({check['group']}): {check['verdict']}{value}, "
            f"{check['measurements']} measured, {check['failures']} failed"
            + (f": {check['message']}" if check["message"] else "")
        )
    lines += [f"  warning: {warning}" for warning in rollout.get("warnings", [])]
    if "pendingCommand" in rollout:
        lines.append(f"  requested: {rollout['pendingCommand'].get('name', '?')} (applied at the next step)")
    return lines
