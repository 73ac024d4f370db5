"""``gitsync diff`` and ``gitsync sync`` as a user runs them: a GitOps repo on disk, a real cluster, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gitsync.adapters.kube import KubeCluster
from gitsync.errors import GitsyncError
from gitsync.model import ObjectId

GITSYNC = Path(sys.executable).parent / "gitsync"
KUBECTL = Path(sys.executable).parent / "kubectl"

TEMPLATES = {
    "configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: shop
data:
  color: {{ values.color | quote }}
""",
    "secret.yaml": """\
apiVersion: v1
kind: Secret
metadata:
  name: shop-db
stringData:
  password: {{ values.password | quote }}
""",
    "deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
spec:
  replicas: 1
  selector:
    matchLabels: {app: shop}
  template:
    metadata:
      labels: {app: shop}
    spec:
      containers:
        - name: shop
          image: registry.example/shop:1
""",
}


def write_repo(root: Path, namespace: str, *, color: str = "blue", password: str = "s3cret-one") -> Path:
    chart = root / "apps" / "shop"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "chart.yaml").write_text("name: shop\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(f"color: {color}\npassword: {password}\n")
    for name, text in TEMPLATES.items():
        (chart / "templates" / name).write_text(text)
    env = root / "environments" / "test"
    (env / "values").mkdir(parents=True, exist_ok=True)
    (env / "env.yaml").write_text(f"namespace: {namespace}\napps:\n  - shop\n")
    return root


def gitsync(*args: str, kubeconfig: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GITSYNC), *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path, namespace: str) -> Path:
    return write_repo(tmp_path / "repo", namespace)


def test_diff_exit_codes_follow_kubectl(repo: Path, namespace: str, kubelab: Any) -> None:
    args = ("--repo", str(repo), "--env", "test")
    before = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert before.returncode == 1, before.stderr
    assert before.stdout.rstrip().endswith("3 to create, 0 to change, 0 to delete, 0 unchanged")
    assert f"+++ desired/Deployment.apps/{namespace}/shop" in before.stdout

    synced = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    assert "3 created" in synced.stdout

    after = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert after.returncode == 0, after.stderr
    assert after.stdout.strip() == "0 to create, 0 to change, 0 to delete, 3 unchanged"

    one_app = gitsync("diff", *args, "--app", "shop", kubeconfig=kubelab.kubeconfig)
    assert one_app.returncode == 0, one_app.stderr
    unknown_app = gitsync("diff", *args, "--app", "nope", kubeconfig=kubelab.kubeconfig)
    assert unknown_app.returncode == 2
    assert "nope" in unknown_app.stderr

    broken = gitsync("diff", "--repo", str(repo), "--env", "nope", kubeconfig=kubelab.kubeconfig)
    assert broken.returncode == 2
    assert len(broken.stderr.strip().splitlines()) == 1


def test_diff_of_a_new_environment_plans_creates_where_sync_will_make_the_namespace(
    tmp_path: Path, kubelab: Any
) -> None:
    fresh = f"fresh-{tmp_path.name[-8:].lower().replace('_', '-')}"
    repo = write_repo(tmp_path / "repo", fresh)
    cluster = KubeCluster(kubelab.kubeconfig)
    args = ("--repo", str(repo), "--env", "test")

    for command in (("diff",), ("sync", "--dry-run"), ("status",)):
        shown = gitsync(*command, *args, kubeconfig=kubelab.kubeconfig)
        assert "not found" not in shown.stdout + shown.stderr, command
        assert "3 to create" in shown.stdout, (command, shown.stdout, shown.stderr)
    assert cluster.get(ObjectId("", "Namespace", "", fresh)) is None, "looking changes nothing"

    synced = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    assert f"Namespace/{fresh}: created" in synced.stdout
    assert gitsync("diff", *args, kubeconfig=kubelab.kubeconfig).returncode == 0
    cluster.delete(ObjectId("", "Namespace", "", fresh))


def test_diff_shows_changes_but_never_secret_values(repo: Path, namespace: str, kubelab: Any) -> None:
    args = ("--repo", str(repo), "--env", "test")
    first = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert "s3cret-one" not in first.stdout
    assert gitsync("sync", *args, kubeconfig=kubelab.kubeconfig).returncode == 0

    write_repo(repo, namespace, color="green", password="s3cret-two")
    text = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert text.returncode == 1
    assert "-  color: blue" in text.stdout and "+  color: green" in text.stdout
    assert "password: '*** (masked)" in text.stdout
    assert f"--- live/Secret/{namespace}/shop-db" in text.stdout, "a changed secret value still shows as a change"
    assert text.stdout.rstrip().endswith("0 to create, 2 to change, 0 to delete, 1 unchanged")

    as_json = gitsync("diff", *args, "-o", "json", kubeconfig=kubelab.kubeconfig)
    assert as_json.returncode == 1
    plan = json.loads(as_json.stdout)
    assert plan["summary"] == {"create": 0, "update": 2, "delete": 0, "unchanged": 1}
    assert {c["id"]: c["action"] for c in plan["apps"][0]["changes"]}[f"ConfigMap/{namespace}/shop"] == "update"

    markdown = gitsync("diff", *args, "-o", "markdown", kubeconfig=kubelab.kubeconfig)
    assert "```diff" in markdown.stdout and "0 to create, 2 to change" in markdown.stdout

    for output in (first.stdout, text.stdout, as_json.stdout, markdown.stdout):
        for value in ("s3cret-one", "s3cret-two", "czNjcmV0LW9uZ", "czNjcmV0LXR3b"):
            assert value not in output


def test_diff_json_and_markdown_name_the_checkouts_revision(repo: Path, namespace: str, kubelab: Any) -> None:
    git = ["git", "-C", str(repo), "-c", "user.name=Ada", "-c", "user.email=ada@example.org"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "shop: first release"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    args = ("--repo", str(repo), "--env", "test")

    as_json = gitsync("diff", *args, "-o", "json", kubeconfig=kubelab.kubeconfig)
    assert as_json.returncode == 1, as_json.stderr
    assert [app["revision"] for app in json.loads(as_json.stdout)["apps"]] == [head]
    markdown = gitsync("diff", *args, "-o", "markdown", kubeconfig=kubelab.kubeconfig)
    assert markdown.stdout.splitlines()[0] == f"### gitsync plan for `test` at `{head}`"

    write_repo(repo, namespace, color="green")  # uncommitted: what sync would record as {head}-dirty
    dirty = gitsync("diff", *args, "-o", "json", kubeconfig=kubelab.kubeconfig)
    assert [app["revision"] for app in json.loads(dirty.stdout)["apps"]] == [f"{head}-dirty"]


def test_failed_render_never_prunes(repo: Path, namespace: str, kubelab: Any) -> None:
    args = ("--repo", str(repo), "--env", "test")
    assert gitsync("sync", *args, kubeconfig=kubelab.kubeconfig).returncode == 0

    # the next commit drops the ConfigMap and breaks a template: nothing may be deleted
    (repo / "apps" / "shop" / "templates" / "configmap.yaml").unlink()
    (repo / "apps" / "shop" / "templates" / "secret.yaml").write_text("metadata: {{ values.missing.key }}\n")
    failed = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert failed.returncode == 2
    (line,) = failed.stderr.strip().splitlines()
    assert "secret.yaml:1" in line
    assert KubeCluster(kubelab.kubeconfig).get(ObjectId("", "ConfigMap", namespace, "shop")) is not None

    # fixed: now the ConfigMap is pruned
    write_repo(repo, namespace)
    (repo / "apps" / "shop" / "templates" / "configmap.yaml").unlink()
    fixed = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert fixed.returncode == 0, fixed.stderr
    assert "1 deleted" in fixed.stdout
    assert KubeCluster(kubelab.kubeconfig).get(ObjectId("", "ConfigMap", namespace, "shop")) is None


def test_unreachable_cluster_is_exit_3_worth_retrying(repo: Path, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "nowhere.kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: x, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: x, user: {token: not-a-real-token}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: x}}]\n"
    )
    result = gitsync("diff", "--repo", str(repo), "--env", "test", kubeconfig=kubeconfig)
    assert result.returncode == 3, "transient: the same command may succeed later"
    assert result.stderr.startswith("error: ")
    assert "not-a-real-token" not in result.stderr + result.stdout


def test_sync_creates_the_environment_namespace_on_a_fresh_cluster(
    tmp_path: Path, namespace: str, kubelab: Any
) -> None:
    fresh = f"{namespace}-new"
    repo = write_repo(tmp_path / "repo", fresh)
    cluster = KubeCluster(kubelab.kubeconfig)
    try:
        synced = gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
        assert synced.returncode == 0, synced.stderr
        assert synced.stdout.splitlines() == [f"Namespace/{fresh}: created", "shop@test: 3 created"]
        assert cluster.get(ObjectId("", "ConfigMap", fresh, "shop")) is not None
        again = gitsync("diff", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
        assert again.returncode == 0, again.stderr
        # anyone who can merge writes its pods: none may be privileged or mount the node (Pod Security "baseline")
        labels = cluster.get(ObjectId("", "Namespace", "", fresh))["metadata"]["labels"]  # type: ignore[index]
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        node_root = {"name": "h", "hostPath": {"path": "/"}}
        pod = {"containers": [{"name": "c", "image": "x", "volumeMounts": [{"name": "h", "mountPath": "/h"}]}]}
        with pytest.raises(GitsyncError, match="violates PodSecurity"):
            cluster.create(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "p", "namespace": fresh},
                    "spec": {**pod, "volumes": [node_root]},
                }
            )
    finally:
        cluster.delete(ObjectId("", "Namespace", "", fresh))


def test_a_manifest_copied_from_kubectl_get_keeps_syncing(tmp_path: Path, namespace: str, kubelab: Any) -> None:
    """``kubectl get -o yaml`` pasted into the repo carries what the server wrote (resourceVersion, uid,
    creationTimestamp). gitsync drops it: every later change syncs, where a stale resourceVersion sent back is
    refused with HTTP 409 from the first change after the copy on."""
    repo = write_repo(tmp_path / "repo", namespace)
    synced = gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    copied = subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kubelab.kubeconfig), "-n", namespace, "get", "configmap/shop", "-o", "yaml"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "resourceVersion:" in copied and "uid:" in copied and "creationTimestamp:" in copied
    template = repo / "apps" / "shop" / "templates" / "configmap.yaml"
    cluster = KubeCluster(kubelab.kubeconfig)
    for color in ("green", "red"):
        template.write_text(copied.replace("color: blue", f"color: {color}"))
        synced = gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
        assert synced.returncode == 0, synced.stderr
        assert synced.stdout.splitlines() == ["shop@test: 1 configured, 2 unchanged"], synced.stdout
        live = cluster.get(ObjectId("", "ConfigMap", namespace, "shop"))
        assert live is not None and live["data"] == {"color": color}

    rendered = subprocess.run(
        [str(GITSYNC), "render", "--repo", str(repo), "--env", "test"], capture_output=True, text=True, check=False
    )
    assert rendered.returncode == 0, rendered.stderr
    for field in ("resourceVersion", "uid", "creationTimestamp"):
        assert field not in rendered.stdout
    diff = gitsync("diff", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert diff.returncode == 0, diff.stdout


def test_history_prints_commit_messages_and_errors_as_written(namespace: str, kubelab: Any) -> None:
    from dataclasses import replace

    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.history import History, Release
    from gitsync.model import AppEnv

    key = AppEnv("shop", "test")
    history = History(ConfigMapStateStore(KubeCluster(kubelab.kubeconfig)))
    message, error = "fix: parse [/] and [bold] in titles [skip ci]", "Deployment.apps/x/shop: invalid [/]"
    history.record(key, namespace, Release("a" * 40, "sha256:1", "Ada", message, 1.0, 2.0, "Failed", error=error))
    history.set_status(key, namespace, lambda s: replace(s, result="Failed", last_error=error))

    shown = gitsync("history", "--env", "test", "-n", namespace, kubeconfig=kubelab.kubeconfig)
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # the table may wrap long cells
    assert "[skip ci]" in text and "[bold]" in text and "[/]" in text
    assert f"last error: {error}" in text

    nothing = gitsync("history", "--env", "test", "--app", "nope", "-n", namespace, kubeconfig=kubelab.kubeconfig)
    assert nothing.returncode == 2
    assert nothing.stderr.strip() == "error: no gitsync state for env test app nope in the cluster"


def test_a_piped_history_keeps_each_header_line_whole(namespace: str, kubelab: Any) -> None:
    """Captured, not a terminal: rich would fold at 80 columns and put the revision on a line of its own."""
    from dataclasses import replace

    from gitsync.adapters.state import ConfigMapStateStore
    from gitsync.history import History, Release
    from gitsync.model import AppEnv

    key, revision = AppEnv("storefront-recommendations-backend-worker", "test"), "b" * 40
    history = History(ConfigMapStateStore(KubeCluster(kubelab.kubeconfig)))
    message = "storefront: move the recommendations worker to the new queue and raise its memory limit"
    history.record(key, namespace, Release(revision, "sha256:1", "Ada", message, 1.0, 2.0, "Succeeded"))
    history.set_status(key, namespace, lambda s: replace(s, result="Succeeded", last_applied_revision=revision))

    shown = gitsync("history", "--env", "test", "-n", namespace, kubeconfig=kubelab.kubeconfig)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    header = f"{key} in {namespace}: Succeeded, Unknown, Unknown at {revision[:12]}"
    assert len(header) > 80 and lines[0] == header, shown.stdout
    [row] = [line for line in lines if line.startswith("1 ")]
    assert row.split()[1:3] == [revision[:12], "Succeeded"] and row.rstrip().endswith(message), shown.stdout


@pytest.mark.parametrize("strategy", ["canary", "blueGreen"])
def test_a_progressive_app_reads_in_sync_after_its_rollout_and_a_new_image_shows(
    repo: Path, namespace: str, kubelab: Any, strategy: str
) -> None:
    chart = repo / "apps" / "shop"
    (chart / "templates" / "service.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: shop}\nspec: {selector: {app: shop}, ports: [{port: 80}]}\n"
    )
    with (chart / "values.yaml").open("a") as values:
        values.write(f"rollout:\n  strategy: {strategy}\n")
    args = ("--repo", str(repo), "--env", "test")
    synced = gitsync("sync", *args, kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr

    after = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    assert (after.returncode, after.stdout.strip()) == (0, "0 to create, 0 to change, 0 to delete, 4 unchanged")
    status = gitsync("status", *args, "-o", "json", kubeconfig=kubelab.kubeconfig)
    assert json.loads(status.stdout)["apps"][0]["sync"] == "Synced", status.stdout

    template = chart / "templates" / "deployment.yaml"
    template.write_text(template.read_text().replace("shop:1", "shop:2"))
    pending = gitsync("diff", *args, kubeconfig=kubelab.kubeconfig)
    workload = "shop" if strategy == "canary" else "shop-blue"  # what serves, which the new version will reach
    assert pending.returncode == 1 and f"+++ desired/Deployment.apps/{namespace}/{workload}" in pending.stdout
    added = [line for line in pending.stdout.splitlines() if line.startswith("+") and "image:" in line]
    assert [line.split()[-1] for line in added] == ["registry.example/shop:2"], pending.stdout


def test_status_and_history_after_a_cli_sync_say_what_it_did(tmp_path: Path, namespace: str, kubelab: Any) -> None:
    """`gitsync sync` goes through the agent's reconcile and records like it: the status names the commit, the
    health and the result; the history has the release with its author (before, status showed "-" and Unknown)."""
    repo = write_repo(tmp_path / "repo", namespace)
    git = ["git", "-C", str(repo), "-c", "user.name=Ada", "-c", "user.email=ada@example.org"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "shop: first release"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()

    synced = gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert synced.returncode == 0, synced.stderr
    shown = gitsync("status", "--repo", str(repo), "--env", "test", "-o", "json", kubeconfig=kubelab.kubeconfig)
    assert shown.returncode == 0, shown.stderr
    [app] = json.loads(shown.stdout)["apps"]
    assert app["revision"] == head and app["agent"]["result"] in ("Succeeded", "Progressing")
    assert app["agent"]["lastAttemptedRevision"] == head and app["health"] in ("Healthy", "Progressing")

    history = gitsync("history", "--env", "test", "-n", namespace, "-o", "json", kubeconfig=kubelab.kubeconfig)
    assert history.returncode == 0, history.stderr
    [record] = json.loads(history.stdout)
    [release] = record["releases"]
    assert (release["revision"], release["author"], release["message"]) == (
        head,
        "Ada <ada@example.org>",
        "shop: first release",
    )
    assert release["created"] == 3

    (repo / "apps" / "shop" / "values.yaml").write_text("color: green\npassword: s3cret-one\n")
    dirty = gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig)
    assert dirty.returncode == 0, dirty.stderr
    shown = gitsync("status", "--repo", str(repo), "--env", "test", "-o", "json", kubeconfig=kubelab.kubeconfig)
    [app] = json.loads(shown.stdout)["apps"]
    assert app["revision"] == f"{head}-dirty", "a sync of uncommitted changes never claims the commit"
