"""The record stage: the one writer of what a reconcile did. Every sink is fed the same ``ReconcileResult``.

Sinks, in the order they are written (status last: an agent killed while recording does the reconcile again,
because the status still says the revision was not applied, and history folds a repeated release into one entry):
- ``LogSink``: one structured log event per reconcile (``reconcile.done``, ``reconcile.failed``, ...);
- ``MetricsSink``: the reconcile duration, result counter and last-success gauge (``gitsync.metrics``);
- ``HistorySink``: the release history in the cluster (``gitsync.history``);
- ``EventSink``: Kubernetes Events about the app-env (``gitsync.events``);
- ``NotifySink``: notifications to the receivers of agent.yaml's ``notifications:`` (``gitsync.notify``), queued
  for a background sender, never waited for;
- ``StatusSink``: the app-env's status document (``gitsync.history.Status``).

With a forge configured (``forge:`` in agent.yaml) the agent adds two sinks that never block a reconcile (each
sends from its own bounded ``gitsync.queue.Outbox``): ``CommitStatusSink`` (a commit status per environment and
app, ``gitsync/<env>/<app>``) and ``PullRequestSink`` (the promotion and rollback pull requests).

Which sinks a caller uses is its choice (the CLI records no metrics). A sink never raises for a best-effort record
(Events); status and history writes raise ``GitsyncError`` for the caller to retry the whole reconcile.
"""

from __future__ import annotations

import functools
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gitsync import log as logging
from gitsync.drift import DRIFT_HEALED
from gitsync.errors import GitsyncError, Retry, TransientError
from gitsync.events import EventSink as Events
from gitsync.events import Reason
from gitsync.forge_queue import ForgeQueue
from gitsync.history import History, Release, Result, Status, first_line
from gitsync.ledger import AnalysisResult, Approvals, ForeignLineError, LedgerEntry, parse_line
from gitsync.metrics import observe_reconcile
from gitsync.model import ANNOTATION_PRUNE, AppEnv, HealthStatus, SyncAction, SyncState
from gitsync.notify import Notifier, notices
from gitsync.ports import CommitState, CommitStatus, Forge, StateStore
from gitsync.promotion import PromotionAction, Promotions, review_branch
from gitsync.result import Kind, ReconcileResult, Target

__all__ = [
    "CommitStatusSink",
    "EventSink",
    "HistorySink",
    "LedgerSink",
    "LogSink",
    "MetricsSink",
    "NotifySink",
    "PullRequestSink",
    "Recorder",
    "Sink",
    "StatusSink",
    "commit_statuses",
    "default_sinks",
    "orphaned_message",
]

log = logging.get("gitsync.reconcile")

_FAILURES = frozenset({Result.FAILED.value, Result.RETRYING.value, Result.RENDER_ERROR.value, Result.REFUSED.value})
_FAILED_REASON = {Result.RENDER_ERROR: Reason.RENDER_FAILED, Result.REFUSED: Reason.SIGNATURE_REFUSED}


class Sink(Protocol):
    def write(self, result: ReconcileResult) -> None: ...


