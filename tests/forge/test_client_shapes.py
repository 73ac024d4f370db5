"""Where GitHub's and GitLab's APIs differ from Gitea's (which tests/forge/test_client_gitea.py runs for real):
the forge client against a tiny local HTTP server answering with response bodies and headers TAKEN FROM THE
FORGES' DOCUMENTATION (GitHub REST API "Commit statuses", "Pulls", "Issue comments", "Rate limits for the REST
API"; GitLab REST API "Commits: set the pipeline status of a commit", "Merge requests", "Notes"). Only the
shapes are guessed here; the behaviour against a real forge is Gitea's test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gitsync.adapters.clock import SystemClock
from gitsync.adapters.forge import ATTEMPTS, ForgeClient
from gitsync.errors import TerminalError, TransientError
from gitsync.ports import CommitState, CommitStatus, ForgeKind

SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
MARKER = "<!-- gitsync:plan -->"
TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"

# GitHub docs: "Create a commit status" 201 response (abridged to the fields shown there).
GITHUB_STATUS = {
    "url": f"https://api.github.com/repos/octocat/Hello-World/statuses/{SHA}",
    "id": 1,
    "state": "success",
    "description": "Build has completed successfully",
    "target_url": "https://ci.example.com/1000/output",
    "context": "continuous-integration/jenkins",
}
# GitHub docs: "List pull requests" (the one open pull request of head octocat:new-topic).
GITHUB_PULL = {
    "number": 1347,
    "html_url": "https://github.com/octocat/Hello-World/pull/1347",
    "state": "open",
    "title": "Amazing new feature",
    "body": "Please pull these awesome changes in!",
    "head": {"label": "octocat:new-topic", "ref": "new-topic", "sha": SHA},
    "base": {"label": "octocat:master", "ref": "master", "sha": SHA},
}
# GitHub docs: "Rate limits for the REST API": a secondary rate limit answers 403 with retry-after.
GITHUB_SECONDARY_LIMIT = {
    "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
}
# GitLab docs: "Set the pipeline status of a commit" response, and the answer to a repeated state.
GITLAB_STATUS = {"id": 93, "sha": SHA, "name": "default", "status": "running", "description": None, "target_url": None}
GITLAB_REPEATED = {
    "message": 'Cannot transition status via :run from :running (Reason(s): Status cannot transition via "run")'
}
# GitLab docs: "List merge requests" (abridged).
GITLAB_MR = {
    "id": 1,
    "iid": 1,
    "project_id": 3,
    "title": "test1",
    "description": "fixed login page css paddings",
    "state": "opened",
    "target_branch": "main",
    "source_branch": "test1",
    "web_url": "http://gitlab.example.com/my-group/my-project/merge_requests/1",
}


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class Server:
    """Answers each (method, path) from its script, in order (the last answer repeats); records every request."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], list[Reply]] = {}
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                server.requests.append(
                    (
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        json.loads(raw) if raw else None,
                    )
                )
                path = self.path.split("?")[0]
                replies = server.script.get((self.command, path)) or [Reply(404, {"message": "Not Found"})]
                reply = replies.pop(0) if len(replies) > 1 else replies[0]
                body = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_PUT = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.script[(method, path)] = list(replies)

    def calls(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _, _ in self.requests]


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.http.shutdown()
    running.http.server_close()


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def forge(kind: ForgeKind, server: Server, token: Path, repo: str, slept: list[float] | None = None) -> ForgeClient:
    return ForgeClient(
        kind,
        server.url,
        repo,
        token,
        clock=SystemClock(),
        sleep=(slept.append if slept is not None else lambda _s: None),
    )


