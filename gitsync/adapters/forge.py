"""``ports.Forge`` over the REST APIs of GitHub, Gitea/Forgejo and GitLab, with the standard library only.

The three APIs agree on what gitsync needs and differ in shape:

- API root: GitHub ``https://api.github.com`` (Enterprise ``<url>/api/v3``), Gitea ``<url>/api/v1``, GitLab
  ``<url>/api/v4``; token header: ``Authorization: Bearer``, ``Authorization: token``, ``PRIVATE-TOKEN``;
- commit status: ``POST repos/R/statuses/SHA`` on GitHub and Gitea; GitLab ``POST projects/ID/statuses/SHA`` with
  ``name`` for the context and its own states (``running``, ``success``, ``failed``), refusing a repeated state;
- pull-request comments: ``repos/R/issues/N/comments`` and ``PATCH repos/R/issues/comments/ID`` on GitHub and
  Gitea; GitLab ``projects/ID/merge_requests/N/notes`` and ``PUT .../notes/ID``;
- the open pull request of a branch: GitHub ``GET repos/R/pulls?head=OWNER:BRANCH&base=B``, Gitea lists the open
  ones (its ``head`` filter does not exist), GitLab ``GET projects/ID/merge_requests?source_branch=&target_branch=``;
  closing it: ``PATCH repos/R/pulls/N`` ``{"state": "closed"}``, GitLab ``PUT .../merge_requests/N``
  ``{"state_event": "close"}``;
- who approved a pull request: GitHub and Gitea ``GET repos/R/pulls/N/reviews`` (each reviewer's latest verdict
  counts; Gitea marks a review ``dismissed`` or ``stale``, GitHub a dismissed one ``DISMISSED``), GitLab
  ``GET projects/ID/merge_requests/N/approvals`` (``approved_by``);
- the pull request a commit came through, whatever the merge style (a rebase, a squash with an edited message):
  Gitea ``GET repos/R/commits/SHA/pull`` (the pull request whose merge made that commit, 404 when none), GitHub
  ``GET repos/R/commits/SHA/pulls`` (the pull requests associated with it: the merged one counts), GitLab
  ``GET projects/ID/repository/commits/SHA/merge_requests`` (the merged one counts).

Retries are bounded (``ATTEMPTS``): a 429, or a 403 that says it is a rate limit (GitHub's secondary limits send
``retry-after``; its primary limit ``x-ratelimit-remaining: 0`` with ``x-ratelimit-reset``), waits what the server
asks for when that is at most ``MAX_WAIT`` seconds, otherwise fails at once as transient; a 5xx or an unreachable
server backs off exponentially with jitter. Any other 4xx is terminal. The token is read from its file on each
call (a rotated Secret applies at once) and never appears in a log line or an error.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from gitsync import log as logging
from gitsync.adapters.http_check import checked_url
from gitsync.errors import TerminalError, TransientError
from gitsync.ports import Clock, CommitState, CommitStatus, ForgeKind, PullRequest

__all__ = ["ATTEMPTS", "MAX_WAIT", "ForgeClient", "Response", "approvers", "merged_pull", "urllib_transport"]

log = logging.get("gitsync.forge")

ATTEMPTS = 4
"""Tries per call, the first included."""
MAX_WAIT = 30.0
"""Longest wait for one retry a server asks for; a longer rate-limit window fails the call as transient (the
caller's next event tries again) instead of holding a worker for minutes."""
TIMEOUT = 10.0
PAGES = 20
"""Pages of comments or pull requests looked through (100 each on GitHub and GitLab, 50 on Gitea)."""
DESCRIPTION_LIMIT = 140
"""GitHub refuses a status description over 140 characters."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Transport = Callable[[str, str, Mapping[str, str], bytes | None, float], Response]
"""(method, url, headers, body, timeout) -> response; raises OSError when the server is unreachable."""


def urllib_transport(method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float) -> Response:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 (scheme checked)
            return Response(answer.status, _lower(answer.headers), answer.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, _lower(e.headers), e.read())


def _lower(headers: Message) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


_GITLAB_STATE = {
    CommitState.PENDING: "running",
    CommitState.SUCCESS: "success",
    CommitState.FAILURE: "failed",
    CommitState.ERROR: "failed",
}


class ForgeClient:
    """One repository on one forge. ``url``: the forge's web address (``https://github.com`` means the public
    API); ``repo``: ``owner/name`` (GitLab: the project's full path, groups included)."""

    def __init__(
        self,
        kind: ForgeKind,
        url: str,
        repo: str,
        token_file: Path,
        *,
        clock: Clock,
        transport: Transport = urllib_transport,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        checked_url(url, "forge url")
        self.kind = kind
        self.repo = repo
        self._web = url.rstrip("/")
        self._api = _api_root(kind, self._web)
        self._token_file = token_file
        self._clock = clock
        self._transport = transport
        self._sleep = sleep

    # -- ports.Forge -------------------------------------------------------------------------------------------

    def set_status(self, status: CommitStatus) -> None:
        description = status.description[:DESCRIPTION_LIMIT]
        if self.kind is ForgeKind.GITLAB:
            body: dict[str, str] = {
                "state": _GITLAB_STATE[status.state],
                "name": status.context,
                "description": description,
            }
            if status.target_url:
                body["target_url"] = status.target_url
            path = f"{self._project}/statuses/{status.sha}"
            answer = self._call("POST", path, body, accept=(400,))
            # GitLab refuses to set a state the status already has ("Cannot transition status via :run from
            # :running"): the status then already says it.
            if answer.status == 400 and b"Cannot transition status" not in answer.body:
                raise TerminalError(f"{self._where('POST', path)}: HTTP 400: {_message(answer)}")
            return
        body = {"state": str(status.state), "context": status.context, "description": description}
        if status.target_url:
            body["target_url"] = status.target_url
        self._call("POST", f"repos/{self.repo}/statuses/{status.sha}", body)

    def upsert_comment(self, number: int, marker: str, body: str) -> str:
        """The comment starting with ``marker`` updated to ``body`` (created when there is none). Two agents that
        create it at the same moment (two replicas, two events) both see two afterwards: each keeps the oldest and
        deletes the others, so a pull request ends with one plan comment."""
        text = body if body.startswith(marker) else f"{marker}\n{body}"
        ours = self._marked(number, marker)
        if not ours:
            created = self._call("POST", self._comments_path(number), {"body": text}).json()
            ours = self._marked(number, marker) or [created]
        keep, *extra = ours
        for comment in extra:
            self._call("DELETE", self._comment(number, comment), accept=(404,))  # 404: the other agent did
        if keep.get("body") != text:
            method = "PUT" if self.kind is ForgeKind.GITLAB else "PATCH"
            self._call(method, self._comment(number, keep), {"body": text})
        return self._comment_url(number, keep)

    def open_pull_request(self, head: str, base: str, title: str, body: str) -> PullRequest:
        found = self._open_pull(head, base)
        if self.kind is ForgeKind.GITLAB:
            fields = {"title": title, "description": body}
            if found is None:
                made = {"source_branch": head, "target_branch": base, **fields}
                found = self._call("POST", f"{self._project}/merge_requests", made).json()
            elif (found.get("title"), found.get("description")) != (title, body):
                found = self._call("PUT", f"{self._project}/merge_requests/{found['iid']}", fields).json()
            return PullRequest(int(found["iid"]), str(found.get("web_url", "")), head, base)
        if found is None:
            made = {"head": head, "base": base, "title": title, "body": body}
            found = self._call("POST", f"repos/{self.repo}/pulls", made).json()
        elif (found.get("title"), found.get("body")) != (title, body):
            path = f"repos/{self.repo}/pulls/{found['number']}"
            found = self._call("PATCH", path, {"title": title, "body": body}).json()
        return PullRequest(int(found["number"]), str(found.get("html_url", "")), head, base)

    def close_pull_request(self, head: str, base: str, comment: str) -> PullRequest | None:
        found = self._open_pull(head, base)
        if found is None:
            return None
        gitlab = self.kind is ForgeKind.GITLAB
        number = int(found["iid" if gitlab else "number"])
        self._call("POST", self._comments_path(number), {"body": comment})
        if gitlab:
            self._call("PUT", f"{self._project}/merge_requests/{number}", {"state_event": "close"})
        else:
            self._call("PATCH", f"repos/{self.repo}/pulls/{number}", {"state": "closed"})
        return PullRequest(number, str(found.get("web_url" if gitlab else "html_url", "")), head, base)

    def approvers(self, number: int) -> tuple[str, ...]:
        if self.kind is ForgeKind.GITLAB:
            path = f"{self._project}/merge_requests/{number}/approvals"
            return approvers(self.kind, self._call("GET", path, attempts=1).json())
        return approvers(self.kind, list(self._pages(f"repos/{self.repo}/pulls/{number}/reviews", {}, attempts=1)))

    def pull_request_of(self, sha: str) -> int | None:
        if self.kind is ForgeKind.GITLAB:
            path = f"{self._project}/repository/commits/{sha}/merge_requests"
        elif self.kind is ForgeKind.GITHUB:
            path = f"repos/{self.repo}/commits/{sha}/pulls"
        else:
            path = f"repos/{self.repo}/commits/{sha}/pull"
        answer = self._call("GET", path, accept=(404,), attempts=1)
        if answer.status == 404:
            # Gitea: no pull request merged as this commit. (GitHub and GitLab answer an empty list.)
            return None
        return merged_pull(self.kind, answer.json())

    # -- shapes ------------------------------------------------------------------------------------------------

    @property
    def _project(self) -> str:
        return "projects/" + urllib.parse.quote(self.repo, safe="")

    def _comments_path(self, number: int) -> str:
        if self.kind is ForgeKind.GITLAB:
            return f"{self._project}/merge_requests/{number}/notes"
        return f"repos/{self.repo}/issues/{number}/comments"

    def _comment(self, number: int, comment: Mapping[str, Any]) -> str:
        if self.kind is ForgeKind.GITLAB:
            return f"{self._project}/merge_requests/{number}/notes/{comment['id']}"
        return f"repos/{self.repo}/issues/comments/{comment['id']}"

    def _comment_url(self, number: int, comment: Mapping[str, Any]) -> str:
        if self.kind is ForgeKind.GITLAB:
            return f"{self._web}/{self.repo}/-/merge_requests/{number}#note_{comment['id']}"
        return str(comment.get("html_url", ""))

    def _marked(self, number: int, marker: str) -> list[Mapping[str, Any]]:
        """The pull request's comments that start with ``marker`` (gitsync's own), oldest first."""
        comments = self._pages(self._comments_path(number), {})
        return sorted((c for c in comments if str(c.get("body") or "").startswith(marker)), key=lambda c: c["id"])

    def _open_pull(self, head: str, base: str) -> Mapping[str, Any] | None:
        if self.kind is ForgeKind.GITLAB:
            query = {"state": "opened", "source_branch": head, "target_branch": base}
            return next(iter(self._pages(f"{self._project}/merge_requests", query)), None)
        query = {"state": "open"}
        if self.kind is ForgeKind.GITHUB:
            query |= {"head": f"{self.repo.split('/')[0]}:{head}", "base": base}
        for pull in self._pages(f"repos/{self.repo}/pulls", query):
            if (pull.get("head") or {}).get("ref") == head and (pull.get("base") or {}).get("ref") == base:
                return pull
        return None

    def _pages(self, path: str, query: Mapping[str, str], *, attempts: int = ATTEMPTS) -> Iterator[Mapping[str, Any]]:
        size = 50 if self.kind is ForgeKind.GITEA else 100
        size_key = "limit" if self.kind is ForgeKind.GITEA else "per_page"
        for page in range(1, PAGES + 1):
            paged = {**query, size_key: str(size), "page": str(page)}
            items = self._call("GET", path, query=paged, attempts=attempts).json()
            if not isinstance(items, list):
                raise TransientError(f"{self._where('GET', path)}: expected a JSON list")
            yield from (item for item in items if isinstance(item, dict))
            if len(items) < size:
                return

    # -- HTTP --------------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        try:
            token = self._token_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise TerminalError(f"{self._token_file}: cannot read the forge token: {e.strerror}") from None
        headers = {"Accept": "application/json", "Content-Type": "application/json", "User-Agent": "gitsync"}
        if self.kind is ForgeKind.GITLAB:
            headers["PRIVATE-TOKEN"] = token
        elif self.kind is ForgeKind.GITEA:
            headers["Authorization"] = f"token {token}"
        else:
            headers |= {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            }
        return headers

    def _where(self, method: str, path: str) -> str:
        return f"{self.kind} {self._web}: {method} {path.split('?')[0]}"

    def _call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        query: Mapping[str, str] | None = None,
        accept: tuple[int, ...] = (),
        attempts: int = ATTEMPTS,
    ) -> Response:
        """One API call with the bounded retries of the module docstring (``attempts`` tries at most); a 2xx
        answer (or one whose status is in ``accept``, for the caller to read) is returned, anything else raised."""
        url = f"{self._api}/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(body).encode() if body is not None else None
        where = self._where(method, path)
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            try:
                answer = self._transport(method, url, self._headers(), data, TIMEOUT)
            except OSError as e:
                problem, wait = f"unreachable: {e}", _backoff(attempt)
            else:
                if 200 <= answer.status < 300 or answer.status in accept:
                    seconds = round(time.monotonic() - started, 3)
                    log.debug("forge.call", call=where, status=answer.status, seconds=seconds)
                    return answer
                problem = f"HTTP {answer.status}: {_message(answer)}"
                limited = self._rate_limit_wait(answer)
                if limited is not None:
                    if limited > MAX_WAIT:
                        raise TransientError(f"{where}: rate limited for {limited:.0f} s more: {problem}")
                    wait = limited
                elif answer.status >= 500:
                    wait = _backoff(attempt)
                else:
                    raise TerminalError(f"{where}: {problem}")
            if attempt == attempts:
                break
            log.info("forge.retry", call=where, attempt=attempt, wait=round(wait, 2), problem=problem)
            self._sleep(wait)
        raise TransientError(f"{where}: {problem}" + (f" (after {attempts} tries)" if attempts > 1 else ""))

    def _rate_limit_wait(self, answer: Response) -> float | None:
        """Seconds the server asks to wait, when the answer is a rate limit (None: it is not one)."""
        headers = answer.headers
        if answer.status not in (403, 429):
            return None
        retry_after = headers.get("retry-after", "")
        if retry_after.strip().isdigit():
            return float(retry_after.strip())
        if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset", "").isdigit():
            reset = float(headers["x-ratelimit-reset"])
            return max(reset - self._clock.now(), 0.0) + 1.0
        if answer.status == 429:
            return 60.0  # a limit that does not say for how long: GitHub's advice is at least a minute
        return None


_VERDICTS = frozenset({"APPROVED", "CHANGES_REQUESTED", "REQUEST_CHANGES", "DISMISSED"})
"""Review states that are a reviewer's verdict; a comment (``COMMENTED``, Gitea's ``COMMENT``), a pending draft or
a review request leaves that reviewer's earlier verdict standing, as on the forges' own pages."""


def approvers(kind: ForgeKind, answer: Any) -> tuple[str, ...]:
    """The logins approving a pull request, from the forge's answer (pure): GitHub's and Gitea's list of reviews
    (ids grow with time on both: each reviewer's latest verdict counts; a review Gitea marks ``dismissed``, or
    ``stale`` because it approved an older head than the one merged, approves nothing), GitLab's approvals object
    (``approved_by``). Anything else is not an answer: ``TransientError``."""
    if kind is ForgeKind.GITLAB:
        if not isinstance(answer, dict) or not isinstance(answer.get("approved_by", []), list):
            raise TransientError("GitLab approvals: expected an object with approved_by")
        approved = (_user(a.get("user")) for a in answer.get("approved_by", []) if isinstance(a, dict))
        return tuple(sorted({login for login in approved if login}))
    if not isinstance(answer, list):
        raise TransientError(f"{kind} reviews: expected a JSON list")
    verdicts: dict[str, bool] = {}
    reviews = [r for r in answer if isinstance(r, dict)]
    for review in sorted(reviews, key=lambda r: r["id"] if isinstance(r.get("id"), int) else 0):
        login, state = _user(review.get("user")), str(review.get("state", "")).upper()
        if not login or state not in _VERDICTS:
            continue
        verdicts[login] = state == "APPROVED" and not review.get("dismissed") and not review.get("stale")
    return tuple(sorted(login for login, approved in verdicts.items() if approved))


def merged_pull(kind: ForgeKind, answer: Any) -> int | None:
    """The number of the merged pull request in the forge's answer about a commit (pure): Gitea's one pull request,
    GitHub's and GitLab's list (an open one that merely contains the commit does not count); None when none is
    merged. Anything else is not an answer: ``TransientError``."""
    pulls = answer if kind is not ForgeKind.GITEA else [answer]
    if not isinstance(pulls, list) or not all(isinstance(p, dict) for p in pulls):
        raise TransientError(
            f"{kind} pull request of a commit: expected {'a list' if kind is not ForgeKind.GITEA else 'an object'}"
        )
    number = "iid" if kind is ForgeKind.GITLAB else "number"
    for pull in pulls:
        merged = (
            pull.get("state") == "merged" if kind is ForgeKind.GITLAB else pull.get("merged") or pull.get("merged_at")
        )
        if merged and isinstance(pull.get(number), int):
            return int(pull[number])
    return None


def _user(user: Any) -> str:
    """A review's author: ``login`` on GitHub and Gitea, ``username`` on GitLab ("" when not there)."""
    if not isinstance(user, dict):
        return ""
    return str(user.get("login") or user.get("username") or "")


def _api_root(kind: ForgeKind, web: str) -> str:
    if kind is ForgeKind.GITHUB:
        return "https://api.github.com" if web in ("https://github.com", "https://api.github.com") else f"{web}/api/v3"
    return f"{web}/api/v4" if kind is ForgeKind.GITLAB else f"{web}/api/v1"


def _backoff(attempt: int) -> float:
    return min(0.5 * 2.0 ** (attempt - 1), 8.0) * random.uniform(0.8, 1.2)


def _message(answer: Response) -> str:
    """The forge's own explanation (``message`` on GitHub and Gitea, ``message``/``error`` on GitLab), short."""
    try:
        document = answer.json()
    except ValueError:
        return answer.body[:200].decode(errors="replace").strip() or "no message"
    if isinstance(document, dict):
        text = document.get("message") or document.get("error") or document
        return str(text)[:300]
    return str(document)[:300]
