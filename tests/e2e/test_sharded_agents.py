"""Sharding with three real ``gitsync run`` processes: the app-envs are spread over the replicas by shard Leases,
one replica killed with SIGKILL loses its shards to the others, and no app-env is ever reconciled by two at once
(asserted from the Lease holders and from every replica's log)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from agentlab import AgentProcess, Agents, Upstream, wait_for
from kubernetes import client

APPS = [f"cm{i}" for i in range(12)]
SHARDS = 3


def one_configmap_apps(upstream: Upstream, value: str) -> str:
    """``APPS`` as apps of one ConfigMap each, listed alone in staging; every ConfigMap says ``value``."""
    files = {"environments/staging/env.yaml": yaml.safe_dump({**staging_env(upstream), "apps": APPS})}
    for app in APPS:
        files[f"apps/{app}/chart.yaml"] = f"name: {app}\nversion: 0.1.0\n"
        files[f"apps/{app}/values.yaml"] = f"value: {value}\n"
        files[f"apps/{app}/templates/cm.yaml"] = (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ chart.name }}\ndata:\n  value: {{ values.value }}\n"
        )
    return upstream.commit(f"every app says {value}", files)


def staging_env(upstream: Upstream) -> dict[str, Any]:
    return dict(yaml.safe_load((upstream.work / "environments/staging/env.yaml").read_text()))


def values(core: client.CoreV1Api, namespace: str) -> dict[str, str]:
    found = core.list_namespaced_config_map(namespace, label_selector="gitsync.dev/env=staging").items
    return {cm.metadata.name: (cm.data or {}).get("value", "") for cm in found if cm.metadata.name in APPS}


def holders(kube_api: client.ApiClient, namespace: str) -> list[str]:
    leases = client.CoordinationV1Api(kube_api).list_namespaced_lease(namespace).items
    by_name = {lease.metadata.name: lease.spec.holder_identity or "" for lease in leases}
    return [by_name.get(f"gitsync-leader-shard-{i}", "") for i in range(SHARDS)]


def reconciles(agent: AgentProcess) -> list[tuple[str, float, float, str]]:
    """(app, started, finished, replica) of every reconcile the replica logged."""
    return [(r["app"], r["started_at"], r["finished_at"], agent.name) for r in agent.logs("reconcile.done")]


@pytest.fixture
def agent_namespace(namespace: str, core: client.CoreV1Api) -> Iterator[str]:
    name = f"{namespace}-agents"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def three_replicas(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient,
    agent_namespace: str, **overrides: Any,
) -> list[AgentProcess]:  # fmt: skip
    """Replicas a, b and c sharding ``APPS`` (all saying v1, live) over ``SHARDS`` shards, one each."""
    one_configmap_apps(upstream, "v1")
    election = {"namespace": agent_namespace, "leaseDuration": "6s", "renewInterval": "2s"}
    replicas = [
        agents.start(name, sharding={"shards": SHARDS}, leaderElection={**election, "identity": name}, **overrides)
        for name in ("a", "b", "c")
    ]
    wait_for("every app live", lambda: values(core, namespace) == dict.fromkeys(APPS, "v1"), 60)
    wait_for("one shard per replica", lambda: sorted(holders(kube_api, agent_namespace)) == ["a", "b", "c"], 60)
    return replicas


def test_three_replicas_share_the_app_envs_and_take_over_a_killed_ones_shards(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient,
    agent_namespace: str,
) -> None:  # fmt: skip
    replicas = three_replicas(agents, upstream, namespace, core, kube_api, agent_namespace)

    victim = next(r for r in replicas if r.name == holders(kube_api, agent_namespace)[0])
    victim.kill()  # SIGKILL: no Lease is released
    one_configmap_apps(upstream, "v2")
    wait_for("the killed replica's shard taken over", lambda: victim.name not in holders(kube_api, agent_namespace), 60)
    wait_for("every app live again", lambda: values(core, namespace) == dict.fromkeys(APPS, "v2"), 60)

    done = sorted(itertools.chain.from_iterable(reconciles(r) for r in replicas))
    by_replica = {r.name: {app for app, *_ in reconciles(r)} for r in replicas}
    assert all(by_replica.values()), f"every replica reconciled some app-envs: {by_replica}"
    for app, runs in itertools.groupby(done, key=lambda run: run[0]):
        spans = sorted(runs, key=lambda run: run[1])
        for (_, _, finished, first), (_, started, _, second) in itertools.pairwise(spans):
            assert first == second or started >= finished, f"{app}@staging reconciled by {first} and {second} at once"
    survivors = [r for r in replicas if r is not victim]
    assert not any(r.logs("reconcile.crashed") for r in survivors)


def test_a_webhook_to_one_replica_brings_every_shard_the_commit(
    agents: Agents, upstream: Upstream, namespace: str, core: client.CoreV1Api, kube_api: client.ApiClient,
    agent_namespace: str,
) -> None:  # fmt: skip
    """A Service delivers a webhook to one replica; polling every 10 minutes, the others would wait that long."""
    replicas = three_replicas(agents, upstream, namespace, core, kube_api, agent_namespace, pollInterval="10m")

    revision = one_configmap_apps(upstream, "v2")
    assert replicas[0].push_webhook(revision) == 202
    wait_for("every app live from one webhook", lambda: values(core, namespace) == dict.fromkeys(APPS, "v2"), 60)
    told = {r.name for r in replicas[1:] if r.logs("shard.push_announced")}
    assert told == {"b", "c"}, "the other replicas heard of the push through replica a's member Lease"
    assert not any(r.logs("reconcile.crashed") for r in replicas)