def test_github_shapes_statuses_pull_requests_and_comments(server: Server, token: Path) -> None:
    api = "/api/v3/repos/octocat/Hello-World"  # GitHub Enterprise's API root for a non-github.com URL
    server.on("POST", f"{api}/statuses/{SHA}", Reply(201, GITHUB_STATUS))
    server.on("GET", f"{api}/pulls", Reply(200, [GITHUB_PULL]))
    server.on("PATCH", f"{api}/pulls/1347", Reply(200, {**GITHUB_PULL, "body": "new body"}))
    comment = {"id": 1, "html_url": "https://github.com/octocat/Hello-World/issues/1347#issuecomment-1"}
    server.on("GET", f"{api}/issues/1347/comments", Reply(200, [{**comment, "body": f"{MARKER}\nold plan"}]))
    server.on("PATCH", f"{api}/issues/comments/1", Reply(200, {**comment, "body": f"{MARKER}\nnew plan"}))
    github = forge(ForgeKind.GITHUB, server, token, "octocat/Hello-World")

    github.set_status(CommitStatus(SHA, "gitsync/staging/podinfo", CommitState.PENDING, "x" * 200))
    pull = github.open_pull_request("new-topic", "master", "Amazing new feature", "new body")
    url = github.upsert_comment(1347, MARKER, "new plan")

    _, _, headers, body = server.requests[0]
    assert headers["authorization"] == f"Bearer {TOKEN}" and headers["x-github-api-version"] == "2022-11-28"
    assert body == {"state": "pending", "context": "gitsync/staging/podinfo", "description": "x" * 140}
    assert "head=octocat%3Anew-topic" in server.requests[1][1] and "base=master" in server.requests[1][1]
    assert (pull.number, pull.url) == (1347, GITHUB_PULL["html_url"])
    assert server.calls()[2] == ("PATCH", f"{api}/pulls/1347")
    assert server.requests[-1][3] == {"body": f"{MARKER}\nnew plan"} and url == comment["html_url"]


def test_github_secondary_rate_limit_waits_what_retry_after_says(server: Server, token: Path) -> None:
    path = f"/api/v3/repos/octocat/Hello-World/statuses/{SHA}"
    limited = Reply(403, GITHUB_SECONDARY_LIMIT, {"retry-after": "3"})
    server.on("POST", path, limited, Reply(201, GITHUB_STATUS))
    slept: list[float] = []
    forge(ForgeKind.GITHUB, server, token, "octocat/Hello-World", slept).set_status(
        CommitStatus(SHA, "gitsync/staging/podinfo", CommitState.SUCCESS, "ok")
    )
    assert slept == [3.0] and server.calls() == [("POST", path), ("POST", path)]


def test_a_long_rate_limit_window_fails_at_once_and_5xx_is_bounded(server: Server, token: Path) -> None:
    path = f"/api/v3/repos/octocat/Hello-World/statuses/{SHA}"
    # GitHub docs: the primary limit: x-ratelimit-remaining 0, reset at an epoch second (here: in an hour).
    reset = str(int(SystemClock().now()) + 3600)
    primary = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
    server.on("POST", path, Reply(403, {"message": "API rate limit exceeded for user ID 1."}, primary))
    github = forge(ForgeKind.GITHUB, server, token, "octocat/Hello-World", [])
    status = CommitStatus(SHA, "gitsync/staging/podinfo", CommitState.SUCCESS, "ok")
    with pytest.raises(TransientError, match="rate limited for 36"):
        github.set_status(status)
    assert len(server.requests) == 1, "no waiting an hour in a worker"

    server.on("POST", path, Reply(502, {"message": "Server Error"}))
    with pytest.raises(TransientError, match=f"HTTP 502.*after {ATTEMPTS} tries") as failed:
        github.set_status(status)
    assert len(server.requests) == 1 + ATTEMPTS
    assert TOKEN not in str(failed.value)

    server.on("POST", path, Reply(422, {"message": "Validation Failed"}))
    with pytest.raises(TerminalError, match="HTTP 422: Validation Failed"):
        github.set_status(status)