class Recorder:
    """Feeds each result to every sink, in order."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self._sinks = tuple(sinks)

    def record(self, result: ReconcileResult) -> None:
        for sink in self._sinks:
            sink.write(result)


def default_sinks(
    history: History,
    events: Events,
    *,
    agent: bool = True,
    ledger: LedgerSink | None = None,
    notifier: Notifier | None = None,
) -> tuple[Sink, ...]:
    """The sinks of the agent (log lines, metrics, the Git ``ledger``, notifications) and of ``gitsync sync`` (none
    of those: a one-shot command prints its own summary and errors, and a laptop writes no notes)."""
    head: tuple[Sink, ...] = (LogSink(), MetricsSink()) if agent else ()
    notes: tuple[Sink, ...] = (ledger,) if ledger is not None else ()
    notify: tuple[Sink, ...] = (NotifySink(notifier),) if notifier is not None else ()
    return (*head, HistorySink(history), *notes, EventSink(events), *notify, StatusSink(history))


def _removed_message(result: ReconcileResult) -> str:
    n = result.counts()
    kept = len(result.sync.plan.orphaned) if result.sync is not None else 0
    message = (
        f"removed from environment {result.key.env} at {result.revision[:12]}: "
        f"{n.get(SyncAction.DELETED, 0)} objects deleted"
    )
    return message + (f", {kept} kept ({ANNOTATION_PRUNE}: false, or the environment's namespace)" if kept else "")


def orphaned_message(key: AppEnv, target: Target | None, kept: int) -> str:
    """What an app that left its environment with pruning off says: the status's error, and ``gitsync sync``'s
    line for it."""
    return (
        f"{key.app} is no longer listed in environments/{key.env}/env.yaml and {_kept_because(target)}: "
        f"its {kept} objects stay in the cluster, no longer managed"
    )


def _kept_because(target: Target | None) -> str:
    if target is not None and target.emptied:
        return "the file lists no apps (set pruneAllowEmpty: true to remove them all)"
    return "pruning is off"


class LogSink:
    def write(self, r: ReconcileResult) -> None:
        seconds = r.seconds
        if r.repaired and r.sync is not None:
            log.info("drift.healed", summary=r.sync.summary())
        if r.kind is Kind.RELEASE and r.health is not None:
            log.info(
                "reconcile.done",
                result=str(r.outcome),
                health=r.health.status.value,
                health_reason=r.health.reason,
                rollout=str(r.rollout.phase) if r.rollout is not None else "",
                seconds=seconds,
                started_at=round(r.started_at, 3),
                finished_at=round(r.finished_at, 3),
            )
        elif r.kind is Kind.FAILED:
            event = "git.fetch_failed" if r.snapshot is None else "reconcile.failed"
            if r.kind is Kind.FAILED and r.target is not None and r.target.removed:
                event = "app.remove_failed"
            # A failure before anything could be attempted (Git or the state unreadable) is transient too.
            transient = Result.RETRYING if r.error_class is Retry.TRANSIENT else ""
            result = str(r.outcome) if r.outcome is not None else transient
            log.warning(event, result=result, error=r.error, revision=r.revision, attempt_seconds=seconds)
        elif r.kind is Kind.DRIFT_CHECKED and r.sync is not None:
            log.info("reconcile.drift_checked", drifted=r.sync.plan.has_changes, seconds=seconds)
        elif r.kind is Kind.REMOVED:
            kept = len(r.sync.plan.orphaned) if r.sync is not None else 0
            log.info("app.removed", deleted=r.counts().get(SyncAction.DELETED, 0), kept=kept)
        elif r.kind is Kind.ORPHANED:
            log.warning("app.orphaned", objects=r.kept, reason=_kept_because(r.target))
        elif r.kind is Kind.GONE:
            log.info("reconcile.gone", reason="app-env no longer in the environment at this revision")


class MetricsSink:
    def write(self, r: ReconcileResult) -> None:
        if r.repaired:
            n = r.counts()
            DRIFT_HEALED.labels(r.key.app, r.key.env).inc(
                n.get(SyncAction.CREATED, 0) + n.get(SyncAction.CONFIGURED, 0)
            )
        if r.outcome is None or r.kind not in (Kind.RELEASE, Kind.FAILED):
            return
        observe_reconcile(
            r.key, r.seconds, r.outcome.value.lower(), r.finished_at, success=r.outcome is Result.SUCCEEDED
        )


class HistorySink:
    """A release is one revision + digest: retries and repairs of it fold into one entry (``History.record``). A
    later commit that renders the app identically carries the release on (``ReconcileResult.release_revision``,
    as the ledger credits it): its outcome settles the release's entry, never a new entry superseding it."""

    def __init__(self, history: History) -> None:
        self._history = history

    def write(self, r: ReconcileResult) -> None:
        if r.target is None or r.snapshot is None or r.outcome is None:
            return
        if r.kind is Kind.RELEASE:
            before = r.previous
            release = r.release_revision
            if release == r.revision and (r.changed or r.new_release):
                self._add(r, r.digest)
            elif before is not None and before.result != r.outcome.value:
                outcome = r.outcome.value
                self._history.settle(r.key, r.namespace, release, r.digest, outcome, r.finished_at, r.error)
        elif r.kind is Kind.FAILED and r.outcome in (Result.RENDER_ERROR, Result.FAILED):
            self._add(r, r.digest)
        elif r.kind is Kind.REMOVED:
            self._add(r, "")

    def _add(self, r: ReconcileResult, digest: str) -> None:
        assert r.snapshot is not None and r.outcome is not None
        counts = r.counts()
        self._history.record(
            r.key,
            r.namespace,
            Release(
                revision=r.revision,
                digest=digest,
                author=r.snapshot.commit.author,
                message=first_line(r.snapshot.commit.message),
                started_at=r.started_at,
                finished_at=r.finished_at,
                result=r.outcome.value,
                created=counts.get(SyncAction.CREATED, 0),
                configured=counts.get(SyncAction.CONFIGURED, 0),
                deleted=counts.get(SyncAction.DELETED, 0),
                unchanged=counts.get(SyncAction.UNCHANGED, 0),
                failed=counts.get(SyncAction.FAILED, 0),
                error=r.error,
            ),
        )


class EventSink:
    """Kubernetes Events about changes people act on: a release synced, a failure, degraded, recovered, drift."""

    def __init__(self, events: Events) -> None:
        self._events = events

    def write(self, r: ReconcileResult) -> None:
        if r.target is None:
            return

        def emit(reason: Reason, message: str) -> None:
            self._events.emit(r.key, r.namespace, reason, message)

        before = r.previous or Status(r.key.app, r.key.env)
        self._promotion(r, before, emit)
        if r.kind is Kind.BLOCKED and (before.result, before.last_error) != (Result.BLOCKED.value, r.error):
            emit(Reason.PROMOTION_BLOCKED, r.error)
        elif r.kind is Kind.FAILED and r.outcome is not None:
            emit(_FAILED_REASON.get(r.outcome, Reason.SYNC_FAILED), f"{r.revision[:12]}: {r.error}")
        elif r.kind is Kind.REMOVED:
            emit(Reason.APP_REMOVED, _removed_message(r))
        elif r.kind is Kind.DRIFT_CHECKED and r.sync is not None:
            drifted = r.sync.plan.has_changes
            state = SyncState.OUT_OF_SYNC if drifted else SyncState.SYNCED
            if drifted and before.sync_state != state.value:
                emit(Reason.DRIFT_DETECTED, r.sync.plan.summary())
        elif r.kind is Kind.RELEASE and r.health is not None and r.sync is not None:
            self._release(r, before, emit)

    @staticmethod
    def _promotion(r: ReconcileResult, before: Status, emit: Callable[[Reason, str], None]) -> None:
        step = r.promotion
        if step is None:
            return
        if step.written and step.action in (PromotionAction.PROMOTED, PromotionAction.PROPOSED):
            where = f" on {step.branch}" if step.action is PromotionAction.PROPOSED else ""
            emit(Reason.PROMOTED, f"{step.message}: commit {step.commit[:12]}{where}")
        elif step.written and step.action is PromotionAction.ROLLED_BACK:
            emit(Reason.ROLLBACK_WRITTEN, f"{step.message}: commit {step.commit[:12]}")
        elif step.action is PromotionAction.FAILED and not before.promotion.endswith(step.message):
            emit(Reason.PROMOTION_FAILED, step.message)

    @staticmethod
    def _release(r: ReconcileResult, before: Status, emit: Callable[[Reason, str], None]) -> None:
        assert r.health is not None and r.sync is not None
        health = r.health.status
        recovered = before.result in _FAILURES
        # A new revision that changed no object and left the result as it was (a commit to another app, a README)
        # happened to nothing a user watches: no Event, as Argo CD and Flux say nothing for it.
        news = r.new_release and (r.changed or before.result != str(r.outcome))
        if (news or recovered) and r.outcome is not Result.ROLLED_BACK:
            emit(Reason.SYNC_SUCCEEDED, f"synced {r.revision[:12]}: {r.sync.summary()}")
        if r.repaired:
            emit(Reason.DRIFT_DETECTED, f"repaired: {r.sync.summary()}")
        if health in (HealthStatus.DEGRADED, HealthStatus.MISSING) and before.health != health.value:
            emit(Reason.DEGRADED, r.health.reason or health.value)
        if health is HealthStatus.HEALTHY and before.health in (HealthStatus.DEGRADED, HealthStatus.MISSING):
            if r.outcome is Result.ROLLED_BACK:  # healthy on the stable version, not on the revision rolled back
                emit(Reason.RECOVERED, f"healthy again on the stable version ({r.revision[:12]} rolled back)")
            else:
                emit(Reason.RECOVERED, f"healthy again at {r.revision[:12]}")
        if recovered:
            emit(Reason.RECOVERED, f"{r.revision[:12]} deployed after a failure")


