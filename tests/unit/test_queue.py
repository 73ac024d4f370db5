"""The reconcile queue: coalescing, one-at-a-time per key, newest revision wins, backoff and parking."""

from __future__ import annotations

import random
import threading

import pytest

from gitsync.model import AppEnv
from gitsync.runtime.queue import Outcome, ReconcileQueue

A = AppEnv("podinfo", "staging")
B = AppEnv("podinfo", "prod")


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> float:
        return self.t


def make() -> tuple[ReconcileQueue, FakeClock]:
    clock = FakeClock()
    return ReconcileQueue(clock, random.Random(7), base_delay=1.0, max_delay=60.0), clock


def drain(q: ReconcileQueue) -> list[str]:
    """Run every ready item to DONE; the revisions reconciled, in order."""
    seen = []
    while (item := q.get(timeout=0)) is not None:
        seen.append(item.revision)
        q.done(item, Outcome.DONE)
    return seen


def test_burst_while_waiting_gives_one_reconcile_with_the_newest_revision() -> None:
    q, _ = make()
    for n in range(100):
        q.add(A, f"rev{n}", "webhook")
    assert drain(q) == ["rev99"]


def test_burst_while_processing_gives_exactly_one_more() -> None:
    q, _ = make()
    q.add(A, "r1")
    item = q.get(timeout=0)
    assert item is not None
    for n in range(50):
        q.add(A, f"r{n + 2}")
    assert q.get(timeout=0) is None, "a key is never handed out twice at once"
    q.done(item, Outcome.DONE)
    assert drain(q) == ["r51"]


def test_keys_are_independent_and_first_come_first_served() -> None:
    q, _ = make()
    q.add(B, "x")
    q.add(A, "x")
    first, second = q.get(timeout=0), q.get(timeout=0)
    assert first is not None and second is not None
    assert (first.key, second.key) == (B, A)


@pytest.mark.parametrize(
    ("failures", "expected_max"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0)],
)
def test_transient_failures_back_off_exponentially_with_jitter(failures: int, expected_max: float) -> None:
    q, _ = make()
    q.add(A, "r1")
    delay = None
    for _ in range(failures):
        item = q.get(timeout=0)
        assert item is not None
        delay = q.done(item, Outcome.TRANSIENT)
        q._entries[A].not_before = 0.0  # skip the wait; only the computed delay matters here
    assert delay is not None
    assert expected_max / 2 <= delay <= expected_max


def test_backoff_holds_the_key_until_its_time_and_same_revision_triggers_do_not_shorten_it() -> None:
    q, clock = make()
    q.add(A, "r1")
    item = q.get(timeout=0)
    assert item is not None
    q.done(item, Outcome.TRANSIENT, retry_after=10)
    q.add(A, "r1", "webhook")
    q.add(A, "", "poll")
    assert q.get(timeout=0) is None
    clock.t += 10
    again = q.get(timeout=0)
    assert again is not None and again.attempt == 1 and again.revision == "r1"


def test_new_revision_cancels_backoff() -> None:
    q, _ = make()
    q.add(A, "bad")
    item = q.get(timeout=0)
    assert item is not None
    q.done(item, Outcome.TRANSIENT, retry_after=300)
    q.add(A, "fix")
    fixed = q.get(timeout=0)
    assert fixed is not None and fixed.revision == "fix" and fixed.attempt == 0


def test_retry_now_ends_a_backoff_once_what_failed_is_back_and_touches_nothing_else() -> None:
    q, _ = make()
    q.add(A, "r1")
    item = q.get(timeout=0)
    assert item is not None
    q.done(item, Outcome.TRANSIENT, retry_after=300)  # its cluster was unreachable
    assert q.get(timeout=0) is None
    q.retry_now(A)  # the cluster answers again
    again = q.get(timeout=0)
    assert again is not None and again.revision == "r1" and again.attempt == 1
    q.done(again, Outcome.DONE)
    q.retry_now(A)
    assert q.get(timeout=0) is None, "a key that is not failing is not run by it"
    q.retry_now(B)
    assert q.get(timeout=0) is None, "nor one the queue does not know"


def test_terminal_failure_parks_until_a_different_revision() -> None:
    q, clock = make()
    q.add(A, "broken")
    item = q.get(timeout=0)
    assert item is not None
    assert q.done(item, Outcome.TERMINAL) is None
    assert q.parked(A) == "broken"
    q.add(A, "broken", "webhook")
    q.add(A, "", "drift")
    clock.t += 3600
    assert q.get(timeout=0) is None
    q.add(A, "good")
    assert drain(q) == ["good"]
    assert q.parked(A) is None


def test_parking_is_on_the_revision_actually_attempted() -> None:
    q, _ = make()
    q.add(A, "", "poll")
    item = q.get(timeout=0)
    assert item is not None
    q.done(item, Outcome.TERMINAL, revision="abc")
    assert q.parked(A) == "abc"
    q.add(A, "abc")
    assert q.get(timeout=0) is None


def test_newer_revision_during_a_failing_run_is_served_at_once() -> None:
    q, _ = make()
    q.add(A, "broken")
    item = q.get(timeout=0)
    assert item is not None
    q.add(A, "fix")
    assert q.done(item, Outcome.TERMINAL) == 0.0
    assert q.parked(A) is None
    assert drain(q) == ["fix"]


def test_requeue_after_looks_again_later() -> None:
    q, clock = make()
    q.add(A, "r1")
    item = q.get(timeout=0)
    assert item is not None
    assert q.done(item, Outcome.REQUEUE, retry_after=5) == 5
    assert q.get(timeout=0) is None
    clock.t += 5
    assert drain(q) == ["r1"]


def test_blocking_get_wakes_on_add_and_on_close() -> None:
    q, _ = make()
    got: list[object] = []
    worker = threading.Thread(target=lambda: got.append(q.get(timeout=60)))
    worker.start()
    q.add(A, "r1")
    worker.join(60)
    assert got and got[0] is not None
    closer = threading.Thread(target=lambda: got.append(q.get(timeout=60)))
    closer.start()
    q.close()
    closer.join(60)
    assert got[-1] is None
