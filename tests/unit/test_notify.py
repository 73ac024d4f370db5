"""Notifications: which results become which notices (the table), and their delivery to a real HTTP receiver on
127.0.0.1: once each, signed, in the Slack format, filtered, retried, never holding up the record stage, and not
sent twice by an agent that restarts."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from dataclasses import replace
from email.utils import formatdate
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import memstore
import pytest
from notifylab import Receiving, signed

from gitsync.adapters.clock import SystemClock
from gitsync.adapters.webhook_post import WebhookPost
from gitsync.apply import ChangeSetEntry
from gitsync.health import Health
from gitsync.history import Result, Status
from gitsync.inventory import Inventory
from gitsync.model import AppEnv, HealthStatus, ObjectId, SyncAction, SyncState
from gitsync.notify import Format, Notice, Notifier, Outbox, Policy, Receiver, notices
from gitsync.notify.outbox import NOTIFY_PART
from gitsync.notify.sender import retry_after
from gitsync.plan import Plan, PlanAction, PlannedChange
from gitsync.ports import Commit, Snapshot
from gitsync.promotion import PromotionAction, PromotionStep
from gitsync.reconcile import RolloutStep
from gitsync.record import NotifySink, Recorder
from gitsync.result import Kind, ReconcileResult, Target
from gitsync.sync import SyncResult

KEY = AppEnv("podinfo", "staging")
REV = "a" * 40
SECRET = b"notify-signing-key"
DEPLOYMENT = ObjectId("apps", "Deployment", "shop", "podinfo")
FAST = Policy(attempts=4, backoff=0.01, max_delay=0.05, timeout=30.0)
"""Quick retries; a 30 s timeout so a receiver slow to answer on a loaded machine is not retried (and counted twice).
The tests stop a notifier with ``stop(timeout=60)``: a delivery already answered finishes (its log line, its
outbox strike) before the outbox is read, where the default 1 s join is what a loaded machine can outlast."""

# -- results -----------------------------------------------------------------------------------------------------


def synced(action: SyncAction = SyncAction.CONFIGURED, has_changes: bool = True) -> SyncResult:
    planned = PlanAction.UPDATE if has_changes else PlanAction.UNCHANGED
    return SyncResult(
        KEY,
        REV,
        "d2",
        Plan((PlannedChange(DEPLOYMENT, planned),)),
        (ChangeSetEntry(DEPLOYMENT, action),),
        Inventory(),
    )


def result(kind: Kind = Kind.RELEASE, outcome: Result | None = Result.SUCCEEDED, **fields: Any) -> ReconcileResult:
    """A result at REV with digest d2, healthy, after a status that ran d1 (override any field)."""
    defaults: dict[str, Any] = {
        "reasons": ("poll",),
        "started_at": 100.0,
        "finished_at": 101.0,
        "snapshot": Snapshot(Commit(REV, "Ada", "Say hello", 99.0), Path()),
        "target": Target("shop", prune=True, self_heal=True),
        "previous": before(),
        "rendered": SimpleNamespace(digest="d2"),
        "sync": synced(),
        "health": Health(HealthStatus.HEALTHY),
    }
    return ReconcileResult(KEY, kind, outcome=outcome, **{**defaults, **fields})


def before(**fields: Any) -> Status:
    running = {
        "last_applied_revision": "b" * 40,
        "last_applied_digest": "d1",
        "last_attempted_revision": "b" * 40,
        "result": Result.SUCCEEDED.value,
        "health": HealthStatus.HEALTHY.value,
        "sync_state": SyncState.SYNCED.value,
        "updated_at": 50.0,
    }
    return Status(KEY.app, KEY.env, **{**running, **fields})


SAME = {"last_applied_revision": REV, "last_applied_digest": "d2", "last_attempted_revision": REV}
"""A status that already runs this result's release."""


def step(action: PromotionAction) -> PromotionStep:
    return PromotionStep(action, message="promote podinfo 6.7.1 from staging", commit="c" * 40, written=True)


def rollout(phase: str, message: str = "") -> RolloutStep:
    return RolloutStep(exclude=frozenset({DEPLOYMENT}), phase=phase, message=message)


