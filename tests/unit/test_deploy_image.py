"""deploy/Dockerfile and deploy/manifests describe one container: the user, port, paths and command agree.

A disagreement is what a user meets first after `kubectl apply`: a pod refused by runAsNonRoot, probes on a port
nothing listens on, a cache directory the read-only root filesystem cannot hold. Pure: reads the files only.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
MANIFESTS = REPO / "deploy" / "manifests"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage, continuation lines joined and comments dropped."""
    joined = text.replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word.upper(), rest.strip()))
    return stages[-1]


def final_stage() -> dict[str, Any]:
    stage = instructions(DOCKERFILE.read_text())
    env: dict[str, str] = {}
    for word, rest in stage:
        if word == "ENV":
            env |= dict(item.split("=", 1) for item in shlex.split(rest))
    single = {word: rest for word, rest in stage if word in ("USER", "EXPOSE", "ENTRYPOINT", "CMD")}
    return {
        "user": single["USER"],
        "expose": single["EXPOSE"].split(),
        "entrypoint": json.loads(single["ENTRYPOINT"]),
        "cmd": json.loads(single["CMD"]),
        "env": env,
        "run": " ".join(rest for word, rest in stage if word == "RUN"),
    }


def manifests() -> dict[str, dict[str, Any]]:
    docs = [doc for path in sorted(MANIFESTS.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in docs}


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    return final_stage()


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    return dict(manifests()["Deployment/gitsync"]["spec"]["template"]["spec"])


@pytest.fixture(scope="module")
def agent_yaml() -> dict[str, Any]:
    return dict(yaml.safe_load(manifests()["ConfigMap/gitsync-config"]["data"]["agent.yaml"]))


def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["containers"]
    return dict(only)


def writable_mounts(pod: dict[str, Any]) -> list[PurePosixPath]:
    kinds = {volume["name"]: volume for volume in pod["volumes"]}
    return [
        PurePosixPath(mount["mountPath"])
        for mount in container(pod)["volumeMounts"]
        if not mount.get("readOnly") and "emptyDir" in kinds[mount["name"]]
    ]


def test_the_image_user_is_the_pods_non_root_user(image: dict[str, Any], pod: dict[str, Any]) -> None:
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True
    # runAsNonRoot can only be checked by the kubelet against a numeric USER.
    assert image["user"] == f"{context['runAsUser']}:{context['runAsGroup']}"
    assert context["runAsUser"] != 0
    assert context["fsGroup"] == context["runAsGroup"]


def test_the_exposed_port_is_the_container_port_the_agent_listens_on(
    image: dict[str, Any], pod: dict[str, Any], agent_yaml: dict[str, Any]
) -> None:
    ports = {port["name"]: port["containerPort"] for port in container(pod)["ports"]}
    assert image["expose"] == [str(ports["http"])]
    assert agent_yaml["listen"] == f"0.0.0.0:{ports['http']}"
    service = manifests()["Service/gitsync-webhook"]["spec"]
    assert {port["targetPort"] for port in service["ports"]} <= set(ports)


def test_probes_use_the_named_port_and_the_agents_health_paths(pod: dict[str, Any]) -> None:
    agent = container(pod)
    probes = {name: agent[name]["httpGet"] for name in ("livenessProbe", "readinessProbe", "startupProbe")}
    assert {probe["port"] for probe in probes.values()} == {"http"}
    assert {probe["path"] for probe in probes.values()} == {"/healthz", "/readyz"}


def test_the_manifest_runs_the_images_command_under_tini(image: dict[str, Any], pod: dict[str, Any]) -> None:
    agent = container(pod)
    assert "command" not in agent, "a `command` would replace the ENTRYPOINT and with it tini as PID 1"
    assert image["entrypoint"][:2] == ["/usr/bin/tini", "--"]
    assert agent["args"] == image["cmd"]
    config = image["cmd"][image["cmd"].index("--config") + 1]
    mounts = {mount["mountPath"]: mount for mount in agent["volumeMounts"]}
    assert mounts[config]["subPath"] == PurePosixPath(config).name
    assert mounts[config]["readOnly"] is True


def test_what_the_agent_writes_is_a_writable_mount_on_the_read_only_root(
    image: dict[str, Any], pod: dict[str, Any], agent_yaml: dict[str, Any]
) -> None:
    assert container(pod)["securityContext"]["readOnlyRootFilesystem"] is True
    writable = writable_mounts(pod)
    for what, path in (("cacheDir", agent_yaml["cacheDir"]), ("HOME", image["env"]["HOME"])):
        assert any(PurePosixPath(path).is_relative_to(mount) for mount in writable), f"{what} {path} is read-only"
    # `docker run` without the manifests' mounts still has a cache directory the user owns.
    uid_gid = image["user"]
    assert f"mkdir -p {agent_yaml['cacheDir']}" in image["run"]
    assert f"chown {uid_gid} {agent_yaml['cacheDir']}" in image["run"]


def test_webhook_secrets_are_read_from_the_mounted_secret(pod: dict[str, Any], agent_yaml: dict[str, Any]) -> None:
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    secret_mounts = [
        PurePosixPath(mount["mountPath"])
        for mount in container(pod)["volumeMounts"]
        if "secret" in volumes[mount["name"]]
    ]
    for provider, settings in agent_yaml["webhooks"].items():
        path = PurePosixPath(settings["secretFile"])
        assert any(path.is_relative_to(mount) for mount in secret_mounts), f"webhooks.{provider}: {path}"


def test_the_installs_environment_namespaces_refuse_privileged_pods() -> None:
    """Anyone who can merge writes the pods of an environment namespace; the install's own namespaces enforce Pod
    Security "baseline" (no privileged pod, no hostPath onto the node's service-account tokens)."""
    documents = [d for d in yaml.safe_load_all((MANIFESTS / "05-environment.yaml").read_text()) if d]
    namespaces = [d for d in documents if d["kind"] == "Namespace"]
    assert namespaces
    for namespace in namespaces:
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
