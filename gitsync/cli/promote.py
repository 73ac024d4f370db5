"""``gitsync promote`` and ``gitsync rollback``: environment promotion and rollback written as commits in a clone.

Both work in a person's clone R (its checked-out branch, fast-forwarded so the work tree follows; ``--push``
pushes it to ``origin`` without force) and read the ledger from ``refs/notes/gitsync`` (fetched from ``origin``).
Each is written once: running a command again finds its earlier commit by the trailers and writes nothing.

- ``promote``: pins the app in a receiving environment (env.yaml ``promotion: {from: ...}``) to the candidate of
  the upstream environment (``gitsync.promote.candidate``) or to ``--revision``, refusing a revision the upstream
  ledger does not verify unless ``--force --reason TEXT`` (recorded as ``Gitsync-Override``).
- ``rollback``: in a pinned environment, re-pins the newest earlier pin that verifies; in a head-following one,
  restores ``apps/<app>`` and ``environments/<env>/values/<app>.yaml`` as of the newest Succeeded release whose
  content differs from the head (or ``--to REV``).
Exit status 0 on success (also when the commit existed already), 2 when nothing could be done.
"""

from __future__ import annotations

import tarfile
import tempfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import click

from gitsync.cli.audit import clone_ledger
from gitsync.cli.pinning import PinningError, Promotion, flatten, load_pins, promoted_values, promotion_settings
from gitsync.cli.sync import env_option, fail, repo_option
from gitsync.errors import GitsyncError
from gitsync.ledger import LedgerEntry, Outcome
from gitsync.ports import CommitRequest, FileEdit, PathRestore, WriteResult

app_option = click.option("--app", "app", required=True, help="The app to promote or roll back.")
push_option = click.option("--push", is_flag=True, help="Push the commit to origin (never by force).")


class Clone:
    """Read access to the clone at ``path`` at any commit (``git`` plumbing; errors as ``GitError``)."""

    def __init__(self, path: Path) -> None:
        from gitsync.adapters.gitwrite import local_session

        self.path = path
        self._session = partial(local_session, path)

    def run(self, verb: str, *args: str, **options: object) -> str:
        with self._session() as run:
            return run(verb, *args, **options)

    def commit(self, rev: str) -> str:
        return self.run("rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}").strip()

    def tree(self, rev: str, path: str) -> str:
        """The object id of ``path`` at ``rev`` ("" when absent)."""
        listed = self.run("ls-tree", "--full-tree", rev, "--", path).strip()
        return listed.split()[2] if listed else ""

    def text(self, rev: str, path: str) -> str | None:
        if not self.tree(rev, path):
            return None
        return self.run("cat-file", "blob", f"{rev}:{path}", strip_newline_in_stdout=False)

    def rendered_values(self, rev: str, env: str, app: str) -> Mapping[str, Any]:
        """The merged values of ``app`` in ``env`` as the renderer computes them at ``rev``."""
        import renderers

        with tempfile.TemporaryDirectory(prefix="gitsync-promote-") as scratch:
            archive = Path(scratch) / "tree.tar"
            self.run("archive", "--format=tar", "-o", str(archive), "--end-of-options", rev)
            with tarfile.open(archive) as tar:
                tar.extractall(Path(scratch) / "tree", filter="data")
            return renderers.render_app(Path(scratch) / "tree", env, app).values


def _releases(clone: Clone, env: str, app: str) -> list[tuple[str, LedgerEntry]]:
    notes = clone_ledger(clone.path).read()
    return [(sha, e) for sha, entries in notes.items() for e in entries if e.env == env and e.app == app]


def _settings(clone: Clone, env: str) -> Promotion | None:
    where = f"environments/{env}/env.yaml"
    text = clone.text("HEAD", where)
    if text is None:
        raise PinningError(f"{where}: no such environment at HEAD")
    return promotion_settings(text, where)


def _report(result: WriteResult, subject: str, pushed: bool) -> None:
    if result.written:
        click.echo(f"{subject}: committed {result.commit[:12]} on {result.branch}" + (" and pushed" if pushed else ""))
    else:
        click.echo(f"{subject}: already in {result.branch} as {result.commit[:12]}; nothing written")