class NotifySink:
    """Notifications (``gitsync.notify.notices``: the table from a result to notices). Before the status, so a
    reconcile done again after a kill derives the same notices, which the outbox then knows as already claimed."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def write(self, r: ReconcileResult) -> None:
        if r.target is not None and not r.dry_run:
            self._notifier.record(r.key, r.namespace, notices(r))


FORGE_QUIET_SECONDS = 60.0
"""After the forge failed to say who approved a line's pull request, how long lines say "unknown" without asking."""


class LedgerSink:
    """The release ledger in Git: one note line on the deployed commit when a release ends (Succeeded, RolledBack,
    Failed terminally, Superseded by the next one, or Removed with its app), with its steps and analysis values as
    evidence. Written before the status, so a killed agent notes again; the ledger drops a line it already holds.
    A line the remote did not take waits in the status (``Status.unnoted``) until written, by this agent in the
    background or, after a kill, by the next reconcile of the app-env (``_append``). The status is in the
    environment's namespace, so what it keeps is not taken on trust: a kept line of another app-env than the
    status's, or (with a signing ledger) one that does not carry the agent's own signature, made when the line
    was made (``Ledger.sign``), is dropped and logged (``ledger.unnoted_refused``), never written nor signed.

    With a ``forge``, a line whose commit came through a pull request records who approved it (``Forge.approvers``):
    the pull request is the one the forge says the line's commit came through (``Forge.pull_request_of``: found
    whatever the merge style, also for a line on an earlier commit than the reconcile's, a release a later commit
    carried on or a Superseded one); never the one a commit message names, which anyone pushing directly can
    write. Each call is made once: when the forge cannot answer, the line is written all the same, saying the
    approvals are unknown (``Approvals.UNKNOWN``), not that there were none; for ``FORGE_QUIET_SECONDS`` after
    that the forge is not asked again (a hung forge costs a reconcile one timeout a minute, not one per line)."""

    def __init__(
        self,
        promotions: Promotions,
        history: History,
        store: StateStore,
        *,
        forge: Forge | None = None,
        retry_after: float = 5.0,
    ) -> None:
        self._promotions = promotions
        self._history = history
        self._store = store
        self._forge = forge
        self._forge_quiet_until = 0.0
        self.retries = ForgeQueue("ledger", 64, self._unqueue, retry_after=retry_after)
        """Lines the remote did not take (unreachable): written again in the background until it does."""
        self._queued: dict[str, tuple[str, ...]] = {}
        """The endings of the lines ``retries`` holds, by its key: a reconcile leaves those to it rather than wait
        on the remote once more."""
        self._queued_lock = threading.Lock()

    def write(self, r: ReconcileResult) -> None:
        held, refused = _held(r.previous)
        for line, problem in refused:
            _refused(r.key, line, problem)
        try:
            entries = self._entries(r)
        except TransientError as e:
            # The lines could not be made (a read of the trees failed): made again in the background.
            log.warning("ledger.write_failed", revision=r.revision, error=str(e), retrying=True)
            self.retries.put(f"{r.key}@{r.revision}", functools.partial(self._later, r))
            entries = ()
        except GitsyncError as e:
            log.warning("ledger.write_failed", revision=r.revision, error=str(e))
            entries = ()
        with self._queued_lock:
            queued = set(self._queued.values())
        held = tuple(entry for entry in held if _ending(entry) not in queued)
        if held or entries or refused:
            self._append(r.key, r.namespace, held, entries, tidy=bool(refused))

    def _later(self, r: ReconcileResult) -> None:
        self._append(r.key, r.namespace, (), self._entries(r))

    def _append(
        self,
        key: AppEnv,
        namespace: str,
        held: Sequence[LedgerEntry],
        entries: Sequence[LedgerEntry],
        *,
        tidy: bool = False,
    ) -> None:
        """Write the lines ``held`` in the status (a restarted agent's, or another replica's) and this reconcile's.

        The release stands whatever the remote does; only its line is missing, and a receiving environment will
        not promote it without one. No reconcile may follow (a release that ended stays quiet), so a line the
        remote did not take is kept in the status (``Status.unnoted``, written here, before the status sink; a
        kill between the two redoes the reconcile, which keeps the first line of that ending) and written again
        in the background once the remote is back; never a reason to redo the reconcile. A refused line (a
        read-only remote) is logged, not kept (no hot loop), as is a kept line the ledger will not write
        (``ForeignLineError``); ``tidy``: the status holds lines ``_held`` refused, to be taken out of it."""
        written: list[LedgerEntry] = []
        pending: list[LedgerEntry] = []
        for entry in (*held, *entries):
            if pending:  # the remote is away: do not wait on it once per line
                pending.append(entry)
                continue
            try:
                self._promotions.append(entry)
                written.append(entry)
            except TransientError as e:
                log.warning("ledger.write_failed", revision=entry.revision, error=str(e), retrying=True)
                pending.append(entry)
            except ForeignLineError as e:
                _refused(key, entry.line, str(e), revision=entry.revision)
                written.append(entry)
            except GitsyncError as e:
                log.warning("ledger.write_failed", revision=entry.revision, error=str(e))
                written.append(entry)
        if pending or tidy or any(e in held for e in written):
            self._mark(key, namespace, written, pending)
        for entry in pending:
            queue_key = f"{key}@{entry.revision}:{entry.outcome.value}"
            with self._queued_lock:
                self._queued[queue_key] = _ending(entry)
            self.retries.put(queue_key, functools.partial(self._retry, queue_key, key, namespace, entry))

    def _retry(self, queue_key: str, key: AppEnv, namespace: str, entry: LedgerEntry) -> None:
        """One kept line, in the background: written, then taken out of the status. Refused (a read-only remote,
        a hook) it is let go as in ``_append`` (the queue logs it and does not call again): out of the status and
        of ``_queued`` too, or every reconcile would record for it and none would write it."""
        try:
            self._promotions.append(entry)
        except TransientError:
            raise  # the queue calls again
        except GitsyncError:
            self._settle(queue_key, key, namespace, entry)
            raise
        self._settle(queue_key, key, namespace, entry)

    def _settle(self, queue_key: str, key: AppEnv, namespace: str, entry: LedgerEntry) -> None:
        self._mark(key, namespace, (entry,), ())
        self._unqueue(queue_key)

    def _unqueue(self, queue_key: str) -> None:
        """``retries`` no longer holds the line: written, or dropped (then the status keeps it)."""
        with self._queued_lock:
            self._queued.pop(queue_key, None)

    def _mark(
        self, key: AppEnv, namespace: str, written: Sequence[LedgerEntry], pending: Sequence[LedgerEntry]
    ) -> None:
        """``Status.unnoted`` without the ``written`` lines and with the ``pending`` ones whose ending it does not
        hold yet (the first line made for an ending is the one written, as the ledger keeps the first)."""
        done = {_ending(e) for e in written}

        def change(s: Status) -> Status:
            kept = [e for e in _held(s)[0] if _ending(e) not in done]
            endings = {_ending(e) for e in kept}
            kept += [e for e in pending if _ending(e) not in endings]
            if len(kept) > _UNNOTED_LIMIT:
                for dropped in kept[:-_UNNOTED_LIMIT]:
                    log.warning("ledger.unnoted_dropped", revision=dropped.revision, outcome=dropped.outcome.value)
                kept = kept[-_UNNOTED_LIMIT:]
            return replace(s, unnoted=tuple(e.line or e.to_line() for e in kept))

        status = self._history.set_status(key, namespace, change)
        if pending:
            log.warning("ledger.unnoted", app=key.app, env=key.env, lines=len(status.unnoted))

    def _entries(self, r: ReconcileResult) -> tuple[LedgerEntry, ...]:
        """The lines this reconcile ends (none, one, or a Superseded one and the new release's)."""
        if r.kind is Kind.REMOVED:
            return _some(self._removed(r))
        if r.target is None or r.rendered is None or r.outcome is None:
            return ()
        before = r.previous or Status(r.key.app, r.key.env)
        healthy = r.health is not None and r.health.status is HealthStatus.HEALTHY
        # A release that "succeeded" with Degraded workloads (a crash-looping rolling update) has not ended well:
        # it is noted only once healthy, so it is never a candidate for promotion.
        ended = r.kind is Kind.RELEASE and (
            r.outcome is Result.ROLLED_BACK or (r.outcome is Result.SUCCEEDED and healthy)
        )
        # A transient failure (the cluster unreachable, a write conflict: ``Retrying``) is retried: the release has
        # not ended. Noting it would tell an auditor that a release which ran, and runs on, failed whenever its
        # cluster was away for a moment.
        failed = r.kind is Kind.FAILED and r.outcome is Result.FAILED
        # A release is a digest: a commit that does not change the app's render (a promotion commit seen from
        # staging, any commit seen from a pinned prod) continues the release that runs, and is noted on the commit
        # that brought it (``Status.release_revision``).
        changed = r.digest != before.last_applied_digest
        superseded = r.superseded_revision
        lines: tuple[LedgerEntry | None, ...] = ()
        if superseded:
            lines = (
                self._note(
                    r, superseded, before.last_applied_digest, Result.SUPERSEDED, 0.0, _Evidence(), current=False
                ),
            )
        unchanged = (before.result, before.health) == (r.outcome.value, _health(r)) and not changed
        if unchanged and ended and self._chart_moved(r, before):
            # The same render from a new chart (a block only the pinned environment renders): the running release
            # is credited to its first commit, but what a receiving environment would pin is this commit's chart,
            # which runs here now. Noted on this commit, or it could never be promoted.
            return _some(
                *lines, self._note(r, r.revision, r.digest, r.outcome, r.finished_at, _Evidence(), current=True)
            )
        if not (ended or failed) or unchanged:
            return _some(*lines)
        if failed and before.last_attempted_revision == r.revision and before.result == Result.FAILED.value:
            return _some(*lines)
        deployed = r.release_revision
        releases = self._history.releases(r.key, r.namespace)
        started = next((e.started_at for e in releases if e.revision == deployed), r.started_at)
        evidence = _evidence(r, self._store)
        return _some(*lines, self._note(r, deployed, r.digest, r.outcome, started, evidence, current=True))

    def _removed(self, r: ReconcileResult) -> LedgerEntry | None:
        """The app left its environment: its last release ends ``Removed``, noted on that release's commit (the
        one its status credits), so the line's ending is the same whatever commit the removal is done again at
        after a kill -9 (the inventory, which makes it a removal, is dropped only after the status). A status
        that already says Removed was written after this line: nothing to note. No approvals: the line is on the
        removed release's commit, whose pull request is not the removal's."""
        before = r.previous or Status(r.key.app, r.key.env)
        if r.target is None or r.dry_run or before.result == Result.REMOVED.value:
            return None
        released = before.release_revision or before.last_applied_revision or r.revision
        return self._promotions.entry(
            r.key,
            released,
            before.last_applied_digest,
            Result.REMOVED,
            r.started_at,
            r.finished_at,
            promoted_paths=(),
            values={},
            removal_commit=r.revision,
        )

    def _approvals(self, r: ReconcileResult, sha: str) -> tuple[Approvals | None, tuple[str, ...]]:
        """Who approved the pull request ``sha`` came through: (None, ()) when it came through none (or there is
        no forge to ask), (UNKNOWN, ()) when the forge did not answer."""
        if self._forge is None or sha.endswith("-dirty"):
            return None, ()
        if time.monotonic() < self._forge_quiet_until:
            return Approvals.UNKNOWN, ()
        number: int | None = None
        try:
            # the forge's word only: a commit message naming "(#12)" is what anyone pushing directly can write
            number = self._forge.pull_request_of(sha)
            if number is None:
                return None, ()
            return Approvals.KNOWN, self._forge.approvers(number)
        except (GitsyncError, ValueError) as e:
            self._forge_quiet_until = time.monotonic() + FORGE_QUIET_SECONDS
            log.warning("ledger.approvals_unknown", revision=sha, pull_request=number, error=str(e))
            return Approvals.UNKNOWN, ()

    def _chart_moved(self, r: ReconcileResult, before: Status) -> bool:
        """The first reconcile of a head-following app at a commit whose chart (or ``lib/``) differs from the one
        applied before, with the same render: noted once, not again at each later commit that leaves it alone."""
        if r.target is None or r.target.upstream is not None or r.pin is not None:
            return False
        applied = before.last_applied_revision
        if applied in ("", r.revision) or applied.endswith("-dirty") or r.revision.endswith("-dirty"):
            return False
        return self._promotions.chart_moved(r.key.app, applied, r.revision)

    def _note(
        self,
        r: ReconcileResult,
        revision: str,
        digest: str,
        outcome: Result,
        started: float,
        evidence: _Evidence,
        *,
        current: bool,
    ) -> LedgerEntry | None:
        """``current``: the release this reconcile rendered (False: the one it superseded, whose values are gone)."""
        assert r.target is not None and r.rendered is not None
        if not revision or revision.endswith("-dirty"):
            return None
        pin = r.pin
        step = r.promotion
        approvals, approved_by = self._approvals(r, revision)
        return self._promotions.entry(
            r.key,
            revision,
            digest,
            outcome,
            started or r.started_at,
            r.finished_at,
            # A receiving environment's release is identified by the values it was promoted with.
            promoted_paths=(r.target.upstream.values if r.target.upstream else r.target.promoted_paths)
            if current
            else (),
            values=r.rendered.values if current else {},
            pin_revision=pin.revision if pin is not None and current else "",
            steps=evidence.steps,
            analysis=evidence.analysis,
            rollback_commit=step.commit if step is not None and step.action is PromotionAction.ROLLED_BACK else "",
            reason=evidence.reason if outcome is Result.ROLLED_BACK else "",
            paths_at=r.revision,
            approvals=approvals,
            approved_by=approved_by,
        )


