"""What the record stage tells a user: an error once, Events about the real status ConfigMap and only when something
happened, and a promotion line that catches up after a status write failed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from memstore import MemoryStore

from gitsync.apply import ChangeSetEntry
from gitsync.errors import Retry, TransientError
from gitsync.events import EventSink as Events
from gitsync.health import Health
from gitsync.history import History, Result, Status
from gitsync.inventory import Inventory
from gitsync.model import AppEnv, HealthStatus, Json, ObjectId, SyncAction
from gitsync.plan import Plan, PlanAction, PlannedChange
from gitsync.ports import Commit, Snapshot
from gitsync.promotion import PromotionAction, PromotionStep
from gitsync.record import EventSink, StatusSink
from gitsync.result import Kind, ReconcileResult, Target
from gitsync.sync import SyncResult

KEY = AppEnv("web", "prod")
NS = "gs-prod"
SERVICE = ObjectId("", "Service", NS, "ksm-bad")
REFUSED = f"{SERVICE}: invalid: spec.ports[0].port (must be between 1 and 65535, inclusive: 70000)"


class Applied:
    """The cluster as the Event sink sees it: what it applied."""

    def __init__(self) -> None:
        self.bodies: list[Json] = []

    def apply(self, body: Json) -> Json:
        self.bodies.append(body)
        return body


class Clock:
    def now(self) -> float:
        return 1_800_000_000.0


def synced(*actions: SyncAction) -> SyncResult:
    changes = tuple(
        ChangeSetEntry(
            ObjectId("", "ConfigMap", NS, f"c{i}"),
            action,
            REFUSED if action is SyncAction.FAILED else None,
            Retry.TERMINAL if action is SyncAction.FAILED else None,
        )
        for i, action in enumerate(actions)
    )
    return SyncResult(KEY, "b" * 40, "sha256:d", Plan(()), changes, Inventory())


def release(revision: str, previous: Status | None, sync: SyncResult, **fields: object) -> ReconcileResult:
    return ReconcileResult(
        key=KEY,
        kind=Kind.RELEASE,
        reasons=("poll",),
        started_at=0.0,
        finished_at=1.0,
        snapshot=Snapshot(Commit(revision, "Ada <ada@example.com>", "docs: README", 0.0), Path("/nonexistent")),
        target=Target(NS, prune=True, self_heal=True),
        previous=previous,
        outcome=Result.SUCCEEDED,
        sync=sync,
        health=Health(HealthStatus.HEALTHY, ""),
        **fields,  # type: ignore[arg-type]
    )


def test_an_object_the_dry_run_refused_is_one_error_not_two() -> None:
    """The refused apply fails every object the plan refused, with the plan's message: a user reads it once."""
    planned = Plan((PlannedChange(SERVICE, PlanAction.CREATE, error=REFUSED, retry=Retry.TERMINAL),))
    result = SyncResult(
        KEY, "r", "d", planned, (ChangeSetEntry(SERVICE, SyncAction.FAILED, REFUSED, Retry.TERMINAL),), Inventory()
    )
    assert result.errors == (REFUSED,)


def events(result: ReconcileResult) -> list[Json]:
    cluster = Applied()
    EventSink(Events(cluster, Clock())).write(result)  # type: ignore[arg-type]
    return cluster.bodies


def test_events_name_the_status_configmap_that_exists() -> None:
    store = MemoryStore()
    History(store).set_status(KEY, NS, lambda s: s)
    [event] = events(release("a" * 40, None, synced(SyncAction.CREATED)))
    assert event["reason"] == "SyncSucceeded"
    [(key, namespace, part)] = store.docs
    assert event["involvedObject"]["name"] == "gitsync.web.prod.status" == f"gitsync.{key.app}.{key.env}.{part}"
    assert event["involvedObject"]["namespace"] == namespace


APPLIED = Status(
    KEY.app, KEY.env, last_applied_revision="a" * 40, last_applied_digest="sha256:d", result=Result.SUCCEEDED.value
)


@pytest.mark.parametrize(
    ("sync", "previous", "reasons"),
    [
        pytest.param(
            synced(SyncAction.UNCHANGED, SyncAction.UNCHANGED), APPLIED, [], id="a-commit-that-changed-nothing"
        ),
        pytest.param(
            synced(SyncAction.CONFIGURED, SyncAction.UNCHANGED), APPLIED, ["SyncSucceeded"], id="a-commit-that-changed"
        ),
        pytest.param(synced(SyncAction.UNCHANGED), None, ["SyncSucceeded"], id="the-first-sync"),
        pytest.param(
            synced(SyncAction.UNCHANGED),
            Status(KEY.app, KEY.env, last_applied_revision="a" * 40, result=Result.FAILED.value),
            ["SyncSucceeded", "Recovered"],
            id="after-a-failure",
        ),
    ],
)
def test_a_sync_succeeded_event_only_when_something_happened(
    sync: SyncResult, previous: Status | None, reasons: list[str]
) -> None:
    assert [e["reason"] for e in events(release("b" * 40, previous, sync))] == reasons


