"""The promote stage and the pin guard: how a release moves from one environment to the next through Git.

- ``Promotions.guard`` (before anything of a pinned app is applied): the pin must be verified by the upstream
  environment's ledger, a Succeeded release with the same chart tree and promoted values, or carry the reason it
  was forced (``override`` in ``promoted.yaml``). A verified pin is remembered (the ledger only grows), so a
  reconcile of an unchanged pin reads no notes.
- Trust: with a ``verifier`` (``repo.verify.allowedSignersFile``) only ledger lines an allowed key signed count,
  for the guard, the candidates, the soak and the rollback alike; any other line is as if absent (the verifier
  reports it once; the rule is ``promote.trusted``, as in ``gitsync promote``). Without one every line counts, as
  before lines were signed. An allowed signers file that cannot be used blocks every pin not yet verified and
  every promotion, naming the file and line, until it is fixed (what runs stays).
- ``Promotions.step`` (after verify, in a receiving environment): in ``auto`` and ``pull-request`` mode the newest
  upstream release that Succeeded and then stayed unchanged and healthy for ``soak`` becomes the app's pin, by one
  commit on the tracked branch (auto) or on ``gitsync/promote/<env>/<app>`` (pull-request; merging it promotes);
  ``manual`` only reports the candidate. When a rollout of a pinned app aborts, a commit puts the previous verified
  pin back (``Gitsync-Rollback-Of``), by the same mode, so Git again says what runs.
- ``Promotions.entry`` and ``append`` (the record sink's helpers): the ledger line of a finished release, made,
  then written.

Exactly once: every commit carries identifying trailers and the writer (``ports.GitWriter``) returns an existing
commit with them instead of writing again, so a killed agent, a retry or two replicas give one commit.

I/O only through ports: the ledger, the writer, the trees of commits and their tree ids.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from gitsync import log as logging
from gitsync.errors import GitsyncError, TerminalError
from gitsync.history import Result, Status
from gitsync.ledger import AnalysisResult, Approvals, LedgerEntry, ReleaseContent, SignersError
from gitsync.ledger import ReleaseOutcome as LedgerOutcome
from gitsync.model import AppEnv
from gitsync.ports import CommitRequest, FileEdit, GitWriter, Ledger, LedgerVerifier, RenderedApp, WriteResult
from gitsync.promote import (
    Blocked,
    PinnedRelease,
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
from renderers import RenderError
from renderers.promotion import PathError, Pin

__all__ = ["PromotionAction", "PromotionStep", "Promotions", "Topology", "Upstream", "review_branch", "topology"]

log = logging.get("gitsync.promotion")

_ENDED = {
    Result.SUCCEEDED: LedgerOutcome.SUCCEEDED,
    Result.ROLLED_BACK: LedgerOutcome.ROLLED_BACK,
    Result.FAILED: LedgerOutcome.FAILED,
    Result.SUPERSEDED: LedgerOutcome.SUPERSEDED,
    Result.REMOVED: LedgerOutcome.REMOVED,
}
"""Release outcomes that end a release, and their ledger form."""
BLOCKED_RECHECK = 30.0
"""Seconds before a blocked pin is checked again (the upstream release may still be on its way)."""


class PromotionAction(StrEnum):
    """What the promote stage did; the wire format of status and log fields."""

    NONE = "none"
    SOAKING = "soaking"
    """A candidate succeeded upstream and soaks; the stage looks again when the soak ends."""
    CANDIDATE = "candidate"
    """Manual mode: a candidate is ready for ``gitsync promote``."""
    PROMOTED = "promoted"
    """A promotion commit is on the tracked branch (auto mode)."""
    PROPOSED = "proposed"
    """A promotion commit is on ``gitsync/promote/<env>/<app>`` for review (pull-request mode)."""
    ROLLED_BACK = "rolled-back"
    """A commit restoring the previous verified pin was written."""
    FAILED = "failed"


def review_branch(review: str, key: AppEnv) -> str:
    """The branch a pull-request mode environment's ``promote`` or ``rollback`` commit is written to."""
    return f"gitsync/{review}/{key.env}/{key.app}"


