"""The reconcile queue: one entry per app-env, coalescing triggers, backoff and parking.

Contract: pure threading, no I/O; time comes from an injected ``Clock`` and jitter from an injected
``random.Random``, so tests drive it deterministically. What must hold:

- at most one reconcile per key at a time (``get`` never hands out a key that is being processed);
- triggers coalesce: any number of ``add`` calls while a key waits give one reconcile, and ``add`` calls while it
  is being processed give exactly one more afterwards (a burst yields one or two reconciles, never zero);
- the newest wanted revision wins: an item carries the latest revision added, and a new revision cancels the
  backoff or parking that an older one earned, so a fix never waits behind a failing commit;
- transient failures back off exponentially with jitter (or as the error's ``retry_after`` says);
- terminal failures park the key until a different revision arrives;
- ``requeue_after`` ("look again in N s": a rollout step or health still progressing) re-adds the key then, or
  earlier on ``wake`` (a watch saw what it waits for); a wake while the key is being processed makes its requeue
  immediate, so a change that came after the reconcile read the cache is never slept through.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from enum import StrEnum

from gitsync.model import AppEnv
from gitsync.ports import Clock


class Outcome(StrEnum):
    """How a reconcile ended, as reported to ``ReconcileQueue.done``."""

    DONE = "done"
    REQUEUE = "requeue"
    TRANSIENT = "transient"
    TERMINAL = "terminal"


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One unit of work handed to a worker: the key, the newest wanted revision ("" = the branch head) and why."""

    key: AppEnv
    revision: str
    reasons: tuple[str, ...]
    attempt: int
    """Consecutive transient failures before this attempt (0 on the first)."""


@dataclass(slots=True)
class _Entry:
    revision: str = ""
    reasons: tuple[str, ...] = ()
    dirty: bool = False
    processing: bool = False
    not_before: float = 0.0
    failures: int = 0
    parked_on: str | None = None
    """Revision that failed terminally; the key sleeps until another revision is added."""
    seq: int = 0
    """Order of becoming dirty, so keys are served first come, first served."""
    requeued: bool = False
    """Waiting on a requeue (not a backoff): ``wake`` may end the wait."""
    woken: bool = False
    """Woken while being processed: its requeue, if any, is immediate."""


class ReconcileQueue:
    def __init__(
        self,
        clock: Clock,
        rng: random.Random | None = None,
        *,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
    ) -> None:
        self._clock = clock
        self._rng = rng or random.Random()
        self._base = base_delay
        self._max = max_delay
        self._entries: dict[AppEnv, _Entry] = {}
        self._cond = threading.Condition()
        self._seq = 0
        self._closed = False

    def add(self, key: AppEnv, revision: str = "", reason: str = "") -> None:
        """Ask for a reconcile of ``key``; ``revision`` is the commit wanted ("" when the trigger does not know).

        A revision different from the one wanted or parked on resets backoff and parking; the same revision (or
        none) neither shortens a backoff nor wakes a parked key, so a burst of triggers cannot defeat either.
        """
        with self._cond:
            entry = self._entries.setdefault(key, _Entry())
            new_revision = bool(revision) and revision != entry.revision
            if entry.parked_on is not None and not (revision and revision != entry.parked_on):
                return
            if revision:
                entry.revision = revision
            if new_revision or entry.parked_on is not None:
                entry.parked_on = None
                entry.failures = 0
                entry.not_before = 0.0
            if reason and reason not in entry.reasons:
                entry.reasons = (*entry.reasons, reason)
            if not entry.dirty:
                entry.dirty = True
                self._seq += 1
                entry.seq = self._seq
            self._cond.notify_all()

    def get(self, timeout: float | None = None) -> WorkItem | None:
        """The next ready key, marked as processing; None on timeout or after ``close``.

        ``timeout=0`` polls without blocking. ``timeout`` is real (monotonic) time; ``not_before`` is read through
        the injected clock, which must advance like real time when ``get`` blocks.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                now = self._clock.now()
                ready = [
                    (e.seq, k)
                    for k, e in self._entries.items()
                    if e.dirty and not e.processing and e.parked_on is None and e.not_before <= now
                ]
                if ready:
                    _, key = min(ready)
                    entry = self._entries[key]
                    entry.dirty = False
                    entry.processing = True
                    entry.requeued = False
                    entry.woken = False
                    item = WorkItem(key, entry.revision, entry.reasons, entry.failures)
                    entry.reasons = ()
                    return item
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                waits = [
                    e.not_before - now
                    for e in self._entries.values()
                    if e.dirty and not e.processing and e.parked_on is None
                ]
                wait = min([w for w in waits if w > 0], default=None)
                if remaining is not None:
                    wait = remaining if wait is None else min(wait, remaining)
                self._cond.wait(wait)
            return None

    def done(
        self,
        item: WorkItem,
        outcome: Outcome,
        *,
        revision: str = "",
        retry_after: float | None = None,
    ) -> float | None:
        """Finish ``item``. ``revision`` is the commit actually attempted (parking is on it). Returns the delay
        before the key runs again because of this outcome (None when it only runs on a new trigger)."""
        with self._cond:
            entry = self._entries[item.key]
            entry.processing = False
            attempted = revision or item.revision
            superseded = bool(entry.revision) and entry.revision != item.revision
            delay: float | None = None
            if outcome is Outcome.DONE:
                entry.failures = 0
            elif outcome is Outcome.REQUEUE:
                entry.failures = 0
                delay = 0.0 if entry.woken else max(retry_after or 0.0, 0.0)
                entry.requeued = True
            elif outcome is Outcome.TRANSIENT:
                entry.failures += 1
                delay = self._backoff(entry.failures, retry_after)
            else:
                entry.failures = 0
                if not superseded:
                    entry.parked_on = attempted or entry.revision
            if superseded:
                # A newer revision arrived while this one ran: serve it now, whatever happened to the old one.
                entry.parked_on = None
                entry.failures = 0
                entry.not_before = 0.0
                delay = 0.0
                self._mark_dirty(entry)
            elif delay is not None:
                entry.not_before = self._clock.now() + delay
                self._mark_dirty(entry)
            self._cond.notify_all()
            return delay

    def wake(self, key: AppEnv) -> None:
        """A watch saw a change ``key``'s requeue waits for: run it now (a key backing off after a failure, parked,
        or not waiting is left alone)."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is None:
                return
            if entry.processing:
                entry.woken = True
            elif entry.requeued and entry.dirty and entry.not_before > self._clock.now():
                entry.not_before = 0.0
                self._cond.notify_all()

    def retry_now(self, key: AppEnv) -> None:
        """What ``key`` failed on is gone (its cluster answers again): a key backing off after transient failures
        runs now, not when its backoff ends. Rare by nature (once per outage), so it cannot make a hot loop."""
        with self._cond:
            entry = self._entries.get(key)
            if entry is None or entry.processing or not entry.dirty or entry.failures == 0:
                return
            entry.not_before = 0.0
            self._cond.notify_all()

    def _mark_dirty(self, entry: _Entry) -> None:
        if not entry.dirty:
            entry.dirty = True
            self._seq += 1
            entry.seq = self._seq

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after > 0:
            return min(retry_after, self._max)
        ceiling = min(self._max, self._base * 2.0 ** (failures - 1))
        return ceiling * (0.5 + self._rng.random() / 2)

    def parked(self, key: AppEnv) -> str | None:
        """The revision ``key`` is parked on after a terminal failure, if any."""
        with self._cond:
            entry = self._entries.get(key)
            return entry.parked_on if entry else None

    def close(self) -> None:
        """Wake every waiting worker; ``get`` returns None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
