"""Stale rollback pull requests on a real Gitea (tests/forge_fixture.py), closed by the record sink that opens them
(``record.PullRequestSink``) with the same mechanism as stale promotion pull requests.

A pinned environment in pull-request mode whose rollout of a pin aborted proposes a rollback on
``gitsync/rollback/<env>/<app>``. Once a release of the environment succeeds after that (a fix promoted, the failed
release retried, the pin set by hand), the rollback would take it back to an older release: it is closed, saying why.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from forge_fixture import Gitea, GiteaRepo

from gitsync.adapters.clock import SystemClock
from gitsync.adapters.forge import ForgeClient
from gitsync.history import Result
from gitsync.model import AppEnv
from gitsync.ports import Commit, ForgeKind, Snapshot
from gitsync.promotion import PromotionAction, PromotionStep, Upstream
from gitsync.record import PullRequestSink
from gitsync.result import Kind, ReconcileResult, Target
from renderers.promotion import Pin

PROD = AppEnv("podinfo", "prod")
FAILED, FIX = "f" * 40, "e" * 40
ROLLBACK, PROMOTE = "gitsync/rollback/prod/podinfo", "gitsync/promote/prod/podinfo"
UPSTREAM = Upstream("staging", "pull-request", 10.0, ("image.tag",), "podinfo-staging")


@dataclass(frozen=True)
class Pinned:
    """What the sink reads of a render: the pin it was rendered from."""

    pin: Pin


def commit_on(repo: GiteaRepo, branch: str, path: str, text: str, *, new: bool = True) -> str:
    """A commit on ``branch`` (made from main when ``new``) writing ``path``; its id."""
    gitea, content = repo.gitea, base64.b64encode(text.encode()).decode()
    where = {"new_branch": branch, "branch": "main"} if new else {"branch": branch}
    if not new:
        where["sha"] = gitea.api("GET", f"repos/{repo.name}/contents/{path}?ref={branch}")["sha"]
    gitea.api("PUT" if not new else "POST", f"repos/{repo.name}/contents/{path}",
              {"content": content, "message": f"write {path}", **where})  # fmt: skip
    return str(gitea.api("GET", f"repos/{repo.name}/branches/{branch}")["commit"]["id"])


def reconciled(outcome: Result, pin: str, step: PromotionStep) -> ReconcileResult:
    return ReconcileResult(
        key=PROD,
        kind=Kind.RELEASE,
        reasons=("poll",),
        started_at=0.0,
        finished_at=1.0,
        snapshot=Snapshot(Commit("a" * 40, "Ada <ada@example.com>", "change", 0.0), Path("/nonexistent")),
        target=Target("podinfo-prod", prune=True, self_heal=True, upstream=UPSTREAM),
        outcome=outcome,
        rendered=Pinned(Pin("podinfo", pin, "staging", {})),  # type: ignore[arg-type]
        promotion=step,
    )


def rolled_back(commit: str) -> PromotionStep:
    return PromotionStep(
        PromotionAction.ROLLED_BACK,
        "podinfo@prod back to staging@0123456789ab (last good 0123456789ab)",
        commit,
        ROLLBACK,
        True,
        commit_message=f"roll back podinfo in prod to staging@0123456\n\nGitsync-Rollback-Of: {FAILED}\n",
    )


def test_a_rollback_pull_request_is_closed_once_a_release_of_its_environment_succeeds(
    gitea: Gitea, gitea_repo: GiteaRepo
) -> None:
    gitea.api("POST", f"repos/{gitea_repo.name}/contents/README.md",
              {"content": base64.b64encode(b"hello\n").decode(), "message": "init", "branch": "main"})  # fmt: skip
    forge = ForgeClient(ForgeKind.GITEA, gitea.url, gitea_repo.name, gitea.token_file, clock=SystemClock())
    sink = PullRequestSink(forge, "main")

    # prod's rollout of its pin aborted: the rollback is proposed; a fix is proposed for promotion meanwhile
    sink.write(reconciled(Result.ROLLED_BACK, FAILED, rolled_back(commit_on(gitea_repo, ROLLBACK, "pin", "old\n"))))
    proposed = PromotionStep(PromotionAction.PROPOSED, "staging@fix", commit_on(gitea_repo, PROMOTE, "pin", "fix\n"),
                             PROMOTE, True, commit_message="promote podinfo to prod (staging@eeeeeee)\n")  # fmt: skip
    sink.write(reconciled(Result.ROLLED_BACK, FAILED, proposed))
    assert sink.queue.idle(30)
    opened = {pull["head"]["ref"]: pull["number"] for pull in gitea_repo.open_pulls()}
    assert opened.keys() == {ROLLBACK, PROMOTE}, "while the pinned release is the failed one, nothing is stale"

    # the fix reached prod another way (`gitsync promote --push`) and succeeded there; a newer candidate soaks
    soaking = PromotionStep(PromotionAction.SOAKING, "staging@1234567 soaks, 10s left")
    sink.write(reconciled(Result.SUCCEEDED, FIX, soaking))
    sink.write(reconciled(Result.SUCCEEDED, FIX, soaking))  # looked for once per pin, not per reconcile
    assert sink.queue.idle(30)
    assert [pull["head"]["ref"] for pull in gitea_repo.open_pulls()] == [PROMOTE], "only the rollback was stale"
    said = [c["body"] for c in gitea_repo.comments(opened[ROLLBACK])]
    assert said == [
        f"Closed by gitsync: prod runs staging@{FIX[:12]} and its release succeeded after this rollback was written, "
        "so the release it rolls back is no longer the one running; merging this pull request would take prod back "
        "to an older release. A rollout that fails again opens a new rollback."
    ]

    # the fix fails after all (a later rollout at the same pin): a new rollback is proposed, and opened again
    again = commit_on(gitea_repo, ROLLBACK, "pin", "old again\n", new=False)
    sink.write(reconciled(Result.ROLLED_BACK, FIX, rolled_back(again)))
    assert sink.queue.idle(30)
    reopened = [pull for pull in gitea_repo.open_pulls() if pull["head"]["ref"] == ROLLBACK]
    assert len(reopened) == 1 and reopened[0]["number"] != opened[ROLLBACK]
    assert reopened[0]["head"]["sha"] == again
