"""The agent with a real forge: a Gitea on 127.0.0.1 (tests/forge_fixture.py) hosts the repository, sends the
push and pull-request webhooks, and receives commit statuses, the plan comment and the promotion pull request.

No mock of the forge: what the tests read back is what Gitea's own API says.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentlab import GITSYNC, SECRET, AgentProcess, Agents, Upstream, configmap_value, status_of, wait_for
from forge_fixture import Gitea, GiteaRepo
from kubernetes import client

MARKER = "<!-- gitsync:plan -->"
CANARY = {
    "analysis": {"interval": "1s", "checks": [{"name": "pods", "type": "podHealth", "maxRestarts": 0}]},
    "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"analysis": {"checks": ["pods"]}}]},
}


def on_gitea(upstream: Upstream, gitea: Gitea, repo: GiteaRepo) -> None:
    """The test's repository now lives on Gitea: its clone pushes there and the agent follows it there."""
    upstream._git(upstream.work, "remote", "set-url", "origin", gitea.clone_url(repo.name, with_token=True))
    upstream.push()
    upstream.url = gitea.clone_url(repo.name)


def start_agent(agents: Agents, gitea: Gitea, repo: GiteaRepo, **overrides: Any) -> AgentProcess:
    agent = agents.start(
        repo={
            "url": gitea.clone_url(repo.name),
            "branch": "main",
            "auth": {"tokenFile": str(gitea.token_file), "username": gitea.admin},
        },
        webhooks={"gitea": {"secretFile": str(agents.root / "secret")}},
        forge={"kind": "gitea", "url": gitea.url, "repo": repo.name, "tokenFile": str(gitea.token_file)},
        **overrides,
    )
    gitea.api(
        "POST",
        f"repos/{repo.name}/hooks",
        {
            "type": "gitea",
            "config": {
                "url": f"http://127.0.0.1:{agent.port}/webhooks/gitea",
                "content_type": "json",
                "secret": SECRET.decode(),
            },
            "events": ["push", "pull_request", "pull_request_sync"],
            "active": True,
        },
    )
    return agent


def states(repo: GiteaRepo, sha: str, context: str) -> list[tuple[str, str]]:
    return [(s["status"], s["description"]) for s in repo.statuses(sha) if s["context"] == context]


def plan_comments(repo: GiteaRepo, number: int) -> list[dict[str, Any]]:
    return [c for c in repo.comments(number) if MARKER in c["body"]]


def set_tag(upstream: Upstream, tag: str, labels: dict[str, str] | None = None, push: bool = True) -> str:
    path = upstream.work / "environments/staging/values/podinfo.yaml"
    values = yaml.safe_load(path.read_text())
    values["image"]["tag"], values["podLabels"] = tag, labels or {}
    return upstream.commit(f"podinfo {tag}", {str(path.relative_to(upstream.work)): yaml.safe_dump(values)}, push=push)


