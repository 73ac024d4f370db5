"""``gitsync diff``: what a sync would change, computed by server-side dry-run, in the style of ``kubectl diff``.

Exit status follows kubectl: 0 no changes, 1 changes, 2 error (render error, no cluster, a dry-run the server
refused). Secret values are masked in every format. ``-o json`` is for machines, ``-o markdown`` for a pull
request comment.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gitsync import log as logging
from gitsync.cli.sync import EXIT_ERROR, app_option, connect, env_option, fail, kubeconfig_option, render, repo_option
from gitsync.errors import GitsyncError
from gitsync.plan import Plan, PlanAction
from gitsync.sync import SyncResult

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

    from gitsync.adapters.kube import KubeCluster
    from gitsync.plan import ListSnapshot

EXIT_CHANGES = 1


@click.command("diff")
@repo_option
@env_option
@app_option
@kubeconfig_option
@click.option("-o", "--output", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
def command(repo: Path, env: str, app: str | None, kubeconfig: Path | None, output: str) -> None:
    """Show what `gitsync sync` would change, without changing anything."""
    from concurrent.futures import ThreadPoolExecutor

    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.sync import sync_app

    # stdout is the diff; the command prints each error once itself (the warning event would repeat them as JSON)
    logging.configure("auto", level="ERROR")
    pool = ThreadPoolExecutor(max_workers=8)
    ahead = pool.submit(_read_ahead, repo, env, app, kubeconfig, pool)
    try:
        targets = render(repo, env, app)
        cluster, snapshots, missing = ahead.result()
        store = ConfigMapStateStore(cluster)
        results = [
            sync_app(
                r,
                cluster,
                store,
                prune=True,
                dry_run=True,
                live=snapshots[r.app_env.app],
                new_namespace=r.namespace in missing,
            )
            for r in targets
        ]
    except GitsyncError as e:
        pool.shutdown(wait=False, cancel_futures=True)  # a render error does not wait for reads nobody needs
        fail(str(e))
    pool.shutdown()
    total = Plan(tuple(chain.from_iterable(r.plan.changes for r in results)))
    if output == "json":
        click.echo(json.dumps(_json(env, results, total), indent=2))
    elif output == "markdown":
        click.echo(_markdown(env, results, total))
    else:
        for change in total.changes:
            text = change.diff
            if text:
                click.echo(text, nl=False)
        click.echo(total.summary())
    if total.errors:
        for change in total.errors:
            click.echo(f"error: {change.error}", err=True)
        sys.exit(EXIT_ERROR)
    if total.has_changes:
        sys.exit(EXIT_CHANGES)


def _read_ahead(
    repo: Path, env: str, app: str | None, kubeconfig: Path | None, pool: ThreadPoolExecutor
) -> tuple[KubeCluster, dict[str, ListSnapshot], frozenset[str]]:
    """Connect, check the environment's namespace and start listing what each app's stored inventory holds, in a
    thread while the templates render: the server prepares the lists meanwhile. A diff shows changes only, so the
    lists are metadata lists first (``versions_first``): unchanged objects the memo knows at their
    resourceVersion are never fetched. A failure here is left for the same call after the render to raise, so a
    render error is still reported first. Returns the namespaces a sync would create."""
    import renderers
    from gitsync import inventory
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.model import AppEnv
    from gitsync.plan import ListSnapshot
    from gitsync.sync import namespace_exists

    cluster = connect(kubeconfig)
    snapshots = {}
    missing: frozenset[str] = frozenset()
    with contextlib.suppress(GitsyncError, renderers.RenderError):
        environment = renderers.load_environment(repo, env)
        if not namespace_exists(cluster, environment.namespace):
            missing = frozenset({environment.namespace})
        store = ConfigMapStateStore(cluster)
        for name in environment.apps if app is None else (app,):
            snapshot = snapshots[name] = ListSnapshot(cluster, versions_first=True)
            snapshot.prefetch(inventory.load(store, AppEnv(name, env), environment.namespace).objects, pool)
    return cluster, defaultdict(lambda: ListSnapshot(cluster, versions_first=True), snapshots), missing


def _counts(plan: Plan) -> dict[str, int]:
    return {str(action): n for action, n in plan.counts().items()}


def _json(env: str, results: Sequence[SyncResult], total: Plan) -> dict[str, Any]:
    return {
        "env": env,
        "summary": _counts(total),
        "apps": [
            {
                "app": r.app_env.app,
                "env": r.app_env.env,
                "revision": r.revision,
                "digest": r.digest,
                "summary": _counts(r.plan),
                "changes": [
                    {"id": str(c.id), "action": str(c.action), "diff": c.diff, "error": c.error} for c in r.plan.changes
                ],
            }
            for r in results
        ],
    }


def _markdown(env: str, results: Sequence[SyncResult], total: Plan) -> str:
    lines = [f"### gitsync plan for `{env}`", "", f"**{total.summary()}**", ""]
    for r in results:
        lines += [f"#### `{r.app_env}`: {r.plan.summary()}", ""]
        for c in r.plan.changes:
            if c.error:
                lines += [f"- :x: `{c.id}`: {c.error}"]
            elif c.action is not PlanAction.UNCHANGED:
                lines += [
                    "<details>",
                    f"<summary><code>{c.id}</code>: {c.action}</summary>",
                    "",
                    "```diff",
                    c.diff.rstrip("\n"),
                    "```",
                    "</details>",
                    "",
                ]
        lines.append("")
    return "\n".join(lines).rstrip("\n")