_UNNOTED_LIMIT = 32
"""Most ledger lines one status keeps for a remote that is away (a line is well under 4 KiB: the status
ConfigMap stays far below its 1 MiB limit); beyond it the oldest is dropped and logged."""


def _ending(entry: LedgerEntry) -> tuple[str, ...]:
    return tuple(str(part) for part in entry.ending)


def _held(status: Status | None) -> tuple[tuple[LedgerEntry, ...], tuple[tuple[str, str], ...]]:
    """The lines ``status`` keeps for a remote that was away, and those to let go, each with why: one that does
    not parse (edited by hand), or one of another app-env than the status's (the agent keeps a line only in the
    status of its own app-env: any other was put there by someone else)."""
    entries: list[LedgerEntry] = []
    refused: list[tuple[str, str]] = []
    if status is None:
        return (), ()
    for line in status.unnoted:
        try:
            entry = parse_line(line)
        except (ValueError, KeyError, TypeError) as e:
            refused.append((line, f"not a ledger line: {e}"))
            continue
        if (entry.app, entry.env) != (status.app, status.env):
            where = f"{status.env}/{status.app}"
            refused.append((line, f"a line of {entry.env}/{entry.app}, kept in the status of {where}"))
            continue
        entries.append(entry)
    return tuple(entries), tuple(refused)