def test_statuses_per_environment_and_the_plan_comment_of_a_pull_request(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, gitea: Gitea, gitea_repo: GiteaRepo
) -> None:
    upstream.set_rollout("canary", **CANARY)
    first = upstream.commit("Canary policy")
    on_gitea(upstream, gitea, gitea_repo)
    agent = start_agent(agents, gitea, gitea_repo, pollInterval="30s")
    context = "gitsync/staging/podinfo"

    # 1. The first release: pending while it rolls out, then success once verified.
    wait_for("success on the commit", lambda: states(gitea_repo, first, context)[-1:][0][0] == "success"
             if states(gitea_repo, first, context) else None, 60)  # fmt: skip
    said = states(gitea_repo, first, context)
    assert said[0][0] == "pending" and said[0][1].startswith("rolling out"), said
    assert said[-1] == ("success", "deployed to staging and healthy")
    assert len(said) == len(set(said)), "no status is sent twice"

    # 2. A pull request gets one plan comment, updated in place on the next push to it.
    upstream._git(upstream.work, "checkout", "-q", "-b", "feature")
    head = set_tag(upstream, "6.7.2", push=False)
    upstream._git(upstream.work, "push", "-q", "origin", "feature")
    pull = gitea.api("POST", f"repos/{gitea_repo.name}/pulls", {"head": "feature", "base": "main", "title": "6.7.2"})
    [comment] = wait_for("the plan comment", lambda: plan_comments(gitea_repo, pull["number"]), 60)
    assert f"`{head[:12]}` into `main`" in comment["body"]
    assert "staging" in comment["body"] and "podinfo" in comment["body"] and "6.7.2" in comment["body"]
    [planned] = wait_for("the plan status on the head", lambda: states(gitea_repo, head, "gitsync/plan"), 60)
    assert planned[0] == "success" and planned[1].startswith("deploys podinfo@staging"), planned
    again = set_tag(upstream, "6.7.3", push=False)
    pushed = time.monotonic()
    upstream._git(upstream.work, "push", "-q", "origin", "feature")
    push_seconds = time.monotonic() - pushed
    [updated] = wait_for(
        "the plan comment updated",
        lambda: [c for c in plan_comments(gitea_repo, pull["number"]) if again[:12] in c["body"]],
        60,
    )
    print(f"\ngit push to the pull request -> plan comment updated on Gitea: {time.monotonic() - pushed:.2f} s "
          f"(the push itself: {push_seconds:.2f} s)")  # fmt: skip
    assert updated["id"] == comment["id"] and "6.7.3" in updated["body"]
    assert len(plan_comments(gitea_repo, pull["number"])) == 1, "one comment per pull request, not one per push"
    timings = [r["seconds"] for r in agent.logs("forge.plan_commented")]
    print(f"\nwebhook received -> plan comment posted: {timings} s")

    # 3. A release that crash-loops is rolled back: failure, with the reason.
    upstream._git(upstream.work, "checkout", "-q", "main")
    bad = set_tag(upstream, "6.8.0", {"gitsync.dev/fault": "crashloop"})
    failed = wait_for(
        "failure on the bad commit",
        lambda: [s for s in states(gitea_repo, bad, context) if s[0] == "failure"],
        90,
    )
    assert failed[0][1].startswith("rolled back: "), failed
    assert states(gitea_repo, bad, context)[0][0] == "pending", "it was rolling out before"
    assert status_of(core, namespace)["result"] == "RolledBack"
    print(f"reconcile recorded -> status set: {[r['seconds'] for r in agent.logs('forge.status_set')]} s")


@pytest.fixture
def promoted_prod(upstream: Upstream, prod_namespace: str, gitea: Gitea, gitea_repo: GiteaRepo) -> str:
    """prod in its own namespace (returned), promoted from staging by pull request after a 1 s soak; on Gitea."""
    prod = upstream.work / "environments/prod"
    env = yaml.safe_load((prod / "env.yaml").read_text())
    env["namespace"] = prod_namespace
    env["promotion"] = {"from": "staging", "mode": "pull-request", "soak": "1s", "values": ["image.tag"]}
    upstream.commit("prod: promoted by pull request", {"environments/prod/env.yaml": yaml.safe_dump(env)})
    on_gitea(upstream, gitea, gitea_repo)
    return prod_namespace


