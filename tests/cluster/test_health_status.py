"""``gitsync status`` as a user runs it: a GitOps repo on disk, a real cluster, the table and the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

GITSYNC = Path(sys.executable).parent / "gitsync"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  replicas: 2
  progressDeadlineSeconds: 600
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels:
        app: shop
{% if values.fault %}
        gitsync.dev/fault: {{ values.fault }}
{% endif %}
    spec:
      containers:
        - name: shop
          image: registry.example/shop:{{ values.tag }}
"""
CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: shop
data:
  color: blue
"""


def write_repo(root: Path, namespace: str, *, tag: str = "1", fault: str = "") -> Path:
    chart = root / "apps" / "shop"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "chart.yaml").write_text("name: shop\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(f"tag: '{tag}'\nfault: '{fault}'\n")
    (chart / "templates" / "deployment.yaml").write_text(DEPLOYMENT)
    (chart / "templates" / "configmap.yaml").write_text(CONFIGMAP)
    env = root / "environments" / "test"
    env.mkdir(parents=True, exist_ok=True)
    (env / "env.yaml").write_text(f"namespace: {namespace}\napps:\n  - shop\n")
    return root


def gitsync(*args: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GITSYNC), *args, "--kubeconfig", str(kubeconfig)], capture_output=True, text=True, timeout=120, check=False
    )


def status(repo: Path, kubeconfig: Path) -> dict[str, Any]:
    done = gitsync("status", "--repo", str(repo), "--env", "test", "-o", "json", kubeconfig=kubeconfig)
    assert done.returncode == 0, done.stderr
    apps: list[dict[str, Any]] = json.loads(done.stdout)["apps"]
    assert [a["app"] for a in apps] == ["shop"]
    return apps[0]


def status_until(repo: Path, kubeconfig: Path, health: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = status(repo, kubeconfig)
        if row["health"] == health or time.monotonic() > deadline:
            return row
        time.sleep(0.5)


@pytest.mark.timeout(240)
def test_status_follows_a_release_from_missing_to_healthy_to_degraded(
    kubelab: Any, namespace: str, tmp_path: Path
) -> None:
    repo = write_repo(tmp_path / "repo", namespace)

    before = status(repo, kubelab.kubeconfig)
    assert before["sync"] == "OutOfSync"
    assert before["changes"].startswith("2 to create")
    assert before["health"] == "Missing"
    assert before["healthReason"].endswith("object does not exist")
    assert before["digest"] == "" and before["revision"] == ""

    synced = gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    healthy = status_until(repo, kubelab.kubeconfig, "Healthy")
    assert healthy["sync"] == "Synced"
    assert healthy["health"] == "Healthy" and healthy["healthReason"] == ""
    assert healthy["digest"] == healthy["renderedDigest"] != ""

    write_repo(repo, namespace, tag="2", fault="crashloop")
    assert status(repo, kubelab.kubeconfig)["sync"] == "OutOfSync"
    synced = gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    degraded = status_until(repo, kubelab.kubeconfig, "Degraded", timeout=30)
    assert degraded["health"] == "Degraded", degraded
    assert degraded["sync"] == "Synced"
    assert f"Deployment.apps/{namespace}/shop: Pod/{namespace}/shop-" in degraded["healthReason"]
    assert "CrashLoopBackOff" in degraded["healthReason"]

    table = gitsync("status", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert table.returncode == 0, table.stderr
    for text in ("shop", namespace, "Synced", "Degraded", "CrashLoopBackOff", degraded["digest"][7:19]):
        assert text in table.stdout, table.stdout


def add_app(repo: Path, name: str, configmap: str) -> None:
    """A second app of the environment: one ConfigMap template."""
    chart = repo / "apps" / name
    (chart / "templates").mkdir(parents=True)
    (chart / "chart.yaml").write_text(f"name: {name}\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("{}\n")
    (chart / "templates" / "configmap.yaml").write_text(configmap)


def table_cells(stdout: str) -> list[list[str]]:
    """The rows of a status table: APP, NAMESPACE, SYNC, HEALTH, REASON."""
    return [[cell.strip() for cell in line.split("│")[1:6]] for line in stdout.splitlines() if line.startswith("│")]


@pytest.mark.timeout(120)
def test_status_shows_every_app_when_one_does_not_render(kubelab: Any, namespace: str, tmp_path: Path) -> None:
    """As Argo CD's app list: an app whose template is broken gets its row, Unknown, with its ``file:line`` error
    under the table; the healthy apps are still shown, and the exit status says the input needs fixing."""
    repo = write_repo(tmp_path / "repo", namespace)
    add_app(repo, "ledger", LEDGER.replace("  labels: {gitsync.test/admission: refuse}\n", ""))
    (repo / "environments" / "test" / "env.yaml").write_text(f"namespace: {namespace}\napps:\n  - shop\n  - ledger\n")
    synced = gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    (repo / "apps" / "shop" / "templates" / "configmap.yaml").write_text("data: {{ values.image.registry }}\n")

    table = gitsync("status", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert table.returncode == 2, (table.stdout, table.stderr)
    assert [row[:4] for row in table_cells(table.stdout)] == [
        ["shop", namespace, "Unknown", "Unknown"],
        ["ledger", namespace, "Synced", "Healthy"],
    ]
    [error] = [line for line in table.stdout.splitlines() if line.startswith("shop: ")]
    assert error == "shop: apps/shop/templates/configmap.yaml:1: undefined value values.image", table.stdout
    assert table.stderr == ""

    as_json = gitsync("status", "--repo", str(repo), "--env", "test", "-o", "json", kubeconfig=kubelab.kubeconfig)
    assert as_json.returncode == 2, as_json.stderr
    apps = {row["app"]: row for row in json.loads(as_json.stdout)["apps"]}
    assert apps["shop"]["errors"] == ["apps/shop/templates/configmap.yaml:1: undefined value values.image"]
    assert apps["shop"]["digest"].startswith("sha256:")  # what runs is still shown
    assert (apps["ledger"]["sync"], apps["ledger"]["errors"]) == ("Synced", [])


def test_status_of_a_broken_env_yaml_exits_2_with_one_line(kubelab: Any, namespace: str, tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", namespace)
    unknown = gitsync("status", "--repo", str(repo), "--env", "test", "--app", "shop2", kubeconfig=kubelab.kubeconfig)
    assert (unknown.returncode, unknown.stdout) == (2, "")
    assert unknown.stderr == "error: environments/test/env.yaml: app 'shop2' is not in environment test (apps: shop)\n"
    (repo / "environments" / "test" / "env.yaml").write_text(f"namespace: {namespace}\napps: shop\n")
    done = gitsync("status", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert done.returncode == 2
    assert done.stderr.startswith("error: environments/test/env.yaml:") and done.stdout == ""
    assert "Traceback" not in done.stderr


def test_status_of_prod_shows_apps_awaiting_promotion_and_why(kubelab: Any, namespace: str, tmp_path: Path) -> None:
    """A receiving environment before its first promotion: every app has its row saying it awaits one (not an
    error: exit 0), and the agent's promotion line (here: why the promotion failed) is printed under the table."""
    from gitsync.adapters.kube import KubeCluster
    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.history import History, Result
    from gitsync.model import AppEnv

    repo = write_repo(tmp_path / "repo", namespace)
    prod = repo / "environments" / "prod"
    prod.mkdir()
    (prod / "env.yaml").write_text(
        f"namespace: {namespace}\napps: [shop]\npromotion: {{from: test, mode: auto, soak: 1m, values: [tag]}}\n"
    )
    subprocess.run(["git", "init", "-q", str(repo)], check=True)

    table = gitsync("status", "--repo", str(repo), "--env", "prod", kubeconfig=kubelab.kubeconfig)
    assert table.returncode == 0, (table.stdout, table.stderr)
    assert table_cells(table.stdout) == [
        ["shop", namespace, "Unknown", "Unknown", "shop awaits promotion from test (no pin yet)"]
    ]

    failed = "failed: promotion.values: tag: not set in the values it is promoted from"  # as the agent records it
    key = AppEnv("shop", "prod")
    History(ConfigMapStateStore(KubeCluster(kubelab.kubeconfig))).set_status(
        key, namespace, lambda s: replace(s, result=Result.AWAITING_PROMOTION.value, promotion=failed)
    )
    table = gitsync("status", "--repo", str(repo), "--env", "prod", kubeconfig=kubelab.kubeconfig)
    assert table.returncode == 0, (table.stdout, table.stderr)
    assert f"shop: promotion {failed}" in table.stdout.splitlines(), table.stdout
    as_json = gitsync("status", "--repo", str(repo), "--env", "prod", "-o", "json", kubeconfig=kubelab.kubeconfig)
    [row] = json.loads(as_json.stdout)["apps"]
    assert (row["agent"]["promotion"], row["errors"]) == (failed, [])