TABLE: list[tuple[str, ReconcileResult, set[Notice]]] = [
    ("a new release deployed and healthy", result(), {Notice.SUCCEEDED}),
    ("the same release seen again", result(previous=before(**SAME)), set()),
    ("a commit that leaves the app as it runs", result(previous=before(last_applied_digest="d2")), set()),
    (
        "healthy again after a failure of the same release",
        result(previous=before(**SAME, result=Result.FAILED.value)),
        {Notice.SUCCEEDED},
    ),
    ("succeeded but degraded is not a success", result(health=Health(HealthStatus.DEGRADED, "crashloop")), set()),
    (
        "a sync failure",
        result(Kind.FAILED, Result.FAILED, error="Deployment/shop/podinfo: field is immutable", health=None),
        {Notice.SYNC_FAILED},
    ),
    ("a render error", result(Kind.FAILED, Result.RENDER_ERROR, error="x.yaml:3: no_such_key"), {Notice.SYNC_FAILED}),
    (
        "the same failure retried",
        result(Kind.FAILED, Result.FAILED, previous=before(last_attempted_revision=REV, result=Result.FAILED.value)),
        set(),
    ),
    (
        "drift found with self-heal off",
        result(Kind.DRIFT_CHECKED, None, previous=before(**SAME)),
        {Notice.DRIFT_FOUND},
    ),
    (
        "drift still there at the next check",
        result(Kind.DRIFT_CHECKED, None, previous=before(**SAME, sync_state=SyncState.OUT_OF_SYNC.value)),
        set(),
    ),
    ("drift healed", result(reasons=("drift",), previous=before(**SAME)), {Notice.DRIFT_HEALED}),
    (
        "a drift check that found nothing to heal",
        result(reasons=("drift",), previous=before(**SAME), sync=synced(SyncAction.UNCHANGED, has_changes=False)),
        set(),
    ),
    (
        "a canary starts",
        result(outcome=Result.PROGRESSING, rollout=rollout("Progressing", "setWeight 20")),
        {Notice.ROLLOUT_STARTED},
    ),
    (
        "a canary goes on",
        result(outcome=Result.PROGRESSING, previous=before(**SAME, result=Result.PROGRESSING.value)),
        set(),
    ),
    (
        "a canary starts with a pause",
        result(outcome=Result.PAUSED, error="paused at step 1", rollout=rollout("Paused")),
        {Notice.ROLLOUT_STARTED, Notice.ROLLOUT_PAUSED},
    ),
    (
        "a canary pauses later",
        result(outcome=Result.PAUSED, previous=before(**SAME, result=Result.PROGRESSING.value)),
        {Notice.ROLLOUT_PAUSED},
    ),
    (
        "promoted by a human, it goes on",
        result(outcome=Result.PROGRESSING, previous=before(**SAME, result=Result.PAUSED.value)),
        set(),
    ),
    (
        "a canary is rolled back",
        result(
            outcome=Result.ROLLED_BACK,
            error="analysis failed",
            previous=before(**SAME, result=Result.PROGRESSING.value),
        ),
        {Notice.ROLLOUT_ABORTED},
    ),
    (
        "a canary that finishes",
        result(previous=before(**SAME, result=Result.PROGRESSING.value)),
        {Notice.SUCCEEDED},
    ),
    (
        "a promotion commit",
        result(previous=before(**SAME), promotion=step(PromotionAction.PROMOTED)),
        {Notice.PROMOTION_MERGED},
    ),
    (
        "a promotion branch for review",
        result(previous=before(**SAME), promotion=step(PromotionAction.PROPOSED)),
        {Notice.PROMOTION_PROPOSED},
    ),
    (
        "a rollback commit",
        result(
            outcome=Result.ROLLED_BACK,
            previous=before(**SAME, result=Result.ROLLED_BACK.value),
            promotion=step(PromotionAction.ROLLED_BACK),
        ),
        {Notice.ROLLBACK_WRITTEN},
    ),
    (
        "a promotion that could not be written",
        result(previous=before(**SAME), promotion=replace(step(PromotionAction.PROMOTED), written=False)),
        set(),
    ),
    ("a dry run", result(dry_run=True), set()),
    ("a failed fetch (no app-env to speak of)", result(Kind.FAILED, Result.FAILED, target=None), set()),
]


@pytest.mark.parametrize(("case", "r", "expected"), TABLE, ids=[row[0] for row in TABLE])
def test_the_table_from_results_to_notices(case: str, r: ReconcileResult, expected: set[Notice]) -> None:
    assert {n.notice for n in notices(r)} == expected


def test_the_same_change_has_the_same_key_and_a_later_one_another() -> None:
    healed = result(reasons=("drift",), previous=before(**SAME))
    (first,) = notices(healed)
    (again,) = notices(replace(healed, finished_at=500.0))  # the reconcile done again after a kill
    (later,) = notices(replace(healed, previous=before(**SAME, updated_at=120.0)))  # a second repair, later
    assert first.key == again.key
    assert later.key != first.key
    assert first.message == "repaired: podinfo@staging: 1 configured"


