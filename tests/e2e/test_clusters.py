"""Two clusters (two kubelabs): staging in cluster A, prod in cluster B, with one agent for both and with one agent
per cluster, from one repository whose prod ``env.yaml`` names its cluster; a cluster down for 30 s fails only its
own environment, says so in its status, and catches up when it is back."""

from __future__ import annotations

import base64
import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentlab import IDENTITY, Agents, Upstream, configmap_value, status_of, wait_for
from kubernetes import client, config
from relay import Relay

SOAK = 2.0


@pytest.fixture
def cluster_b(kubelab_b: Any) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(str(kubelab_b.kubeconfig))
    yield api
    api.close()


@pytest.fixture
def agent_namespace(namespace: str, core: client.CoreV1Api) -> Iterator[str]:
    """The agent's own namespace in cluster A (where it keeps its Leases and reads cluster B's Secret)."""
    name = f"{namespace}-agent"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def prod_in_b(prod_namespace: str, cluster_b: client.ApiClient) -> Iterator[str]:
    yield prod_namespace
    with contextlib.suppress(client.ApiException):
        client.CoreV1Api(cluster_b).delete_namespace(prod_namespace)


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env={**IDENTITY, "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, check=True, timeout=30)  # fmt: skip
    return done.stdout.strip()


def prod_on_cluster_b(upstream: Upstream, prod_namespace: str) -> None:
    """prod's env.yaml names its cluster by a kubeconfig Secret and takes staging's releases after a short soak."""
    path = upstream.work / "environments/prod/env.yaml"
    env = yaml.safe_load(path.read_text())
    env["namespace"] = prod_namespace
    env["cluster"] = {"kubeconfigSecret": "cluster-b/kubeconfig"}
    env["promotion"] = {"from": "staging", "mode": "auto", "soak": f"{SOAK:g}s", "values": ["image.tag"]}
    values_path = upstream.work / "environments/prod/values/podinfo.yaml"
    values = yaml.safe_load(values_path.read_text())
    values["rollout"] = {"strategy": "rolling"}  # one Deployment called podinfo, as in staging
    upstream.commit(
        "prod: in cluster B, promoted from staging",
        {
            "environments/prod/env.yaml": yaml.safe_dump(env),
            "environments/prod/values/podinfo.yaml": yaml.safe_dump(values),
        },
    )


def release(upstream: Upstream, tag: str) -> str:
    git(upstream.work, "pull", "-q", "--rebase", "origin", "main")  # the agent pushed promotion commits
    path = upstream.work / "environments/staging/values/podinfo.yaml"
    values = yaml.safe_load(path.read_text())
    values["image"]["tag"] = tag
    return upstream.commit(f"podinfo {tag}", {str(path.relative_to(upstream.work)): yaml.safe_dump(values)})


def image_of(api: client.ApiClient, namespace: str) -> str:
    try:
        deployment = client.AppsV1Api(api).read_namespaced_deployment("podinfo", namespace)
    except client.ApiException as e:
        if e.status == 404:
            return ""
        raise
    return str(deployment.spec.template.spec.containers[0].image).rpartition(":")[2]


def kubeconfig_secret(core: client.CoreV1Api, namespace: str, kubeconfig: Path, server: str) -> str:
    """Cluster B's admin kubeconfig, pointed at ``server``, as the Secret ``cluster-b``; its client key's data."""
    doc = yaml.safe_load(kubeconfig.read_text())
    doc["clusters"][0]["cluster"]["server"] = server
    data = base64.b64encode(yaml.safe_dump(doc).encode()).decode()
    core.create_namespaced_secret(namespace, {"metadata": {"name": "cluster-b"}, "data": {"kubeconfig": data}})
    user = doc["users"][0]["user"]
    return str(user.get("client-key-data") or user.get("token") or "")


def dashboard_grid(kubeconfig: Path) -> str:
    """The grid page of ``gitsync dashboard`` on the agent's cluster, as its server renders it."""
    from gitsync.adapters.kube import KubeCluster
    from gitsync.dashboard.read import Board
    from gitsync.dashboard.server import Pages, Site

    return Pages(Board(KubeCluster(kubeconfig)), Site(".", None, "local")).grid()


def test_one_agent_applies_staging_to_a_and_prod_to_b_and_a_cluster_down_degrades_only_its_env(
    agents: Agents, upstream: Upstream, namespace: str, prod_in_b: str, core: client.CoreV1Api,
    kube_api: client.ApiClient, cluster_b: client.ApiClient, kubelab: Any, kubelab_b: Any, agent_namespace: str,
) -> None:  # fmt: skip
    proxy = Relay(kubelab_b.server)
    proxy.start()
    credential = kubeconfig_secret(core, agent_namespace, kubelab_b.kubeconfig, f"https://127.0.0.1:{proxy.port}")
    prod_on_cluster_b(upstream, prod_in_b)
    agent = agents.start(environments=["staging", "prod"], leaderElection={"namespace": agent_namespace})
    b = client.CoreV1Api(cluster_b)
    try:
        wait_for("staging live in A", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
        wait_for("prod live in B", lambda: configmap_value(b, prod_in_b) == "Hello from production", 60)
        prod = wait_for(
            "prod settled", lambda: (s := status_of(core, prod_in_b, env="prod")).get("health") == "Healthy" and s, 60
        )
        assert prod["cluster"] == "cluster-b", "prod's status, kept in the agent's cluster, names prod's cluster"
        assert status_of(core, namespace)["cluster"] == ""
        assert configmap_value(core, prod_in_b) is None, "nothing of prod is applied to cluster A"
        grid = dashboard_grid(kubelab.kubeconfig)
        assert grid.count("on cluster cluster-b") == 1, "the dashboard names prod's cluster, and only prod's"

        # Cluster B goes away for 30 s: with Git unchanged, prod's status says so within seconds (its watches
        # broke; the drift timer is minutes away); staging keeps reconciling a new release, prod fails naming B.
        proxy.stop()
        down_at = time.monotonic()

        def prod_failed() -> str:
            status = status_of(core, prod_in_b, env="prod")
            return str(status.get("lastError", "")) if "cluster cluster-b at" in status.get("lastError", "") else ""

        error = wait_for("prod's status to name the cluster that is down, Git unchanged", prod_failed, 60)
        assert "cluster cluster-b at https://127.0.0.1:" in error
        assert status_of(core, namespace).get("lastError") == "", "staging, on cluster A, is not touched"
        release(upstream, "6.7.2")
        wait_for("staging on 6.7.2 while B is down", lambda: image_of(kube_api, namespace) == "6.7.2", 60)
        assert "cluster cluster-b at https://127.0.0.1:" in wait_for("prod still failing", prod_failed, 60)
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))
        assert image_of(kube_api, namespace) == "6.7.2"

        proxy.start()
        wait_for("prod on 6.7.2 once B is back", lambda: image_of(cluster_b, prod_in_b) == "6.7.2", 90)
        wait_for("prod's error cleared", lambda: status_of(core, prod_in_b, env="prod").get("lastError") == "", 60)
        notes = git(upstream.bare, "log", "--notes=gitsync", "--format=%N", "main")
        assert '"env":"prod"' in notes and '"outcome":"Failed"' not in notes, "an outage is retried, not a release"
    finally:
        proxy.stop()
    assert not agent.logs("reconcile.crashed")
    assert credential and credential not in agent.log_path.read_text(), "cluster B's credentials are never logged"


