"""``gitsync render``: print an environment's manifests (or their digests) exactly as the agent would apply them.

Imports only the renderer and the rollout policy parser (no Kubernetes client), so it starts fast enough for
pre-commit hooks and CI. It also checks each app's ``values.rollout``, so a broken rollout block fails in CI
rather than at the agent's next reconcile.

In an environment that receives promotions, a pinned app's chart is read from the local Git history
(``gitsync.adapters.trees.LocalTrees``), and an app without a pin is reported on stderr as awaiting promotion
and left out: that is not an error. ``render_apps`` does this for every command that renders a local checkout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from gitsync.adapters.render_cache import disk_blobs
from gitsync.adapters.trees import LocalTrees
from gitsync.errors import GitsyncError
from renderers import AwaitingPromotion, Environment, RenderedApp, RenderError, load_environment, render_app
from renderers.cache import StoredRenderCache

if TYPE_CHECKING:  # imported when a values file has a rollout block: it costs a one-shot render 15 ms
    from gitsync.strategy.policy import PolicyError


def render_apps(
    repo: Path,
    environment: Environment,
    apps: Sequence[str] = (),
    sets: Sequence[str] = (),
    revision: str | None = None,
) -> tuple[RenderedApp, ...]:
    """Each app of ``environment`` (or those named) rendered from the local checkout ``repo``, pinned charts from
    its Git history, each kept in the user's render cache (``gitsync.adapters.render_cache``) and rendered again
    only when its inputs changed. Apps awaiting promotion are left out, each with one line on stderr; any other
    error raises (the first in env.yaml order). The command reads ``env.yaml`` (``load_environment``) once."""
    rendered = []
    for _app, outcome in _outcomes(repo, environment, apps, sets, revision):  # stops at the first error
        if isinstance(outcome, AwaitingPromotion):
            click.echo(str(outcome), err=True)
        elif isinstance(outcome, RenderError):
            raise outcome
        else:
            rendered.append(outcome)
    return tuple(rendered)


def render_each(
    repo: Path,
    environment: Environment,
    apps: Sequence[str] = (),
    sets: Sequence[str] = (),
    revision: str | None = None,
) -> tuple[tuple[str, RenderedApp | RenderError], ...]:
    """``render_apps``, but each app's own render error (``AwaitingPromotion`` included) is that app's answer, as
    ``(app, rendered or error)`` in env.yaml order, so a command that reports per app (``status``) still shows the
    others. An app env.yaml does not list concerns the command: it raises."""
    return tuple(_outcomes(repo, environment, apps, sets, revision))


def _outcomes(
    repo: Path, environment: Environment, apps: Sequence[str], sets: Sequence[str], revision: str | None
) -> Iterator[tuple[str, RenderedApp | RenderError]]:
    """``render_each``'s answers one app at a time, so ``render_apps`` renders no app after the first error."""
    trees = LocalTrees(repo)
    blobs = disk_blobs()
    cache = StoredRenderCache(blobs) if blobs is not None else None
    env = environment.name
    for app in apps or environment.apps:
        try:
            rendered = render_app(
                repo, env, app, sets=sets, revision=revision, trees=trees, cache=cache, environment=environment
            )
        except RenderError as e:
            if app not in environment.apps:
                raise  # a name the command was given, not an app of the environment
            yield app, e
        else:
            yield app, rendered


@click.command()
@click.option(
    "--repo",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path(),
    show_default=True,
    help="Root of the GitOps repository (holds apps/ and environments/).",
)
@click.option("--env", "env", required=True, help="Environment to render (environments/<env>/env.yaml).")
@click.option("--app", "apps", multiple=True, help="Only this app (repeatable); default: every app of the environment.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a value, e.g. image.tag=1.2.3.")
@click.option("--revision", default=None, help="Commit sha the templates see as release.revision.")
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.option("--digest", is_flag=True, help="Print '<digest> <app>@<env>' per app instead of the manifests.")
def command(
    repo: Path, env: str, apps: tuple[str, ...], sets: tuple[str, ...], revision: str | None, output: str, digest: bool
) -> None:
    """Render manifests from the repository: deterministic order, byte-identical across runs.

    On a render error or an invalid `rollout:` block, prints `path:line: problem` on stderr and exits with status 1.
    An app awaiting promotion (no pin yet in promoted.yaml) is noted on stderr and left out; the status stays 0.
    """
    try:
        rendered = render_apps(repo, load_environment(repo, env), apps, sets, revision)
    except (RenderError, GitsyncError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    for r in rendered:
        if "rollout" not in r.values:
            continue
        from gitsync.strategy.policy import PolicyError, parse_policy

        try:
            parse_policy(r.values, source=f"{r.app_env}: values")
        except PolicyError as exc:
            set_rollout = any(s.startswith("rollout.") for s in sets)  # the value may come from --set, not a file
            click.echo(str(exc) if set_rollout else policy_error_line(repo, r, exc), err=True)
            sys.exit(1)
    if digest:
        click.echo("".join(f"{r.digest} {r.app_env}\n" for r in rendered), nl=False)
        return
    bodies = [m.body for r in rendered for m in r.manifests]
    if output == "json":
        document = {"apiVersion": "v1", "kind": "List", "items": bodies}
        click.echo(json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False))
        return
    from renderers.yamlio import dump

    click.echo("".join(dump(body, explicit_start=True) for body in bodies), nl=False)


def policy_error_line(repo: Path, rendered: RenderedApp, error: PolicyError) -> str:
    """``error`` pointing at ``path:line`` in the app's values files (chart, then environment overrides); a
    pinned chart's values.yaml is read as of its pin."""
    from gitsync.strategy.policy import locate

    key = rendered.app_env
    chart_root = LocalTrees(repo)(rendered.pin.revision) if rendered.pin is not None else repo
    layers = []
    for root, path in (
        (chart_root, f"apps/{key.app}/values.yaml"),
        (repo, f"environments/{key.env}/values/{key.app}.yaml"),
    ):
        try:
            layers.append((path, (root / path).read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError):
            continue  # an absent override file; a broken one already failed the render
    return locate(error, layers)