@click.command("promote")
@repo_option
@env_option
@app_option
@click.option("--revision", default=None, help="Pin this upstream commit instead of the candidate from the ledger.")
@push_option
@click.option("--force", is_flag=True, help="Pin even though the upstream ledger does not verify it (needs --reason).")
@click.option("--reason", default="", help="Why a forced promotion is safe; recorded as Gitsync-Override.")
def command(repo: Path, env: str, app: str, revision: str | None, push: bool, force: bool, reason: str) -> None:
    """Pin APP in a receiving environment to a verified release of its upstream environment, as one commit."""
    from gitsync.adapters.clock import SystemClock
    from gitsync.adapters.gitwrite import LocalWriter
    from gitsync.cli.pinning import values_hash
    from gitsync.promote import (
        PinnedRelease,
        RenderedChange,
        Verified,
        candidate,
        evidence,
        promotion_identity,
        promotion_message,
        verify_pin,
    )
    from gitsync.promoted_file import with_pin

    if force and not reason.strip():
        fail("--force needs --reason TEXT (it is recorded in the commit)")
    promoted = f"environments/{env}/promoted.yaml"
    try:
        clone = Clone(repo)
        settings = _settings(clone, env)
        if settings is None:
            fail(f"environments/{env}/env.yaml: {env} has no promotion: block; it follows the branch head")
        upstream = _releases(clone, settings.from_env, app)
        current = load_pins(clone.text("HEAD", promoted), promoted).get(app)
        pin = None
        if current is not None:
            pin = PinnedRelease(
                current.revision, clone.tree(current.revision, f"apps/{app}"), values_hash(current.values)
            )
        if revision is None:
            found = candidate(upstream, pin, settings.soak_seconds, SystemClock().now())
            if found is None:
                fail(f"{app}@{env}: no candidate in {settings.from_env}: nothing newer has succeeded and soaked")
            revision = found.revision
        revision = clone.commit(revision)
        values = promoted_values(clone.rendered_values(revision, settings.from_env, app), settings.values)
        wanted = PinnedRelease(revision, clone.tree(revision, f"apps/{app}"), values_hash(values))
        verdict = verify_pin(wanted, upstream, override=reason.strip() if force else "")
        if not isinstance(verdict, Verified):
            fail(f"{app}@{env}: {verdict.reason}; use --force --reason TEXT to promote it anyway")
        entry = verdict.evidence[1] if verdict.evidence else None
        source = f"{settings.from_env}@{revision}"
        before = flatten(current.values) if current else {}
        after = flatten(values)
        change = RenderedChange(
            values=tuple(
                (path, before.get(path, ""), after.get(path, ""))
                for path in sorted(before.keys() | after.keys())
                if before.get(path) != after.get(path)
            )
        )
        message = promotion_message(
            app,
            env,
            source,
            change,
            digest=entry.digest if entry else "",
            evidence=evidence(entry, settings.soak_seconds) if entry else "none: forced",
            override=verdict.override,
        )
        edit = FileEdit(
            promoted, partial(with_pin, app=app, revision=revision, from_env=settings.from_env, values=values)
        )
        request = CommitRequest((edit,), message, promotion_identity(app, env, source))
        result = LocalWriter(repo, push=push).write(request)
    except GitsyncError as e:
        fail(str(e))
    _report(result, message.partition("\n")[0], push)


@click.command("rollback")
@repo_option
@env_option
@app_option
@click.option("--to", "to", default=None, help="Restore this revision (default: the last verified or Succeeded one).")
@push_option
def rollback(repo: Path, env: str, app: str, to: str | None, push: bool) -> None:
    """Write a commit that puts APP in ENV back to its last good release."""
    from gitsync.adapters.gitwrite import LocalWriter

    try:
        clone = Clone(repo)
        settings = _settings(clone, env)
        if settings is None:
            request = _restore_head_following(clone, env, app, to)
        else:
            request = _repin(clone, env, app, settings, to)
        result = LocalWriter(repo, push=push).write(request)
    except GitsyncError as e:
        fail(str(e))
    _report(result, request.message.partition("\n")[0], push)