def test_one_agent_per_cluster_follows_the_same_repository_and_promotes_through_git(
    agents: Agents, upstream: Upstream, namespace: str, prod_in_b: str, core: client.CoreV1Api,
    cluster_b: client.ApiClient, kubelab_b: Any,
) -> None:  # fmt: skip
    prod_on_cluster_b(upstream, prod_in_b)
    agents.start("agent-a", environments=["staging"])
    agents.start(
        "agent-b",
        environments=["prod"],
        kubeconfig=str(kubelab_b.kubeconfig),
        clusters={"cluster-b": {"home": True}},  # the agent runs in cluster B: env.yaml's cluster is its own
    )
    b = client.CoreV1Api(cluster_b)
    wait_for("staging live in A", lambda: configmap_value(core, namespace) == "Hello from staging", 60)
    wait_for("prod live in B", lambda: configmap_value(b, prod_in_b) == "Hello from production", 60)
    assert configmap_value(core, prod_in_b) is None
    promoted = git(upstream.bare, "log", "main", "--format=%(trailers:key=Gitsync-Promoted-From,valueonly)")
    assert promoted.strip().startswith("staging@"), "prod's agent promoted from staging's ledger in Git"
    release(upstream, "6.7.2")
    wait_for("prod on 6.7.2, promoted by its own agent", lambda: image_of(cluster_b, prod_in_b) == "6.7.2", 60)
    assert status_of(b, prod_in_b, env="prod")["cluster"] == "cluster-b"