def _refused(key: AppEnv, line: str, problem: str, *, revision: str = "") -> None:
    """A kept line let go unwritten; the event names the status it sat in (the line itself may be anything)."""
    if not revision:
        try:
            revision = str(json.loads(line).get("revision", ""))
        except (ValueError, AttributeError):
            revision = ""
    log.warning("ledger.unnoted_refused", app=key.app, env=key.env, revision=revision, problem=problem)


def _some(*entries: LedgerEntry | None) -> tuple[LedgerEntry, ...]:
    return tuple(e for e in entries if e is not None)


def _health(r: ReconcileResult) -> str:
    return r.health.status.value if r.health is not None else ""


@dataclass(frozen=True, slots=True)
class _Evidence:
    """What a ledger line says about how a canary or blue-green release went: the strategy's steps, the last value
    of each analysis check and, when it was rolled back, the rollout's own reason (``abortReason``)."""

    steps: tuple[str, ...] = ()
    analysis: tuple[AnalysisResult, ...] = ()
    reason: str = ""


def _evidence(r: ReconcileResult, store: StateStore) -> _Evidence:
    """The evidence of the release ``r`` rendered (nothing for a rolling update)."""
    if r.rendered is None or r.rollout is None or not r.rollout.exclude:
        return _Evidence()
    from gitsync.strategy.control import describe_rollout
    from gitsync.strategy.executor import policy_of
    from gitsync.strategy.policy import Strategy

    try:
        policy = policy_of(r.rendered)
    except GitsyncError:
        return _Evidence()
    # The strategy the environment chose: a chart may carry both blocks (parsed, so both are checked).
    if policy.strategy is Strategy.BLUE_GREEN:
        steps: tuple[str, ...] = ("preview", "prePromotionAnalysis", "switch", "postPromotionAnalysis", "scaleDown")
    else:
        steps = tuple(step.describe() for step in policy.canary.steps)
    conditions = {
        check.name: check.success_condition.text if check.success_condition is not None else ""
        for spec in policy.analyses()
        for check in spec.checks
    }
    described = describe_rollout(store, r.key, r.namespace)
    analysis = tuple(
        AnalysisResult(str(m["check"]), _number(m.get("value")), conditions.get(str(m["check"]), ""), str(m["verdict"]))
        for m in described.get("analysis", [])
    )
    return _Evidence(steps, analysis, str(described.get("abortReason", "")))


