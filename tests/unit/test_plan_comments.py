"""The plan comment of a pull request whose branch is behind its base: a plan of the merge, not of the branch
alone (which would seem to undo everything the base got since). Real Git, example-repo; the forge records."""

from __future__ import annotations

from pathlib import Path

from gitrepos import Server, git

from gitsync.adapters.git import GitRepository
from gitsync.change_plan import AppPlan, ChangePlan
from gitsync.errors import GitsyncError
from gitsync.ports import CommitState, CommitStatus, PullRequest
from gitsync.runtime.config import Provider
from gitsync.runtime.plan_comments import PlanComments, plan_status
from gitsync.runtime.pull_requests import PullRequestEvent

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
VALUES = "environments/staging/values/podinfo.yaml"
DEPLOYMENT = "apps/podinfo/templates/deployment.yaml"


class Forge:
    def __init__(self) -> None:
        self.comments: list[str] = []
        self.statuses: list[CommitStatus] = []

    def upsert_comment(self, number: int, marker: str, body: str) -> str:
        self.comments.append(body)
        return f"http://forge/pulls/{number}#comment"

    def set_status(self, status: CommitStatus) -> None:
        self.statuses.append(status)

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> PullRequest:
        raise AssertionError("not used")

    def close_pull_request(self, head: str, base: str, comment: str) -> PullRequest | None:
        raise AssertionError("not used")


def branch(server: Server, fork: str, name: str, edits: dict[str, tuple[str, str]]) -> str:
    """A branch forked at ``fork`` with ``edits`` (path -> (old, new)), pushed."""
    work = server.work
    git(work, "checkout", "-q", "-b", name, fork)
    for path, (old, new) in edits.items():
        text = (work / path).read_text()
        assert old in text
        (work / path).write_text(text.replace(old, new))
    git(work, "commit", "-q", "-am", name)
    git(work, "push", "-q", "origin", f"refs/heads/{name}")
    git(work, "checkout", "-q", "main")
    return git(work, "rev-parse", name)


def test_the_plan_of_a_branch_behind_main_is_the_plan_of_the_merge(tmp_path: Path) -> None:
    server = Server(tmp_path / "repo")
    files = {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*") if p.is_file()}
    fork = server.commit(files, "example-repo")
    chart = (server.work / DEPLOYMENT).read_text().replace("revisionHistoryLimit: 5", "revisionHistoryLimit: 7")
    main = server.commit({DEPLOYMENT: chart}, "main: keep more ReplicaSets")
    bump = branch(server, fork, "bump", {VALUES: ('"6.7.1"', '"6.8.0"')})
    both = branch(server, fork, "both", {DEPLOYMENT: ("revisionHistoryLimit: 5", "revisionHistoryLimit: 3")})
    repo = GitRepository(server.url, "main", tmp_path / "cache")
    forge = Forge()
    comments = PlanComments(forge, repo.snapshot, repo.remote_head, repo.merge_commit)

    comments.on_pull_request(Provider.GITEA, PullRequestEvent(3, bump, main, "bump", "main", fork))
    assert comments.queue.idle(60)
    [merged] = forge.comments
    assert f"`{bump[:12]}` into `main` at `{main[:12]}`" in merged
    assert "The branch is behind `main`: this is the plan of merging it as it is now." in merged
    assert "podinfo:6.8.0" in merged
    assert "revisionHistoryLimit" not in merged, "main's chart change is kept by the merge, not undone"
    [status] = forge.statuses
    assert (status.sha, status.context, status.state) == (bump, "gitsync/plan", CommitState.SUCCESS)
    assert status.description == "deploys podinfo@staging; then promotion: podinfo@prod"
    assert status.target_url == "http://forge/pulls/3#comment"

    comments.on_pull_request(Provider.GITEA, PullRequestEvent(4, both, main, "both", "main", fork))
    assert comments.queue.idle(60)
    own = forge.comments[-1]
    assert f"the plan of the branch's own changes, from where it forked (`{fork[:12]}`)" in own
    assert "+  revisionHistoryLimit: 3" in own and "-  revisionHistoryLimit: 5" in own


def test_the_plan_status_fails_a_head_that_does_not_render() -> None:
    """Required by a branch protection rule, it keeps a change whose head does not render from being merged."""
    broken = ChangePlan("b" * 40, "h" * 40, (AppPlan("staging", "podinfo", error="values.yaml:3: bad"),))
    failed = plan_status(broken, "h" * 40, "")
    assert (failed.state, failed.description) == (CommitState.FAILURE, "does not render: podinfo@staging")
    assert plan_status(ChangePlan("b" * 40, "h" * 40), "h" * 40, "").description == "changes no environment"
    unplanned = plan_status(GitsyncError("commit hhhhhhhhhhhh: is it on the remote?"), "h" * 40, "")
    assert unplanned.state is CommitState.ERROR
