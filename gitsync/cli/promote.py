"""``gitsync promote`` and ``gitsync rollback``: environment promotion and rollback written as commits in a clone.

Both work in a person's clone R (its checked-out branch, fast-forwarded so the work tree follows; ``--push``
pushes it to ``origin`` without force) and read the ledger from ``refs/notes/gitsync`` (fetched from ``origin``).
Each is written once: running a command again finds its earlier commit by the trailers and writes nothing.

- ``promote``: pins the app in a receiving environment (env.yaml ``promotion: {from: ...}``) to the candidate of
  the upstream environment (``gitsync.promote.candidate``) or to ``--revision``, refusing a revision the upstream
  ledger does not verify unless ``--force --reason TEXT`` (recorded as ``Gitsync-Override``).
- ``rollback``: in a pinned environment, re-pins the pin of the environment's own last Succeeded release of the
  app pinned elsewhere than now (from its ledger; from ``promoted.yaml``'s history when the ledger holds no
  release of the app there), provided the agent's guard would apply it; in a head-following one, restores
  ``apps/<app>`` and ``environments/<env>/values/<app>.yaml`` as of the newest Succeeded release whose content
  differs from the head (or ``--to REV``).

Everything is read at the clone's ``HEAD`` (or at the commit in question), never from the work tree, through the
renderer (``renderers.load_environment``, ``renderers.promotion``) on trees extracted by ``LocalTrees``; the body
of a promotion or re-pin says what it changes in the environment's render (``gitsync.promote.pin_change``).

Exit status 0 on success (also when the commit existed already), 2 when nothing could be done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path

import click

from gitsync.adapters.clock import SystemClock
from gitsync.adapters.gitwrite import LocalWriter, local_session
from gitsync.adapters.trees import LocalTrees
from gitsync.cli.audit import allowed_signers_option, clone_ledger, ledger_verifier
from gitsync.cli.sync import env_option, fail, repo_option
from gitsync.errors import GitsyncError
from gitsync.ledger import LedgerEntry, ReleaseOutcome, Seal
from gitsync.ports import CommitRequest, FileEdit, PathRestore, WriteResult
from gitsync.promote import (
    Blocked,
    PinnedRelease,
    RenderedChange,
    Verified,
    candidate,
    evidence,
    pin_change,
    pinned_release,
    promotion_identity,
    promotion_message,
    rollback_identity,
    rollback_message,
    soak_left,
    trusted,
    verify_pin,
)
from gitsync.promoted_file import with_pin
from renderers import load_environment, render_app
from renderers.environment import Promotion
from renderers.promotion import Pin, env_yaml_errors, load_pins, promoted_values

app_option = click.option("--app", "app", required=True, help="The app to promote or roll back.")
push_option = click.option("--push", is_flag=True, help="Push the commit to origin (never by force).")

Releases = list[tuple[str, LedgerEntry]]
"""(noted commit, entry) of one app in one environment, as ``gitsync.promote`` takes them."""


class Clone:
    """Read access to the clone at ``path`` at any commit (``git`` plumbing; errors as ``GitError``), and its
    trees at a commit for the renderer (``LocalTrees``: extracted once, cached outside the clone). ``seal``
    (``--allowed-signers``) checks each ledger line's signature: only lines it verifies count, as for the agent
    (``gitsync.promote.trusted``)."""

    def __init__(self, path: Path, seal: Callable[[LedgerEntry], Seal] | None = None) -> None:
        self.path = path
        self.trees = LocalTrees(path)
        self._session = partial(local_session, path)
        self._notes: Mapping[str, tuple[LedgerEntry, ...]] | None = None
        self._seal = seal

    def run(self, verb: str, *args: str, **options: object) -> str:
        with self._session() as run:
            return run(verb, *args, **options)

    def commit(self, rev: str) -> str:
        return self.run("rev-parse", "--verify", "--end-of-options", f"{rev}^{{commit}}").strip()

    def tree(self, rev: str, path: str) -> str:
        """The object id of ``path`` at ``rev`` ("" when absent)."""
        listed = self.run("ls-tree", "--full-tree", rev, "--", path).strip()
        return listed.split()[2] if listed else ""

    def at(self, rev: str) -> Path:
        """A directory holding the repository as of ``rev`` (read-only)."""
        return self.trees(self.commit(rev))

    def releases(self, env: str, app: str) -> Releases:
        """The ledger's releases of ``app`` in ``env`` that count (``refs/notes/gitsync``, fetched from origin
        once; with ``seal`` only the signed ones)."""
        return trusted(self._lines(env, app), self._seal)

    def distrusted(self, env: str, app: str) -> str:
        """What the ledger holds of ``app`` in ``env`` that does not count, for an error's end ("" when nothing):
        a person who sees "no candidate" or "not verified" learns that a line was there, and why it was not
        taken."""
        seal = self._seal
        if seal is None:
            return ""
        skipped = [kind.value for kind in (seal(e) for _, e in self._lines(env, app)) if kind is not Seal.VERIFIED]
        if not skipped:
            return ""
        kinds = ", ".join(f"{skipped.count(kind)} {kind}" for kind in sorted(set(skipped)))
        return f" ({env}'s ledger lines of {app} not trusted, as if absent: {kinds}; see gitsync audit)"

    def _lines(self, env: str, app: str) -> Releases:
        if self._notes is None:
            self._notes = clone_ledger(self.path).read()
        return [(sha, e) for sha, entries in self._notes.items() for e in entries if e.env == env and e.app == app]

    def released(self, pin: Pin) -> PinnedRelease:
        """What the ledger knows ``pin`` by: its chart and ``lib/`` trees and promoted values."""
        return pinned_release(self.tree, pin.app, pin.revision, pin.values)


def _promotion(root: Path, env: str) -> Promotion | None:
    return load_environment(root, env).promotion


def _report(result: WriteResult, subject: str, pushed: bool) -> None:
    if result.written:
        click.echo(f"{subject}: committed {result.commit[:12]} on {result.branch}" + (" and pushed" if pushed else ""))
    else:
        click.echo(f"{subject}: already in {result.branch} as {result.commit[:12]}; nothing written")


def _pin_edit(env: str, pin: Pin) -> FileEdit:
    edit = partial(
        with_pin, app=pin.app, revision=pin.revision, from_env=pin.from_env, values=pin.values, override=pin.override
    )
    return FileEdit(f"environments/{env}/promoted.yaml", edit)


@click.command("promote")
@repo_option
@env_option
@app_option
@click.option("--revision", default=None, help="Pin this upstream commit instead of the candidate from the ledger.")
@push_option
@click.option("--force", is_flag=True, help="Pin even though the upstream ledger does not verify it (needs --reason).")
@click.option("--reason", default="", help="Why a forced promotion is safe; recorded as Gitsync-Override.")
@allowed_signers_option
def command(
    repo: Path,
    env: str,
    app: str,
    revision: str | None,
    push: bool,
    force: bool,
    reason: str,
    allowed_signers: Path | None,
) -> None:
    """Pin APP in a receiving environment to a verified release of its upstream environment, as one commit."""
    if force and not reason.strip():
        fail("--force needs --reason TEXT (it is recorded in the commit)")
    verifier = ledger_verifier(allowed_signers)
    try:
        clone = Clone(repo, verifier.seal if verifier is not None else None)
        head = clone.at("HEAD")
        settings = _promotion(head, env)
        if settings is None:
            fail(f"environments/{env}/env.yaml: {env} has no promotion: block; it follows the branch head")
        upstream = clone.releases(settings.from_env, app)
        current = load_pins(head, env).get(app)
        if revision is None:
            pinned = clone.released(current) if current is not None else None
            now = SystemClock().now()
            found = candidate(upstream, pinned, settings.soak_seconds, now)
            if found is None:
                why = _why_none(upstream, pinned, settings, now) + clone.distrusted(settings.from_env, app)
                fail(f"{app}@{env}: no candidate in {settings.from_env}: {why}")
            revision = found.revision
        revision = clone.commit(revision)
        source_values = render_app(clone.at(revision), settings.from_env, app, trees=clone.trees).values
        override = " ".join(reason.split()) if force else ""
        pin = Pin(
            app,
            revision,
            settings.from_env,
            promoted_values(source_values, settings.values, env_yaml_errors(head, env)),
            override,
        )
        verdict = _verify(clone, pin, upstream)
        if not isinstance(verdict, Verified):
            untrusted = clone.distrusted(settings.from_env, app)
            fail(f"{app}@{env}: {verdict.reason}{untrusted}; use --force --reason TEXT to promote it anyway")
        pin = replace(pin, override=verdict.override)  # a forced pin the ledger verifies anyway is not forced
        entry = verdict.evidence[1] if verdict.evidence else None
        source = f"{settings.from_env}@{revision}"
        message = promotion_message(
            app,
            env,
            source,
            pin_change(head, env, app, pin, clone.trees),
            digest=entry.digest if entry else "",
            evidence=evidence(entry, settings.soak_seconds) if entry else _unverified(upstream, revision, source),
            override=verdict.override,
        )
        request = CommitRequest((_pin_edit(env, pin),), message, promotion_identity(app, env, source))
        result = LocalWriter(repo, push=push).write(request)
    except GitsyncError as e:
        fail(str(e))
    _report(result, message.partition("\n")[0], push)


def _unverified(upstream: Releases, revision: str, source: str) -> str:
    """``Gitsync-Evidence`` of a forced promotion: what the upstream ledger holds on the revision instead of a
    verifying release (its newest line there: a rolled-back release, one still soaking), so the commit says
    what was overridden."""
    noted = [entry for sha, entry in upstream if sha == revision]
    if not noted:
        return f"none: forced; {source.partition('@')[0]} noted no release of it"
    return f"none: forced; {source.partition('@')[0]} noted {evidence(max(noted, key=lambda e: e.recency))}"


def _why_none(upstream: Releases, pinned: PinnedRelease | None, settings: Promotion, now: float) -> str:
    """Why the ledger offers no candidate, in the words a person acts on: nothing noted yet (a laptop's `gitsync
    sync` notes nothing: the agent does), a release still soaking, or nothing newer than the pin."""
    if not upstream:
        return (
            "the ledger (refs/notes/gitsync) holds no release of the app there; the agent (gitsync run) notes each "
            "release it finishes, gitsync sync does not (or pass --revision SHA with --force --reason TEXT)"
        )
    _, newest = max(upstream, key=lambda pair: pair[1].recency)
    left = soak_left(upstream, pinned, settings.soak_seconds, now)
    if left is not None:  # as the agent reports it (promotion.soaking)
        return f"{settings.from_env}@{newest.revision[:12]} soaks, {left:.0f}s left"
    return "nothing newer has succeeded and soaked"


def _verify(clone: Clone, pin: Pin, upstream: Releases) -> Verified | Blocked:
    """The agent's guard on ``pin`` as this clone holds it: verified by the upstream ledger, or forced (its
    ``override`` reason)."""
    return verify_pin(clone.released(pin), upstream, override=pin.override)


@click.command("rollback")
@repo_option
@env_option
@app_option
@click.option("--to", "to", default=None, help="Restore this revision (default: the last verified or Succeeded one).")
@push_option
@allowed_signers_option
def rollback(repo: Path, env: str, app: str, to: str | None, push: bool, allowed_signers: Path | None) -> None:
    """Write a commit that puts APP in ENV back to its last good release."""
    verifier = ledger_verifier(allowed_signers)
    try:
        clone = Clone(repo, verifier.seal if verifier is not None else None)
        settings = _promotion(clone.at("HEAD"), env)
        if settings is None:
            request = _restore_head_following(clone, env, app, to)
        else:
            request = _repin(clone, env, app, settings, to)
        result = LocalWriter(repo, push=push).write(request)
    except GitsyncError as e:
        fail(str(e))
    _report(result, request.message.partition("\n")[0], push)


def _repin(clone: Clone, env: str, app: str, settings: Promotion, to: str | None) -> CommitRequest:
    """Re-pin the pin of ``env``'s own last Succeeded release of ``app`` pinned elsewhere than now, or, when the
    ledger holds no release of the app in ``env``, the newest earlier pin in ``promoted.yaml``'s history; either
    must pass the agent's guard (verified by the upstream ledger, or forced with a reason, which it keeps).
    ``to`` picks the pinned revision instead of the newest."""
    promoted = f"environments/{env}/promoted.yaml"
    head = clone.at("HEAD")
    current = load_pins(head, env).get(app)
    if current is None:
        fail(f"{promoted}: {app} is not pinned; nothing to roll back")
    upstream = clone.releases(settings.from_env, app)
    own = sorted(clone.releases(env, app), key=lambda pair: pair[1].recency, reverse=True)
    history = clone.run("log", "--format=%H", "--end-of-options", "HEAD", "--", promoted).split()
    if own:  # what ran here and Succeeded, newest first
        commits, where = [sha for sha, e in own if e.outcome is ReleaseOutcome.SUCCEEDED], f"{env}'s ledger"
    else:
        commits, where = history, f"{promoted}'s history"
    wanted = clone.commit(to) if to else None
    for sha in commits:
        earlier = _pin_at(clone, sha, env, app)
        if earlier is None or earlier.revision == current.revision or (wanted and earlier.revision != wanted):
            continue
        if not isinstance(_verify(clone, earlier, upstream), Verified):
            continue
        rollback_of = _pinned_by(clone, history, env, current)
        failed = _failed(own)
        message = rollback_message(
            app,
            env,
            rollback_of=rollback_of,
            restored=earlier.revision,
            change=pin_change(head, env, app, earlier, clone.trees),
            failed=failed,
            override=earlier.override,
        )
        return CommitRequest((_pin_edit(env, earlier),), message, rollback_identity(app, env, rollback_of))
    at = f" at {to}" if to else ""
    fail(f"{promoted}: {app}: no earlier pin{at} in {where} is verified by {settings.from_env}'s ledger or forced")


def _pin_at(clone: Clone, sha: str, env: str, app: str) -> Pin | None:
    """The pin of ``app`` in ``env`` at commit ``sha``; None when there is none, or the clone cannot read it
    there (a commit it lacks, a file that was broken then: neither is something to roll back to)."""
    try:
        return load_pins(clone.at(sha), env).get(app)
    except GitsyncError:
        return None


def _pinned_by(clone: Clone, history: list[str], env: str, current: Pin) -> str:
    """The commit that set the current pin: the oldest of the newest run of ``history`` holding it."""
    found = ""
    for sha in history:
        pinned = _pin_at(clone, sha, env, current.app)
        if pinned is None or pinned.revision != current.revision:
            break
        found = sha
    return found


def _restore_head_following(clone: Clone, env: str, app: str, to: str | None) -> CommitRequest:
    """Restore the app's chart and the environment's values file as of the last Succeeded release (or ``to``)."""
    paths = (f"apps/{app}", f"environments/{env}/values/{app}.yaml")
    head = tuple(clone.tree("HEAD", p) for p in paths)
    releases = sorted(clone.releases(env, app), key=lambda pair: pair[1].recency, reverse=True)
    target = clone.commit(to) if to else ""
    if not target:
        for sha, entry in releases:
            ok = entry.outcome is ReleaseOutcome.SUCCEEDED and _present(clone, sha)
            if ok and tuple(clone.tree(sha, p) for p in paths) != head:
                target = sha
                break
    if not target:
        fail(f"{app}@{env}: no Succeeded release in the ledger differs from HEAD; nothing to roll back")
    if tuple(clone.tree(target, p) for p in paths) == head:
        fail(f"{app}@{env}: HEAD already holds {target[:12]}'s chart and values")
    undone = releases[0][0] if releases else clone.commit("HEAD")
    failed = _failed(releases)
    message = rollback_message(app, env, rollback_of=undone, restored=target, change=RenderedChange(), failed=failed)
    edits = tuple(PathRestore(p, target) for p in paths)
    return CommitRequest(edits, message, rollback_identity(app, env, undone))


def _failed(newest_first: list[tuple[str, LedgerEntry]]) -> LedgerEntry | None:
    """The newest line when it says the release failed: the evidence a rollback commit cites."""
    return newest_first[0][1] if newest_first and newest_first[0][1].outcome.failed else None


def _present(clone: Clone, sha: str) -> bool:
    try:
        clone.commit(sha)
    except GitsyncError:
        return False
    return True
