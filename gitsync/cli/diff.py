"""``gitsync diff``: what a sync would change, computed by server-side dry-run, in the style of ``kubectl diff``.

Exit status follows kubectl: 0 no changes, 1 changes (a person's ``kubectl edit`` of a declared field included:
drift that ``sync`` takes back), 2 error (render error, a dry-run the server refused, a conflict with fields a
controller owns), 3 an error that may pass on a retry (cluster unreachable, HTTP 5xx or 429): the rule of
``gitsync.cli.sync.exit_status``. An app no longer listed in ``env.yaml`` whose objects gitsync still holds shows
as their deletes when the environment prunes (as ``sync`` removes them), or as a line saying they stay. Secret
values are masked in every format. ``-o json`` is for machines,
``-o markdown`` for a pull request comment; both name the checkout's revision (its ``HEAD``, ``-dirty`` with
uncommitted changes, as ``sync`` records it), which the plain diff does not look up.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import click

from gitsync import log as logging
from gitsync.cli.sync import (
    app_option,
    departures,
    env_option,
    exit_status,
    fail_on,
    kubeconfig_option,
    preview_departure,
    previews,
    repo_option,
)
from gitsync.errors import GitsyncError, Retry, retry_of_all
from gitsync.plan import Plan, PlanAction
from gitsync.sync import SyncResult

EXIT_CHANGES = 1


@click.command("diff")
@repo_option
@env_option
@app_option
@kubeconfig_option
@click.option("-o", "--output", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True)
def command(repo: Path, env: str, app: str | None, kubeconfig: Path | None, output: str) -> None:
    """Show what `gitsync sync` would change, without changing anything."""
    from renderers import load_environment

    # stdout is the diff; the command prints each error once itself (the warning event would repeat them as JSON)
    logging.configure("auto", level="ERROR")
    try:
        environment = load_environment(repo, env)
        cluster, previewed = previews(repo, environment, app, kubeconfig, listed=True)
        results = [result for _, result in previewed]
        # apps no longer listed, as sync removes them (a whole environment only): deletes, or a note they stay
        departed = departures(cluster, environment, None) if not app else []
        removals = [preview_departure(cluster, key, target, "") for key, target in departed]
    except GitsyncError as e:
        fail_on(e)
    for removal in removals:
        if isinstance(removal, str):
            click.echo(removal, err=True)
            continue
        results.append(removal)
        deletes = removal.plan.counts()[PlanAction.DELETE]
        listed = f"environments/{removal.app_env.env}/env.yaml"
        click.echo(f"{removal.app_env}: no longer listed in {listed}: sync deletes its {deletes} objects", err=True)
    total = Plan(tuple(chain.from_iterable(r.plan.changes for r in results)))
    if output == "json":
        click.echo(json.dumps(_json(env, results, total, _revision(repo)), indent=2))
    elif output == "markdown":
        click.echo(_markdown(env, results, total, _revision(repo)))
    else:
        for change in total.changes:
            text = change.diff
            if text:
                click.echo(text, nl=False)
        click.echo(total.summary())
    refused = total.errors + total.conflicts
    if refused:
        for change in refused:
            click.echo(f"error: {change.error}", err=True)
        sys.exit(exit_status(retry_of_all(c.retry for c in refused) or Retry.TERMINAL))
    if total.has_changes:
        sys.exit(EXIT_CHANGES)


def _revision(repo: Path) -> str:
    """The revision ``sync`` would record for this checkout: ``HEAD``, ``-dirty`` with uncommitted changes, "" out
    of a Git work tree. Two ``git`` runs, so only the formats that show it ask (a plain diff is timed)."""
    from gitsync.adapters.checkout import LocalCheckout

    return LocalCheckout(repo).resolve().revision


def _counts(plan: Plan) -> dict[str, int]:
    return {str(action): n for action, n in plan.counts().items()}


def _json(env: str, results: Sequence[SyncResult], total: Plan, revision: str) -> dict[str, Any]:
    return {
        "env": env,
        "summary": _counts(total),
        "apps": [
            {
                "app": r.app_env.app,
                "env": r.app_env.env,
                "revision": revision,
                "digest": r.digest,
                "summary": _counts(r.plan),
                "changes": [
                    {"id": str(c.id), "action": str(c.action), "diff": c.diff, "error": c.error} for c in r.plan.changes
                ],
            }
            for r in results
        ],
    }


def _markdown(env: str, results: Sequence[SyncResult], total: Plan, revision: str) -> str:
    at = f" at `{revision}`" if revision else ""
    lines = [f"### gitsync plan for `{env}`{at}", "", f"**{total.summary()}**", ""]
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