@pytest.mark.timeout(240)
def test_a_sync_that_recreates_a_deleted_object_records_it_healthy(
    kubelab: Any, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """The health a sync records is read after its apply: an object it has just re-created is not Missing."""
    repo = write_repo(tmp_path / "repo", namespace)
    synced = gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    assert status_until(repo, kubelab.kubeconfig, "Healthy")["health"] == "Healthy"

    client.CoreV1Api(kube_api).delete_namespaced_config_map("shop", namespace)  # a person's kubectl delete
    synced = gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    assert "1 created" in synced.stdout, synced.stdout

    recorded = status(repo, kubelab.kubeconfig)["agent"]
    assert (recorded["health"], recorded["healthReason"]) == ("Healthy", "")
    shown = gitsync("history", "--env", "test", "-o", "json", kubeconfig=kubelab.kubeconfig)
    assert shown.returncode == 0, shown.stderr
    [entry] = [e for e in json.loads(shown.stdout) if e["namespace"] == namespace]
    assert (entry["status"]["health"], entry["status"]["healthReason"]) == ("Healthy", "")


LEDGER = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: ledger
  labels: {gitsync.test/admission: refuse}
data:
  currency: EUR
"""


def refusing_webhook(namespace: str) -> dict[str, Any]:
    """Validates ConfigMaps labelled ``gitsync.test/admission: refuse`` in ``namespace`` only, through a Service
    with no endpoints: the API server cannot call it, and with ``failurePolicy: Fail`` answers HTTP 500."""
    return {
        "metadata": {"name": f"refuse-{namespace}"},
        "webhooks": [
            {
                "name": "refuse.gitsync.test",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 2,
                "clientConfig": {"service": {"name": "nowhere", "namespace": namespace, "port": 443}},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "objectSelector": {"matchLabels": {"gitsync.test/admission": "refuse"}},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["configmaps"],
                    }
                ],
            }
        ],
    }


@pytest.mark.timeout(120)
def test_status_shows_every_app_when_one_apps_preview_fails(
    kubelab: Any, kube_api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """As Argo CD's app list: one app whose dry-run the API server cannot answer (a webhook it cannot call) is
    marked Unknown with its error; the others are shown, and the exit status still says "try again"."""
    repo = write_repo(tmp_path / "repo", namespace)
    add_app(repo, "ledger", LEDGER)
    (repo / "environments" / "test" / "env.yaml").write_text(f"namespace: {namespace}\napps:\n  - shop\n  - ledger\n")
    synced = gitsync("sync", "--repo", str(repo), "--env", "test", "--app", "shop", kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr

    core, admission = client.CoreV1Api(kube_api), client.AdmissionregistrationV1Api(kube_api)
    core.create_namespaced_service(namespace, {"metadata": {"name": "nowhere"}, "spec": {"ports": [{"port": 443}]}})
    webhook = refusing_webhook(namespace)
    admission.create_validating_webhook_configuration(webhook)
    try:
        deadline = time.monotonic() + 30
        while True:  # the API server picks the configuration up within a moment
            try:
                core.create_namespaced_config_map(namespace, yaml.safe_load(LEDGER), dry_run="All")
            except client.ApiException as e:
                assert e.status == 500 and "failed calling webhook" in str(e.body), e.body
                break
            assert time.monotonic() < deadline, "the webhook configuration never took effect"
            time.sleep(0.2)

        table = gitsync("status", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
        assert table.returncode == 3, (table.stdout, table.stderr)
        lines = table.stdout.splitlines()
        cells = [[cell.strip() for cell in line.split("│")[1:5]] for line in lines if line.startswith("│")]
        assert [row[:3] for row in cells] == [["shop", namespace, "Synced"], ["ledger", namespace, "Unknown"]]
        assert cells[1][3] == "Unknown", table.stdout
        [error] = [line for line in lines if line.startswith("ledger: ")]
        assert error.startswith(f"ledger: ConfigMap/{namespace}/ledger: ") and "failed calling webhook" in error
        assert lines[-1] == error and "Traceback" not in table.stderr

        as_json = gitsync("status", "--repo", str(repo), "--env", "test", "-o", "json", kubeconfig=kubelab.kubeconfig)
        assert as_json.returncode == 3, as_json.stderr
        apps = {row["app"]: row for row in json.loads(as_json.stdout)["apps"]}
        assert (apps["shop"]["sync"], apps["shop"]["errors"]) == ("Synced", [])
        assert (apps["ledger"]["sync"], apps["ledger"]["health"]) == ("Unknown", "Unknown")
        [reason] = apps["ledger"]["errors"]
        assert "failed calling webhook" in reason and "\n" not in reason

        diff = gitsync("diff", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
        assert diff.returncode == 3 and diff.stderr.count("\n") == 1, diff.stderr  # diff aborts, as kubectl diff
    finally:
        admission.delete_validating_webhook_configuration(webhook["metadata"]["name"])