def test_the_promotion_pull_request_is_opened_and_merging_it_promotes(
    agents: Agents, upstream: Upstream, promoted_prod: str, core: client.CoreV1Api, gitea: Gitea, gitea_repo: GiteaRepo
) -> None:
    prod_namespace = promoted_prod
    # The change itself comes through a pull request merged by rebase: no message names it, Gitea still does.
    set_tag(upstream, "6.7.2", push=False)
    upstream._git(upstream.work, "push", "-q", "origin", "HEAD:refs/heads/tag-6.7.2")
    upstream._git(upstream.work, "reset", "-q", "--hard", "HEAD~1")
    change = gitea.api(
        "POST", f"repos/{gitea_repo.name}/pulls", {"head": "tag-6.7.2", "base": "main", "title": "6.7.2"}
    )
    author_reviewer = gitea.user("change-reviewer")
    gitea.api("PUT", f"repos/{gitea_repo.name}/collaborators/{author_reviewer}", {"permission": "write"})
    gitea.api("POST", f"repos/{gitea_repo.name}/pulls/{change['number']}/reviews", {"event": "APPROVED"},
              sudo=author_reviewer)  # fmt: skip
    gitea.api("POST", f"repos/{gitea_repo.name}/pulls/{change['number']}/merge", {"Do": "rebase"})
    upstream._git(upstream.work, "pull", "-q", "--ff-only", "origin", "main")
    changed = upstream._git(upstream.work, "rev-parse", "HEAD")
    start_agent(agents, gitea, gitea_repo, environments=["staging", "prod"], pollInterval="30s")

    [pull] = wait_for("the promotion pull request", gitea_repo.open_pulls, 60)
    assert pull["head"]["ref"] == "gitsync/promote/prod/podinfo" and pull["base"]["ref"] == "main"
    assert pull["title"].startswith("gitsync: promote podinfo to prod (staging@")
    assert "Gitsync-Evidence: Succeeded" in pull["body"], "the evidence is on the pull request's page"
    assert configmap_value(core, prod_namespace) is None, "nothing reaches prod before the merge"

    # A second person reviews the promotion and approves it (the admin opened it: no one approves their own).
    reviewer = gitea.user("reviewer")
    gitea.api("PUT", f"repos/{gitea_repo.name}/collaborators/{reviewer}", {"permission": "write"})
    reviews = f"repos/{gitea_repo.name}/pulls/{pull['number']}/reviews"
    gitea.api("POST", reviews, {"event": "APPROVED", "body": "evidence checked"}, sudo=reviewer)
    gitea.api("POST", reviews, {"event": "COMMENT", "body": "a remark, no verdict"})
    gitea.api("POST", f"repos/{gitea_repo.name}/pulls/{pull['number']}/merge", {"Do": "merge"})
    wait_for("prod live", lambda: configmap_value(core, prod_namespace) == "Hello from production", 60)
    wait_for("prod settled", lambda: status_of(core, prod_namespace, env="prod").get("result") == "Succeeded", 60)
    merged = gitea.api("GET", f"repos/{gitea_repo.name}/branches/main")["commit"]["id"]
    [ok] = wait_for(
        "success for prod on the merge commit",
        lambda: [s for s in states(gitea_repo, merged, "gitsync/prod/podinfo") if s[0] == "success"],
        60,
    )
    assert ok[1].startswith("deployed to prod and healthy (pinned to staging@"), ok

    # An auditor's fresh clone: who approved the promotion is in prod's ledger line, from Git alone.
    clone = agents.root / "auditor"
    subprocess.run(["git", "clone", "-q", gitea.clone_url(gitea_repo.name), str(clone)], check=True, timeout=60)
    [row] = wait_for("prod's ledger line", lambda: audited(clone, "prod"), 30)
    assert (row["commit"], row["pullRequest"], row["outcome"]) == (merged, pull["number"], "Succeeded")
    assert (row["approvals"], row["approvedBy"]) == ("known", [reviewer]), row
    # ... and who approved the change it carries, from staging's line of that (rebase-merged) commit.
    assert row["promotedFrom"] == f"staging@{changed}", row
    assert (row["changeApprovals"], row["changeApprovedBy"]) == ("known", [author_reviewer]), row
    table = subprocess.run([str(GITSYNC), "audit", "--repo", str(clone), "--env", "prod"], capture_output=True,
                           text=True, timeout=60, check=True).stdout  # fmt: skip
    assert f"#{pull['number']}" in table and reviewer in table and author_reviewer in table, table


def audited(clone: Path, env: str) -> list[dict[str, Any]]:
    """``gitsync audit -o json`` of a clone: the rows of ``env`` (it fetches the ledger from the forge)."""
    done = subprocess.run([str(GITSYNC), "audit", "--repo", str(clone), "--env", env, "-o", "json"],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return [row for row in json.loads(done.stdout) if row["outcome"] == "Succeeded"]


def test_a_promotion_pull_request_made_stale_by_a_promotion_another_way_is_closed(
    agents: Agents, upstream: Upstream, promoted_prod: str, core: client.CoreV1Api, gitea: Gitea, gitea_repo: GiteaRepo
) -> None:
    """Someone promotes without the pull request (``gitsync promote --push``, or the branch pushed to main): the
    pull request left open would change nothing, so the agent closes it and says why."""
    prod_namespace = promoted_prod
    start_agent(agents, gitea, gitea_repo, environments=["staging", "prod"], pollInterval="30s")
    [pull] = wait_for("the promotion pull request", gitea_repo.open_pulls, 60)

    upstream._git(upstream.work, "fetch", "-q", "origin", "gitsync/promote/prod/podinfo")
    upstream._git(upstream.work, "merge", "-q", "--ff-only", "FETCH_HEAD")
    upstream._git(upstream.work, "push", "-q", "origin", "main")

    wait_for("prod live", lambda: configmap_value(core, prod_namespace) == "Hello from production", 60)
    wait_for("the stale pull request closed", lambda: gitea_repo.open_pulls() == [], 60)
    said = gitea_repo.comments(pull["number"])[-1]["body"]
    assert said.startswith("Closed by gitsync: prod already runs staging@"), said