def _number(value: object) -> float | None:
    """A measurement's value as the ledger keeps it: a number (a query's single sample), or None (no data)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class StatusSink:
    """The status document: what runs now and how the last attempt went (``gitsync status`` reads it)."""

    def __init__(self, history: History) -> None:
        self._history = history

    def write(self, r: ReconcileResult) -> None:
        change = self._change(r)
        line = r.promotion_line
        if line is not None:
            first = change

            def change(s: Status) -> Status:
                return replace(first(s) if first is not None else s, promotion=line, updated_at=r.finished_at)

        if change is not None and r.target is not None:
            cluster, inner = r.target.cluster, change
            self._history.set_status(r.key, r.namespace, lambda s: replace(inner(s), cluster=cluster))

    @staticmethod
    def _change(r: ReconcileResult) -> Callable[[Status], Status] | None:
        now, revision = r.finished_at, r.revision
        if r.kind is Kind.RELEASE and r.health is not None and r.outcome is not None:
            health, outcome = r.health, r.outcome
            # After a rollback the workload runs the stable version, not this revision's: say so.
            state = SyncState.OUT_OF_SYNC if outcome is Result.ROLLED_BACK else SyncState.SYNCED
            return lambda s: replace(
                s,
                release_revision=r.release_revision,
                last_applied_revision=revision,
                last_applied_digest=r.digest,
                last_attempted_revision=revision,
                sync_state=state.value,
                health=health.status.value,
                health_reason=health.reason,
                last_error=r.error,
                result=outcome.value,
                last_synced_at=now,
                updated_at=now,
            )
        if r.kind in (Kind.FAILED, Kind.AWAITING, Kind.BLOCKED) and r.outcome is not None:
            # Nothing of this revision runs (a failure, no pin yet, a pin not verified): the last release stays.
            attempted = r.outcome
            return lambda s: replace(
                s,
                last_attempted_revision=revision,
                last_error=r.error,
                result=attempted.value,
                sync_state=SyncState.OUT_OF_SYNC.value,
                updated_at=now,
            )
        if r.kind is Kind.DRIFT_CHECKED and r.sync is not None:
            drift = SyncState.OUT_OF_SYNC if r.sync.plan.has_changes else SyncState.SYNCED
            return lambda s: replace(s, sync_state=drift.value, updated_at=now)
        if r.kind is Kind.REMOVED:
            # Nothing of the app runs: a release after it is re-added is a new one, even with the same render.
            return lambda s: replace(
                s,
                last_applied_digest="",
                last_attempted_revision=revision,
                result=Result.REMOVED.value,
                sync_state=SyncState.UNKNOWN.value,
                health=HealthStatus.UNKNOWN.value,
                health_reason="",
                last_error="",
                updated_at=now,
            )
        if r.kind is Kind.ORPHANED:
            message = orphaned_message(r.key, r.target, r.kept)
            before = r.previous
            if before is not None and (before.result, before.last_error) == (Result.ORPHANED.value, message):
                return None  # said once
            return lambda s: replace(
                s,
                result=Result.ORPHANED.value,
                last_error=message,
                sync_state=SyncState.OUT_OF_SYNC.value,
                updated_at=now,
            )
        return None


# ------------------------------------------------------------------------------------------------ the forge


def commit_statuses(r: ReconcileResult, target_url: str = "") -> tuple[CommitStatus, ...]:
    """What the commits a reconcile concerns should say for its environment and app (empty: nothing to say).

    The commit it ran at: pending while a rollout or the workloads' own rolling update progresses (the step in the
    description), success once verified Healthy, failure with the reason when the release rolled back, degraded,
    or failed terminally; error for a transient failure (it is retried, and the status follows).

    A status must stay true after the branch moves on, so two earlier commits hear the outcome too:
    - the commit credited with the running release (``ReconcileResult.release_revision``), when a later commit
      renders the app identically: a promotion merged in prod, then a README commit on top, is verified at the
      head, and the promotion's own commit would otherwise say ``pending`` for ever;
    - the commit whose release was still rolling out when this one changed the render (Superseded in the
      ledger): ``error``, superseded by this commit, since that release never finished on its own.
    """
    if r.target is None or r.snapshot is None or r.outcome is None or r.dry_run or not r.revision:
        return ()
    if r.revision.endswith("-dirty"):
        return ()
    state, description = _state(r)
    if state is None:
        return ()
    context = f"gitsync/{r.key.env}/{r.key.app}"

    def link(sha: str) -> str:
        """``forge.targetUrl`` with its placeholders filled: each status can link to its own dashboard page."""
        filled = target_url.replace("{env}", r.key.env).replace("{app}", r.key.app)
        return filled.replace("{revision}", sha)

    statuses = [CommitStatus(r.revision, context, state, first_line(description), link(r.revision))]
    credited = r.release_revision
    if r.kind is Kind.RELEASE and credited not in ("", r.revision) and not credited.endswith("-dirty"):
        statuses.append(CommitStatus(credited, context, state, first_line(description), link(credited)))
    superseded = r.superseded_revision if r.kind is Kind.RELEASE else ""
    if superseded and superseded != r.revision and not superseded.endswith("-dirty"):
        said = f"superseded by {r.revision[:12]} before its rollout finished"
        statuses.append(CommitStatus(superseded, context, CommitState.ERROR, said, link(superseded)))
    return tuple(statuses)


def _state(r: ReconcileResult) -> tuple[CommitState | None, str]:
    step = r.rollout.message if r.rollout is not None else ""
    if r.kind is Kind.RELEASE and r.health is not None:
        health = r.health
        if r.outcome is Result.ROLLED_BACK:
            return CommitState.FAILURE, f"rolled back: {r.error or step}"
        if r.outcome is Result.PAUSED:
            # the strategy's pause message already says "paused: ..." (draft.pause): not twice
            said = step if step.startswith("paused: ") else f"paused: {step or 'waiting for gitsync rollout promote'}"
            return CommitState.PENDING, said
        if r.outcome is Result.PROGRESSING:
            return CommitState.PENDING, f"rolling out: {step or health.reason or health.status.value}"
        if health.status is HealthStatus.HEALTHY:
            # A pinned environment runs its pin, not what the commit changed upstream: a commit that brings a new
            # image to staging must not read as "in prod" on its prod status.
            pin = r.pin
            pinned = f" (pinned to {pin.from_env}@{pin.revision[:12]})" if pin is not None else ""
            return CommitState.SUCCESS, f"deployed to {r.key.env} and healthy{pinned}"
        return CommitState.FAILURE, f"{health.status.value}: {health.reason or 'not healthy'}"
    if r.kind is Kind.FAILED and r.outcome is not None:
        transient = r.error_class is Retry.TRANSIENT
        return (CommitState.ERROR if transient else CommitState.FAILURE), f"{r.outcome.value}: {r.error}"
    if r.kind is Kind.BLOCKED:
        return CommitState.FAILURE, f"not deployed: {r.error}"
    if r.kind is Kind.AWAITING:
        return CommitState.PENDING, "awaiting promotion"
    return None, ""


_COUNTDOWN = re.compile(r"\bin \d+(\.\d+)?s\b")
"""A rollout step's countdown (``switching in 8s``): the same step a second later is not a new status."""


