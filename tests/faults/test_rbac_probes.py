"""The default install is not a path to cluster-admin: every escalation path is refused to the agent's own token.

deploy/manifests is applied to kubelab as a platform team would, the test's namespace is bound as an environment
namespace (05-environment.yaml), and a token is minted for the ``gitsync`` ServiceAccount (TokenRequest). With
that token: SelfSubjectAccessReviews (what ``kubectl auth can-i`` asks) and server-side dry-runs of each way to
gain more power are refused, and what the agent needs is allowed. (tests/cluster/test_deploy.py runs the agent
with such a token and syncs example-repo.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deploylab import Install, bind_environment, kubectl, token_kubeconfig
from kubernetes import client, config

pytestmark = pytest.mark.cluster

ENV_NS = "{env}"  # the test's namespace, bound like an environment namespace
OWN_NS = "{own}"  # the agent's namespace (gitsync-system, with the install's suffix)
ROLE = "{role}"  # its ClusterRole (gitsync-agent, with the install's suffix)
PROTECTED = ("kube-system", "kube-public", "kube-node-lease", OWN_NS)


@dataclass(frozen=True, slots=True)
class Probe:
    verb: str
    resource: str
    namespace: str
    group: str = ""
    subresource: str = ""
    name: str = ""


DENIED = [
    *(Probe("create", "deployments", ns, "apps") for ns in PROTECTED),
    *(Probe("create", "pods", ns) for ns in PROTECTED),
    *(Probe("patch", "configmaps", ns) for ns in PROTECTED),
    *(Probe("create", "serviceaccounts", ns) for ns in PROTECTED),
    Probe("patch", "configmaps", OWN_NS, name="gitsync-config"),  # its own configuration
    Probe("patch", "deployments", OWN_NS, "apps", name="gitsync"),  # its own image
    Probe("create", "rolebindings", ENV_NS, "rbac.authorization.k8s.io"),
    Probe("create", "roles", ENV_NS, "rbac.authorization.k8s.io"),
    Probe("create", "clusterrolebindings", "", "rbac.authorization.k8s.io"),
    Probe("bind", "clusterroles", "", "rbac.authorization.k8s.io", name="cluster-admin"),
    Probe("escalate", "clusterroles", "", "rbac.authorization.k8s.io"),
    Probe("escalate", "roles", ENV_NS, "rbac.authorization.k8s.io"),
    Probe("update", "clusterroles", "", "rbac.authorization.k8s.io", name=ROLE),
    Probe("impersonate", "users", ""),
    Probe("impersonate", "groups", ""),
    Probe("impersonate", "serviceaccounts", "kube-system"),
    Probe("create", "serviceaccounts", "kube-system", subresource="token"),
    Probe("create", "serviceaccounts", ENV_NS, subresource="token"),
    Probe("get", "secrets", ENV_NS),
    Probe("list", "secrets", ""),
    Probe("create", "namespaces", ""),
    Probe("patch", "namespaces", "", name="kube-system"),
    Probe("create", "pods", ENV_NS),
    Probe("create", "pods", ENV_NS, subresource="exec"),
    Probe("create", "nodes", ""),
    Probe("create", "mutatingwebhookconfigurations", "", "admissionregistration.k8s.io"),
    Probe("create", "customresourcedefinitions", "", "apiextensions.k8s.io"),
    Probe("update", "leases", OWN_NS, "coordination.k8s.io", name="some-other-lease"),
]
ALLOWED = [  # what the agent needs
    Probe("patch", "deployments", ENV_NS, "apps"),
    Probe("create", "deployments", ENV_NS, "apps"),
    Probe("delete", "services", ENV_NS),
    Probe("patch", "configmaps", ENV_NS),
    Probe("watch", "pods", ENV_NS),
    Probe("create", "events", ENV_NS),
    Probe("update", "leases", OWN_NS, "coordination.k8s.io", name="gitsync-leader"),
    Probe("create", "leases", OWN_NS, "coordination.k8s.io"),
]


def _id(probe: Probe) -> str:
    resource = probe.resource + (f"/{probe.subresource}" if probe.subresource else "")
    where = probe.namespace.replace(ENV_NS, "env") or "cluster"
    return f"{probe.verb}-{resource}{'-' + probe.name if probe.name else ''}-in-{where}"


@pytest.fixture
def agent_api(
    installed: Install, kubelab: Any, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[Any]:
    """A client with the agent's token; ``.where`` fills ``{env}`` and ``{own}``, ``.kubeconfig`` is its file."""
    bind_environment(kubelab.kubeconfig, installed, namespace)
    kubeconfig = token_kubeconfig(kubelab, kube_api, installed, tmp_path / "sa.kubeconfig")
    with config.new_client_from_config(str(kubeconfig)) as api:
        api.kubeconfig = kubeconfig
        names = {ENV_NS: namespace, OWN_NS: installed.namespace, ROLE: installed.cluster_role}
        api.where = lambda text: names.get(text, text)
        yield api


def can_i(api: Any, probe: Probe) -> bool:
    attributes = {
        "verb": probe.verb,
        "group": probe.group,
        "resource": probe.resource,
        "subresource": probe.subresource,
        "namespace": api.where(probe.namespace),
        "name": api.where(probe.name),
    }
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}}
    review["spec"] = {"resourceAttributes": {k: v for k, v in attributes.items() if v}}
    answer = client.AuthorizationV1Api(api).create_self_subject_access_review(review)
    return bool(answer.status.allowed)


