"""The agent as a user runs it: follow a branch by poll and webhook, survive bad commits, kills and a second replica."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from agentlab import GITSYNC, Agents, Upstream, configmap_value, event_reasons, settled, status_of, wait_for
from kubernetes import client


def test_first_commit_syncs_and_a_new_commit_is_live_within_one_poll(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kubelab: Any
) -> None:
    agent = agents.start(pollInterval="1s")
    wait_for("the first commit live", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
    first = settled(core, namespace)["lastAppliedRevision"]
    wait_for("/readyz", lambda: agent.get("/readyz")[0] == 200, 60)

    revision = upstream.set_message("second")
    # No webhook: only the 1 s poll finds it (the default poll is 60 s, twice this ceiling).
    wait_for("the second commit live by the 1 s poll", lambda: configmap_value(core, namespace) == "second", 30)
    wait_for(
        "status at the new revision",
        lambda: (
            status_of(core, namespace).get("result") == "Succeeded"
            and status_of(core, namespace).get("lastAppliedRevision") == revision
        ),
        60,
    )

    shown = subprocess.run(
        [
            str(GITSYNC),
            "history",
            "--env",
            "staging",
            "-n",
            namespace,
            "--kubeconfig",
            str(kubelab.kubeconfig),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    [record] = json.loads(shown.stdout)
    releases = record["releases"]
    assert [r["revision"] for r in releases] == [revision, first]
    assert releases[0]["author"] == "Ada Lovelace <ada@example.com>"
    assert releases[0]["message"] == "Say second"
    assert releases[0]["configured"] >= 1 and releases[1]["created"] == 4
    assert "SyncSucceeded" in {reason for reason, _ in event_reasons(core, namespace)}
    assert agent.metric("gitsync_reconcile_duration_seconds_count") >= 2
    assert agent.metric("gitsync_last_successful_sync_timestamp_seconds") > 0


def test_signed_webhook_deploys_at_once_and_a_bad_signature_changes_nothing(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    agent = agents.start(pollInterval="10m")
    wait_for("the first commit live", lambda: configmap_value(core, namespace) == "Hello from staging", 60)

    forged = upstream.set_message("forged")
    assert agent.push_webhook(forged, secret=b"wrong") == 401
    assert agent.webhook(b'{"ref": "refs/heads/main"}', secret=b"") == 401
    time.sleep(2)
    assert configmap_value(core, namespace) == "Hello from staging", "a refused webhook triggers nothing"

    revision = upstream.set_message("via webhook")
    assert agent.push_webhook(revision) == 202
    # The poll is 10 minutes away: the commit is live well before it only because the webhook triggered it.
    wait_for("the webhook's commit live", lambda: configmap_value(core, namespace) == "via webhook", 60, 0.05)
    assert agent.webhook(json.dumps({"ref": "refs/heads/other", "after": revision}).encode()) == 202
    assert agent.metric('gitsync_webhook_requests_total{provider="github",result="unauthorized"}') == 2


def test_an_empty_signed_generic_webhook_looks_at_the_branch_now(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    secret = agents.root / "secret"
    agent = agents.start(pollInterval="10m", webhooks={"generic": {"secretFile": str(secret)}})
    wait_for("the first commit live", lambda: configmap_value(core, namespace) == "Hello from staging", 60)

    revision = upstream.set_message("via an empty webhook")
    assert agent.webhook(b"", provider="generic") == 202
    wait_for("the pushed commit live", lambda: configmap_value(core, namespace) == "via an empty webhook", 60)
    settled(core, namespace, revision)


def test_broken_template_keeps_the_previous_release_until_a_fix(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    agent = agents.start(pollInterval="1s")
    wait_for("the first commit live", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
    good = settled(core, namespace)["lastAppliedRevision"]

    template = upstream.work / "apps/podinfo/templates/configmap.yaml"
    original = template.read_text()
    broken = upstream.commit(
        "Break the template",
        {"apps/podinfo/templates/configmap.yaml": original.replace("values.config", "values.no_such_key")},
    )
    status = wait_for(
        "the render error in status",
        lambda: (s := status_of(core, namespace)).get("lastAttemptedRevision") == broken and s.get("lastError") and s,
        60,
    )
    assert status["result"] == "RenderError"
    assert "apps/podinfo/templates/configmap.yaml:" in status["lastError"]
    assert status["lastAppliedRevision"] == good
    assert configmap_value(core, namespace) == "Hello from staging", "the previous release keeps running"
    wait_for("a RenderFailed event", lambda: any(r == "RenderFailed" for r, _ in event_reasons(core, namespace)), 60)
    wait_for(
        "the failure logged", lambda: [r for r in agent.logs("reconcile.failed") if r.get("revision") == broken], 60
    )
    time.sleep(2.5)  # two more polls (1 s) that must not retry the parked revision
    assert len([r for r in agent.logs("reconcile.failed") if r.get("revision") == broken]) == 1, "parked, no retries"

    upstream.commit("Fix the template", {"apps/podinfo/templates/configmap.yaml": original})
    newest = upstream.set_message("fixed")
    wait_for("the fix live", lambda: configmap_value(core, namespace) == "fixed", 60)
    final = settled(core, namespace, newest)
    assert final["lastError"] == ""


def test_kill_9_mid_sync_then_restart_converges(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    many = "".join(
        f'---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-{n}\ndata:\n  n: "{n}"\n' for n in range(40)
    )
    upstream.commit("Forty more objects", {"apps/podinfo/templates/extra.yaml": many})
    first = agents.start("first", pollInterval="1s")
    wait_for(
        "the sync to start",
        lambda: core.list_namespaced_config_map(namespace, label_selector="gitsync.dev/app=podinfo").items,
        60,
        0.01,
    )
    first.kill(signal.SIGKILL)

    agents.start("second", pollInterval="1s")
    wanted = {f"extra-{n}" for n in range(40)} | {"podinfo"}
    wait_for(
        "every object present",
        lambda: wanted <= {c.metadata.name for c in core.list_namespaced_config_map(namespace).items},
        60,
    )
    wait_for("status Succeeded", lambda: status_of(core, namespace).get("result") == "Succeeded", 60)
    inventory = json.loads(
        core.read_namespaced_config_map("gitsync.podinfo.staging.inventory", namespace).data["inventory.json"]
    )
    objects = inventory["objects"]
    assert len(objects) == len(set(objects)), "no object twice in the inventory"
    assert {f"ConfigMap/{namespace}/{name}" for name in wanted} <= set(objects), "none missing from the inventory"
    managed = core.list_namespaced_config_map(namespace, label_selector="gitsync.dev/app=podinfo").items
    assert sorted(c.metadata.name for c in managed if c.metadata.name.startswith("extra-")) == sorted(
        f"extra-{n}" for n in range(40)
    )


def test_two_agents_with_leader_election_only_one_acts_and_the_other_takes_over(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient
) -> None:
    # The Lease lives in the environment's namespace here, which makes it the agent's own: the operator allows it.
    # 9 s: the leader steps down when it could not renew for 2/3 of it, and a 2 s renew deadline (a 3 s Lease) is
    # what a loaded machine's API server can miss, handing the follower a sync while "only the leader applies".
    election = {"enabled": True, "namespace": namespace, "leaseDuration": "9s", "renewInterval": "1s"}
    allow = {"allowProtectedNamespaces": [namespace]}
    a = agents.start("a", pollInterval="1s", leaderElection={**election, "identity": "agent-a"}, **allow)
    b = agents.start("b", pollInterval="1s", leaderElection={**election, "identity": "agent-b"}, **allow)
    wait_for("the first commit live", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
    lease = client.CoordinationV1Api(kube_api).read_namespaced_lease("gitsync-leader", namespace)
    leader, follower = (a, b) if lease.spec.holder_identity == "agent-a" else (b, a)
    upstream.set_message("while both run")
    wait_for("second commit live", lambda: configmap_value(core, namespace) == "while both run", 60)
    assert leader.logs("sync.applied") and not follower.logs("sync.applied"), "only the leader applies"
    assert follower.get("/readyz")[0] == 200 and "follower" in follower.get("/readyz")[1]

    leader.kill(signal.SIGKILL)
    upstream.set_message("after failover")
    wait_for("the follower to take over and deploy", lambda: configmap_value(core, namespace) == "after failover", 60)
    # The ConfigMap is live as soon as it is applied; the sync.applied line follows once the rest of that sync
    # (the other objects, the inventory write) is done, so wait for it rather than read the log at once.
    wait_for("the follower's sync.applied line", lambda: follower.logs("sync.applied"), 60)
    lease = client.CoordinationV1Api(kube_api).read_namespaced_lease("gitsync-leader", namespace)
    assert lease.spec.holder_identity == f"agent-{follower.name}"


def test_a_burst_of_100_webhooks_gives_a_few_reconciles_and_the_newest_commit(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    agent = agents.start(pollInterval="10m")
    wait_for("the first commit live", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
    wait_for("settled", lambda: status_of(core, namespace).get("result") == "Succeeded", 60)
    before = agent.metric("gitsync_syncs_total")
    revisions = [upstream.set_message(f"burst {n}", push=False) for n in range(100)]
    upstream.push()
    # 16 senders at once, each opening its next connection as soon as it has read a reply: with 16 connections per
    # address the server refused one on a loaded machine (a slot is freed only once the close is seen); it allows 32.
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(agent.push_webhook, revisions))
    assert codes == [202] * 100
    wait_for("the newest commit live", lambda: configmap_value(core, namespace) == "burst 99", 60)
    wait_for("settled", lambda: status_of(core, namespace).get("result") == "Succeeded", 60)
    time.sleep(1)
    reconciles = agent.metric("gitsync_syncs_total") - before
    assert 1 <= reconciles <= 5, f"{reconciles} reconciles for 100 webhooks"
    assert status_of(core, namespace)["lastAppliedRevision"] == revisions[-1]


def test_an_edit_behind_gitsyncs_back_is_reverted_within_seconds_and_reported(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api
) -> None:
    agents.start(pollInterval="10m", driftInterval="10m")
    wait_for("the first commit live", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
    settled(core, namespace)
    core.patch_namespaced_config_map("podinfo", namespace, {"data": {"PODINFO_UI_MESSAGE": "edited by hand"}})
    # Self-heal reacts to the watch: the drift timer and the poll are 10 minutes away.
    wait_for("the edit reverted", lambda: configmap_value(core, namespace) == "Hello from staging", 60, 0.05)
    wait_for("a DriftDetected event", lambda: any(r == "DriftDetected" for r, _ in event_reasons(core, namespace)), 60)


def test_sigterm_hands_the_lease_over_at_once(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient
) -> None:
    # A Lease that would expire only after 10 minutes: taken within the 60 s ceiling means it was released.
    election = {"enabled": True, "namespace": namespace, "leaseDuration": "10m", "renewInterval": "1s"}
    allow = {"allowProtectedNamespaces": [namespace]}  # the Lease's namespace is the agent's own (see above)
    first = agents.start("first", leaderElection={**election, "identity": "first"}, **allow)
    wait_for("the first commit live", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
    second = agents.start("second", leaderElection={**election, "identity": "second"}, **allow)
    leases = client.CoordinationV1Api(kube_api)
    assert leases.read_namespaced_lease("gitsync-leader", namespace).spec.holder_identity == "first"
    first.kill(signal.SIGTERM)
    wait_for(
        "the second replica to lead",
        lambda: leases.read_namespaced_lease("gitsync-leader", namespace).spec.holder_identity == "second",
        60,
    )
    upstream.set_message("from the new leader")
    wait_for("a commit live via the new leader", lambda: configmap_value(core, namespace) == "from the new leader", 60)
    # sync.applied follows the ConfigMap being live (the rest of that sync first): wait for it, as above.
    wait_for("the new leader's sync.applied line", lambda: second.logs("sync.applied"), 60)


def test_unsigned_head_is_refused_and_the_last_signed_release_keeps_running(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, tmp_path: Path
) -> None:
    key = tmp_path / "signing_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"ada@example.com {key.with_suffix('.pub').read_text()}")
    signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "-c", "commit.gpgsign=true"]
    signed = upstream.commit("Signed release", sign_with=signing)
    repo = {"url": upstream.url, "branch": "main", "verify": {"allowedSignersFile": str(signers)}}
    agents.start(pollInterval="1s", repo=repo)
    settled(core, namespace, signed)

    unsigned = upstream.set_message("unsigned change")
    status = wait_for(
        "the refusal in status",
        lambda: (s := status_of(core, namespace)).get("lastAttemptedRevision") == unsigned and s,
        60,
    )
    assert status["result"] == "Refused" and "signature not verified" in status["lastError"]
    assert status["lastAppliedRevision"] == signed
    assert configmap_value(core, namespace) == "Hello from staging"
    wait_for(
        "a SignatureRefused event", lambda: any(r == "SignatureRefused" for r, _ in event_reasons(core, namespace)), 60
    )

    values = upstream.work / "environments/staging/values/podinfo.yaml"
    values.write_text(values.read_text().replace("unsigned change", "signed again"))
    upstream.commit("Signed fix", sign_with=signing)
    wait_for("the signed commit live", lambda: configmap_value(core, namespace) == "signed again", 60)


def test_canary_advances_by_requeues_and_a_crashlooping_release_is_rolled_back(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient
) -> None:
    canary = {
        "analysis": {"interval": "1s", "checks": [{"name": "pods", "type": "podHealth", "maxRestarts": 0}]},
        "canary": {"steps": [{"setWeight": 50}, {"pause": {"duration": "1s"}}, {"analysis": {"checks": ["pods"]}}]},
    }
    upstream.set_rollout("canary", **canary)
    first = upstream.commit("Canary policy")
    agent = agents.start(pollInterval="1s")
    settled(core, namespace, first, timeout=60)

    def release(tag: str, labels: dict[str, str]) -> str:
        path = upstream.work / "environments/staging/values/podinfo.yaml"
        values = yaml.safe_load(path.read_text())
        values["image"]["tag"], values["podLabels"] = tag, labels
        path.write_text(yaml.safe_dump(values))
        return upstream.commit(f"podinfo {tag}")

    apps = client.AppsV1Api(kube_api)
    good = release("6.7.2", {})
    wait_for("the canary Deployment", lambda: _exists(apps, "podinfo-canary", namespace), 60, 0.05)
    # The reconcile that starts the canary records the release as Progressing when it ends.
    wait_for("the release Progressing", lambda: status_of(core, namespace).get("result") == "Progressing", 60, 0.05)
    settled(core, namespace, good, timeout=60)
    image = apps.read_namespaced_deployment("podinfo", namespace).spec.template.spec.containers[0].image
    assert image.endswith(":6.7.2"), "the stable Deployment runs the promoted version"
    assert not agent.logs("reconcile.crashed")

    bad = release("6.8.0", {"gitsync.dev/fault": "crashloop"})
    status = wait_for(
        "the bad release rolled back",
        lambda: (
            (s := status_of(core, namespace)).get("result") == "RolledBack"
            and s.get("lastAttemptedRevision") == bad
            and s
        ),
        60,
    )
    assert status["lastError"], "the abort reason is in the status"
    assert status["syncState"] == "OutOfSync", "the bad revision is not what runs"
    image = apps.read_namespaced_deployment("podinfo", namespace).spec.template.spec.containers[0].image
    assert image.endswith(":6.7.2"), "the stable version keeps serving"


def _exists(apps: client.AppsV1Api, name: str, namespace: str) -> bool:
    try:
        apps.read_namespaced_deployment(name, namespace)
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def _managed(kube_api: client.ApiClient, namespace: str, app: str) -> dict[str, str]:
    """The app's objects in ``namespace`` (its state ConfigMaps aside), ``Kind/name`` to uid."""
    core, apps = client.CoreV1Api(kube_api), client.AppsV1Api(kube_api)
    selector = f"gitsync.dev/app={app},!gitsync.dev/state"
    listed = [
        ("ConfigMap", core.list_namespaced_config_map(namespace, label_selector=selector).items),
        ("Service", core.list_namespaced_service(namespace, label_selector=selector).items),
        ("ServiceAccount", core.list_namespaced_service_account(namespace, label_selector=selector).items),
        ("Deployment", apps.list_namespaced_deployment(namespace, label_selector=selector).items),
    ]
    return {f"{kind}/{o.metadata.name}": o.metadata.uid for kind, items in listed for o in items}