class CommitStatusSink:
    """Commit statuses per environment and app, sent in the background; a status is sent once: the same state
    and description for the same commit and context again (every requeue of a progressing rollout, a step's
    countdown ticking) is not."""

    SENT_KEPT = 4096
    """Recent (commit, context) pairs remembered, so memory stays bounded on a long-lived agent."""

    def __init__(self, forge: Forge, *, target_url: str = "", capacity: int = 256, retry_after: float = 5.0) -> None:
        self._forge = forge
        self._target_url = target_url
        self._sent: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()
        self.queue = ForgeQueue("commit-statuses", capacity, on_failure=self._forget, retry_after=retry_after)

    def write(self, r: ReconcileResult) -> None:
        recorded = time.monotonic()
        for status in commit_statuses(r, self._target_url):
            key = f"{status.sha}/{status.context}"
            said = (status.state, _COUNTDOWN.sub("in Ns", status.description))
            with self._lock:
                if self._sent.get(key) == said:
                    continue
                self._sent[key] = said
                self._sent.move_to_end(key)
                while len(self._sent) > self.SENT_KEPT:
                    self._sent.popitem(last=False)
            self.queue.put(key, functools.partial(self._send, status, recorded))

    def _send(self, status: CommitStatus, recorded: float) -> None:
        self._forge.set_status(status)
        log.info(
            "forge.status_set",
            context=status.context,
            state=str(status.state),
            sha=status.sha[:12],
            seconds=round(time.monotonic() - recorded, 3),
        )

    def _forget(self, key: str) -> None:
        """Not sent (dropped or failed): the next reconcile's status is sent even when it says the same."""
        with self._lock:
            self._sent.pop(key, None)


