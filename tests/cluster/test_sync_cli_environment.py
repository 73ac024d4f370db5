"""`gitsync sync` and `gitsync diff` when the environment itself changes under them: its namespace is being
deleted (one line, exit 3, never a traceback), or an app leaves its `env.yaml` (removed as the agent removes it,
or reported when not pruned)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from test_diff_cli import gitsync, write_repo

from gitsync.adapters.kube import KubeCluster
from gitsync.model import ObjectId

HOLD = "example.com/hold"


def messages(stderr: str) -> list[str]:
    """What the command itself says on stderr: its structured log events (JSON lines) left out."""
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith("{")]


@pytest.fixture
def terminating(namespace: str, kube_api: client.ApiClient) -> Iterator[str]:
    """``namespace``, deleted but held Terminating by a ConfigMap with a finalizer (released at teardown)."""
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "holder", "finalizers": [HOLD]}})
    core.delete_namespace(namespace)
    try:
        deadline = time.monotonic() + 30
        # The namespace controller deletes everything it can (gitsync's state included) and waits on the holder.
        while [cm.metadata.name for cm in core.list_namespaced_config_map(namespace).items] != ["holder"]:
            assert time.monotonic() < deadline, "the namespace controller did not empty the namespace in 30 s"
            time.sleep(0.2)
        assert core.read_namespace(namespace).status.phase == "Terminating"
        yield namespace
    finally:
        try:
            core.patch_namespaced_config_map("holder", namespace, {"metadata": {"finalizers": None}})
        except ApiException as error:
            if error.status != 404:
                raise


def test_a_sync_into_a_namespace_being_deleted_is_one_line_worth_retrying(
    tmp_path: Path, namespace: str, kubelab: Any, request: pytest.FixtureRequest
) -> None:
    repo = write_repo(tmp_path / "repo", namespace)
    args = ("--repo", str(repo), "--env", "test")
    first = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert first.returncode == 0, first.stderr
    request.getfixturevalue("terminating")

    for command in (("sync",), ("sync", "--app", "shop"), ("sync", "--dry-run")):
        refused = gitsync(*command, *args, kubeconfig=kubelab.kubeconfig)
        assert "Traceback" not in refused.stdout + refused.stderr, command
        assert refused.returncode == 3, (command, refused.stdout, refused.stderr)
        [line] = messages(refused.stderr)
        assert line.startswith(f"error: Namespace/{namespace}: being deleted (Terminating"), (command, line)

    planned = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert "Traceback" not in planned.stderr
    assert planned.returncode == 3, "the creates it refuses are worth retrying, not a permission to fix"
    assert all("being terminated" in line for line in messages(planned.stderr)), planned.stderr


def manifests_app(root: Path, app: str, configmaps: dict[str, str]) -> None:
    """A plain-manifests app of ConfigMaps, each with the given extra metadata (YAML flow mapping entries)."""
    folder = root / "apps" / app / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    for name, metadata in configmaps.items():
        extra = f", {metadata}" if metadata else ""
        (folder / f"{name}.yaml").write_text(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}{extra}}}\ndata: {{app: {app}}}\n"
        )


def listing(root: Path, namespace: str, apps: list[str]) -> None:
    env = root / "environments" / "test"
    env.mkdir(parents=True, exist_ok=True)
    (env / "env.yaml").write_text(f"namespace: {namespace}\napps: [{', '.join(apps)}]\n")


@pytest.fixture
def two_apps(tmp_path: Path, namespace: str, kubelab: Any) -> Path:
    """Apps a and b synced; b holds one ConfigMap gitsync may prune and one annotated to be kept."""
    root = tmp_path / "repo"
    manifests_app(root, "a", {"from-a": ""})
    manifests_app(root, "b", {"from-b": "", "b-kept": 'annotations: {gitsync.dev/prune: "false"}'})
    listing(root, namespace, ["a", "b"])
    synced = gitsync("sync", "--repo", str(root), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    return root


def configmaps(kubelab: Any, namespace: str) -> set[str]:
    cluster = KubeCluster(kubelab.kubeconfig)
    names = ("from-a", "from-b", "b-kept")
    return {name for name in names if cluster.get(ObjectId("", "ConfigMap", namespace, name)) is not None}


def test_an_app_removed_from_env_yaml_is_shown_by_diff_and_pruned_by_sync(
    two_apps: Path, namespace: str, kubelab: Any
) -> None:
    args = ("--repo", str(two_apps), "--env", "test")
    listing(two_apps, namespace, ["a"])

    planned = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert f"--- live/ConfigMap/{namespace}/from-b" in planned.stdout
    assert "b-kept" not in planned.stdout, 'gitsync.dev/prune: "false" is never deleted'
    assert planned.stdout.rstrip().endswith("0 to create, 0 to change, 1 to delete, 1 unchanged")
    assert "b@test: no longer listed in environments/test/env.yaml" in planned.stderr

    dry = gitsync("sync", *args, "--dry-run", kubeconfig=kubelab.kubeconfig)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "(no longer listed in environments/test/env.yaml)" in dry.stdout
    assert configmaps(kubelab, namespace) == {"from-a", "from-b", "b-kept"}, "a dry run deletes nothing"

    synced = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "b@test: 1 deleted, 1 skipped (no longer listed in environments/test/env.yaml)" in synced.stdout
    assert configmaps(kubelab, namespace) == {"from-a", "b-kept"}

    history = gitsync(
        "history", "--env", "test", "-n", namespace, "--app", "b", "-o", "json", kubeconfig=kubelab.kubeconfig
    )
    [record] = json.loads(history.stdout)
    assert record["status"]["result"] == "Removed" and record["releases"][0]["deleted"] == 1, "recorded as the agent"
    after = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert after.returncode == 0 and "no longer listed" not in after.stderr, after.stdout + after.stderr


def test_with_pruning_off_a_removed_app_is_reported_and_nothing_deleted(
    two_apps: Path, namespace: str, kubelab: Any
) -> None:
    args = ("--repo", str(two_apps), "--env", "test")
    listing(two_apps, namespace, ["a"])

    kept = gitsync("sync", *args, "--no-prune", kubeconfig=kubelab.kubeconfig)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "b is no longer listed in environments/test/env.yaml and pruning is off" in kept.stdout
    assert configmaps(kubelab, namespace) == {"from-a", "from-b", "b-kept"}

    listing(two_apps, namespace, [])  # the empty-environment guard holds even with --prune
    emptied = gitsync("sync", *args, "--prune", kubeconfig=kubelab.kubeconfig)
    assert emptied.returncode == 0, emptied.stdout + emptied.stderr
    for app in ("a", "b"):
        assert f"{app} is no longer listed in environments/test/env.yaml and the file lists no apps" in emptied.stdout
    assert configmaps(kubelab, namespace) == {"from-a", "from-b", "b-kept"}


def test_sync_app_of_an_app_removed_from_env_yaml_removes_it_as_a_whole_environment_sync_would(
    two_apps: Path, namespace: str, kubelab: Any
) -> None:
    """`gitsync sync --app b` after b left env.yaml: the removal of b alone (previewed with --dry-run), its objects
    kept and the command that deletes them named when pruning is off; a name gitsync never held is one line."""
    args = ("--repo", str(two_apps), "--env", "test")
    listing(two_apps, namespace, ["a"])

    kept = gitsync("sync", *args, "--app", "b", "--no-prune", kubeconfig=kubelab.kubeconfig)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert kept.stdout.splitlines() == [
        "b@test: b is no longer listed in environments/test/env.yaml and pruning is off: its 2 objects stay in the "
        "cluster, no longer managed (gitsync sync --env test --app b --prune deletes them)"
    ]
    dry = gitsync("sync", *args, "--app", "b", "--prune", "--dry-run", kubeconfig=kubelab.kubeconfig)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.splitlines() == [
        "b@test: dry run: 0 to create, 0 to change, 1 to delete, 0 unchanged (no longer listed in "
        "environments/test/env.yaml)"
    ]
    assert configmaps(kubelab, namespace) == {"from-a", "from-b", "b-kept"}

    synced = gitsync("sync", *args, "--app", "b", "--prune", kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "b@test: 1 deleted, 1 skipped (no longer listed in environments/test/env.yaml)" in synced.stdout
    assert "a@test" not in synced.stdout, "only the app named"
    assert configmaps(kubelab, namespace) == {"from-a", "b-kept"}

    again = gitsync("sync", *args, "--app", "b", kubeconfig=kubelab.kubeconfig)
    assert again.returncode == 2
    assert messages(again.stderr) == [
        "error: environments/test/env.yaml: app 'b' is not in environment test, and gitsync holds nothing of it in "
        "the cluster"
    ]