@dataclass(frozen=True, slots=True)
class PromotionStep:
    action: PromotionAction
    message: str = ""
    commit: str = ""
    branch: str = ""
    written: bool = False
    requeue_after: float | None = None
    commit_message: str = ""
    """The promotion or rollback commit's message (subject, rendered change, evidence trailers): what a reviewer
    of its pull request needs on the page, not behind a ``git log``."""
    current: bool = False
    """Nothing to promote because the pin already holds the newest release that succeeded upstream: a promotion
    pull request still open for an older candidate is stale (merging it would change nothing, or go back)."""


@dataclass(frozen=True, slots=True)
class Upstream:
    """What the stage knows of a receiving environment (``renderers.environment.Promotion``) and its source."""

    from_env: str
    mode: str
    soak_seconds: float
    values: tuple[str, ...]
    upstream_namespace: str
    """Where the upstream environment keeps its status (its health must hold through the soak)."""


@dataclass(frozen=True, slots=True)
class Topology:
    """Who promotes from whom, as the environments' env.yaml files say at one commit."""

    upstream: Mapping[str, Upstream]
    """Receiving environment -> where it takes its releases from."""
    downstream: Mapping[str, tuple[str, ...]]
    """Environment -> the environments that receive its releases."""
    promoted_paths: Mapping[str, tuple[str, ...]]
    """Environment -> the value paths its receivers promote (they identify its releases in the ledger)."""


def topology(repo: Path) -> Topology:
    """Read every ``environments/*/env.yaml`` at a snapshot; an environment whose file does not load promotes
    nothing (its own reconcile reports the error)."""
    from renderers import load_environment

    environments = {}
    for folder in sorted((repo / "environments").glob("*/")):
        try:
            # Only who promotes from whom is read here; each environment's own reconcile checks its namespace.
            environments[folder.name] = load_environment(repo, folder.name, protected=frozenset())
        except RenderError:
            continue
    upstream: dict[str, Upstream] = {}
    downstream: dict[str, list[str]] = {}
    paths: dict[str, list[str]] = {}
    for name, environment in environments.items():
        promotion = environment.promotion
        if promotion is None or promotion.from_env not in environments:
            continue
        upstream[name] = Upstream(
            promotion.from_env,
            str(promotion.mode),
            promotion.soak_seconds,
            promotion.values,
            environments[promotion.from_env].namespace,
        )
        downstream.setdefault(promotion.from_env, []).append(name)
        found = paths.setdefault(promotion.from_env, [])
        found.extend(path for path in promotion.values if path not in found)
    return Topology(
        upstream,
        {env: tuple(names) for env, names in downstream.items()},
        {env: tuple(listed) for env, listed in paths.items()},
    )


