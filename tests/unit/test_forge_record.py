"""Commit statuses and promotion pull requests as record sinks: what a reconcile's outcome says on the commit,
each said once, and never waited for (an unreachable forge costs a reconcile nothing)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from gitsync.errors import Retry, TerminalError, TransientError
from gitsync.health import Health
from gitsync.history import Result, Status
from gitsync.model import AppEnv, HealthStatus
from gitsync.ports import Commit, CommitState, CommitStatus, PullRequest, Snapshot
from gitsync.promotion import PromotionAction, PromotionStep, Upstream
from gitsync.reconcile import RolloutStep
from gitsync.record import CommitStatusSink, PullRequestSink, commit_statuses
from gitsync.result import Kind, ReconcileResult, Target

SHA = "a" * 40
KEY = AppEnv("podinfo", "staging")


def result(kind: Kind, outcome: Result | None, health: HealthStatus | None = None, **fields: object) -> ReconcileResult:
    return ReconcileResult(
        key=KEY,
        kind=kind,
        reasons=("poll",),
        started_at=0.0,
        finished_at=1.0,
        snapshot=Snapshot(Commit(SHA, "Ada <ada@example.com>", "change", 0.0), Path("/nonexistent")),
        target=Target("podinfo-staging", prune=True, self_heal=True),
        outcome=outcome,
        health=Health(health, "Deployment/podinfo-staging/podinfo: 1 of 2 updated replicas") if health else None,
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("reconciled", "state", "description"),
    [
        (
            result(Kind.RELEASE, Result.PROGRESSING, HealthStatus.PROGRESSING),
            CommitState.PENDING,
            "rolling out: Deployment/podinfo-staging/podinfo: 1 of 2 updated replicas",
        ),
        (
            result(
                Kind.RELEASE,
                Result.PROGRESSING,
                HealthStatus.HEALTHY,
                rollout=RolloutStep(phase="Progressing", message="canary step 2/4: setWeight 50"),
            ),
            CommitState.PENDING,
            "rolling out: canary step 2/4: setWeight 50",
        ),
        (
            result(Kind.RELEASE, Result.PAUSED, HealthStatus.HEALTHY, rollout=RolloutStep(message="pause: promote")),
            CommitState.PENDING,
            "paused: pause: promote",
        ),
        (
            result(
                Kind.RELEASE,
                Result.PAUSED,
                HealthStatus.HEALTHY,
                rollout=RolloutStep(message="paused: step 2/3 waits for gitsync rollout promote; run ..."),
            ),
            CommitState.PENDING,
            "paused: step 2/3 waits for gitsync rollout promote; run ...",
        ),
        (
            result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY),
            CommitState.SUCCESS,
            "deployed to staging and healthy",
        ),
        (
            result(Kind.RELEASE, Result.ROLLED_BACK, HealthStatus.HEALTHY, error="analysis pods failed: 3 restarts"),
            CommitState.FAILURE,
            "rolled back: analysis pods failed: 3 restarts",
        ),
        (
            result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.DEGRADED),
            CommitState.FAILURE,
            "Degraded: Deployment/podinfo-staging/podinfo: 1 of 2 updated replicas",
        ),
        (
            result(Kind.FAILED, Result.RENDER_ERROR, error="values.yaml:3: bad", error_class=Retry.TERMINAL),
            CommitState.FAILURE,
            "RenderError: values.yaml:3: bad",
        ),
        (
            result(Kind.FAILED, Result.RETRYING, error="cluster unreachable", error_class=Retry.TRANSIENT),
            CommitState.ERROR,
            "Retrying: cluster unreachable",
        ),
        (result(Kind.AWAITING, Result.AWAITING_PROMOTION), CommitState.PENDING, "awaiting promotion"),
    ],
)
def test_the_status_a_reconcile_puts_on_its_commit(
    reconciled: ReconcileResult, state: CommitState, description: str
) -> None:
    status = commit_statuses(reconciled, "https://gitsync.example.com")
    assert status == (CommitStatus(SHA, "gitsync/staging/podinfo", state, description, "https://gitsync.example.com"),)


def test_the_target_url_can_link_each_status_to_its_own_dashboard_page() -> None:
    [status] = commit_statuses(
        result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY),
        "https://gitsync.example.com/apps/{env}/{app}/diff/{revision}",
    )
    assert status.target_url == f"https://gitsync.example.com/apps/staging/podinfo/diff/{SHA}"


def test_nothing_is_said_for_a_dry_run_or_a_drift_check() -> None:
    assert commit_statuses(result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY, dry_run=True)) == ()
    assert commit_statuses(result(Kind.DRIFT_CHECKED, None)) == ()


PROMOTED = "b" * 40


@dataclass(frozen=True)
class Rendered:
    """The things of a render these statuses read."""

    digest: str
    pin: Pin | None = None


ROLLING = Status(
    "podinfo",
    "staging",
    last_applied_revision=PROMOTED,
    last_applied_digest="sha256:1",
    release_revision=PROMOTED,
    result=Result.PROGRESSING.value,
)
"""The release of commit PROMOTED, still rolling out."""


def test_the_commit_that_brought_the_release_hears_its_outcome_when_a_later_commit_verifies_it() -> None:
    """A promotion merged into prod rolls out; a README commit lands on top before it is healthy: the release is
    verified at the README commit, and the promotion's own commit must not stay pending for ever."""
    healthy = result(
        Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY, previous=ROLLING, rendered=Rendered("sha256:1")
    )
    said = [(s.sha, s.state, s.description) for s in commit_statuses(healthy)]
    assert said == [
        (SHA, CommitState.SUCCESS, "deployed to staging and healthy"),
        (PROMOTED, CommitState.SUCCESS, "deployed to staging and healthy"),
    ]


