"""``gitsync history --env ENV [--app APP]``: the release history and current status, read from the cluster.

Works without the agent: the records are the ``gitsync.<app>.<env>.status`` and ``gitsync.<app>.<env>.history``
ConfigMaps the agent writes in each environment's namespace, found by their labels.
Exit status 0 when something was shown, 2 on an error or when the cluster holds no state for the selection.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import click

from gitsync.cli.sync import connect, fail, fail_on, kubeconfig_option, table_console


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%m-%d %H:%M:%S") if epoch else "-"


@click.command("history")
@click.option("--env", "env", required=True, help="Environment whose app-envs to show.")
@click.option("--app", "app", default=None, help="Only this app.")
@click.option("-n", "--namespace", default="", help="Only app-envs deployed to this namespace (default: all).")
@kubeconfig_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--limit", type=int, default=20, show_default=True, help="Releases shown per app (table only).")
def command(env: str, app: str | None, namespace: str, kubeconfig: Path | None, output: str, limit: int) -> None:
    """Show each app's status and its releases, newest first."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from gitsync.adapters.state import LABEL_STATE, ConfigMapStateStore
    from gitsync.errors import GitsyncError
    from gitsync.history import STATUS_PART, History
    from gitsync.model import LABEL_APP, LABEL_ENV, AppEnv

    try:
        cluster = connect(kubeconfig)
        selector = f"{LABEL_ENV}={env},{LABEL_STATE}={STATUS_PART}" + (f",{LABEL_APP}={app}" if app else "")
        found = cluster.list("", "ConfigMap", namespace, selector).items
        history = History(ConfigMapStateStore(cluster))
        records = []
        for item in sorted(found, key=lambda o: o["metadata"]["labels"][LABEL_APP]):
            key = AppEnv(item["metadata"]["labels"][LABEL_APP], env)
            where = item["metadata"]["namespace"]
            records.append((key, where, history.status(key, where), history.releases(key, where)))
    except GitsyncError as e:
        fail_on(e)
    if not records:
        fail(f"no gitsync state for env {env}{f' app {app}' if app else ''} in the cluster")

    if output == "json":
        doc = [
            {
                "app": key.app,
                "env": key.env,
                "namespace": namespace,
                "status": status.to_json(),
                "releases": [r.to_json() for r in releases],
            }
            for key, namespace, status, releases in records
        ]
        click.echo(json.dumps(doc, indent=2))
        return
    console = table_console()
    for key, namespace, status, releases in records:
        # Commit messages, authors and errors are user data: never read as markup ("[/]" would crash the table).
        console.print(
            f"[bold]{key}[/] in {namespace}: {status.result or 'unknown'}, {status.sync_state}, {status.health}"
            f" at {status.last_applied_revision[:12] or '-'}"
            + (f"\n  [red]last error:[/] {escape(status.last_error)}" if status.last_error else ""),
            soft_wrap=True,  # lines of their own, whatever their length: the table below may fold its cells
        )
        table = Table(box=None, pad_edge=False)
        for column in ("ID", "REVISION", "RESULT", "FINISHED", "CHANGES", "AUTHOR", "MESSAGE"):
            table.add_column(column)
        for r in releases[:limit]:
            changes = f"+{r.created} ~{r.configured} -{r.deleted}" + (f" !{r.failed}" if r.failed else "")
            table.add_row(
                str(r.id),
                r.revision[:12],
                r.result + (f" (x{r.attempts})" if r.attempts > 1 else ""),
                _when(r.finished_at),
                changes,
                Text(r.author),
                Text.assemble(r.message, (f" {r.error}" if r.error else "", "red")),
            )
        console.print(table)