class Promotions:
    def __init__(
        self,
        ledger: Ledger,
        writer: GitWriter,
        *,
        tree: Callable[[str], Path],
        tree_id: Callable[[str, str], str],
        status: Callable[[AppEnv, str], Status | None],
        branch: str,
        agent: str = "",
        verifier: LedgerVerifier | None = None,
    ) -> None:
        """``tree``: a directory holding a commit's tree; ``tree_id(sha, path)``: the Git tree id of a path at a
        commit; ``status``: an app-env's recorded status (the upstream's health during the soak), None when this
        agent does not deploy that environment (one agent per cluster): the upstream ledger alone then decides;
        ``verifier``: when set, only the ledger lines it verifies are read (see the module doc)."""
        self._ledger = ledger
        self._writer = writer
        self._tree = tree
        self._tree_id = tree_id
        self._status = status
        self._branch = branch
        self._agent = agent
        self._verifier = verifier
        self._verified: set[tuple[str, ReleaseContent]] = set()

    # -- the guard --------------------------------------------------------------------------------------------

    def guard(self, rendered: RenderedApp) -> str:
        """ "" when the rendered app may be applied; otherwise why its pin is blocked (one line)."""
        pin = rendered.pin
        if pin is None:
            return ""
        app = rendered.app_env.app
        release = self._pinned(app, pin.revision, pin.values)
        memo = (release.revision, release.content)
        if memo in self._verified:
            return ""
        try:
            upstream = self._upstream(pin.from_env, app)
        except SignersError as e:  # logged once by the verifier; what runs stays until the file is fixed
            return f"environments/{rendered.app_env.env}/promoted.yaml: {app}: cannot verify the pin: {e}"
        verdict = verify_pin(release, upstream, override=pin.override)
        if isinstance(verdict, Blocked):
            return f"environments/{rendered.app_env.env}/promoted.yaml: {app}: {verdict.reason}"
        self._verified.add(memo)
        return ""

    def _pinned(self, app: str, revision: str, values: Mapping[str, Any]) -> PinnedRelease:
        return pinned_release(self._tree_id, app, revision, values)

    def chart_moved(self, app: str, before: str, after: str) -> bool:
        """``apps/<app>`` or ``lib/`` differ between the two commits: what a receiving environment would pin
        changed, even where the upstream environment renders the same (a block only ``prod`` renders)."""
        return not self._pinned(app, before, {}).content.same_as(self._pinned(app, after, {}).content)

    # -- the promote stage ------------------------------------------------------------------------------------

    def step(
        self,
        key: AppEnv,
        upstream: Upstream,
        snapshot: Path,
        rendered: RenderedApp | None,
        outcome: Result | None,
        previous: Status | None,
        now: float,
    ) -> PromotionStep:
        """Promote or roll back ``key`` by at most one commit (see the module doc); never raises."""
        try:
            aborted_now = previous is not None and (previous.result, previous.last_applied_revision) != (
                Result.ROLLED_BACK.value,
                rendered.revision if rendered is not None else "",
            )
            if outcome is Result.ROLLED_BACK and rendered is not None and aborted_now:
                return self._roll_back(key, upstream, snapshot, rendered)
            if outcome in (Result.PROGRESSING, Result.PAUSED):
                return PromotionStep(PromotionAction.NONE, "waiting for the running rollout")
            return self._promote(key, upstream, snapshot, rendered, now)
        except SignersError as e:  # logged once by the verifier, not on every reconcile
            return PromotionStep(PromotionAction.FAILED, str(e))
        except GitsyncError as e:
            log.warning("promotion.failed", app=key.app, env=key.env, error=str(e))
            return PromotionStep(PromotionAction.FAILED, str(e))

    def _promote(
        self, key: AppEnv, upstream: Upstream, snapshot: Path, rendered: RenderedApp | None, now: float
    ) -> PromotionStep:
        pin = rendered.pin if rendered is not None else None
        current = self._pinned(key.app, pin.revision, pin.values) if pin is not None else None
        releases = self._upstream(upstream.from_env, key.app)
        found = candidate(releases, current, upstream.soak_seconds, now)
        if found is None:
            return self._soaking(releases, current, upstream, now)
        rolled_back = [
            entry.content for _, entry in self._upstream(key.env, key.app) if entry.outcome is LedgerOutcome.ROLLED_BACK
        ]
        if any(found.entry.content.same_as(content) for content in rolled_back):
            # As a failed template is not retried: what was rolled back here is not promoted again until it changes.
            return PromotionStep(
                PromotionAction.NONE,
                f"{found.source} was rolled back in {key.env}: not promoted again until it changes",
            )
        status = self._status(AppEnv(key.app, upstream.from_env), upstream.upstream_namespace)
        health = status.health if status is not None else "Healthy"
        if health != "Healthy":
            return PromotionStep(
                PromotionAction.SOAKING, f"{upstream.from_env} is {health}: not promoted", requeue_after=30.0
            )
        source = found.source
        if upstream.mode == "manual":
            return PromotionStep(PromotionAction.CANDIDATE, f"{source} is ready: run gitsync promote")
        values = self._promoted_values(found.revision, upstream, key, snapshot)
        new_pin = Pin(key.app, found.revision, upstream.from_env, values)
        verdict = verify_pin(self._pinned(key.app, new_pin.revision, new_pin.values), releases)
        if isinstance(verdict, Blocked):
            # The release was noted with other promoted values (env.yaml's promotion.values changed since, or they
            # could not be taken then): the guard would block this pin, so it is not written. The app's next
            # release upstream is noted with the paths listed now.
            return PromotionStep(PromotionAction.NONE, f"{source} not promoted: {verdict.reason}")
        change = pin_change(snapshot, key.env, key.app, new_pin, self._tree)
        message = promotion_message(
            key.app,
            key.env,
            source,
            change,
            digest=found.entry.digest,
            evidence=evidence(found.entry, upstream.soak_seconds),
        )
        written = self._write_pin(key, upstream, new_pin, message, promotion_identity(key.app, key.env, source))
        proposed = upstream.mode == "pull-request" and written.branch != self._branch
        action = PromotionAction.PROPOSED if proposed else PromotionAction.PROMOTED
        log.info(
            "promotion.written" if written.written else "promotion.exists",
            app=key.app,
            env=key.env,
            source=source,
            commit=written.commit,
            branch=written.branch,
        )
        return PromotionStep(
            action, f"{source} -> {key.env}", written.commit, written.branch, written.written, commit_message=message
        )

    def _soaking(
        self,
        releases: Sequence[tuple[str, LedgerEntry]],
        current: PinnedRelease | None,
        upstream: Upstream,
        now: float,
    ) -> PromotionStep:
        """No candidate yet: when the newest upstream release succeeded with content the pin lacks, it soaks."""
        if not releases:
            return PromotionStep(PromotionAction.NONE, f"no release of {upstream.from_env} recorded yet")
        _, newest = max(releases, key=lambda pair: pair[1].recency)
        remaining = soak_left(releases, current, upstream.soak_seconds, now)
        if remaining is not None:
            return PromotionStep(
                PromotionAction.SOAKING,
                f"{upstream.from_env}@{newest.revision[:12]} soaks, {remaining:.0f}s left",
                requeue_after=remaining + 0.5,
            )
        return PromotionStep(PromotionAction.NONE, current=newest.outcome is LedgerOutcome.SUCCEEDED)

    def _promoted_values(self, revision: str, upstream: Upstream, key: AppEnv, snapshot: Path) -> dict[str, Any]:
        """The promoted value paths as the upstream environment merged them at ``revision`` (a path the app does
        not set is not carried); a path that cannot be taken is an error at its line of ``key.env``'s env.yaml
        in ``snapshot``."""
        from renderers import render_app
        from renderers.promotion import env_yaml_errors, promoted_values

        rendered = render_app(self._tree(revision), upstream.from_env, key.app, revision=revision, trees=self._tree)
        return dict(promoted_values(rendered.values, upstream.values, env_yaml_errors(snapshot, key.env)))

    def _roll_back(self, key: AppEnv, upstream: Upstream, snapshot: Path, rendered: RenderedApp) -> PromotionStep:
        """The rollout of the pin aborted: put the previous verified pin back by a commit."""
        from renderers.promotion import load_pins

        pin = rendered.pin
        if pin is None:
            return PromotionStep(PromotionAction.NONE)
        failed = self._pinned(key.app, pin.revision, pin.values).content
        mine = self._upstream(key.env, key.app)
        good = [
            (sha, entry)
            for sha, entry in mine
            if entry.outcome is LedgerOutcome.SUCCEEDED and not entry.content.same_as(failed)
        ]
        if not good:
            return PromotionStep(PromotionAction.FAILED, f"no earlier verified release of {key} to roll back to")
        sha, last = max(good, key=lambda pair: pair[1].recency)
        before = load_pins(self._tree(sha), key.env).get(key.app)
        if before is None:
            raise TerminalError(f"environments/{key.env}/promoted.yaml at {sha[:12]}: no pin of {key.app}")
        rollback_of = rendered.revision or ""
        message = rollback_message(
            key.app,
            key.env,
            rollback_of=rollback_of,
            restored=before.revision,
            change=pin_change(snapshot, key.env, key.app, before, self._tree),
            failed=None,
            override=before.override,
        )
        written = self._write_pin(
            key, upstream, before, message, rollback_identity(key.app, key.env, rollback_of), review="rollback"
        )
        log.info("rollback.written", app=key.app, env=key.env, commit=written.commit, restored=before.revision)
        return PromotionStep(
            PromotionAction.ROLLED_BACK,
            f"{key} back to {before.from_env}@{before.revision[:12]} (last good {last.revision[:12]})",
            written.commit,
            written.branch,
            written.written,
            commit_message=message,
        )

    def _write_pin(
        self,
        key: AppEnv,
        upstream: Upstream,
        pin: Pin,
        message: str,
        identity: tuple[tuple[str, str], ...],
        *,
        review: str = "promote",
    ) -> WriteResult:
        """One commit setting ``key``'s entry of ``promoted.yaml`` to ``pin``: on the tracked branch, or in
        pull-request mode on ``gitsync/<review>/<env>/<app>`` (exactly once per ``identity``, ``ports.GitWriter``)."""
        pull_request = upstream.mode == "pull-request"
        return self._writer.write(
            CommitRequest(
                edits=(
                    FileEdit(
                        f"environments/{key.env}/promoted.yaml",
                        lambda text: with_pin(
                            text, key.app, pin.revision, pin.from_env, pin.values, override=pin.override
                        ),
                    ),
                ),
                message=message,
                identity=identity,
                branch=review_branch(review, key) if pull_request else "",
            )
        )

    # -- the ledger -------------------------------------------------------------------------------------------

    def entry(
        self,
        key: AppEnv,
        deployed: str,
        digest: str,
        outcome: Result,
        started: float,
        finished: float,
        *,
        promoted_paths: Sequence[str],
        values: Mapping[str, Any],
        pin_revision: str = "",
        steps: Sequence[str] = (),
        analysis: Sequence[AnalysisResult] = (),
        promotion_commit: str = "",
        rollback_commit: str = "",
        reason: str = "",
        removal_commit: str = "",
        approvals: Approvals | None = None,
        approved_by: Sequence[str] = (),
        paths_at: str = "",
    ) -> LedgerEntry | None:
        """The ledger line of a release of ``key`` that ended with ``outcome`` at commit ``deployed`` (None: an
        outcome that is not noted), for ``append``; built apart from writing it so that a line the remote does not
        take can be kept as it is and written later, exactly as it was made (``record.LedgerSink``): its line is
        made here (``Ledger.sign``: signed now when the ledger signs, so a line kept in a status is kept signed).
        ``pin_revision``: a pinned app's chart revision (its chart tree is read there); ``values``: the merged
        values, of which ``promoted_paths`` identify the release for a receiving environment.

        The line describes the release at ``deployed``, the commit a receiving environment pins, so its trees are
        read there (not at the commit the reconcile rendered, newer when the release is Superseded by it or
        continued by a commit that did not change its render): a pinned app's at its pin, that of a Superseded
        one (``pin_revision`` is not known) as ``promoted.yaml`` held it at ``deployed``. Promoted values that
        cannot be taken are noted as ``valuesHash`` "" (not known), which verifies no pin, never as the hash of
        no values; the warning names the env.yaml line listing the path, as of ``paths_at`` (the commit whose
        env.yaml files gave ``promoted_paths``; ``deployed`` when not given). A ``Removed`` line (``removal_commit``:
        the commit that no longer lists the app) has no trees and no values: nothing of the app is left to pin."""
        ended = _ENDED.get(outcome)
        if ended is None or not deployed:
            return None
        content = ReleaseContent("", "", "")
        if ended is not LedgerOutcome.REMOVED:
            content = self._content(key, deployed, ended, promoted_paths, values, pin_revision, paths_at)
        made = LedgerEntry(
            env=key.env,
            app=key.app,
            revision=deployed,
            digest=digest,
            chart_tree=content.chart_tree,
            lib_tree=content.lib_tree,
            values_hash=content.values_hash,
            outcome=ended,
            started_at=started,
            finished_at=finished,
            steps=tuple(steps),
            analysis=tuple(analysis),
            agent=self._agent,
            promotion_commit=promotion_commit,
            rollback_commit=rollback_commit,
            reason=reason,
            removal_commit=removal_commit,
            approvals=approvals,
            approved_by=tuple(approved_by),
        )
        return self._ledger.sign(made)

    def append(self, entry: LedgerEntry) -> None:
        """Write ``entry`` to the note of its commit (``Ledger.append``: a line of the same ending already there
        is not added again); raises what the remote raised."""
        self._ledger.append(entry.revision, entry)
        log.info("ledger.noted", app=entry.app, env=entry.env, revision=entry.revision, outcome=entry.outcome.value)

    def _content(
        self,
        key: AppEnv,
        deployed: str,
        ended: LedgerOutcome,
        promoted_paths: Sequence[str],
        values: Mapping[str, Any],
        pin_revision: str,
        paths_at: str,
    ) -> ReleaseContent:
        """What a receiving environment would pin of the release at ``deployed`` (see ``entry``)."""
        from renderers.promotion import promoted_values

        if not pin_revision and ended is LedgerOutcome.SUPERSEDED:
            pin_revision = self._pin_at(key, deployed)
        chart_at = pin_revision or deployed
        try:
            fail = self._listed_at(key.env, paths_at or deployed, promoted_paths)
            promoted: Mapping[str, Any] | None = promoted_values(values, promoted_paths, fail) if promoted_paths else {}
        except GitsyncError as e:
            log.warning("ledger.values_unknown", app=key.app, env=key.env, revision=deployed, error=str(e))
            promoted = None
        content = self._pinned(key.app, chart_at, promoted or {}).content
        return replace(content, values_hash="") if promoted is None else content

    def _listed_at(self, env: str, revision: str, paths: Sequence[str]) -> PathError:
        """``promoted_values``' error for ``env``'s release: ``environments/<e>/env.yaml:<line>: promotion.values``
        of the environment whose list holds the path at ``revision`` (``env``'s own when it receives releases,
        else a receiver's: ``paths`` is then their union), read only when there is an error."""
        from renderers.promotion import env_yaml_errors

        def fail(index: int, problem: str) -> RenderError:
            repo = self._tree(revision)
            listing = topology(repo)
            receivers = (*((env,) if env in listing.upstream else ()), *listing.downstream.get(env, ()))
            for receiver in receivers:
                listed = listing.upstream[receiver].values
                if paths[index] in listed:
                    return env_yaml_errors(repo, receiver)(listed.index(paths[index]), problem)
            return RenderError("promotion.values", problem)

        return fail

    def _pin_at(self, key: AppEnv, revision: str) -> str:
        """The revision ``promoted.yaml`` pinned ``key.app`` to at ``revision`` ("" when none: the environment
        follows the branch head, or the file does not read)."""
        from renderers.promotion import load_pins

        try:
            pin = load_pins(self._tree(revision), key.env).get(key.app)
        except GitsyncError:
            return ""
        return pin.revision if pin is not None else ""

    def _upstream(self, env: str, app: str) -> list[tuple[str, LedgerEntry]]:
        """The ledger lines of ``app`` in ``env`` this agent trusts (only those are checked: each once)."""
        lines = [
            (sha, e) for sha, entries in self._ledger.read().items() for e in entries if (e.env, e.app) == (env, app)
        ]
        return trusted(lines, self._verifier.seal if self._verifier is not None else None)