def test_a_receiver_filters_by_event_env_and_app() -> None:
    (failed,) = notices(result(Kind.FAILED, Result.FAILED, error="boom"))
    assert Receiver("all", Format.GENERIC).wants(failed)
    assert Receiver("f", Format.GENERIC, events=frozenset({Notice.SYNC_FAILED}), envs=frozenset({"staging"})).wants(
        failed
    )
    assert not Receiver("f", Format.GENERIC, events=frozenset({Notice.SUCCEEDED})).wants(failed)
    assert not Receiver("f", Format.GENERIC, envs=frozenset({"prod"})).wants(failed)
    assert not Receiver("f", Format.GENERIC, apps=frozenset({"shop"})).wants(failed)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after("7", 1000.0) == 7.0
    assert retry_after(formatdate(1030.0, usegmt=True), 1000.0) == 30.0
    assert retry_after(formatdate(900.0, usegmt=True), 1000.0) == 0.0
    assert retry_after("", 1000.0) is None
    assert retry_after("soon", 1000.0) is None


# -- a real receiver ---------------------------------------------------------------------------------------------


class MemoryStore(memstore.MemoryStore):
    """The shared in-memory store, with the notification outbox's pending entries."""

    def pending(self) -> list[list[str]]:
        data, _ = self.load(KEY, "shop", NOTIFY_PART)
        return [e["pending"] for e in data.get("notices", []) if e["pending"]]


def generic(tmp_path: Path, name: str, url: str, **filters: Any) -> Receiver:
    key = tmp_path / f"{name}.key"
    key.write_bytes(SECRET + b"\n")
    return Receiver(name, Format.GENERIC, url=url, secret_file=key, **filters)


def notifier(store: MemoryStore | None, *receivers: Receiver, policy: Policy = FAST) -> Notifier:
    n = Notifier(
        receivers, WebhookPost(), Outbox(store) if store is not None else None, SystemClock(), policy, random.Random(1)
    )
    n.start()
    return n


FAILED = result(Kind.FAILED, Result.FAILED, error="Deployment/shop/podinfo: field is immutable", health=None)
CANARY = result(outcome=Result.PAUSED, error="paused at step 1", rollout=rollout("Paused"))


def test_each_notice_reaches_the_receiver_once_signed(tmp_path: Path, receiving: Callable[..., Receiving]) -> None:
    hook = receiving()
    store = MemoryStore()
    sender = notifier(store, generic(tmp_path, "ops", hook.url))
    recorder = Recorder([NotifySink(sender)])
    try:
        for r in (FAILED, CANARY, FAILED, CANARY):  # the second time: the same reconcile done again (a kill)
            recorder.record(r)
        got = hook.wait(3)
        time.sleep(0.3)  # room for a wrong fourth delivery to arrive before counting
    finally:
        sender.stop(timeout=60)
    assert [d.json["event"] for d in hook.got] == ["sync-failed", "rollout-started", "rollout-paused"]
    assert all(signed(d, SECRET) for d in got)
    assert len({d.headers["Idempotency-Key"] for d in got}) == 3
    failure = got[0].json
    assert failure == {
        "event": "sync-failed",
        "key": got[0].headers["Idempotency-Key"],
        "app": "podinfo",
        "env": "staging",
        "namespace": "shop",
        "revision": REV,
        "outcome": "Failed",
        "message": f"{REV[:12]} failed: Deployment/shop/podinfo: field is immutable",
        "at": 101.0,
    }
    assert got[0].headers["X-Gitsync-Event"] == "sync-failed"
    assert store.pending() == [], "every delivery is marked done in the outbox"


def test_the_slack_format_and_its_url_from_a_file(tmp_path: Path, receiving: Callable[..., Receiving]) -> None:
    hook = receiving()
    url_file = tmp_path / "slack-url"
    url_file.write_text(hook.url + "\n")
    sender = notifier(None, Receiver("team", Format.SLACK, url_file=url_file))
    try:
        sender.record(KEY, "shop", notices(FAILED))
        (got,) = hook.wait(1)
    finally:
        sender.stop(timeout=60)
    body = got.json
    assert set(body) == {"text", "blocks"}
    said = f"{REV[:12]} failed: Deployment/shop/podinfo: field is immutable"
    assert body["text"] == f"podinfo@staging: :x: sync failed: {said}"
    assert body["blocks"][0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": f"*podinfo@staging*: :x: sync failed\n{said}"},
    }
    assert body["blocks"][1]["type"] == "context"
    assert "X-Gitsync-Signature" not in got.headers
    assert got.headers["Idempotency-Key"] == notices(FAILED)[0].key


