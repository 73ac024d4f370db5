"""The forge client against a real Gitea (tests/forge_fixture.py): statuses, the one plan comment per pull request,
the promotion pull request opened once and updated, and a token that never shows in an error."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from forge_fixture import Gitea, GiteaRepo

from gitsync.adapters.clock import SystemClock
from gitsync.adapters.forge import ForgeClient
from gitsync.cli import main
from gitsync.errors import TerminalError
from gitsync.ports import CommitState, CommitStatus, ForgeKind

MARKER = "<!-- gitsync:plan -->"
EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
IDENTITY = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com", "GIT_COMMITTER_NAME": "Ada",
            "GIT_COMMITTER_EMAIL": "ada@example.com", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}  # fmt: skip


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**IDENTITY, "PATH": "/usr/bin:/bin"}, check=True,
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    return done.stdout.strip()


def client(gitea: Gitea, repo: str, token_file: Path | None = None) -> ForgeClient:
    return ForgeClient(ForgeKind.GITEA, gitea.url, repo, token_file or gitea.token_file, clock=SystemClock())


def seeded(repo: GiteaRepo) -> str:
    """A first commit on main and a branch `feature` one commit ahead; main's commit id."""
    gitea, name = repo.gitea, repo.name
    content = base64.b64encode(b"hello\n").decode()
    gitea.api("POST", f"repos/{name}/contents/README.md", {"content": content, "message": "init", "branch": "main"})
    change = {"content": content, "message": "change", "branch": "main", "new_branch": "feature"}
    gitea.api("POST", f"repos/{name}/contents/feature.txt", change)
    return str(gitea.api("GET", f"repos/{name}/branches/main")["commit"]["id"])


def test_statuses_comments_and_pull_requests_on_gitea(gitea: Gitea, gitea_repo: GiteaRepo) -> None:
    sha = seeded(gitea_repo)
    forge = client(gitea, gitea_repo.name)

    forge.set_status(CommitStatus(sha, "gitsync/staging/podinfo", CommitState.PENDING, "rolling out: step 1/3"))
    forge.set_status(CommitStatus(sha, "gitsync/staging/podinfo", CommitState.SUCCESS, "deployed to staging"))
    forge.set_status(
        CommitStatus(sha, "gitsync/prod/podinfo", CommitState.FAILURE, "rolled back: pods crash-looping", "http://x/")
    )
    statuses = gitea_repo.statuses(sha)
    assert [(s["context"], s["status"]) for s in statuses] == [
        ("gitsync/staging/podinfo", "pending"),
        ("gitsync/staging/podinfo", "success"),
        ("gitsync/prod/podinfo", "failure"),
    ]
    assert statuses[-1]["description"] == "rolled back: pods crash-looping"
    assert statuses[-1]["target_url"] == "http://x/"

    pull = forge.open_pull_request("feature", "main", "gitsync: promote podinfo", "first body")
    again = forge.open_pull_request("feature", "main", "gitsync: promote podinfo", "second body")
    assert again.number == pull.number, "one pull request per head branch, updated"
    [shown] = gitea_repo.open_pulls()
    assert (shown["number"], shown["body"], shown["head"]["ref"]) == (pull.number, "second body", "feature")
    assert pull.url.endswith(f"/pulls/{pull.number}")

    gitea.api("POST", f"repos/{gitea_repo.name}/issues/{pull.number}/comments", {"body": "a reviewer's comment"})
    first = forge.upsert_comment(pull.number, MARKER, "plan at abc")
    second = forge.upsert_comment(pull.number, MARKER, "plan at def")
    assert first == second, "the same comment, updated in place"
    ours = [c for c in gitea_repo.comments(pull.number) if MARKER in c["body"]]
    assert [c["body"] for c in ours] == [f"{MARKER}\nplan at def"]
    assert len(gitea_repo.comments(pull.number)) == 2, "the reviewer's comment is left alone"

    closed = forge.close_pull_request("feature", "main", "superseded: prod already runs staging@abc")
    assert closed is not None and closed.number == pull.number and gitea_repo.open_pulls() == []
    assert gitea_repo.comments(pull.number)[-1]["body"] == "superseded: prod already runs staging@abc"
    assert forge.close_pull_request("feature", "main", "again") is None, "none open: nothing to close"


