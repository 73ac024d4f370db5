"""A real Gitea for the forge tests: commit statuses, pull requests, comments and webhooks, no mocks of it.

- `gitea` (session): one Gitea per pytest session from tools/gitea/gitea.py (built once per machine and cached
  under ~/.cache/gitsync/gitea, like kubelab), on a free 127.0.0.1 port, with an admin and an API token; started
  only when a test asks for it; FAILS (never skips) with the tool's own message when it cannot build or start.
- `gitea_repo` (function): a fresh empty repository owned by the admin, deleted afterwards.

Loaded from tests/conftest.py with `pytest_plugins`.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

GITEA_TOOL = Path(__file__).resolve().parent.parent / "tools" / "gitea" / "gitea.py"


@dataclass(frozen=True)
class Gitea:
    url: str
    admin: str
    token: str
    token_file: Path
    state_dir: Path

    def api(
        self, method: str, path: str, body: object = None, expect: tuple[int, ...] = (200, 201, 204), sudo: str = ""
    ) -> Any:
        """One call of Gitea's REST API as the admin (or, with ``sudo``, as that user: Gitea lets an admin's token
        act for anyone); fails the test on an unexpected status."""
        headers = {"Authorization": f"token {self.token}", "Content-Type": "application/json"}
        request = urllib.request.Request(
            f"{self.url}api/v1/{path.lstrip('/')}",
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers | ({"Sudo": sudo} if sudo else {}),
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, text = answer.status, answer.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        if status not in expect:
            pytest.fail(f"Gitea {method} {path}: HTTP {status}: {text[:500]!r}")
        return json.loads(text) if text else None

    def user(self, login: str) -> str:
        """A second person on the forge (made once per session): ``login``, to act as with ``api(sudo=login)``."""
        body = {"username": login, "email": f"{login}@example.com", "password": secrets.token_hex(12)}
        self.api("POST", "admin/users", {**body, "must_change_password": False}, expect=(201, 422))
        return login

    def clone_url(self, repo: str, with_token: bool = False) -> str:
        host = self.url.removeprefix("http://")
        return f"http://{self.admin}:{self.token}@{host}{repo}.git" if with_token else f"{self.url}{repo}.git"


@dataclass(frozen=True)
class GiteaRepo:
    gitea: Gitea
    name: str
    """``owner/name``."""

    def statuses(self, sha: str) -> list[dict[str, Any]]:
        """Every status set on ``sha``, oldest first."""
        found = self.gitea.api("GET", f"repos/{self.name}/statuses/{sha}?limit=50&sort=oldest")
        return sorted(found, key=lambda s: s["id"])

    def comments(self, number: int) -> list[dict[str, Any]]:
        return list(self.gitea.api("GET", f"repos/{self.name}/issues/{number}/comments"))

    def open_pulls(self) -> list[dict[str, Any]]:
        return list(self.gitea.api("GET", f"repos/{self.name}/pulls?state=open"))


def _up(state: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(GITEA_TOOL), "up", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"Gitea did not start (tools/gitea/gitea.py up): {done.stderr.strip()[-3000:]}", pytrace=False)
    return dict(json.loads(Path(done.stdout.strip().splitlines()[-1]).read_text()))


@pytest.fixture(scope="session")
def gitea(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gitea]:
    state = tmp_path_factory.mktemp("gitea")
    info = _up(state)
    url, admin = info["url"], info["admin"]
    basic = base64.b64encode(f"{admin}:{info['password']}".encode()).decode()
    request = urllib.request.Request(
        f"{url}api/v1/users/{admin}/tokens",
        data=json.dumps({"name": f"tests-{secrets.token_hex(4)}", "scopes": ["all"]}).encode(),
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            token = json.loads(answer.read())["sha1"]
    except (OSError, KeyError, ValueError) as e:
        subprocess.run([sys.executable, str(GITEA_TOOL), "down", "--state-dir", str(state)], check=False, timeout=60)
        pytest.fail(f"Gitea at {url}: could not create an API token: {e}", pytrace=False)
    token_file = state / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    try:
        yield Gitea(url, admin, token, token_file, state)
    finally:
        subprocess.run([sys.executable, str(GITEA_TOOL), "down", "--state-dir", str(state)], check=False, timeout=60)


@pytest.fixture
def gitea_repo(gitea: Gitea) -> Iterator[GiteaRepo]:
    name = f"deploy-{secrets.token_hex(3)}"
    gitea.api("POST", "user/repos", {"name": name, "default_branch": "main", "private": False})
    yield GiteaRepo(gitea, f"{gitea.admin}/{name}")
    gitea.api("DELETE", f"repos/{gitea.admin}/{name}", expect=(204, 404))