def _state_parts(core: client.CoreV1Api, namespace: str, app: str) -> set[str]:
    listed = core.list_namespaced_config_map(namespace, label_selector=f"gitsync.dev/app={app},gitsync.dev/state")
    return {c.metadata.labels["gitsync.dev/state"] for c in listed.items}


def _both_apps_synced(agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api) -> Any:
    upstream.add_app("podtwo")
    agent = agents.start(pollInterval="1s")
    for app in ("podinfo", "podtwo"):
        wait_for(f"{app} synced", lambda app=app: status_of(core, namespace, app).get("result") == "Succeeded", 60)
    return agent


def test_an_app_removed_from_its_environment_is_pruned_and_the_other_left_alone(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient, kubelab: Any
) -> None:
    agent = _both_apps_synced(agents, upstream, namespace, core)
    kept, removed = _managed(kube_api, namespace, "podinfo"), _managed(kube_api, namespace, "podtwo")
    assert len(removed) == 4 and "Deployment/podtwo" in removed
    protected = {"metadata": {"annotations": {"gitsync.dev/prune": "false"}}}
    core.patch_namespaced_config_map("podtwo", namespace, protected)

    time.sleep(1)  # the audit shows whole seconds: "what ran at T" below asks at the release's second
    revision = upstream.set_environment("Remove podtwo from staging", apps=["podinfo"])
    wait_for(  # by the 1 s poll (the default is 60 s, twice this ceiling)
        "podtwo's objects gone but the protected one",
        lambda: _managed(kube_api, namespace, "podtwo") == {"ConfigMap/podtwo": removed["ConfigMap/podtwo"]},
        30,
    )
    wait_for("podtwo's state dropped", lambda: _state_parts(core, namespace, "podtwo") == {"history", "status"}, 60)
    assert _managed(kube_api, namespace, "podinfo") == kept, "the other app is untouched"
    assert status_of(core, namespace, "podinfo")["result"] == "Succeeded"

    kubeconfig = ("--kubeconfig", str(kubelab.kubeconfig))
    shown = subprocess.run(
        [str(GITSYNC), "history", "--env", "staging", "--app", "podtwo", "-n", namespace, *kubeconfig, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    [record] = json.loads(shown.stdout)
    newest = record["releases"][0]
    assert (newest["result"], newest["revision"], newest["deleted"]) == ("Removed", revision, 3)
    assert newest["message"] == "Remove podtwo from staging"
    assert record["status"]["result"] == "Removed"
    assert record["releases"][1]["result"] == "Succeeded", "what ran before is still readable"
    [message] = wait_for(
        "an AppRemoved event", lambda: [m for r, m in event_reasons(core, namespace) if r == "AppRemoved"], 60
    )
    assert "3 objects deleted, 1 kept" in message
    [line] = agent.logs("app.removed")
    assert (line["app"], line["env"], line["deleted"], line["kept"]) == ("podtwo", "staging", 3, 1)

    # The ledger says so once, and "what ran at T" lists podtwo before the removal and not after it.
    audit = [str(GITSYNC), "audit", "--repo", str(upstream.work), "-o", "json"]
    rows = json.loads(subprocess.run(audit, capture_output=True, text=True, timeout=60, check=True).stdout)
    [gone] = [r for r in rows if r["app"] == "podtwo" and r["outcome"] == "Removed"]
    [ran] = [r for r in rows if r["app"] == "podtwo" and r["outcome"] == "Succeeded"]
    assert (gone["commit"], gone["removalCommit"]) == (ran["commit"], revision), "ends the release that ran"
    assert gone["evidence"] == f"Removed at {revision[:12]} (Remove podtwo from staging)"

    def running(at: str) -> list[str]:
        shown = subprocess.run([*audit, "--at", at], capture_output=True, text=True, timeout=60, check=True)
        return sorted(r["app"] for r in json.loads(shown.stdout))

    assert running(ran["time"]) == ["podinfo", "podtwo"] and running(gone["time"]) == ["podinfo"]


def test_with_prune_off_a_removed_app_is_reported_and_nothing_is_deleted(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient
) -> None:
    agent = _both_apps_synced(agents, upstream, namespace, core)
    before = {app: _managed(kube_api, namespace, app) for app in ("podinfo", "podtwo")}

    upstream.set_environment("Remove podtwo from staging, pruning off", apps=["podinfo"], prune=False)
    status = wait_for(
        "podtwo reported orphaned",
        lambda: (s := status_of(core, namespace, "podtwo")).get("result") == "Orphaned" and s,
        60,
    )
    assert "pruning is off" in status["lastError"] and status["syncState"] == "OutOfSync"
    wait_for("app.orphaned logged", lambda: agent.logs("app.orphaned"), 60)  # written just after the status
    time.sleep(2)
    assert {app: _managed(kube_api, namespace, app) for app in ("podinfo", "podtwo")} == before, "nothing deleted"
    assert "inventory" in _state_parts(core, namespace, "podtwo")
    assert not agent.logs("app.removed")


def test_apps_emptied_in_env_yaml_removes_nothing_unless_prune_allow_empty(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient
) -> None:
    agent = _both_apps_synced(agents, upstream, namespace, core)
    before = {app: _managed(kube_api, namespace, app) for app in ("podinfo", "podtwo")}

    upstream.set_environment("List no apps in staging", apps=[])
    for app in ("podinfo", "podtwo"):
        status = wait_for(
            f"{app} reported orphaned",
            lambda app=app: (s := status_of(core, namespace, app)).get("result") == "Orphaned" and s,
            60,
        )
        assert status["lastError"] == (
            f"{app} is no longer listed in environments/staging/env.yaml and the file lists no apps "
            f"(set pruneAllowEmpty: true to remove them all): its {len(before[app])} objects stay in the cluster, "
            "no longer managed"
        )
    [line] = agent.logs("environment.empty")[:1]
    assert (line["env"], line["kept"]) == ("staging", 2)
    time.sleep(2)
    assert {app: _managed(kube_api, namespace, app) for app in ("podinfo", "podtwo")} == before, "nothing deleted"
    assert not agent.logs("app.removed")

    upstream.set_environment("Empty staging on purpose", apps=[], pruneAllowEmpty=True)
    for app in ("podinfo", "podtwo"):
        wait_for(f"{app} pruned", lambda app=app: not _managed(kube_api, namespace, app), 60)
        # The status is written last, just after the prune.
        wait_for(f"{app} Removed", lambda app=app: status_of(core, namespace, app).get("result") == "Removed", 60)


def test_an_app_removed_mid_canary_takes_its_canary_deployment_with_it(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient
) -> None:
    upstream.set_rollout("canary", canary={"steps": [{"setWeight": 50}, {"pause": {}}]})
    _both_apps_synced(agents, upstream, namespace, core)
    kept = _managed(kube_api, namespace, "podinfo")
    path = upstream.work / "environments/staging/values/podtwo.yaml"
    values = yaml.safe_load(path.read_text())
    values["image"]["tag"] = "6.7.2"
    upstream.commit("podtwo 6.7.2", {str(path.relative_to(upstream.work)): yaml.safe_dump(values)})
    wait_for("podtwo paused mid-canary", lambda: status_of(core, namespace, "podtwo").get("result") == "Paused", 60)
    assert "Deployment/podtwo-canary" in _managed(kube_api, namespace, "podtwo")

    upstream.set_environment("Remove podtwo from staging", apps=["podinfo"])
    wait_for("podtwo and its canary gone", lambda: not _managed(kube_api, namespace, "podtwo"), 60)
    assert not _exists(client.AppsV1Api(kube_api), "podtwo-canary", namespace)
    assert _managed(kube_api, namespace, "podinfo") == kept, "the other app is untouched"
    # Dropped after the removal is recorded (its ledger line pushed first), a moment after the objects went.
    wait_for("the rollout state dropped", lambda: _state_parts(core, namespace, "podtwo") == {"history", "status"}, 60)


def _canary_settled(agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api) -> Any:
    """An agent running podinfo under a canary policy (50%, then a pause for a human), its first release settled."""
    upstream.set_rollout("canary", canary={"steps": [{"setWeight": 50}, {"pause": {}}]})
    first = upstream.commit("Canary policy")
    agent = agents.start(pollInterval="1s")
    settled(core, namespace, first, timeout=60)
    return agent


def test_a_commit_that_drops_the_canary_mid_rollout_rolls_the_app_and_removes_the_canary(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient
) -> None:
    agent = _canary_settled(agents, upstream, namespace, core)
    path = upstream.work / "environments/staging/values/podinfo.yaml"
    values = yaml.safe_load(path.read_text())
    values["image"]["tag"] = "6.7.2"
    path.write_text(yaml.safe_dump(values))
    upstream.commit("podinfo 6.7.2")
    wait_for("paused mid-canary", lambda: status_of(core, namespace).get("result") == "Paused", 60)
    apps = client.AppsV1Api(kube_api)
    assert _exists(apps, "podinfo-canary", namespace)

    upstream.set_rollout("rolling")
    dropped = upstream.commit("podinfo: plain rolling updates")
    settled(core, namespace, dropped, timeout=60)
    assert not _exists(apps, "podinfo-canary", namespace), "the canary stayed behind"
    stable = apps.read_namespaced_deployment("podinfo", namespace)
    assert stable.spec.template.spec.containers[0].image.endswith(":6.7.2")
    assert stable.spec.replicas == values["replicas"], "the stable got back what the canary had taken"
    assert not agent.logs("reconcile.crashed")


def test_a_commit_that_only_changes_canary_to_blue_green_hands_over_at_once(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient
) -> None:
    agent = _canary_settled(agents, upstream, namespace, core)
    apps = client.AppsV1Api(kube_api)

    upstream.set_rollout("blueGreen", blueGreen={"scaleDownDelaySeconds": 1})
    switched = upstream.commit("podinfo: blue-green, same template")
    wait_for("the blue colour serving", lambda: _selected_colour(core, namespace) == "blue", 60)
    settled(core, namespace, switched, timeout=60)
    assert _exists(apps, "podinfo-blue", namespace)
    assert apps.read_namespaced_deployment("podinfo-blue", namespace).status.ready_replicas == 2
    assert not _exists(apps, "podinfo-canary", namespace)
    assert not agent.logs("reconcile.crashed")


def _selected_colour(core: client.CoreV1Api, namespace: str) -> str:
    return str(core.read_namespaced_service("podinfo", namespace).spec.selector.get("gitsync.dev/color", ""))


def test_blue_green_dropped_gives_the_service_back_to_the_rendered_deployment_and_removes_the_colours(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient
) -> None:
    upstream.set_rollout("blueGreen", blueGreen={"scaleDownDelaySeconds": 1})
    first = upstream.commit("Blue-green policy")
    agent = agents.start(pollInterval="1s")
    settled(core, namespace, first, timeout=60)
    apps = client.AppsV1Api(kube_api)
    assert _exists(apps, "podinfo-blue", namespace)
    assert core.read_namespaced_service("podinfo", namespace).spec.selector.get("gitsync.dev/color") == "blue"

    upstream.set_rollout("rolling")
    dropped = upstream.commit("podinfo: plain rolling updates")
    settled(core, namespace, dropped, timeout=60)
    assert not _exists(apps, "podinfo-blue", namespace) and not _exists(apps, "podinfo-green", namespace)
    assert apps.read_namespaced_deployment("podinfo", namespace).status.ready_replicas == 2
    selector = core.read_namespaced_service("podinfo", namespace).spec.selector
    assert "gitsync.dev/color" not in selector, "the Service still selects a deleted colour"
    assert "Service/podinfo-preview" not in _managed(kube_api, namespace, "podinfo"), "preview left the render"
    assert not agent.logs("reconcile.crashed")