def test_two_plan_comments_left_by_a_race_become_one(gitea: Gitea, gitea_repo: GiteaRepo) -> None:
    """Two replicas that got two events of one pull request at the same moment each found no plan comment and
    posted one: the next update keeps the oldest, with the newest plan, and deletes the other."""
    seeded(gitea_repo)
    forge = client(gitea, gitea_repo.name)
    pull = forge.open_pull_request("feature", "main", "a change", "body")
    path = f"repos/{gitea_repo.name}/issues/{pull.number}/comments"
    gitea.api("POST", path, {"body": "a reviewer's comment"})
    first = gitea.api("POST", path, {"body": f"{MARKER}\nplan at abc"})
    gitea.api("POST", path, {"body": f"{MARKER}\nplan at def"})

    url = forge.upsert_comment(pull.number, MARKER, f"{MARKER}\nplan at 123")

    assert [c["body"] for c in gitea_repo.comments(pull.number)] == ["a reviewer's comment", f"{MARKER}\nplan at 123"]
    assert url == first["html_url"]


def test_a_refused_token_is_terminal_and_never_shown(gitea: Gitea, gitea_repo: GiteaRepo, tmp_path: Path) -> None:
    sha = seeded(gitea_repo)
    wrong = tmp_path / "token"
    wrong.write_text("0123456789abcdef0123456789abcdef01234567")
    with pytest.raises(TerminalError) as refused:
        client(gitea, gitea_repo.name, wrong).set_status(
            CommitStatus(sha, "gitsync/staging/podinfo", CommitState.PENDING, "x")
        )
    assert "HTTP 401" in str(refused.value) and "0123456789abcdef" not in str(refused.value)
    assert gitea.token not in str(refused.value)
    with pytest.raises(TerminalError, match="cannot read the forge token"):
        client(gitea, gitea_repo.name, tmp_path / "missing").set_status(
            CommitStatus(sha, "gitsync/staging/podinfo", CommitState.PENDING, "x")
        )


def test_gitsync_plan_comment_posts_the_plan_on_a_pull_request(
    gitea: Gitea, gitea_repo: GiteaRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded(gitea_repo)
    pull = client(gitea, gitea_repo.name).open_pull_request("feature", "main", "change", "")
    root = tmp_path / "deploy"
    shutil.copytree(EXAMPLE, root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "example-repo")
    values = root / "environments/staging/values/podinfo.yaml"
    values.write_text(values.read_text().replace('"6.7.1"', '"6.8.0"'))
    git(root, "commit", "-q", "-am", "podinfo 6.8.0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    flags = ["--forge", "gitea", "--forge-url", gitea.url, "--forge-repo", gitea_repo.name]
    argv = ["plan", "--repo", str(root), "--base", "HEAD~1", "--comment", str(pull.number), *flags]

    for _ in range(2):  # a CI job run twice (two pushes) leaves one comment
        ran = CliRunner().invoke(main, [*argv, "--token-file", str(gitea.token_file)])
        assert ran.exit_code == 1, ran.output  # changes, as gitsync diff
    [comment] = [c for c in gitea_repo.comments(pull.number) if MARKER in c["body"]]
    assert "6.8.0" in comment["body"] and "| staging | podinfo |" in comment["body"]
    assert gitea.token not in ran.output

    missing = CliRunner().invoke(main, argv)
    assert missing.exit_code == 2 and "--comment needs --forge, --forge-repo and --token-file" in missing.output


def test_the_pull_request_of_a_rebase_merged_commit_and_who_approved_it(gitea: Gitea, gitea_repo: GiteaRepo) -> None:
    """A pull request merged by rebase leaves no number in any message: Gitea still says which pull request a
    commit on main came through, and who approved it; a commit pushed straight to main came through none."""
    init = seeded(gitea_repo)
    name, content = gitea_repo.name, base64.b64encode(b"moved on\n").decode()
    # main moves on after `feature` branched, so the rebase writes a new commit (not a fast-forward).
    gitea.api("POST", f"repos/{name}/contents/other.txt", {"content": content, "message": "direct", "branch": "main"})
    direct = gitea.api("GET", f"repos/{name}/branches/main")["commit"]["id"]
    forge = client(gitea, name)
    pull = forge.open_pull_request("feature", "main", "a change", "please review")
    reviewer = gitea.user("approver")
    gitea.api("PUT", f"repos/{name}/collaborators/{reviewer}", {"permission": "write"})
    gitea.api("POST", f"repos/{name}/pulls/{pull.number}/reviews", {"event": "APPROVED"}, sudo=reviewer)
    gitea.api("POST", f"repos/{name}/pulls/{pull.number}/merge", {"Do": "rebase"})

    rebased = gitea.api("GET", f"repos/{name}/git/commits/main")
    assert rebased["commit"]["message"].strip() == "change" and rebased["parents"][0]["sha"] == direct, "rebased"
    assert forge.pull_request_of(rebased["sha"]) == pull.number
    assert forge.approvers(pull.number) == (reviewer,)
    assert (forge.pull_request_of(direct), forge.pull_request_of(init)) == (None, None)