def test_a_release_superseded_while_it_rolled_out_is_no_longer_pending() -> None:
    newer = result(
        Kind.RELEASE, Result.PROGRESSING, HealthStatus.PROGRESSING, previous=ROLLING, rendered=Rendered("sha256:2")
    )
    said = [(s.sha, s.state, s.description) for s in commit_statuses(newer)]
    assert said[1:] == [(PROMOTED, CommitState.ERROR, f"superseded by {SHA[:12]} before its rollout finished")]
    assert said[0][:2] == (SHA, CommitState.PENDING)


@dataclass(frozen=True)
class Pin:
    revision: str
    from_env: str


def test_a_pinned_environment_says_which_pin_is_healthy_not_that_the_commit_is_deployed() -> None:
    """A commit that changes staging's image is verified in prod too (prod runs its pin): its prod status must not
    read as if the new image were in prod."""
    prod = result(
        Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY, rendered=Rendered("sha256:1", Pin(PROMOTED, "staging"))
    )
    [status] = commit_statuses(replace(prod, key=AppEnv("podinfo", "prod")))
    assert status.description == f"deployed to prod and healthy (pinned to staging@{PROMOTED[:12]})"


class Forge:
    """A forge that records what it was asked, optionally stuck (a forge that does not answer)."""

    def __init__(self, stuck: threading.Event | None = None, fail: bool = False) -> None:
        self.calls = 0
        self.refuse = False
        self.statuses: list[CommitStatus] = []
        self.pulls: list[tuple[str, str, str, str]] = []
        self.closed: list[tuple[str, str]] = []
        self.stuck = stuck
        self.fail = fail

    def set_status(self, status: CommitStatus) -> None:
        if self.stuck is not None:
            self.stuck.wait(30)
        self.calls += 1
        if self.fail:
            raise TransientError("gitea http://127.0.0.1:1: POST repos/o/r/statuses: unreachable")
        if self.refuse:
            raise TerminalError("gitea http://127.0.0.1:1: POST repos/o/r/statuses: HTTP 403: token scope")
        self.statuses.append(status)

    def upsert_comment(self, number: int, marker: str, body: str) -> str:
        raise AssertionError("not used")

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> PullRequest:
        self.pulls.append((head, base, title, body))
        return PullRequest(7, "http://forge/pulls/7", head, base)

    def close_pull_request(self, head: str, base: str, comment: str) -> PullRequest | None:
        self.closed.append((head, comment))
        return PullRequest(7, "http://forge/pulls/7", head, base)


def test_each_status_is_sent_once() -> None:
    forge = Forge()
    sink = CommitStatusSink(forge)
    progressing = result(Kind.RELEASE, Result.PROGRESSING, HealthStatus.PROGRESSING)
    for reconciled in (progressing, progressing, result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY)):
        sink.write(reconciled)
        assert sink.queue.idle(5)
    sink.write(result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY))
    assert sink.queue.idle(5)
    assert [s.state for s in forge.statuses] == [CommitState.PENDING, CommitState.SUCCESS]


def test_a_countdown_ticking_is_not_a_new_status() -> None:
    forge = Forge()
    sink = CommitStatusSink(forge)
    for message in ("switching in 10s (autoPromotionSeconds)", "switching in 8s (autoPromotionSeconds)", "switched"):
        step = RolloutStep(phase="Progressing", message=message)
        sink.write(result(Kind.RELEASE, Result.PROGRESSING, HealthStatus.HEALTHY, rollout=step))
        assert sink.queue.idle(5)
    assert [s.description for s in forge.statuses] == [
        "rolling out: switching in 10s (autoPromotionSeconds)",
        "rolling out: switched",
    ]


