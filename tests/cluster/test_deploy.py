"""deploy/manifests installs with one kubectl apply, and the agent runs within its ServiceAccount's grant.

The agent process runs here (no container engine), but with exactly the pod's identity: a token minted for the
``gitsync`` ServiceAccount by the TokenRequest API, the shipped agent.yaml, and the downward-API variables.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from agentlab import AgentProcess, Upstream, configmap_value, free_port, service_account_token, settled, wait_for

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "manifests"


def kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def installed(kubelab: Any) -> Iterator[None]:
    kubectl(kubelab.kubeconfig, "apply", "-f", str(MANIFESTS))
    yield
    kubectl(kubelab.kubeconfig, "delete", "-f", str(MANIFESTS), "--wait=false", "--ignore-not-found")


def token_kubeconfig(kubelab: Any, kube_api: client.ApiClient, path: Path) -> Path:
    """A kubeconfig holding a fresh token for gitsync-system/gitsync (what the pod would mount)."""
    token = service_account_token(kube_api, "gitsync", "gitsync-system")
    admin = yaml.safe_load(kubelab.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kubelab", "cluster": cluster}],
                "users": [{"name": "gitsync", "user": {"token": token}}],
                "contexts": [{"name": "gitsync", "context": {"cluster": "kubelab", "user": "gitsync"}}],
                "current-context": "gitsync",
            }
        )
    )
    return path


def test_installed_agent_syncs_example_repo_and_nothing_outside_its_grant(
    installed: None, kubelab: Any, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    apps = client.AppsV1Api(kube_api)
    deployment = apps.read_namespaced_deployment("gitsync", "gitsync-system")
    pod = deployment.spec.template.spec
    assert deployment.spec.replicas == 2
    assert pod.containers[0].security_context.read_only_root_filesystem is True
    assert pod.security_context.run_as_non_root is True

    kubeconfig = token_kubeconfig(kubelab, kube_api, tmp_path / "sa.kubeconfig")
    shipped = yaml.safe_load(
        client.CoreV1Api(kube_api).read_namespaced_config_map("gitsync-config", "gitsync-system").data["agent.yaml"]
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
            "POD_NAMESPACE": "gitsync-system",
        },
    )
    try:
        agent.start()
        wait_for("example-repo synced", lambda: configmap_value(client.CoreV1Api(kube_api), namespace), 30)
        settled(client.CoreV1Api(kube_api), namespace)
        lease = client.CoordinationV1Api(kube_api).read_namespaced_lease("gitsync-leader", "gitsync-system")
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
