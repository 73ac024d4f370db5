"""Real-world layouts through the CLI (issue 15, items 1 and 2): a CRD and its custom resources in one app or in
two apps of one environment sync at the first try, and a person's `kubectl edit` is drift that `diff` shows
(exit 1) and `sync` takes back, while one object held by a controller never blocks the others."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from test_diff_cli import gitsync, write_repo
from test_sync import deployment, scale

from gitsync.adapters.kube import KubeCluster
from gitsync.model import ObjectId

KUBECTL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "kubectl"

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.{group}
spec:
  group: {group}
  names: {{kind: Gadget, plural: gadgets, singular: gadget, listKind: GadgetList}}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                size: {{type: integer, maximum: 10}}
"""

GADGET = """\
apiVersion: {group}/v1
kind: Gadget
metadata:
  name: g1
spec:
  size: {size}
"""


def chart(root: Path, app: str, templates: dict[str, str]) -> None:
    folder = root / "apps" / app
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    (folder / "chart.yaml").write_text(f"name: {app}\nversion: 0.1.0\n")
    (folder / "values.yaml").write_text("{}\n")
    for name, text in templates.items():
        (folder / "templates" / name).write_text(text)


def environment(root: Path, namespace: str, apps: list[str]) -> None:
    env = root / "environments" / "test"
    (env / "values").mkdir(parents=True, exist_ok=True)
    listed = "".join(f"  - {app}\n" for app in apps)
    (env / "env.yaml").write_text(f"namespace: {namespace}\nallowClusterScoped: true\napps:\n{listed}")


@pytest.fixture
def group(namespace: str, kubelab: Any) -> Any:
    name = f"{namespace}.example.com"
    yield name
    KubeCluster(kubelab.kubeconfig).delete(
        ObjectId("apiextensions.k8s.io", "CustomResourceDefinition", "", f"gadgets.{name}")
    )


@pytest.mark.parametrize("layout", ["one app", "two apps, resources listed first"])
def test_a_crd_and_its_resources_sync_at_the_first_try(
    layout: str, tmp_path: Path, namespace: str, group: str, kubelab: Any
) -> None:
    root = tmp_path / "repo"
    crd, gadget = CRD.format(group=group), GADGET.format(group=group, size=3)
    if layout == "one app":
        chart(root, "gadgets", {"crd.yaml": crd, "gadget.yaml": gadget})
        environment(root, namespace, ["gadgets"])
    else:
        chart(root, "crds", {"crd.yaml": crd})
        chart(root, "gadgets", {"gadget.yaml": gadget})
        environment(root, namespace, ["gadgets", "crds"])
    args = ("--repo", str(root), "--env", "test")

    planned = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert planned.returncode == 1, planned.stderr
    assert "2 to create, 0 to change" in planned.stdout
    synced = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    live = KubeCluster(kubelab.kubeconfig).get(ObjectId(group, "Gadget", namespace, "g1"))
    assert live is not None and live["spec"] == {"size": 3}
    again = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert again.returncode == 0, again.stdout + again.stderr


