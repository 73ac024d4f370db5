"""Pull-request webhooks: which deliveries ask for a plan comment (GitHub's, Gitea's and GitLab's payloads, as
their documentation shows them, abridged), and the forge settings of agent.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitsync.ports import ForgeKind
from gitsync.runtime.config import ConfigError, Provider, load
from gitsync.runtime.pull_requests import PullRequestEvent
from gitsync.runtime.webhooks import Verdict, handle, sign

SECRET = b"s3cret"
HEAD, BASE = "c" * 40, "b" * 40


def deliver(provider: Provider, event: str, payload: dict[str, object]) -> tuple[Verdict, PullRequestEvent | None, str]:
    body = json.dumps(payload).encode()
    headers = {
        Provider.GITHUB: {"X-GitHub-Event": event, "X-Hub-Signature-256": f"sha256={sign(SECRET, body)}"},
        Provider.GITEA: {"X-Gitea-Event": event, "X-Gitea-Signature": sign(SECRET, body)},
        Provider.GITLAB: {"X-Gitlab-Event": event, "X-Gitlab-Token": SECRET.decode()},
    }[provider]
    delivery = handle(provider, headers, body, SECRET, "main")
    return delivery.verdict, delivery.pull_request, delivery.detail


def github_like(action: str, base_ref: str = "main") -> dict[str, object]:
    pull = {"number": 12, "head": {"ref": "feature", "sha": HEAD}, "base": {"ref": base_ref, "sha": BASE}}
    return {"action": action, "number": 12, "pull_request": pull}


@pytest.mark.parametrize(("provider", "action"), [(Provider.GITHUB, "synchronize"), (Provider.GITEA, "synchronized")])
def test_a_push_to_a_pull_request_asks_for_its_plan(provider: Provider, action: str) -> None:
    for each in ("opened", action, "reopened"):
        verdict, pull, _ = deliver(provider, "pull_request", github_like(each))
        assert verdict is Verdict.ACCEPTED
        assert pull == PullRequestEvent(12, HEAD, BASE, "feature", "main")


def test_gitlab_merge_request_hook() -> None:
    payload = {
        "object_kind": "merge_request",
        "object_attributes": {
            "iid": 3,
            "action": "update",
            "source_branch": "feature",
            "target_branch": "main",
            "last_commit": {"id": HEAD},
        },
    }
    verdict, pull, _ = deliver(Provider.GITLAB, "Merge Request Hook", payload)
    assert verdict is Verdict.ACCEPTED and pull == PullRequestEvent(3, HEAD, "", "feature", "main")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (github_like("closed"), "action 'closed' needs no plan"),
        (github_like("labeled"), "action 'labeled' needs no plan"),
        (github_like("opened", base_ref="release"), "pull request into 'release', watching main"),
        ({"action": "opened", "number": 12, "pull_request": {"base": {"ref": "main"}}}, "without a head commit"),
    ],
)
def test_other_pull_request_events_are_ignored(payload: dict[str, object], why: str) -> None:
    verdict, pull, detail = deliver(Provider.GITHUB, "pull_request", payload)
    assert verdict is Verdict.IGNORED and pull is None and why in detail


def write(tmp_path: Path, forge: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(f"repo: {{url: https://git.example.com/org/deploy.git}}\nenvironments: [staging]\n{forge}")
    return path


def test_forge_settings(tmp_path: Path) -> None:
    config = load(
        write(tmp_path, "forge:\n  kind: gitea\n  url: http://gitea:3000/\n  repo: org/deploy\n  tokenFile: /t\n"), {}
    )
    assert config.forge is not None
    assert (config.forge.kind, config.forge.url, config.forge.repo) == (
        ForgeKind.GITEA,
        "http://gitea:3000",
        "org/deploy",
    )
    github = load(write(tmp_path, "forge: {kind: github, repo: org/deploy, tokenFile: /t}\n"), {})
    assert github.forge is not None and github.forge.url == "https://github.com"
    assert load(write(tmp_path, ""), {}).forge is None


@pytest.mark.parametrize(
    ("forge", "error"),
    [
        ("forge:\n  kind: bitbucket\n  repo: o/r\n  tokenFile: /t\n", "agent.yaml:4: kind: unknown forge 'bitbucket'"),
        ("forge:\n  kind: gitea\n  repo: o/r\n  tokenFile: /t\n", "agent.yaml:3: url: required"),
        (
            "forge:\n  kind: gitlab\n  url: https://u:glpat-planted@gitlab.com\n  repo: o/r\n  tokenFile: /t\n",
            "agent.yaml:5: url: expected an http(s) URL without credentials, like https://gitea.example.com:"
            " 'https://***@gitlab.com'",
        ),
        (
            "forge:\n  kind: gitea\n  url: http://g\n  repo: o/r\n  tokenFile: /t\n  targetUrl: ftp://u:glpat-planted@x\n",
            "agent.yaml:8: targetUrl: expected an http(s) URL: 'ftp://***@x'",
        ),
        ("forge:\n  kind: github\n  repo: deploy\n  tokenFile: /t\n", "agent.yaml:5: repo: expected owner/name"),
        ("forge:\n  kind: github\n  repo: o/r\n", "agent.yaml:3: tokenFile: required"),
        ("forge:\n  kind: github\n  repo: o/r\n  tokenFile: /t\n  token: abc\n", "agent.yaml:7: token: unknown field"),
    ],
)
def test_forge_errors_name_the_line_and_field(tmp_path: Path, forge: str, error: str) -> None:
    with pytest.raises(ConfigError) as failed:
        load(write(tmp_path, forge), {})
    assert str(failed.value).startswith(error), str(failed.value)
    assert "planted" not in str(failed.value), "a credential in a URL is never echoed"


def test_gitea_names_where_the_branch_forked() -> None:
    payload = github_like("synchronized")
    payload["pull_request"] = {**payload["pull_request"], "merge_base": "f" * 40}
    _, pull, _ = deliver(Provider.GITEA, "pull_request", payload)
    assert pull is not None and pull.merge_base == "f" * 40
    _, pull, _ = deliver(Provider.GITEA, "pull_request", github_like("synchronized"))
    assert pull is not None and pull.merge_base == "", "not said: the base head is planned against"