def test_gitlab_shapes_statuses_merge_requests_and_notes(server: Server, token: Path) -> None:
    project = "/api/v4/projects/my-group%2Fmy-project"
    server.on("POST", f"{project}/statuses/{SHA}", Reply(201, GITLAB_STATUS), Reply(400, GITLAB_REPEATED))
    server.on("GET", f"{project}/merge_requests", Reply(200, [GITLAB_MR]))
    server.on("PUT", f"{project}/merge_requests/1", Reply(200, {**GITLAB_MR, "description": "body"}))
    server.on("GET", f"{project}/merge_requests/1/notes", Reply(200, [{"id": 301, "body": "a reviewer"}]))
    server.on("POST", f"{project}/merge_requests/1/notes", Reply(201, {"id": 302, "body": f"{MARKER}\nplan"}))
    gitlab = forge(ForgeKind.GITLAB, server, token, "my-group/my-project")

    status = CommitStatus(SHA, "gitsync/staging/podinfo", CommitState.PENDING, "rolling out", "https://gitsync/")
    gitlab.set_status(status)
    gitlab.set_status(status)  # GitLab refuses the same state twice: it already says it
    pull = gitlab.open_pull_request("test1", "main", "gitsync: promote", "body")
    url = gitlab.upsert_comment(1, MARKER, "plan")

    _, _, headers, body = server.requests[0]
    assert headers["private-token"] == TOKEN and "authorization" not in headers
    assert body == {
        "state": "running",
        "name": "gitsync/staging/podinfo",
        "description": "rolling out",
        "target_url": "https://gitsync/",
    }
    lookup = server.requests[2][1]
    assert "source_branch=test1" in lookup and "target_branch=main" in lookup and "state=opened" in lookup
    assert server.requests[3][:2] == ("PUT", f"{project}/merge_requests/1")
    assert server.requests[3][3] == {"title": "gitsync: promote", "description": "body"}
    assert (pull.number, pull.url) == (1, GITLAB_MR["web_url"])
    assert url == f"{server.url}/my-group/my-project/-/merge_requests/1#note_302"

    before = len(server.requests)
    closed = gitlab.close_pull_request("test1", "main", "stale")
    assert closed is not None and closed.number == 1
    assert [r[:2] for r in server.requests[before + 1 :]] == [
        ("POST", f"{project}/merge_requests/1/notes"),
        ("PUT", f"{project}/merge_requests/1"),
    ]
    assert server.requests[-1][3] == {"state_event": "close"}

    server.on("POST", f"{project}/statuses/{SHA}", Reply(400, {"message": {"state": ["is invalid"]}}))
    with pytest.raises(TerminalError, match="HTTP 400"):
        gitlab.set_status(status)


# GitHub docs: "List pull requests associated with a commit" (abridged): an open pull request built on the commit
# is listed too; the merged one is the commit's origin.
GITHUB_COMMIT_PULLS = [
    {**GITHUB_PULL, "number": 1350, "merged_at": None},
    {**GITHUB_PULL, "state": "closed", "merged_at": "2011-01-26T19:01:12Z"},
]
# GitLab docs: "List merge requests associated with a commit" (abridged).
GITLAB_COMMIT_MRS = [{**GITLAB_MR, "state": "merged", "merged_at": "2018-09-07T11:16:17.520Z"}]


@pytest.mark.parametrize(
    ("kind", "repo", "path", "answer", "expected"),
    [
        (ForgeKind.GITHUB, "octocat/Hello-World", f"/api/v3/repos/octocat/Hello-World/commits/{SHA}/pulls",
         GITHUB_COMMIT_PULLS, 1347),
        (ForgeKind.GITHUB, "octocat/Hello-World", f"/api/v3/repos/octocat/Hello-World/commits/{SHA}/pulls", [], None),
        (ForgeKind.GITLAB, "my-group/my-project",
         f"/api/v4/projects/my-group%2Fmy-project/repository/commits/{SHA}/merge_requests", GITLAB_COMMIT_MRS, 1),
    ],
)  # fmt: skip
def test_the_pull_request_of_a_commit_asked_once(
    server: Server, token: Path, kind: ForgeKind, repo: str, path: str, answer: Any, expected: int | None
) -> None:
    server.on("GET", path, Reply(200, answer))
    assert forge(kind, server, token, repo).pull_request_of(SHA) == expected
    server.on("GET", path, Reply(502, {"message": "Server Error"}))
    with pytest.raises(TransientError):
        forge(kind, server, token, repo).pull_request_of(SHA)
    assert server.calls() == [("GET", path), ("GET", path)], "one try: the ledger writer does not wait on a forge"
