"""kill -9 of the agent process at points of sync, prune, rollout and promotion, and a Git remote that goes away.

Each kill waits for a log line of the running agent (the kill point), SIGKILLs it there, starts a new agent on the
same cache directory and asserts what a user would check: the cluster converged to the branch, the status is
Succeeded at it, the release is in the history once (nothing recorded twice), the inventory lists no object twice,
and a promotion is one commit. The kubelab API server is shared by every test, so it is not restarted here.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from agentlab import GITSYNC, IDENTITY, AgentProcess, Agents, Upstream, configmap_value, settled, status_of, wait_for

pytestmark = pytest.mark.e2e

EXTRAS = 40
MANY = "".join(
    f'---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-{n}\ndata:\n  n: "{n}"\n' for n in range(EXTRAS)
)
"""Forty more objects, so that a sync has a middle to be killed in."""


def kill_at(agent: AgentProcess, event: str, nth: int = 1, **fields: Any) -> None:
    """SIGKILL ``agent`` as soon as it logs ``event`` (with ``fields``) for the ``nth`` time."""

    def logged() -> bool:
        return sum(all(line.get(k) == v for k, v in fields.items()) for line in agent.logs(event)) >= nth

    wait_for(f"{event} {fields or ''} logged", logged, 60, 0.005)
    agent.kill(signal.SIGKILL)


def restart(agents: Agents, **overrides: Any) -> AgentProcess:
    """A new agent on the killed one's cache directory, as a restarted pod with its volume."""
    return agents.start("second", cacheDir=str(agents.root / "cache-agent"), **overrides)


def state(core: client.CoreV1Api, namespace: str, part: str, env: str = "staging") -> dict[str, Any]:
    data = core.read_namespaced_config_map(f"gitsync.podinfo.{env}.{part}", namespace).data
    return dict(json.loads(data[f"{part}.json"]))


def assert_recorded_once(core: client.CoreV1Api, namespace: str, revision: str, env: str = "staging") -> None:
    """The release at ``revision`` is one history entry, and the inventory holds each object once."""
    revisions = [r["revision"] for r in state(core, namespace, "history", env)["releases"]]
    assert revisions.count(revision) == 1, revisions
    objects = state(core, namespace, "inventory", env)["objects"]
    assert len(objects) == len(set(objects)), "an object twice in the inventory"


def extras(core: client.CoreV1Api, namespace: str, app: str = "podinfo") -> set[str]:
    listed = core.list_namespaced_config_map(namespace, label_selector=f"gitsync.dev/app={app}").items
    return {c.metadata.name for c in listed if c.metadata.name.startswith("extra-")}


SYNC_POINTS = [
    pytest.param("git.head_moved", {}, id="head-seen"),
    pytest.param("sync.object", {"action": "created"}, id="first-object-applied"),
    pytest.param("sync.applied", {}, id="applied-before-recorded"),
    pytest.param("reconcile.done", {"result": "Succeeded"}, id="logged-before-history-and-status"),
]


@pytest.mark.parametrize(("event", "fields"), SYNC_POINTS)
def test_kill_9_during_a_sync_converges_and_records_once(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, event: str, fields: dict[str, Any]
) -> None:
    revision = upstream.commit("Forty more objects", {"apps/podinfo/templates/extra.yaml": MANY})
    kill_at(agents.start(), event, **fields)

    restart(agents)
    settled(core, namespace, revision, timeout=60)
    assert extras(core, namespace) == {f"extra-{n}" for n in range(EXTRAS)}
    assert configmap_value(core, namespace) == "Hello from staging"
    assert_recorded_once(core, namespace, revision)