def test_healthy_again_after_a_rollback_names_the_stable_version_not_the_revision_rolled_back() -> None:
    degraded = replace(APPLIED, health=HealthStatus.DEGRADED.value, result=Result.PROGRESSING.value)
    rolled_back = replace(release("b" * 40, degraded, synced(SyncAction.UNCHANGED)), outcome=Result.ROLLED_BACK)
    recovered = [e["message"] for e in events(rolled_back) if e["reason"] == "Recovered"]
    assert recovered == [f"{KEY}: healthy again on the stable version ({'b' * 12} rolled back)"]


def test_the_promotion_line_catches_up_after_a_status_write_failed() -> None:
    """The API server went away right after a promotion commit: the status kept ``soaking ... 19s left``. The next
    reconciles, with nothing left to promote, say so instead."""
    store = MemoryStore()
    history = History(store)
    sink = StatusSink(history)
    soaking = PromotionStep(PromotionAction.SOAKING, "staging@68df56e1cd70 soaks, 19s left", requeue_after=19.5)
    sink.write(release("a" * 40, None, synced(SyncAction.UNCHANGED), promotion=soaking))
    assert history.status(KEY, NS).promotion == "soaking: staging@68df56e1cd70 soaks, 19s left"

    before = history.status(KEY, NS)
    store.down = True
    promoted = PromotionStep(PromotionAction.PROMOTED, "staging@68df56e -> prod", "615715d" + "0" * 33, "main", True)
    with pytest.raises(TransientError):
        sink.write(release("a" * 40, before, synced(SyncAction.UNCHANGED), promotion=promoted))
    store.down = False

    before = history.status(KEY, NS)
    rolling = PromotionStep(PromotionAction.NONE, "waiting for the running rollout")
    sink.write(release("6" * 40, before, synced(SyncAction.CONFIGURED), promotion=rolling))
    assert history.status(KEY, NS).promotion == "none: waiting for the running rollout"

    before = history.status(KEY, NS)
    done = release("6" * 40, before, synced(SyncAction.UNCHANGED), promotion=PromotionStep(PromotionAction.NONE))
    assert done.promotion_line == "", "an up-to-date revision is recorded for it"
    sink.write(done)
    assert history.status(KEY, NS).promotion == ""


def test_a_promotion_commit_line_stays_while_nothing_is_left_to_promote() -> None:
    line = "promoted: staging@68df56e -> prod (615715d00000)"
    before = Status(KEY.app, KEY.env, promotion=line)
    for step in (
        PromotionStep(PromotionAction.NONE),
        PromotionStep(PromotionAction.NONE, "waiting for the running rollout"),
    ):
        assert release("6" * 40, before, synced(), promotion=step).promotion_line is None


def test_a_transient_failure_is_logged_and_recorded_as_retrying_not_as_a_failed_release(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The API server unreachable mid-release: the log line says Retrying (not Failed), the status says so, and the
    history gains no Failed entry (the release has not ended)."""
    from gitsync.record import HistorySink, LogSink

    store = MemoryStore()
    history = History(store)
    before = Status(
        KEY.app, KEY.env, last_applied_revision="a" * 40, last_applied_digest="sha256:a", result="Succeeded"
    )
    outage = (
        f"ConfigMap/{NS}/gitsync.web.prod.inventory: PUT https://127.0.0.1:6443 failed: NewConnectionError: "
        "[Errno 111] Connection refused"
    )
    failed = replace(
        release("b" * 40, before, synced()),
        kind=Kind.FAILED,
        outcome=Result.RETRYING,
        health=None,
        error=outage,
        error_class=Retry.TRANSIENT,
    )
    caplog.set_level("INFO")
    for sink in (LogSink(), HistorySink(history), StatusSink(history)):
        sink.write(failed)
    [line] = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "reconcile.failed"]
    assert (line["result"], line["error"]) == ("Retrying", outage)
    assert history.releases(KEY, NS) == ()
    assert (history.status(KEY, NS).result, history.status(KEY, NS).last_error) == ("Retrying", outage)