def test_an_invalid_custom_resource_of_a_new_crd_applies_nothing_else(
    tmp_path: Path, namespace: str, group: str, kubelab: Any
) -> None:
    """The resource is validated against its new CRD's schema before anything but the CRD is applied."""
    root = tmp_path / "repo"
    config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  v: '1'\n"
    bad = GADGET.format(group=group, size=99)  # the schema's maximum is 10
    chart(root, "gadgets", {"crd.yaml": CRD.format(group=group), "gadget.yaml": bad, "configmap.yaml": config})
    environment(root, namespace, ["gadgets"])

    refused = gitsync("sync", "--repo", str(root), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"Gadget.{group}/{namespace}/g1: invalid" in refused.stderr
    assert KubeCluster(kubelab.kubeconfig).get(ObjectId("", "ConfigMap", namespace, "settings")) is None


def upgraded(crd: str, *, maximum: int = 10) -> str:
    """The CRD's next version: a ``color`` field, and ``size``'s maximum as given."""
    return crd.replace("maximum: 10}", f"maximum: {maximum}}}\n                color: {{type: string}}")


def test_a_crd_upgrade_and_a_resource_using_its_new_field_sync_in_one_commit(
    tmp_path: Path, namespace: str, group: str, kubelab: Any
) -> None:
    """An operator's upgrade: its CRD gains a field and a resource uses it in the same commit. The resource is
    validated by the CRD it will have, not refused by the one it has (kubectl apply takes both too)."""
    root = tmp_path / "repo"
    chart(root, "gadgets", {"crd.yaml": CRD.format(group=group), "gadget.yaml": GADGET.format(group=group, size=3)})
    environment(root, namespace, ["gadgets"])
    args = ("--repo", str(root), "--env", "test")
    assert gitsync("sync", *args, kubeconfig=kubelab.kubeconfig).returncode == 0

    crd = upgraded(CRD.format(group=group))
    chart(root, "gadgets", {"crd.yaml": crd, "gadget.yaml": GADGET.format(group=group, size=3) + "  color: red\n"})
    shown = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "0 to create, 2 to change" in shown.stdout and "+  color: red" in shown.stdout
    synced = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    live = KubeCluster(kubelab.kubeconfig).get(ObjectId(group, "Gadget", namespace, "g1"))
    assert live is not None and live["spec"] == {"size": 3, "color": "red"}
    assert gitsync("diff", *args, kubeconfig=kubelab.kubeconfig).returncode == 0


def test_a_resource_the_upgraded_crd_refuses_applies_nothing_but_the_crd(
    tmp_path: Path, namespace: str, group: str, kubelab: Any
) -> None:
    """The old schema would take the resource, the new one does not: it is judged by the new one, so the
    commit's other changes are not applied (the CRD, a parent, goes first, as a new CRD does)."""
    root = tmp_path / "repo"
    config = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  v: '{v}'\n"
    crd = CRD.format(group=group)
    templates = {"crd.yaml": crd, "gadget.yaml": GADGET.format(group=group, size=3), "configmap.yaml": config}
    chart(root, "gadgets", {**templates, "configmap.yaml": config.format(v=1)})
    environment(root, namespace, ["gadgets"])
    args = ("--repo", str(root), "--env", "test")
    assert gitsync("sync", *args, kubeconfig=kubelab.kubeconfig).returncode == 0

    changed = {"crd.yaml": upgraded(crd, maximum=5), "configmap.yaml": config.format(v=2)}
    chart(root, "gadgets", {**changed, "gadget.yaml": GADGET.format(group=group, size=7)})
    refused = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"Gadget.{group}/{namespace}/g1: invalid" in refused.stderr
    cluster = KubeCluster(kubelab.kubeconfig)
    assert cluster.get(ObjectId("", "ConfigMap", namespace, "settings"))["data"] == {"v": "1"}  # type: ignore[index]
    assert cluster.get(ObjectId(group, "Gadget", namespace, "g1"))["spec"] == {"size": 3}  # type: ignore[index]


def kubectl(kubelab: Any, *args: str, editor: str = "") -> None:
    env = {**os.environ, "KUBECONFIG": str(kubelab.kubeconfig)}
    if editor:
        env["KUBE_EDITOR"] = editor
    subprocess.run([str(KUBECTL), *args], check=True, capture_output=True, text=True, timeout=60, env=env)


SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: shop
spec:
  selector: {app: shop}
  ports: [{port: 80}]
"""


def test_a_kubectl_edit_is_drift_that_diff_shows_and_sync_takes_back(
    tmp_path: Path, namespace: str, kubelab: Any
) -> None:
    repo = write_repo(tmp_path / "repo", namespace)
    (repo / "apps" / "shop" / "templates" / "service.yaml").write_text(SERVICE)
    args = ("--repo", str(repo), "--env", "test")
    assert gitsync("sync", *args, kubeconfig=kubelab.kubeconfig).returncode == 0
    cluster = KubeCluster(kubelab.kubeconfig)
    web = ObjectId("apps", "Deployment", namespace, "shop")

    # a person edits the Deployment with `kubectl edit`, patches the ConfigMap, and deletes the Service
    kubectl(kubelab, "-n", namespace, "edit", "deployment/shop", editor="sed -i -e 's/replicas: 1/replicas: 4/'")
    kubectl(kubelab, "-n", namespace, "patch", "configmap/shop", "-p", '{"data":{"color":"red"}}')
    kubectl(kubelab, "-n", namespace, "delete", "service/shop")
    managers = {e["manager"] for e in cluster.get(web)["metadata"]["managedFields"]}  # type: ignore[index]
    assert "kubectl-edit" in managers

    shown = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert shown.returncode == 1, shown.stderr
    assert "-  replicas: 4" in shown.stdout and "+  replicas: 1" in shown.stdout
    assert "-  color: red" in shown.stdout
    assert "1 to create, 2 to change" in shown.stdout

    synced = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    assert cluster.get(web)["spec"]["replicas"] == 1  # type: ignore[index]
    assert cluster.get(ObjectId("", "ConfigMap", namespace, "shop"))["data"] == {"color": "blue"}  # type: ignore[index]
    assert cluster.get(ObjectId("", "Service", namespace, "shop")) is not None
    assert gitsync("diff", *args, kubeconfig=kubelab.kubeconfig).returncode == 0


def test_a_field_a_controller_holds_fails_that_object_alone(tmp_path: Path, namespace: str, kubelab: Any) -> None:
    repo = write_repo(tmp_path / "repo", namespace)
    (repo / "apps" / "shop" / "templates" / "service.yaml").write_text(SERVICE)
    args = ("--repo", str(repo), "--env", "test")
    assert gitsync("sync", *args, kubeconfig=kubelab.kubeconfig).returncode == 0
    cluster = KubeCluster(kubelab.kubeconfig)

    # an autoscaler (its own field manager) sets the replicas the chart declares; the Service is deleted
    scale(cluster, deployment(namespace, "shop"), 5)
    kubectl(kubelab, "-n", namespace, "delete", "service/shop")

    shown = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert shown.returncode == 2
    assert "conflict" in shown.stderr and "horizontal-pod-autoscaler" in shown.stderr

    synced = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 2, synced.stdout + synced.stderr
    (line,) = [text for text in synced.stderr.splitlines() if text.startswith("  ")]  # the rest are log events
    where = "apps/shop/templates/deployment.yaml:1"  # the refused object at its template's file and line
    assert line.strip().startswith(f"{where}: Deployment.apps/{namespace}/shop: conflict"), synced.stderr
    assert "shop@test: 1 created, 2 unchanged, 1 failed" in synced.stdout
    assert cluster.get(ObjectId("apps", "Deployment", namespace, "shop"))["spec"]["replicas"] == 5  # type: ignore[index]
    assert cluster.get(ObjectId("", "Service", namespace, "shop")) is not None, "the conflict blocked the Service"


JOB = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  {ttl}template:
    spec:
      restartPolicy: Never
      containers: [{{name: run, image: "registry.example/setup:{tag}"}}]
"""


def test_a_job_that_removes_itself_runs_once_per_change_not_on_every_sync(
    tmp_path: Path, namespace: str, kubelab: Any
) -> None:
    """Upstream installs ship setup Jobs with ttlSecondsAfterFinished (ingress-nginx's admission Jobs): once one
    finished and its TTL removed it, that is not drift to re-run on every sync; a changed Job runs again. A Job
    without a TTL that someone deletes is still put back."""
    root = tmp_path / "repo"

    def write(tag: str) -> None:
        chart(
            root,
            "setup",
            {
                "once.yaml": JOB.format(name="once", ttl="ttlSecondsAfterFinished: 0\n  ", tag=tag),
                "kept.yaml": JOB.format(name="kept", ttl="", tag="1"),
            },
        )

    write("1")
    environment(root, namespace, ["setup"])
    args = ("--repo", str(root), "--env", "test")
    assert gitsync("sync", *args, kubeconfig=kubelab.kubeconfig).returncode == 0
    cluster = KubeCluster(kubelab.kubeconfig)
    once, kept = (ObjectId("batch", "Job", namespace, name) for name in ("once", "kept"))
    for job in (once, kept):  # as the TTL controller does for the first, a person for the second
        cluster.delete(job, propagation="Background")
        wait_gone(cluster, job)

    shown = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "1 to create, 0 to change, 0 to delete, 1 unchanged" in shown.stdout
    assert f"+++ desired/Job.batch/{namespace}/kept" in shown.stdout
    synced = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert cluster.get(once) is None and cluster.get(kept) is not None
    history = gitsync("history", "--env", "test", "-n", namespace, "-o", "json", kubeconfig=kubelab.kubeconfig)
    [record] = json.loads(history.stdout)
    assert record["status"]["health"] != "Missing", record["status"]

    def row() -> dict[str, Any]:
        [app] = json.loads(gitsync("status", *args, "-o", "json", kubeconfig=kubelab.kubeconfig).stdout)["apps"]
        return dict(app)

    # Progressing until the Job put back has run (kwok completes its pod a moment after the sync)
    deadline = time.monotonic() + 60
    while (seen := row())["health"] == "Progressing" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen["sync"] == "Synced" and seen["health"] == "Healthy", seen
    assert gitsync("diff", *args, kubeconfig=kubelab.kubeconfig).returncode == 0

    write("2")  # a new version of the setup Job runs again
    changed = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert changed.returncode == 1 and f"+++ desired/Job.batch/{namespace}/once" in changed.stdout
    resynced = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    # created again (its pods complete at once on kwok, and a TTL of 0 may have removed it before a read here)
    assert resynced.returncode == 0 and "setup@test: 1 created, 1 unchanged" in resynced.stdout, resynced.stdout


def wait_gone(cluster: KubeCluster, ref: ObjectId) -> None:
    deadline = time.monotonic() + 30
    while cluster.get(ref) is not None:
        assert time.monotonic() < deadline, f"{ref} still there"
        time.sleep(0.1)
