"""kubelab behaves like the Kubernetes the agent will meet: rollouts, fault pods, SSA dry-run, CRDs and RBAC.

Every wait is a bounded poll; a timeout fails with the last state seen, so a failure says what got stuck.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

T = TypeVar("T")
APPLY = "application/apply-patch+yaml"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Polls `probe` until it returns something truthy and returns that."""
    deadline = time.monotonic() + timeout
    while True:
        seen = probe()
        if seen:
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def deployment(
    name: str,
    image: str = "registry.example/web:1.0",
    replicas: int = 3,
    fault: str | None = None,
    progress_deadline: int | None = None,
) -> dict[str, Any]:
    labels = {"app": name, **({"gitsync.dev/fault": fault} if fault else {})}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "web", "image": image}]}},
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def condition(obj: Any, kind: str) -> Any:
    return next((c for c in (obj.status.conditions or []) if c.type == kind), None)


def pods_of(core: client.CoreV1Api, namespace: str, app: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"app={app}").items)


def is_ready(pod: Any) -> bool:
    ready = condition(pod, "Ready")
    return ready is not None and ready.status == "True"


def test_version_reports_the_pinned_release(kube_api: client.ApiClient) -> None:
    assert client.VersionApi(kube_api).get_code().git_version == "v1.33.13"


def test_deployment_becomes_available_with_three_ready_pods(kube_api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("web"))

    def available() -> Any:
        dep = apps.read_namespaced_deployment("web", namespace)
        cond = condition(dep, "Available")
        return dep if cond is not None and cond.status == "True" and dep.status.ready_replicas == 3 else None

    wait_for("Deployment web Available with 3 ready replicas", available)
    pods = pods_of(core, namespace, "web")
    assert len(pods) == 3
    assert all(is_ready(pod) and pod.status.phase == "Running" for pod in pods)
    assert {pod.spec.node_name for pod in pods} <= {"kubelab-node-1", "kubelab-node-2"}


def test_image_update_rolls_out_and_old_pods_go_away(kube_api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("web"))
    wait_for("3 ready pods of web:1.0", lambda: sum(map(is_ready, pods_of(core, namespace, "web"))) == 3)

    apps.patch_namespaced_deployment(
        "web",
        namespace,
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "registry.example/web:2.0"}]}}}},
    )

    def rolled_out() -> bool:
        dep = apps.read_namespaced_deployment("web", namespace)
        status = dep.status
        done = status.observed_generation == dep.metadata.generation and status.updated_replicas == 3
        pods = pods_of(core, namespace, "web")
        images = {pod.spec.containers[0].image for pod in pods}
        return done and status.available_replicas == 3 and len(pods) == 3 and images == {"registry.example/web:2.0"}

    wait_for("web rolled out to 2.0 with the 1.0 pods gone", rolled_out, timeout=60)
    assert all(is_ready(pod) for pod in pods_of(core, namespace, "web"))


def test_crashloop_fault_ends_in_progress_deadline_exceeded(kube_api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("bad", replicas=2, fault="crashloop", progress_deadline=10))

    def deadline_exceeded() -> Any:
        cond = condition(apps.read_namespaced_deployment("bad", namespace), "Progressing")
        return cond if cond is not None and cond.reason == "ProgressDeadlineExceeded" else None

    cond = wait_for("Deployment bad to report ProgressDeadlineExceeded", deadline_exceeded, timeout=60)
    assert cond.status == "False"
    # By the API server's clock (whole seconds), not this process's: a loaded machine only makes it later.
    created = apps.read_namespaced_deployment("bad", namespace).metadata.creation_timestamp
    waited = (cond.last_transition_time - created).total_seconds()
    assert waited >= 10, f"the 10 s progress deadline reported {waited:.0f}s after the Deployment was created"
    pods = pods_of(core, namespace, "bad")
    assert len(pods) == 2
    for pod in pods:
        status = pod.status.container_statuses[0]
        assert pod.status.phase == "Running" and not is_ready(pod)
        assert status.state.waiting.reason == "CrashLoopBackOff" and status.restart_count > 0