class PullRequestSink:
    """The pull request of a promotion or rollback written to a review branch (``gitsync/promote/<env>/<app>``,
    ``gitsync/rollback/<env>/<app>``), opened into the tracked branch, or updated when one is open (a newer
    candidate, or the rollback of a newer failed release, replaces the branch's commit); once per commit of the
    branch, in the background. A pull request left open once it is stale is closed with a comment saying why
    (``_stale``, the one place): a promotion once the environment's pin holds the newest release upstream
    (promoted another way, or merged as another pull request): merging it would change nothing, or go back to an
    older release; a rollback once a release of the environment succeeded after it was written (a fix promoted,
    the failed release retried, the pin set by hand): the release it rolls back is no longer the one running, and
    merging it would take the environment back to an older release."""

    def __init__(self, forge: Forge, branch: str, *, capacity: int = 64) -> None:
        self._forge = forge
        self._branch = branch
        self._opened: set[tuple[str, str]] = set()
        self._settled: dict[str, str] = {}
        """Review branch -> the pin revision for which its stale pull request was looked for (once per pin)."""
        self._lock = threading.Lock()
        self.queue = ForgeQueue("pull-requests", capacity, on_failure=self._forget)

    def write(self, r: ReconcileResult) -> None:
        self._close_stale(r)
        step = r.promotion
        if step is None or step.current or not step.branch or step.branch == self._branch or not step.commit:
            return
        if step.action not in (PromotionAction.PROPOSED, PromotionAction.ROLLED_BACK):
            return
        with self._lock:
            if (step.branch, step.commit) in self._opened:
                return
            self._opened.add((step.branch, step.commit))
            self._settled.pop(step.branch, None)  # once this proposal is settled, its pull request is looked for
        rollback = step.action is PromotionAction.ROLLED_BACK
        subject, _, details = step.commit_message.partition("\n")
        body = (
            f"{'Rollback' if rollback else 'Promotion'} written by gitsync: {step.message}.\n\n"
            f"Commit `{step.commit}` on `{step.branch}` changes `environments/{r.key.env}/promoted.yaml`; "
            f"merging this pull request {'rolls back' if rollback else 'promotes'} {r.key.app} in {r.key.env}."
            + ("" if rollback else " A newer candidate replaces the commit and updates this pull request.")
            + (f"\n\nWhy: {r.error}" if rollback and r.error else "")
        )
        if details.strip():
            # The commit message's body: the rendered change and the evidence trailers (Gitsync-Evidence, -Digest).
            body += f"\n\n```\n{details.strip()}\n```\n"
        title = f"gitsync: {subject}"
        head = step.branch
        self.queue.put(f"{head}@{step.commit}", lambda: self._open(head, title, body))

    def _open(self, head: str, title: str, body: str) -> None:
        pull = self._forge.open_pull_request(head, self._branch, title, body)
        log.info("forge.pull_request", head=head, number=pull.number, url=pull.url)

    def _close_stale(self, r: ReconcileResult) -> None:
        """Close each review branch's pull request ``_stale`` names, looked for once per pin (and again once the
        branch has a new proposal)."""
        for head, pinned, comment in _stale(r):
            with self._lock:
                if self._settled.get(head) == pinned:
                    continue
                self._settled[head] = pinned
            self.queue.put(f"{head}@close", functools.partial(self._close, head, pinned, comment))

    def _close(self, head: str, pinned: str, comment: str) -> None:
        """Close ``head``'s pull request, unless the branch had a new proposal since it was found stale at
        ``pinned`` (a close the forge failed is retried later, after a proposal opened meanwhile: that one is
        needed)."""
        with self._lock:
            if self._settled.get(head) != pinned:
                return
        closed = self._forge.close_pull_request(head, self._branch, comment)
        if closed is not None:
            log.info("forge.pull_request_closed", head=head, number=closed.number, url=closed.url)

    def _forget(self, key: str) -> None:
        head, _, commit = key.rpartition("@")
        with self._lock:
            self._opened.discard((head, commit))
            if commit == "close":
                self._settled.pop(head, None)


def _stale(r: ReconcileResult) -> list[tuple[str, str, str]]:
    """The review branches of ``r``'s app-env whose pull request is stale after this reconcile, each with the pin
    revision it was found stale at and the comment that closes it (see ``PullRequestSink``). Only a pinned
    environment in pull-request mode has them."""
    upstream = r.target.upstream if r.target is not None else None
    pin = r.pin
    if upstream is None or upstream.mode != "pull-request" or pin is None:
        return []
    runs = f"{pin.from_env}@{pin.revision[:12]}"
    stale = []
    if r.promotion is not None and r.promotion.current:
        stale.append(
            (
                review_branch("promote", r.key),
                pin.revision,
                f"Closed by gitsync: {r.key.env} already runs {runs}, the newest release that succeeded in "
                f"{pin.from_env}; merging this pull request would change nothing, or go back to an older release. "
                "The next candidate opens a new one.",
            )
        )
    if r.kind is Kind.RELEASE and r.outcome is Result.SUCCEEDED:
        stale.append(
            (
                review_branch("rollback", r.key),
                pin.revision,
                f"Closed by gitsync: {r.key.env} runs {runs} and its release succeeded after this rollback was "
                "written, so the release it rolls back is no longer the one running; merging this pull request "
                f"would take {r.key.env} back to an older release. A rollout that fails again opens a new rollback.",
            )
        )
    return stale
