"""deploy/manifests installs with one kubectl apply, and the agent runs within its ServiceAccount's grant.

The agent process runs here (no container engine), but with exactly the pod's identity: a token minted for the
``gitsync`` ServiceAccount by the TokenRequest API, the shipped agent.yaml, and the downward-API variables. The
test's namespace is bound as the platform team binds each environment namespace (05-environment.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploylab import Install, bind_environment, token_kubeconfig
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from agentlab import AgentProcess, Upstream, configmap_value, free_port, settled, wait_for


def test_installed_agent_syncs_example_repo_and_nothing_outside_its_grant(
    installed: Install, kubelab: Any, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    apps = client.AppsV1Api(kube_api)
    deployment = apps.read_namespaced_deployment("gitsync", installed.namespace)
    pod = deployment.spec.template.spec
    assert deployment.spec.replicas == 2
    assert pod.containers[0].security_context.read_only_root_filesystem is True
    assert pod.security_context.run_as_non_root is True

    bind_environment(kubelab.kubeconfig, installed, namespace)
    kubeconfig = token_kubeconfig(kubelab, kube_api, installed, tmp_path / "sa.kubeconfig")
    shipped = yaml.safe_load(
        client.CoreV1Api(kube_api).read_namespaced_config_map("gitsync-config", installed.namespace).data["agent.yaml"]
    )
    upstream = Upstream(tmp_path / "git", namespace)
    port = free_port()
    agent = AgentProcess(
        "deployed",
        tmp_path,
        {**shipped, "listen": f"127.0.0.1:{port}"},  # where the test reaches it; the override below agrees
        {
            "GITSYNC_REPO_URL": upstream.url,
            "GITSYNC_KUBECONFIG": str(kubeconfig),
            "GITSYNC_LISTEN": f"127.0.0.1:{port}",
            "GITSYNC_CACHE_DIR": str(tmp_path / "cache"),
            "GITSYNC_POLL_INTERVAL": "1s",
            "POD_NAME": "gitsync-test-pod",
            "POD_NAMESPACE": installed.namespace,
        },
    )
    try:
        agent.start()
        wait_for("example-repo synced", lambda: configmap_value(client.CoreV1Api(kube_api), namespace), 60)
        settled(client.CoreV1Api(kube_api), namespace)
        lease = client.CoordinationV1Api(kube_api).read_namespaced_lease("gitsync-leader", installed.namespace)
        assert lease.spec.holder_identity == "gitsync-test-pod"
        assert not agent.logs("event.failed"), "Events are within the grant"
    finally:
        agent.kill()

    as_agent = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    for where in ("default", "kube-system", namespace):
        with pytest.raises(client.ApiException) as denied:
            as_agent.list_namespaced_secret(where)
        assert denied.value.status == 403, f"reading Secrets in {where} must be forbidden"
    with pytest.raises(client.ApiException) as denied:
        client.RbacAuthorizationV1Api(as_agent.api_client).list_cluster_role()
    assert denied.value.status == 403