def _repin(clone: Clone, env: str, app: str, settings: Promotion, to: str | None) -> CommitRequest:
    """Re-pin the newest earlier pin of ``app`` (or ``to``) that the upstream ledger verifies."""
    from gitsync.cli.pinning import values_hash
    from gitsync.promote import PinnedRelease, RenderedChange, Verified, rollback_identity, rollback_message, verify_pin
    from gitsync.promoted_file import with_pin

    promoted = f"environments/{env}/promoted.yaml"
    current = load_pins(clone.text("HEAD", promoted), promoted).get(app)
    if current is None:
        fail(f"{promoted}: {app} is not pinned; nothing to roll back")
    upstream = _releases(clone, settings.from_env, app)
    history = clone.run("log", "--format=%H", "--end-of-options", "HEAD", "--", promoted).split()
    promotion_commit = ""
    for sha in history:  # the commit that set the current pin: the oldest of the newest run that holds it
        pinned = load_pins(clone.text(sha, promoted), promoted).get(app)
        if pinned is None or pinned.revision != current.revision:
            break
        promotion_commit = sha
    wanted = clone.commit(to) if to else None
    for sha in history:
        earlier = load_pins(clone.text(sha, promoted), promoted).get(app)
        if earlier is None or earlier.revision == current.revision:
            continue
        if wanted and earlier.revision != wanted:
            continue
        release = PinnedRelease(
            earlier.revision, clone.tree(earlier.revision, f"apps/{app}"), values_hash(earlier.values)
        )
        if isinstance(verify_pin(release, upstream), Verified):
            failed = _newest(_releases(clone, env, app))
            message = rollback_message(
                app,
                env,
                rollback_of=promotion_commit,
                restored=earlier.revision,
                change=RenderedChange(),
                failed=failed if failed and failed.outcome is not Outcome.SUCCEEDED else None,
            )
            edit = FileEdit(
                promoted,
                partial(with_pin, app=app, revision=earlier.revision, from_env=earlier.from_env, values=earlier.values),
            )
            return CommitRequest((edit,), message, rollback_identity(app, env, promotion_commit))
    fail(f"{promoted}: {app}: no earlier pin{f' at {to}' if to else ''} is verified by {settings.from_env}'s ledger")


def _restore_head_following(clone: Clone, env: str, app: str, to: str | None) -> CommitRequest:
    """Restore the app's chart and the environment's values file as of the last Succeeded release (or ``to``)."""
    from gitsync.promote import RenderedChange, rollback_identity, rollback_message

    paths = (f"apps/{app}", f"environments/{env}/values/{app}.yaml")
    head = tuple(clone.tree("HEAD", p) for p in paths)
    releases = sorted(_releases(clone, env, app), key=lambda pair: pair[1].finished_at, reverse=True)
    target = clone.commit(to) if to else ""
    if not target:
        for sha, entry in releases:
            ok = entry.outcome is Outcome.SUCCEEDED and _present(clone, sha)
            if ok and tuple(clone.tree(sha, p) for p in paths) != head:
                target = sha
                break
    if not target:
        fail(f"{app}@{env}: no Succeeded release in the ledger differs from HEAD; nothing to roll back")
    if tuple(clone.tree(target, p) for p in paths) == head:
        fail(f"{app}@{env}: HEAD already holds {target[:12]}'s chart and values")
    undone = releases[0][0] if releases else clone.commit("HEAD")
    failed = releases[0][1] if releases and releases[0][1].outcome is not Outcome.SUCCEEDED else None
    message = rollback_message(app, env, rollback_of=undone, restored=target, change=RenderedChange(), failed=failed)
    edits = tuple(PathRestore(p, target) for p in paths)
    return CommitRequest(edits, message, rollback_identity(app, env, undone))


def _newest(releases: list[tuple[str, LedgerEntry]]) -> LedgerEntry | None:
    return max((entry for _, entry in releases), key=lambda e: e.finished_at, default=None)


def _present(clone: Clone, sha: str) -> bool:
    try:
        clone.commit(sha)
    except GitsyncError:
        return False
    return True