def test_never_ready_fault_keeps_pods_running_but_unready(kube_api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(kube_api), client.CoreV1Api(kube_api)
    apps.create_namespaced_deployment(namespace, deployment("stuck", replicas=2, fault="never-ready"))
    wait_for(
        "2 Running pods of stuck",
        lambda: [p for p in pods_of(core, namespace, "stuck") if p.status.phase == "Running"][1:],
    )
    time.sleep(3)  # well past the ~1s a healthy pod needs
    pods = pods_of(core, namespace, "stuck")
    assert [p.status.phase for p in pods] == ["Running", "Running"]
    assert not any(map(is_ready, pods))
    assert not apps.read_namespaced_deployment("stuck", namespace).status.available_replicas


def test_slow_ready_fault_turns_ready_after_the_annotated_delay(kube_api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube_api)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "slow",
            "labels": {"gitsync.dev/fault": "slow-ready"},
            "annotations": {"gitsync.dev/ready-delay": "6s"},  # longer than the 5 s default: it is honoured
        },
        "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0"}]},
    }
    core.create_namespaced_pod(namespace, pod)
    ready = wait_for(
        "Pod slow Ready", lambda: is_ready(p := core.read_namespaced_pod("slow", namespace)) and p, timeout=60
    )
    # Running at startTime, Ready at its condition's transition: by the API server's clock (whole seconds), so a
    # loaded machine polling late cannot blur the delay between them.
    [ready_at] = [c.last_transition_time for c in ready.status.conditions if c.type == "Ready"]
    delay = (ready_at - ready.status.start_time).total_seconds()
    assert delay >= 6, f"Ready {delay:.0f}s after Running, the annotation said 6s"


def test_server_side_apply_dry_run_returns_defaults_and_persists_nothing(
    kube_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    result = apps.patch_namespaced_deployment(
        "dry",
        namespace,
        deployment("dry", replicas=1),
        field_manager="gitsync",
        dry_run="All",
        _content_type=APPLY,
    )
    assert result.spec.strategy.type == "RollingUpdate"
    assert result.spec.revision_history_limit == 10
    assert result.spec.progress_deadline_seconds == 600
    container = result.spec.template.spec.containers[0]
    assert (container.image_pull_policy, container.termination_message_path) == ("IfNotPresent", "/dev/termination-log")
    assert [entry.manager for entry in result.metadata.managed_fields] == ["gitsync"]
    with pytest.raises(ApiException) as missing:
        apps.read_namespaced_deployment("dry", namespace)
    assert missing.value.status == 404


def test_crd_becomes_established_and_a_custom_object_applies(kube_api: client.ApiClient, namespace: str) -> None:
    extensions, custom = client.ApiextensionsV1Api(kube_api), client.CustomObjectsApi(kube_api)
    group = f"t{secrets.token_hex(4)}.kubelab.gitsync.dev"  # CRDs are cluster-wide; a reused cluster keeps old ones
    schema = {
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 1}}}},
    }
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }
    extensions.create_custom_resource_definition(crd)
    try:

        def established() -> bool:
            found = condition(extensions.read_custom_resource_definition(f"widgets.{group}"), "Established")
            return found is not None and found.status == "True"

        wait_for(f"CRD widgets.{group} Established", established)
        widget = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {}}
        custom.patch_namespaced_custom_object(
            group, "v1", namespace, "widgets", "w1", widget, field_manager="gitsync", _content_type=APPLY
        )
        live = custom.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w1")
        assert live["spec"] == {"size": 1}  # the schema default, applied by the server
    finally:
        extensions.delete_custom_resource_definition(f"widgets.{group}")


def test_serviceaccount_token_gets_only_what_its_role_grants(kube_api: client.ApiClient, namespace: str) -> None:
    core, rbac = client.CoreV1Api(kube_api), client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "reader"}})
    rbac.create_namespaced_role(
        namespace,
        {
            "metadata": {"name": "read-configmaps"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
        },
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        },
    )
    token = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        {"spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"], "expirationSeconds": 600}},
    ).status.token

    settings = copy.deepcopy(kube_api.configuration)  # same server and CA, no admin certificate
    settings.cert_file = settings.key_file = None
    settings.api_key = {"authorization": f"Bearer {token}"}
    with client.ApiClient(settings) as as_reader:
        reader = client.CoreV1Api(as_reader)

        def allowed() -> bool:  # the RBAC authorizer sees the new binding through a watch, a moment later
            try:
                return reader.list_namespaced_config_map(namespace).items is not None
            except ApiException as error:
                if error.status != 403:
                    raise
                return False

        wait_for("the reader token to list configmaps", allowed, timeout=60)
        for denied in (
            lambda: reader.list_namespaced_secret(namespace),
            lambda: reader.create_namespaced_config_map(namespace, {"metadata": {"name": "nope"}}),
            lambda: reader.list_namespaced_config_map("default"),
        ):
            with pytest.raises(ApiException) as refused:
                denied()
            assert refused.value.status == 403
