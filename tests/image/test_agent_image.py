"""The agent runs from its image exactly as deploy/manifests deploy it, and does its job.

The container is started with podman from the Deployment's pod spec, translated field by field (`pod_flags`): its
user and fsGroup, read-only root filesystem, dropped capabilities, memory limit, args, downward-API variables, ports,
and its volumes (the ConfigMap's agent.yaml as a subPath file, the webhook Secret, the emptyDirs). The ServiceAccount
token and CA sit at the in-cluster path and KUBERNETES_SERVICE_HOST/PORT lead to kubelab, so the agent uses
in-cluster configuration with the manifests' RBAC. The container has its own network namespace (slirp4netns): it
listens on the containerPort from agent.yaml, published on a free loopback port, and reaches the host's loopback
(kubelab) as 10.0.2.2 under the name `kubernetes.default.svc`, which kubelab's serving certificate carries.

The manifests' RBAC and ConfigMap are installed into a namespace of this test's own (cluster-scoped names suffixed)
so that sessions sharing a kubelab never share a Lease. agent.yaml is the ConfigMap's with only repo.url changed, to
a bare repository made from example-repo and mounted read-only into the container.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from agentlab import (
    SECRET,
    Upstream,
    configmap_value,
    free_port,
    http_get,
    service_account_token,
    settled,
    wait_for,
)
from imagelab import podman
from prometheus_client.parser import text_string_to_metric_families

from gitsync.runtime.webhooks import sign

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "manifests"
KUBECTL = Path(sys.executable).with_name("kubectl")
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
REPO_IN_CONTAINER = "/srv/gitops.git"
HOST_LOOPBACK = "10.0.2.2"  # slirp4netns' address for the host's 127.0.0.1 (allow_host_loopback)
QUANTITY = re.compile(r"(\d+)(Ki|Mi|Gi)?")
SETGID = 0o2000

pytestmark = pytest.mark.image  # tests/conftest.py marks by directory too late for `-m image`


def kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def quantity(text: str) -> int:
    found = QUANTITY.fullmatch(str(text))
    assert found, f"unexpected quantity {text!r} in the manifests"
    return int(found[1]) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[found[2]]


@dataclass(frozen=True, slots=True)
class Install:
    """deploy/manifests' objects minus the Deployment and Service (the test runs the pod), in `namespace`."""

    namespace: str
    deployment: dict[str, Any]
    service_account: dict[str, Any]


@pytest.fixture
def install(kubelab: Any, tmp_path: Path) -> Iterator[Install]:
    namespace = f"gitsync-image-{secrets.token_hex(3)}"
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        text = path.read_text().replace("gitsync-system", namespace).replace("gitsync-agent", namespace)
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    installed = tmp_path / "install.yaml"
    installed.write_text(yaml.safe_dump_all([doc for doc in docs if doc["kind"] not in ("Deployment", "Service")]))
    kubectl(kubelab.kubeconfig, "apply", "-f", str(installed))
    try:
        yield Install(namespace, by_kind["Deployment"], by_kind["ServiceAccount"])
    finally:
        kubectl(kubelab.kubeconfig, "delete", "-f", str(installed), "--wait=false", "--ignore-not-found")