def test_kill_9_mid_prune_deletes_the_rest_after_restart(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    upstream.commit("Forty more objects", {"apps/podinfo/templates/extra.yaml": MANY})
    first = agents.start()
    wait_for("forty objects live", lambda: len(extras(core, namespace)) == EXTRAS, 60)
    (upstream.work / "apps/podinfo/templates/extra.yaml").unlink()
    revision = upstream.commit("Drop the forty objects")
    kill_at(first, "prune.object", action="deleted")

    restart(agents)
    settled(core, namespace, revision, timeout=60)
    assert extras(core, namespace) == set()
    assert not [o for o in state(core, namespace, "inventory")["objects"] if "/extra-" in o]
    assert_recorded_once(core, namespace, revision)


CANARY_POINTS = [
    pytest.param("rollout.step", {"phase": "Progressing"}, id="canary-progressing"),
    pytest.param("rollout.step", {"phase": "Progressing", "weight": 50}, id="canary-at-50"),
    pytest.param("rollout.event", {"reason": "RolloutCompleted", "nth": 2}, id="canary-completed-before-recorded"),
]


@pytest.mark.parametrize(("event", "fields"), CANARY_POINTS)
def test_kill_9_during_a_canary_finishes_the_rollout_after_restart(
    agents: Agents,
    upstream: Upstream,
    namespace: str,
    core: client.CoreV1Api,
    kube_api: client.ApiClient,
    event: str,
    fields: dict[str, Any],
) -> None:
    upstream.set_rollout("canary", canary={"steps": [{"setWeight": 50}, {"pause": {"duration": "2s"}}]})
    settled_first = upstream.commit("Canary policy")
    first = agents.start()
    settled(core, namespace, settled_first, timeout=60)
    path = upstream.work / "environments/staging/values/podinfo.yaml"
    values = yaml.safe_load(path.read_text())
    values["image"]["tag"] = "6.7.2"
    revision = upstream.commit("podinfo 6.7.2", {str(path.relative_to(upstream.work)): yaml.safe_dump(values)})
    kill_at(first, event, **fields)

    restart(agents)
    settled(core, namespace, revision, timeout=60)
    apps = client.AppsV1Api(kube_api)
    stable = apps.read_namespaced_deployment("podinfo", namespace)
    assert stable.spec.template.spec.containers[0].image.endswith(":6.7.2")
    assert stable.spec.replicas == values["replicas"]
    assert not [d for d in apps.list_namespaced_deployment(namespace).items if d.metadata.name == "podinfo-canary"]
    assert_recorded_once(core, namespace, revision)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**IDENTITY, "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, check=True, timeout=30)  # fmt: skip
    return done.stdout.strip("\n")


def promotion_commits(upstream: Upstream) -> list[str]:
    out = git(upstream.bare, "log", "main", "--format=%(trailers:key=Gitsync-Promoted-From,valueonly)")
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("event", ["promotion.written", "ledger.noted"])
def test_kill_9_around_a_promotion_writes_one_promotion_commit(
    agents: Agents, upstream: Upstream, namespace: str, prod_namespace: str, core: client.CoreV1Api, event: str
) -> None:
    prod = upstream.work / "environments/prod"
    env = yaml.safe_load((prod / "env.yaml").read_text())
    env["namespace"] = prod_namespace
    env["promotion"] = {"from": "staging", "mode": "auto", "soak": "1s", "values": ["image.tag"]}
    first = upstream.commit("prod: promoted from staging", {"environments/prod/env.yaml": yaml.safe_dump(env)})
    settings = {"environments": ["staging", "prod"]}
    kill_at(agents.start(**settings), event)

    restart(agents, **settings)
    wait_for("prod live", lambda: configmap_value(core, prod_namespace) == "Hello from production", 60)
    wait_for("prod settled", lambda: status_of(core, prod_namespace, env="prod").get("result") == "Succeeded", 60)
    assert promotion_commits(upstream) == [f"staging@{first}"], "one promotion commit"
    notes = git(upstream.bare, "notes", "--ref=gitsync", "show", first).splitlines()
    assert len([n for n in notes if '"env":"staging"' in n]) == 1, "one ledger line for staging's release"


def test_kill_9_after_noting_a_removal_and_a_later_commit_leave_one_removed_line(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    """Killed once the removal is noted (before its status and before the inventory is dropped), the next agent
    removes again at a newer commit: the ledger still says once that the app was removed, and by which commit."""
    upstream.add_app("podtwo")
    first = agents.start(pollInterval="1s")
    wait_for("podtwo synced", lambda: status_of(core, namespace, "podtwo").get("result") == "Succeeded", 30)
    removal = upstream.set_environment("Remove podtwo from staging", apps=["podinfo"])
    kill_at(first, "ledger.noted", app="podtwo", outcome="Removed")
    upstream.commit("A later commit", {"README.md": "later\n"})

    restart(agents, pollInterval="1s")
    wait_for("podtwo removed", lambda: status_of(core, namespace, "podtwo").get("result") == "Removed", 30)
    audit = [str(Path(sys.executable).with_name("gitsync")), "audit", "--repo", str(upstream.work), "-o", "json"]
    rows = json.loads(subprocess.run(audit, capture_output=True, text=True, timeout=60, check=True).stdout)
    removed = [r["removalCommit"] for r in rows if r["app"] == "podtwo" and r["outcome"] == "Removed"]
    assert removed == [removal], rows


def test_kill_9_while_the_remote_is_away_keeps_the_removed_line_and_a_new_agent_writes_it_once(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    """The Git remote goes away while a removed app is being pruned, so its ``Removed`` line cannot be pushed, and
    the agent is killed before the remote is back. The line waits in the app's status; the new agent removes the
    app again once the remote is back: the line is written once, the app stays removed, its state goes."""
    upstream.add_app("podtwo")
    upstream.commit("Forty more objects", {"apps/podtwo/templates/extra.yaml": MANY})
    first = agents.start(pollInterval="1s")
    wait_for("forty objects live", lambda: len(extras(core, namespace, "podtwo")) == EXTRAS, 60)
    removal = upstream.set_environment("Remove podtwo from staging", apps=["podinfo"])

    def pruning() -> bool:
        return any(x["action"] == "deleted" and "/extra-" in x["object"] for x in first.logs("prune.object"))

    wait_for("podtwo being pruned", pruning, 60, 0.005)
    away = upstream.bare.with_name("moved.git")
    shutil.move(upstream.bare, away)
    wait_for("the Removed line kept", lambda: [x for x in first.logs("ledger.unnoted") if x.get("app") == "podtwo"], 60)
    first.kill(signal.SIGKILL)
    [kept] = status_of(core, namespace, "podtwo")["unnoted"]
    assert json.loads(kept)["outcome"] == "Removed" and json.loads(kept)["removalCommit"] == removal
    inventory = core.read_namespaced_config_map("gitsync.podtwo.staging.inventory", namespace).data
    assert json.loads(inventory["inventory.json"])["objects"] == [], "emptied, kept for the line"

    shutil.move(away, upstream.bare)
    second = restart(agents, pollInterval="1s")
    wait_for("the kept line written", lambda: status_of(core, namespace, "podtwo").get("unnoted") == [], 60)
    wait_for(
        "podtwo's inventory dropped", lambda: "gitsync.podtwo.staging.inventory" not in state_maps(core, namespace), 30
    )
    status = status_of(core, namespace, "podtwo")
    assert status["result"] == "Removed", "still removed, not brought back"
    assert extras(core, namespace, "podtwo") == set(), "podtwo's objects stay deleted"
    assert not second.logs("app.removed"), "removed once: the new agent only wrote the kept line"
    notes = git(upstream.bare, "notes", "--ref=gitsync", "list").splitlines()
    lines = [
        line for n in notes for line in git(upstream.bare, "notes", "--ref=gitsync", "show", n.split()[1]).splitlines()
    ]
    removed = [json.loads(line) for line in lines if '"app":"podtwo"' in line and '"outcome":"Removed"' in line]
    assert [r["removalCommit"] for r in removed] == [removal], "one Removed line"


def state_maps(core: client.CoreV1Api, namespace: str) -> set[str]:
    return {m.metadata.name for m in core.list_namespaced_config_map(namespace).items}


def test_an_unreachable_remote_is_one_line_and_the_next_push_after_it_is_live(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    agent = agents.start()
    settled(core, namespace, timeout=60)
    away = upstream.bare.with_name("moved.git")
    shutil.move(upstream.bare, away)
    [failed] = wait_for("a failed poll", lambda: agent.logs("git.poll_failed"), 60)[:1]
    assert failed["error"] == (
        f"file://{upstream.bare}: git ls-remote failed: "
        f"fatal: '{upstream.bare}' does not appear to be a git repository | "
        "fatal: Could not read from remote repository."
    )
    assert status_of(core, namespace)["result"] == "Succeeded", "what runs keeps running"

    shutil.move(away, upstream.bare)
    revision = upstream.set_message("after the outage")
    wait_for("the next push live", lambda: configmap_value(core, namespace) == "after the outage", 60)
    settled(core, namespace, revision)


def test_kill_9_while_the_remote_is_away_keeps_the_ledger_line_and_writes_it_once_after(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, tmp_path: Path
) -> None:
    """A release ends while the Git remote is unreachable: its ledger line cannot be pushed. The agent is killed
    before the remote is back; the line must not be lost (a receiving environment could never promote the
    release, an auditor's ledger would have a hole): a new agent writes it once the remote is back, as it was made."""
    agent = agents.start()
    settled(core, namespace, timeout=60)
    values = upstream.work / "environments/staging/values/podinfo.yaml"
    slow = yaml.safe_load(values.read_text())
    slow["podLabels"] = {"gitsync.dev/fault": "slow-ready"}
    slow["podAnnotations"] = {"gitsync.dev/ready-delay": "6s"}
    revision = upstream.commit("Pods that take a while", {str(values.relative_to(upstream.work)): yaml.safe_dump(slow)})

    def rolling() -> bool:
        status = status_of(core, namespace)
        return status.get("lastAppliedRevision") == revision and status.get("health") == "Progressing"

    wait_for("the new pods rolling out", rolling, 60)
    away = upstream.bare.with_name("moved.git")
    shutil.move(upstream.bare, away)  # the release ends (pods Ready) with the remote gone
    wait_for("the line kept in the status", lambda: agent.logs("ledger.unnoted"), 60)
    agent.kill(signal.SIGKILL)
    [kept] = status_of(core, namespace)["unnoted"]
    assert json.loads(kept)["revision"] == revision and json.loads(kept)["outcome"] == "Succeeded"

    shutil.move(away, upstream.bare)
    restart(agents)
    wait_for("the kept line written", lambda: status_of(core, namespace).get("unnoted") == [], 60)
    fresh = tmp_path / "auditor"
    git(tmp_path, "clone", "-q", str(upstream.bare), str(fresh))
    audit = subprocess.run([str(GITSYNC), "audit", "--repo", str(fresh), "--env", "staging", "-o", "json"],
                           capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    lines = [row for row in json.loads(audit.stdout) if row["commit"] == revision]
    assert len(lines) == 1, lines
    noted = git(upstream.bare, "notes", "--ref=gitsync", "show", revision).splitlines()
    assert noted == [kept], "written later exactly as it was made when the release ended (times, evidence)"