def test_every_escalation_path_is_refused_and_what_the_agent_needs_is_allowed(agent_api: Any) -> None:
    allowed = [_id(p) for p in DENIED if can_i(agent_api, p)]
    denied = [_id(p) for p in ALLOWED if not can_i(agent_api, p)]
    assert (allowed, denied) == ([], []), "allowed: escalation paths; denied: what the agent needs"


def test_kubectl_auth_can_i_list_shows_no_write_in_protected_namespaces(agent_api: Any) -> None:
    self_reviews = ("selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews")
    for ns in map(agent_api.where, PROTECTED):
        listing = kubectl(agent_api.kubeconfig, "auth", "can-i", "--list", "-n", ns)
        writes = [
            line
            for line in listing.splitlines()[1:]
            if {"create", "update", "patch", "delete", "*"} & set(re.findall(r"\[([^\]]*)\]", line)[-1].split())
            and not line.startswith(self_reviews)
            and not (ns == agent_api.where(OWN_NS) and line.startswith("leases."))  # its leader Lease: checked below
        ]
        assert writes == [], f"writes allowed in {ns}: {writes}"
    own = kubectl(agent_api.kubeconfig, "auth", "can-i", "--list", "-n", agent_api.where(OWN_NS))
    leases = sorted(re.findall(r"\[([^\]]*)\]", line)[1:] for line in own.splitlines() if line.startswith("leases."))
    assert leases == [["", "create"], ["gitsync-leader", "get update"]]


def _pod(namespace: str) -> dict[str, Any]:
    spec = {"serviceAccountName": "default", "containers": [{"name": "sh", "image": "busybox"}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "own", "namespace": namespace}, "spec": spec}


def _deployment(namespace: str) -> dict[str, Any]:
    pod = _pod(namespace)
    template = {"metadata": {"labels": {"a": "b"}}, "spec": pod["spec"]}
    spec = {"selector": {"matchLabels": {"a": "b"}}, "template": template}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "own"}, "spec": spec}


def _binding(kind: str, own: str, namespace: str = "") -> dict[str, Any]:
    meta = {"name": "own", **({"namespace": namespace} if namespace else {})}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "gitsync", "namespace": own}],
    }


_ALL = {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}
_CLUSTER_ROLE = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "rules": [_ALL]}
DRY = "All"
ATTEMPTS: list[tuple[str, Callable[[Any, str], Any]]] = [
    (
        "pod-in-kube-system",
        lambda api, env: client.CoreV1Api(api).create_namespaced_pod("kube-system", _pod("kube-system"), dry_run=DRY),
    ),
    (
        "deployment-in-kube-system",
        lambda api, env: client.AppsV1Api(api).create_namespaced_deployment(
            "kube-system", _deployment("kube-system"), dry_run=DRY
        ),
    ),
    (
        "rolebinding-to-cluster-admin",
        lambda api, env: client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(
            env, _binding("RoleBinding", api.where(OWN_NS), env), dry_run=DRY
        ),
    ),
    (
        "clusterrolebinding-to-cluster-admin",
        lambda api, env: client.RbacAuthorizationV1Api(api).create_cluster_role_binding(
            _binding("ClusterRoleBinding", api.where(OWN_NS)), dry_run=DRY
        ),
    ),
    (
        "escalate-own-clusterrole",
        lambda api, env: client.RbacAuthorizationV1Api(api).patch_cluster_role(
            api.where(ROLE), {"rules": [_ALL]}, dry_run=DRY
        ),
    ),
    (
        "create-clusterrole-with-everything",
        lambda api, env: client.RbacAuthorizationV1Api(api).create_cluster_role(
            {**_CLUSTER_ROLE, "metadata": {"name": "own"}}, dry_run=DRY
        ),
    ),
    (
        "token-for-a-kube-system-serviceaccount",
        lambda api, env: client.CoreV1Api(api).create_namespaced_service_account_token(
            "default", "kube-system", {"spec": {"expirationSeconds": 600}}, dry_run=DRY
        ),
    ),
    (
        "impersonate-system-admin",
        lambda api, env: client.CoreV1Api(impersonating(api, "system:admin")).list_namespaced_secret("kube-system"),
    ),
    (
        "rewrite-own-config",
        lambda api, env: client.CoreV1Api(api).patch_namespaced_config_map(
            "gitsync-config", api.where(OWN_NS), {"data": {"agent.yaml": "{}"}}, dry_run=DRY
        ),
    ),
    (
        "read-secrets-in-env",
        lambda api, env: client.CoreV1Api(api).list_namespaced_secret(env),
    ),
]


def impersonating(api: client.ApiClient, user: str) -> client.ApiClient:
    """A client with the agent's token that asks to act as ``user`` (``kubectl --as``)."""
    other = config.new_client_from_config(str(api.kubeconfig))
    other.set_default_header("Impersonate-User", user)
    return other


def test_server_side_dry_runs_of_each_escalation_path_are_forbidden(agent_api: Any, namespace: str) -> None:
    outcomes = {}
    for name, attempt in ATTEMPTS:
        try:
            attempt(agent_api, namespace)
            outcomes[name] = "accepted"
        except client.ApiException as e:
            outcomes[name] = str(e.status)
    assert outcomes == {name: "403" for name, _ in ATTEMPTS}