def test_a_forge_that_does_not_answer_never_holds_up_a_reconcile() -> None:
    stuck = threading.Event()
    forge = Forge(stuck)
    sink = CommitStatusSink(forge, capacity=4)
    for n in range(50):  # far more than the queue holds: the oldest are dropped, nothing waits
        sink.write(result(Kind.RELEASE, Result.PROGRESSING, HealthStatus.HEALTHY, rollout=RolloutStep(message=f"{n}")))
    assert forge.calls == 0, "writing statuses waited for the forge"  # the stuck forge has answered nothing yet
    stuck.set()
    sink.queue.close(5)


def test_a_status_the_forge_could_not_take_is_sent_once_it_is_back_with_no_reconcile_after() -> None:
    """The forge is down when a release ends: nothing reconciles again, and the final status must still arrive."""
    forge = Forge(fail=True)
    sink = CommitStatusSink(forge, retry_after=0.05)
    sink.write(result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY))
    assert not sink.queue.idle(0.3) and forge.statuses == [], "still waiting to be sent"
    forge.fail = False
    assert sink.queue.idle(10) and [s.state for s in forge.statuses] == [CommitState.SUCCESS]


def test_a_newer_status_replaces_one_waiting_to_be_sent_again() -> None:
    forge = Forge(fail=True)
    sink = CommitStatusSink(forge, retry_after=0.05)
    sink.write(result(Kind.RELEASE, Result.PROGRESSING, HealthStatus.PROGRESSING))
    assert not sink.queue.idle(0.2)
    sink.write(result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY))
    forge.fail = False
    assert sink.queue.idle(10) and [s.state for s in forge.statuses] == [CommitState.SUCCESS]


def test_a_status_the_forge_refuses_is_not_repeated_by_every_reconcile() -> None:
    """A token without write scope: each status is tried once (and logged), not once per reconcile."""
    forge = Forge()
    forge.refuse = True
    sink = CommitStatusSink(forge)
    progressing = result(Kind.RELEASE, Result.PROGRESSING, HealthStatus.PROGRESSING)
    for _ in range(3):
        sink.write(progressing)
        assert sink.queue.idle(5)
    sink.write(result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY))
    assert sink.queue.idle(5)
    assert forge.calls == 2 and forge.statuses == []


MESSAGE = f"""promote podinfo to prod (staging@{SHA[:7]})

Pins podinfo in prod to staging@{SHA[:12]} (verified there).

Gitsync-Promoted-From: staging@{SHA}
Gitsync-Evidence: Succeeded; soak 10m
"""


def test_a_promotion_on_its_review_branch_opens_one_pull_request_with_its_evidence() -> None:
    forge = Forge()
    sink = PullRequestSink(forge, "main")
    prod = AppEnv("podinfo", "prod")
    step = PromotionStep(
        PromotionAction.PROPOSED,
        f"staging@{SHA} -> prod",
        "b" * 40,
        "gitsync/promote/prod/podinfo",
        True,
        commit_message=MESSAGE,
    )
    proposed = result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY, promotion=step)
    sink.write(replace(proposed, key=prod))
    sink.write(replace(proposed, key=prod))  # the next reconcile reports the same branch commit: already opened
    auto = PromotionStep(PromotionAction.PROMOTED, "staging -> prod", "c" * 40, "main", True, commit_message=MESSAGE)
    sink.write(result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY, promotion=auto))
    back = PromotionStep(
        PromotionAction.ROLLED_BACK,
        "back to staging@abc",
        "d" * 40,
        "gitsync/rollback/staging/podinfo",
        commit_message="roll back podinfo in staging to abc1234\n\nGitsync-Rollback-Of: " + "e" * 40 + "\n",
    )
    why = "aborted: new version's pods are failing"
    sink.write(result(Kind.RELEASE, Result.ROLLED_BACK, HealthStatus.HEALTHY, promotion=back, error=why))
    assert sink.queue.idle(5)
    assert [pull[:3] for pull in forge.pulls] == [
        ("gitsync/promote/prod/podinfo", "main", f"gitsync: promote podinfo to prod (staging@{SHA[:7]})"),
        ("gitsync/rollback/staging/podinfo", "main", "gitsync: roll back podinfo in staging to abc1234"),
    ]
    assert forge.pulls[1][3].endswith(f"Why: {why}\n\n```\nGitsync-Rollback-Of: {'e' * 40}\n```\n")
    body = forge.pulls[0][3]
    assert "merging this pull request promotes podinfo in prod" in body
    assert f"Gitsync-Promoted-From: staging@{SHA}" in body and "Gitsync-Evidence: Succeeded; soak 10m" in body