def test_filters_choose_the_receivers(tmp_path: Path, receiving: Callable[..., Receiving]) -> None:
    failures, prod, everything = receiving(), receiving(), receiving()
    sender = notifier(
        MemoryStore(),
        generic(tmp_path, "failures", failures.url, events=frozenset({Notice.SYNC_FAILED})),
        generic(tmp_path, "prod", prod.url, envs=frozenset({"prod"})),
        generic(tmp_path, "everything", everything.url),
    )
    try:
        Recorder([NotifySink(sender)]).record(FAILED)
        Recorder([NotifySink(sender)]).record(CANARY)
        everything.wait(3)
        failures.wait(1)
        time.sleep(0.3)
    finally:
        sender.stop(timeout=60)
    assert [d.json["event"] for d in failures.got] == ["sync-failed"]
    assert prod.got == []


def test_a_503_is_retried_with_backoff_and_delivered_once(tmp_path: Path, receiving: Callable[..., Receiving]) -> None:
    hook = receiving(script=[(503, {}), (502, {}), (200, {})])
    store = MemoryStore()
    sender = notifier(store, generic(tmp_path, "ops", hook.url))
    try:
        sender.record(KEY, "shop", notices(FAILED))
        got = hook.wait(3)
        time.sleep(0.3)
    finally:
        sender.stop(timeout=60)
    assert len(got) == 3, "two failed attempts, one success, nothing after it"
    assert len({d.body for d in got}) == 1 and len({d.headers["Idempotency-Key"] for d in got}) == 1
    assert store.pending() == []


def test_retry_after_is_honoured(tmp_path: Path, receiving: Callable[..., Receiving]) -> None:
    """The backoff alone would wait an hour: the receiver's Retry-After: 0 is what gets the second attempt out."""
    hook = receiving(script=[(429, {"Retry-After": "0"}), (200, {})])
    slow = Policy(attempts=3, backoff=3600.0, max_delay=3600.0, timeout=30.0)
    sender = notifier(MemoryStore(), generic(tmp_path, "ops", hook.url), policy=slow)
    try:
        sender.record(KEY, "shop", notices(FAILED))
        assert len(hook.wait(2)) == 2
    finally:
        sender.stop(timeout=60)


def test_a_refused_delivery_is_not_retried(tmp_path: Path, receiving: Callable[..., Receiving]) -> None:
    hook = receiving(script=[(400, {})])
    store = MemoryStore()
    sender = notifier(store, generic(tmp_path, "ops", hook.url))
    try:
        sender.record(KEY, "shop", notices(FAILED))
        hook.wait(1)
        time.sleep(0.3)
    finally:
        sender.stop(timeout=60)
    assert len(hook.got) == 1
    assert store.pending() == []


def test_receivers_that_refuse_or_hang_never_hold_up_the_record_stage(
    tmp_path: Path, receiving: Callable[..., Receiving]
) -> None:
    hanging, good = receiving(hang=True), receiving()
    receivers = (
        generic(tmp_path, "hanging", hanging.url),
        generic(tmp_path, "closed", f"http://127.0.0.1:{closed_port()}/hook"),
        generic(tmp_path, "good", good.url),
    )
    sender = notifier(MemoryStore(), *receivers, policy=Policy(attempts=3, backoff=0.01, timeout=60.0, queue_size=20))
    assert hanging.hang is not None
    try:
        recorder = Recorder([NotifySink(sender)])
        recorder.record(FAILED)
        hanging.wait(1)  # the hanging receiver now holds its lane's only connection
        for n in range(10):  # ten more changes queue behind it, none waited for
            recorder.record(replace(FAILED, previous=before(updated_at=60.0 + n)))
        assert not hanging.hang.is_set(), "recording finished while the receiver still hangs"
        assert len(good.wait(11)) == 11, "the good receiver got every notice while another receiver hangs"
    finally:
        hanging.hang.set()
        sender.stop(timeout=60)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_restarted_agent_sends_what_was_pending_and_nothing_twice(
    tmp_path: Path, receiving: Callable[..., Receiving]
) -> None:
    """A process that claimed a notice and died before sending it (never started here): the next process sends
    it once, and the same reconcile done again (same status before it) adds nothing."""
    hook = receiving()
    store = MemoryStore()
    ops = generic(tmp_path, "ops", hook.url)
    killed = Notifier([ops], WebhookPost(), Outbox(store), SystemClock(), FAST)
    killed.record(KEY, "shop", notices(FAILED))
    assert store.pending() == [["ops"]]

    restarted = notifier(store, ops)
    try:
        Recorder([NotifySink(restarted)]).record(FAILED)
        hook.wait(1)
        time.sleep(0.3)
    finally:
        restarted.stop(timeout=60)
    assert [d.json["event"] for d in hook.got] == ["sync-failed"]
    assert store.pending() == []
