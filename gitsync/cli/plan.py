"""``gitsync plan``: what merging a change does to each environment, from the Git history of a local checkout.

Composes ``gitsync.change_plan`` with ``LocalTrees`` (each commit's tree read from the checkout's history); with
``--live`` each head render is also compared with the cluster by the server-side dry-run ``gitsync diff`` makes
(``gitsync.cli.sync.preview``). Exit status as ``gitsync diff``: 0 no change, 1 changes, 2 error (a render error
at the head, a revision that is not there, an object the server refuses), 3 an error worth retrying (cluster
unreachable, HTTP 5xx or 429).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gitsync import log as logging
from gitsync.adapters.trees import LocalTrees
from gitsync.change_plan import (
    COMMENT_LIMIT,
    Change,
    ChangePlan,
    Live,
    ObjectDiff,
    as_json,
    markdown,
    plan_change,
    text,
)
from gitsync.cli.sync import EXIT_ERROR, exit_status, fail_on, kubeconfig_option
from gitsync.errors import GitsyncError, Retry, retry_of_all
from gitsync.ports import ForgeKind

if TYPE_CHECKING:
    from renderers import RenderedApp

EXIT_CHANGES = 1


@click.command("plan")
@click.option(
    "--repo",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="GitOps repository in a Git checkout (a folder inside one works); both revisions must be in its history.",
)
@click.option("--base", required=True, help="The revision merged into (a branch, tag or commit: main, origin/main).")
@click.option("--head", "head", default="HEAD", show_default=True, help="The revision of the change.")
@click.option("--env", "env", default=None, help="Only this environment (default: every environment at either side).")
@click.option("--live", is_flag=True, help="Also compare each head render with the cluster (server-side dry-run).")
@kubeconfig_option
@click.option("-o", "--output", type=click.Choice(["markdown", "json", "text"]), default="text", show_default=True)
@click.option(
    "--limit",
    type=click.IntRange(min=1_000),
    default=COMMENT_LIMIT,
    show_default=True,
    help="Markdown only: the most characters to print (a pull-request comment's limit); what is cut is said.",
)
@click.option(
    "--comment",
    "pull_request",
    type=click.IntRange(min=1),
    default=None,
    help="Also post the plan as the one gitsync comment of this pull request (updated in place), via --forge.",
)
@click.option("--forge", "forge_kind", type=click.Choice(["github", "gitea", "gitlab"]), envvar="GITSYNC_FORGE")
@click.option("--forge-url", envvar="GITSYNC_FORGE_URL", default="https://github.com", show_default=True)
@click.option("--forge-repo", envvar="GITSYNC_FORGE_REPO", help="owner/name (GitLab: the project path).")
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="GITSYNC_FORGE_TOKEN_FILE",
    help="The forge API token, in a file (never on the command line).",
)
def command(
    repo: Path,
    base: str,
    head: str,
    env: str | None,
    live: bool,
    kubeconfig: Path | None,
    output: str,
    limit: int,
    pull_request: int | None,
    forge_kind: str | None,
    forge_url: str,
    forge_repo: str | None,
    token_file: Path | None,
) -> None:
    """Show what merging HEAD into BASE changes in each environment, rendered from Git (no cluster needed).

    Per environment and app: objects added, changed and removed, image changes, the rollout that will run, and
    what waits for promotion (a chart change reaches a pinned environment only through its next promotion).
    Secret values are masked in every format; -o markdown is made for a pull-request comment.
    With --comment N the markdown is also posted as pull request N's gitsync comment (the agent's, when it has a
    forge configured: the same comment is updated), e.g. from a CI job.
    """
    logging.configure("auto", level="ERROR")
    if pull_request is not None and not (forge_kind and forge_repo and token_file):
        raise click.UsageError("--comment needs --forge, --forge-repo and --token-file (or GITSYNC_FORGE_*)")
    trees = LocalTrees(repo)
    retries: dict[str, Retry] = {}
    try:
        base_sha, head_sha = trees.resolve(base), trees.resolve(head)
        plan = plan_change(trees, base_sha, head_sha, env, live=_live(kubeconfig, retries) if live else None)
        if pull_request is not None:
            assert forge_kind and forge_repo and token_file
            _comment(
                plan, base_sha, head_sha, base, pull_request, ForgeKind(forge_kind), forge_url, forge_repo, token_file
            )
    except GitsyncError as e:
        fail_on(e)
    if output == "json":
        click.echo(json.dumps(as_json(plan), indent=2))
    elif output == "markdown":
        click.echo(markdown(plan, limit), nl=False)
    else:
        click.echo(text(plan), nl=False)
    sys.exit(_status(plan, retries))


def _comment(
    plan: ChangePlan,
    base_sha: str,
    head_sha: str,
    base: str,
    number: int,
    kind: ForgeKind,
    url: str,
    repo: str,
    token_file: Path,
) -> None:
    from gitsync.adapters.clock import SystemClock
    from gitsync.adapters.forge import ForgeClient
    from gitsync.runtime.plan_comments import MARKER, comment_text

    forge = ForgeClient(kind, url, repo, token_file, clock=SystemClock())
    posted = forge.upsert_comment(number, MARKER, comment_text(plan, base_sha, head_sha, base.removeprefix("origin/")))
    click.echo(f"plan comment: {posted}", err=True)


def _status(plan: ChangePlan, retries: dict[str, Retry]) -> int:
    """1 for changes; for errors 3 when each was a dry-run worth retrying, else 2."""
    if plan.errors:
        for app in plan.errors:
            click.echo(f"error: {app.key}: {app.error}", err=True)
        if all(a.key in retries for a in plan.errors):
            return exit_status(retry_of_all(retries[a.key] for a in plan.errors) or Retry.TERMINAL)
        return EXIT_ERROR
    return EXIT_CHANGES if plan.has_changes else 0


def _live(kubeconfig: Path | None, retries: dict[str, Retry]) -> Live:
    """The ``Live`` of ``plan_change``: each head render previewed as ``gitsync diff`` does; ``retries`` gets
    the retry class of each app-env whose objects the server refused."""
    from gitsync.cli.sync import connect, preview, snapshot
    from gitsync.plan import PlanAction, defined_kind
    from gitsync.sync import namespace_exists

    cluster = connect(kubeconfig)
    namespaces: dict[str, bool] = {}
    changes = {PlanAction.CREATE: Change.ADDED, PlanAction.UPDATE: Change.CHANGED, PlanAction.DELETE: Change.REMOVED}

    def compare(rendered: RenderedApp) -> tuple[tuple[ObjectDiff, ...], str]:
        if rendered.namespace not in namespaces:
            namespaces[rendered.namespace] = namespace_exists(cluster, rendered.namespace)
        kinds = {k for m in rendered.manifests if (k := defined_kind(m)) is not None}
        result = preview(
            rendered,
            cluster,
            live=snapshot(cluster),
            new_namespace=not namespaces[rendered.namespace],
            new_kinds=kinds,
        )
        refused = result.plan.errors + result.plan.conflicts
        if refused:
            retries[str(rendered.app_env)] = retry_of_all(c.retry for c in refused) or Retry.TERMINAL
        diffs = tuple(
            ObjectDiff(str(c.id), changes[c.action], c.diff)
            for c in result.plan.changes
            if c.error is None and c.action in changes
        )
        return diffs, "; ".join(f"{c.id}: {c.error}" for c in refused)

    return compare