def test_a_promotion_pull_request_left_open_once_prod_runs_the_newest_release_is_closed_once_per_pin() -> None:
    """Promoted another way (``gitsync promote --push``, another pull request): the open one would change nothing
    or go back to an older release, so it is closed with the reason; looked for once per pin, not per reconcile."""
    forge = Forge()
    sink = PullRequestSink(forge, "main")
    upstream = Upstream("staging", "pull-request", 10.0, ("image.tag",), "podinfo-staging")
    settled = replace(
        result(
            Kind.RELEASE,
            Result.SUCCEEDED,
            HealthStatus.HEALTHY,
            promotion=PromotionStep(PromotionAction.NONE, current=True),
        ),
        key=AppEnv("podinfo", "prod"),
        target=Target("podinfo-prod", prune=True, self_heal=True, upstream=upstream),
        rendered=Rendered("sha256:1", Pin(PROMOTED, "staging")),
    )
    sink.write(settled)
    sink.write(settled)
    assert sink.queue.idle(5)
    closed = dict(forge.closed)
    assert len(forge.closed) == 2 and closed.keys() == {"gitsync/promote/prod/podinfo", "gitsync/rollback/prod/podinfo"}
    comment = closed["gitsync/promote/prod/podinfo"]
    assert comment.startswith(f"Closed by gitsync: prod already runs staging@{PROMOTED[:12]}, the newest release")
    assert closed["gitsync/rollback/prod/podinfo"].startswith(
        f"Closed by gitsync: prod runs staging@{PROMOTED[:12]} and its release succeeded after this rollback"
    )
    auto = replace(
        settled, target=Target("podinfo-prod", prune=True, self_heal=True, upstream=replace(upstream, mode="auto"))
    )
    PullRequestSink(forge, "main").write(auto)
    assert len(forge.closed) == 2, "auto mode has no pull requests to close"


class FlakyCloses(Forge):
    """A forge whose first close of each branch's pull request times out (a transient error: retried later)."""

    def __init__(self) -> None:
        super().__init__()
        self.close_attempts: list[str] = []
        self.attempted = threading.Condition()

    def close_pull_request(self, head: str, base: str, comment: str) -> PullRequest | None:
        with self.attempted:
            self.close_attempts.append(head)
            self.attempted.notify_all()
            if self.close_attempts.count(head) == 1:
                raise TransientError(f"gitea http://127.0.0.1:1: GET pulls of {head}: timed out")
        return super().close_pull_request(head, base, comment)


def test_a_rollback_proposed_while_the_close_of_the_stale_one_waits_for_a_retry_is_not_closed() -> None:
    """prod's release succeeded (its rollback pull request is stale: a close is queued, and the forge times out on
    it); its next release fails and a new rollback is proposed on the same branch before the close is retried. The
    retry must not close the new rollback, which prod now needs."""
    forge = FlakyCloses()
    sink = PullRequestSink(forge, "main")
    upstream = Upstream("staging", "pull-request", 10.0, ("image.tag",), "podinfo-staging")

    def in_prod(reconciled: ReconcileResult, pin: str) -> ReconcileResult:
        target = Target("podinfo-prod", prune=True, self_heal=True, upstream=upstream)
        return replace(
            reconciled, key=AppEnv("podinfo", "prod"), target=target, rendered=Rendered("sha256:1", Pin(pin, "staging"))
        )

    succeeded = in_prod(
        result(Kind.RELEASE, Result.SUCCEEDED, HealthStatus.HEALTHY, promotion=PromotionStep(PromotionAction.NONE)),
        PROMOTED,
    )
    sink.write(succeeded)
    with forge.attempted:
        assert forge.attempted.wait_for(lambda: "gitsync/rollback/prod/podinfo" in forge.close_attempts, 60)
    back = PromotionStep(
        PromotionAction.ROLLED_BACK,
        "back to staging@abc",
        "d" * 40,
        "gitsync/rollback/prod/podinfo",
        commit_message="roll back podinfo in prod to abc1234\n\nGitsync-Rollback-Of: " + "f" * 40 + "\n",
    )
    failed = in_prod(
        result(Kind.RELEASE, Result.ROLLED_BACK, HealthStatus.HEALTHY, promotion=back, error="aborted"), "f" * 40
    )
    sink.write(failed)
    assert sink.queue.idle(60)  # the timed-out close is retried after the queue's pause
    assert [pull[0] for pull in forge.pulls] == ["gitsync/rollback/prod/podinfo"]
    assert forge.closed == [], "the new rollback's pull request was closed as the stale one"