def service_account_files(kubelab: Any, kube_api: client.ApiClient, install: Install, root: Path) -> Path:
    """What the kubelet projects at SERVICE_ACCOUNT_DIR: a token for the manifests' ServiceAccount, the CA, the
    namespace (world-readable, as the kubelet writes them)."""
    account = install.service_account["metadata"]["name"]
    cluster = yaml.safe_load(kubelab.kubeconfig.read_text())["clusters"][0]["cluster"]
    root.mkdir()
    (root / "token").write_text(service_account_token(kube_api, account, install.namespace))
    (root / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    (root / "namespace").write_text(install.namespace)
    for path in root.iterdir():
        path.chmod(0o644)
    return root


def pod_flags(pod: dict[str, Any], sources: dict[str, Path], env: dict[str, str]) -> tuple[list[str], dict[int, int]]:
    """`podman run` flags for the pod spec's only container, and its containerPorts -> the host ports they are
    published on. ``sources`` holds a host directory per volume (`volume_sources`); ``env`` the values of the
    downward-API variables by fieldPath. Anything in the spec this does not translate fails the test."""
    (container,) = pod["containers"]
    pod_context, context = pod["securityContext"], container["securityContext"]
    flags = ["--user", f"{pod_context['runAsUser']}:{pod_context['runAsGroup']}"]
    flags += ["--group-add", str(pod_context["fsGroup"])]
    assert context == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # podman's --read-only adds its own writable /tmp, /var/tmp and /run; Kubernetes does not.
    flags += ["--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    flags += ["--memory", str(quantity(container["resources"]["limits"]["memory"]))]
    for variable in container["env"]:
        flags += ["--env", f"{variable['name']}={env[variable['valueFrom']['fieldRef']['fieldPath']]}"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for mount in container["volumeMounts"]:
        volume, target = volumes[mount["name"]], mount["mountPath"]
        assert {"emptyDir", "configMap", "secret"} & set(volume), f"volume {mount['name']}: not translated"
        source = sources[mount["name"]] / mount.get("subPath", "")
        flags += ["--mount", f"type=bind,source={source},destination={target}{',ro' if mount.get('readOnly') else ''}"]
    ports = {port["containerPort"]: free_port() for port in container["ports"]}
    flags += [arg for inside, outside in ports.items() for arg in ("-p", f"127.0.0.1:{outside}:{inside}")]
    return flags, ports


def volume_sources(pod: dict[str, Any], core: client.CoreV1Api, namespace: str, root: Path) -> dict[str, Path]:
    """A host directory per volume of the pod, laid out as the kubelet would: the ConfigMap's keys (agent.yaml with
    repo.url pointed at the mounted repository, the only change), the Secret's webhook-secret with its defaultMode,
    and for each emptyDir a fresh world-writable directory; fsGroup owns all three, setgid on directories."""
    fs_group = pod["securityContext"]["fsGroup"]
    sources: dict[str, Path] = {}
    for volume in pod["volumes"]:
        directory = sources[volume["name"]] = root / volume["name"]
        directory.mkdir(parents=True)
        directory.chmod(0o777 | SETGID if "emptyDir" in volume else 0o755 | SETGID)
        if "configMap" in volume:
            data = core.read_namespaced_config_map(volume["configMap"]["name"], namespace).data
            agent = yaml.safe_load(data["agent.yaml"])
            agent["repo"]["url"] = f"file://{REPO_IN_CONTAINER}"
            (directory / "agent.yaml").write_text(yaml.safe_dump(agent))
        elif "secret" in volume:
            (directory / "webhook-secret").write_bytes(SECRET)
            (directory / "webhook-secret").chmod(volume["secret"]["defaultMode"] | 0o040)
        subprocess.run(["chown", "-R", f":{fs_group}", str(directory)], check=True)
    return sources


def processes_under(pid: int) -> dict[int, str]:
    """PID -> state letter of `pid` and every descendant (read from the host's /proc)."""
    parents: dict[int, tuple[int, str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = (int(fields[1]), fields[0])
    found, frontier = {pid: parents.get(pid, (0, "?"))[1]}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, state) in parents.items():
            if ppid == parent and child not in found:
                found[child] = state
                frontier.append(child)
    return found


def test_agent_runs_from_the_image_as_the_manifests_deploy_it(
    gitsync_image: str,
    kubelab: Any,
    kube_api: client.ApiClient,
    install: Install,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    core = client.CoreV1Api(kube_api)
    pod = install.deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    uid = pod["securityContext"]["runAsUser"]

    # The bare repository belongs to the agent's user, as a volume the pod owns would; git on the host side (the
    # test pushing) is told to trust it.
    upstream = Upstream(tmp_path / "git", namespace)
    subprocess.run(["chown", "-R", f"{uid}:{uid}", str(upstream.bare)], check=True)
    # staging's namespace is this test's: bind the agent there, as 05-environment.yaml does for podinfo-staging.
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "gitsync-agent", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": install.namespace},
        "subjects": [{"kind": "ServiceAccount", "name": "gitsync", "namespace": install.namespace}],
    }
    client.RbacAuthorizationV1Api(kube_api).create_namespaced_role_binding(namespace, binding)
    (tmp_path / "gitconfig").write_text("[safe]\n\tdirectory = *\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))

    sources = volume_sources(pod, core, install.namespace, tmp_path / "volumes")
    pod_name = f"gitsync-image-test-{secrets.token_hex(3)}"
    flags, ports = pod_flags(pod, sources, {"metadata.name": pod_name, "metadata.namespace": install.namespace})
    account = service_account_files(kubelab, kube_api, install, tmp_path / "serviceaccount")
    api = urlsplit(kubelab.server)
    assert install.service_account.get("automountServiceAccountToken") is True
    flags += ["--mount", f"type=bind,source={account},destination={SERVICE_ACCOUNT_DIR},ro"]
    flags += ["--env", "KUBERNETES_SERVICE_HOST=kubernetes.default.svc", "--env", f"KUBERNETES_SERVICE_PORT={api.port}"]
    flags += [
        "--network",
        "slirp4netns:allow_host_loopback=true",
        "--add-host",
        f"kubernetes.default.svc:{HOST_LOOPBACK}",
    ]
    flags += ["--mount", f"type=bind,source={upstream.bare},destination={REPO_IN_CONTAINER},ro"]

    started = podman("run", "--detach", "--name", pod_name, *flags, gitsync_image, *container["args"])
    assert started.returncode == 0, f"podman run {gitsync_image} failed:\n{started.stderr}"
    try:
        http = ports[next(p["containerPort"] for p in container["ports"] if p["name"] == "http")]
        base_url = f"http://127.0.0.1:{http}"

        def get(path: str) -> tuple[int, str]:
            return http_get(http, path)

        def logs() -> str:
            done = podman("logs", pod_name)
            return done.stdout + done.stderr

        def running() -> bool:
            state = podman("inspect", "--format", "{{.State.Status}}", pod_name).stdout.strip()
            if state != "running":
                pytest.fail(f"the container is {state}:\n{logs()[-3000:]}")
            return True

        def until(what: str, check: Callable[[], Any], timeout: float) -> None:
            """wait_for, with the container's last log lines when it times out."""
            try:
                wait_for(what, lambda: running() and check(), timeout)
            except pytest.fail.Exception as failed:
                pytest.fail(f"{failed}\ncontainer log:\n{logs()[-4000:]}", pytrace=False)

        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            until(f"{probe} {path}", lambda path=path: get(path)[0] == 200, 60)

        until("example-repo synced from the image", lambda: configmap_value(core, namespace), 60)
        settled(core, namespace)
        lease = client.CoordinationV1Api(kube_api).read_namespaced_lease("gitsync-leader", install.namespace)
        assert lease.spec.holder_identity == pod_name

        # A new commit announced by a signed webhook on the container's port is synced (the poll is 60s away).
        revision = upstream.set_message("Hello from the image")
        body = json.dumps({"ref": "refs/heads/main", "after": revision}).encode()
        request = urllib.request.Request(
            f"{base_url}/webhooks/github",
            data=body,
            headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": f"sha256={sign(SECRET, body)}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 202
        until("the webhook's commit synced", lambda: configmap_value(core, namespace) == "Hello from the image", 60)
        settled(core, namespace, revision)

        status, metrics = get("/metrics")
        assert status == 200
        assert any(family.name.startswith("gitsync_") for family in text_string_to_metric_families(metrics))

        # tini is PID 1 and reaps what git leaves behind: no process of the container stays a zombie.
        pid = int(podman("inspect", "--format", "{{.State.Pid}}", pod_name).stdout)
        first = processes_under(pid)
        time.sleep(1)
        lasting = {p for p, state in processes_under(pid).items() if state == "Z" and first.get(p) == "Z"}
        assert not lasting, f"zombie processes in the container: {lasting}"
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"/usr/bin/tini"

        # SIGTERM (what the kubelet sends) stops it cleanly, well within the grace period before SIGKILL.
        assert podman("kill", "--signal", "TERM", pod_name).returncode == 0
        grace = install.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        waited = podman("wait", pod_name, timeout=grace)
        assert waited.stdout.strip() == "0", f"exit {waited.stdout.strip()} after SIGTERM:\n{logs()[-3000:]}"
        events = [json.loads(line).get("event") for line in logs().splitlines() if line.startswith("{")]
        assert "agent.stopped" in events
        assert "event.failed" not in events, "Events are within the manifests' grant"
    finally:
        podman("rm", "--force", "--time", "0", pod_name)
