"""A rollout from a real GitOps repository: the renderer, sync (which leaves the Deployment to the executor),
a config-only change that rolls out through the config-hash annotation, and the `gitsync rollout` commands."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import renderers
from gitsync.adapters.clock import SystemClock
from gitsync.adapters.kube import KubeCluster
from gitsync.adapters.state import ConfigMapStateStore
from gitsync.cli import main
from gitsync.errors import StaleError
from gitsync.model import AppEnv, ObjectId
from gitsync.strategy import control, executor
from gitsync.strategy.state import Phase
from gitsync.sync import sync_app

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"


@pytest.fixture
def repo(tmp_path: Path, namespace: str) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(EXAMPLE, root)
    env_file = root / "environments" / "staging" / "env.yaml"
    env = yaml.safe_load(env_file.read_text())
    env_file.write_text(yaml.safe_dump({**env, "namespace": namespace}))
    values_file = root / "environments" / "staging" / "values" / "podinfo.yaml"
    values = yaml.safe_load(values_file.read_text())
    values["replicas"] = 2
    values["rollout"] = {"strategy": "canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}]}}
    values_file.write_text(yaml.safe_dump(values))
    return root


def set_message(repo: Path, message: str) -> None:
    values_file = repo / "environments" / "staging" / "values" / "podinfo.yaml"
    values = yaml.safe_load(values_file.read_text())
    values["config"]["PODINFO_UI_MESSAGE"] = message
    values_file.write_text(yaml.safe_dump(values))


def reconcile(repo: Path, cluster: KubeCluster, store: ConfigMapStateStore) -> executor.StepOutcome:
    """What the agent does per reconcile: render, sync everything but what the strategy owns, one rollout step."""
    rendered = renderers.render_app(repo, "staging", "podinfo")
    result = sync_app(rendered, cluster, store, prune=True, dry_run=False, exclude=executor.owned(rendered))
    assert result.ok, result.summary()
    return executor.advance(rendered, cluster, store, SystemClock())


def drive(repo: Path, cluster: KubeCluster, store: ConfigMapStateStore, phase: Phase) -> None:
    deadline = time.monotonic() + 60
    while (out := reconcile(repo, cluster, store)).phase is not phase:
        assert time.monotonic() < deadline, f"stuck: {out}"
        time.sleep(min(out.requeue_after or 0.5, 0.5))


def test_config_only_change_rolls_out_and_cli_controls_it(repo: Path, kubelab, namespace: str) -> None:
    cluster = KubeCluster(kubelab.kubeconfig)
    store = ConfigMapStateStore(cluster)
    assert reconcile(repo, cluster, store).phase is Phase.HEALTHY
    deployment = ObjectId("apps", "Deployment", namespace, "podinfo")
    assert cluster.get(deployment) is not None
    args = ["--repo", str(repo), "--env", "staging", "--app", "podinfo", "--kubeconfig", str(kubelab.kubeconfig)]
    for name in ("abort", "promote", "retry"):  # nothing is rolling out: refused, and no request is left behind
        refused = CliRunner().invoke(main, ["rollout", name, *args])
        assert refused.exit_code == 2, refused.output
        assert refused.stderr == f"error: podinfo@staging: nothing to {name}: the rollout is Healthy\n"
    assert "pendingCommand" not in control.describe_rollout(store, AppEnv("podinfo", "staging"), namespace)
    shown = CliRunner().invoke(main, ["rollout", "status", *args])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith("podinfo@staging: rollout Healthy, weight 0%: first deployment"), shown

    set_message(repo, "config changed, image not")
    drive(repo, cluster, store, Phase.PAUSED)  # setWeight 50 done, waiting at `pause: {}`
    assert cluster.get(ObjectId("apps", "Deployment", namespace, "podinfo-canary")) is not None
    configmap = cluster.get(ObjectId("", "ConfigMap", namespace, "podinfo"))
    assert configmap is not None and configmap["data"]["PODINFO_UI_MESSAGE"] == "config changed, image not"

    shown = CliRunner().invoke(main, ["status", *args, "-o", "json"])
    assert shown.exit_code == 0, shown.output
    (app,) = json.loads(shown.stdout)["apps"]
    assert (app["rollout"]["phase"], app["rollout"]["weight"]) == ("Paused", 50)
    assert (app["rollout"]["step"], app["rollout"]["steps"]) == (1, 2), "JSON: the 0-based index and the count"
    table = CliRunner().invoke(main, ["status", *args])
    assert "podinfo: rollout Paused, step 2/2, weight 50%: paused: step 2/2 waits for" in table.stdout, table.stdout
    shown = CliRunner().invoke(main, ["rollout", "status", *args])
    assert shown.stdout.startswith("podinfo@staging: rollout Paused, step 2/2, weight 50%: paused: step 2/2"), shown
    result = CliRunner().invoke(main, ["rollout", "promote", *args])
    assert result.exit_code == 0, result.output
    assert "promote" in result.output
    drive(repo, cluster, store, Phase.HEALTHY)
    template = cluster.get(deployment)["spec"]["template"]["metadata"]["annotations"]  # type: ignore[index]
    rendered = renderers.render_app(repo, "staging", "podinfo")
    wanted = next(m for m in rendered.manifests if m.id.kind == "Deployment").body
    assert (
        template["gitsync.dev/config-hash"]
        == wanted["spec"]["template"]["metadata"]["annotations"]["gitsync.dev/config-hash"]
    )

    set_message(repo, "a release someone aborts")
    drive(repo, cluster, store, Phase.PAUSED)
    result = CliRunner().invoke(main, ["rollout", "abort", *args])
    assert result.exit_code == 0 and "Aborted" in result.output, result.output
    status = control.describe_rollout(store, rendered.app_env, namespace)
    assert status["abortReason"] == "aborted by gitsync rollout abort"
    assert reconcile(repo, cluster, store).phase is Phase.ABORTED  # not retried on the next poll
    result = CliRunner().invoke(main, ["rollout", "retry", *args])
    assert result.exit_code == 0, result.output
    # started again: at its first step, or already at its pause when the canary's pods were still up (a human's
    # abort keeps them until the stable is back at full strength)
    status = control.describe_rollout(store, rendered.app_env, namespace)
    assert status["phase"] in ("Progressing", "Paused") and "abortReason" not in status, status


def test_a_promote_whose_own_step_loses_to_the_agent_leaves_the_request_to_it(
    repo: Path, kubelab, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent steps the rollout at the moment the command does and its write wins (a Conflict): the request is
    already written, so the command says the agent applies it and exits 0, and the next step does."""
    cluster = KubeCluster(kubelab.kubeconfig)
    store = ConfigMapStateStore(cluster)
    assert reconcile(repo, cluster, store).phase is Phase.HEALTHY
    set_message(repo, "a release the agent promotes")
    drive(repo, cluster, store, Phase.PAUSED)
    args = ["--repo", str(repo), "--env", "staging", "--app", "podinfo", "--kubeconfig", str(kubelab.kubeconfig)]

    def lost(*_: object, **__: object) -> None:
        raise StaleError("ConfigMap/x/gitsync.podinfo.staging.rollout: Conflict: the object has been modified")

    with monkeypatch.context() as patch:
        patch.setattr(executor, "advance", lost)
        result = CliRunner().invoke(main, ["rollout", "promote", *args])
    assert result.exit_code == 0, result.output
    assert result.output == "podinfo@staging: promote requested; the agent, stepping it now, applies it\n"
    drive(repo, cluster, store, Phase.HEALTHY)


def test_cli_sync_leaves_a_canary_workload_to_the_rollout(repo: Path, kubelab, namespace: str) -> None:
    """`gitsync sync` by hand must not bypass the canary: the stable Deployment keeps serving the old template."""
    cluster = KubeCluster(kubelab.kubeconfig)
    args = [
        "sync",
        "--repo",
        str(repo),
        "--env",
        "staging",
        "--app",
        "podinfo",
        "--kubeconfig",
        str(kubelab.kubeconfig),
    ]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    stable = ObjectId("apps", "Deployment", namespace, "podinfo")
    before = cluster.get(stable)
    assert before is not None

    set_message(repo, "a new config, rolled out as a canary")
    canary = ObjectId("apps", "Deployment", namespace, "podinfo-canary")
    # One rollout step per run: the first records the new release, a next one starts the canary (once the
    # stable's pods are up, which a loaded machine can take a while to report: runs until then, for up to 60 s).
    deadline = time.monotonic() + 60
    while True:
        again = CliRunner().invoke(main, args)
        assert again.exit_code == 0, again.output
        assert "podinfo@staging: rollout Progressing" in again.output
        if cluster.get(canary) is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert cluster.get(canary) is not None, "the new release runs as a canary"
    after = cluster.get(stable)
    assert after is not None
    assert after["spec"]["template"] == before["spec"]["template"], "stable keeps the old release until promotion"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def test_a_rollout_the_cli_restarts_names_the_commit_as_sync_does(repo: Path, kubelab, namespace: str) -> None:
    """`gitsync rollout retry` runs the step that starts the rollout again: its state, history and events name the
    checkout's commit, as `gitsync sync` does, not an empty revision (the template hash stood in for it)."""
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "v1")
    args = ["--repo", str(repo), "--env", "staging", "--kubeconfig", str(kubelab.kubeconfig)]
    assert CliRunner().invoke(main, ["sync", *args]).exit_code == 0
    set_message(repo, "v2")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "v2")
    head = git(repo, "rev-parse", "HEAD")
    assert CliRunner().invoke(main, ["sync", *args]).exit_code == 0
    for command in ("abort", "retry"):
        result = CliRunner().invoke(main, ["rollout", command, *args, "--app", "podinfo"])
        assert result.exit_code == 0, result.output
        shown = CliRunner().invoke(main, ["rollout", "status", *args, "--app", "podinfo"])
        if command == "abort":  # as `kubectl argo rollouts status` exits 1 for a Degraded rollout
            assert shown.exit_code == 1 and "podinfo@staging: rollout Aborted" in shown.stdout, shown.output
            assert "podinfo@staging:   aborted: aborted by gitsync rollout abort" in shown.stdout
        else:
            assert shown.exit_code == 0 and "podinfo@staging: rollout Progressing" in shown.stdout, shown.output
        assert f"podinfo@staging:   history: aborted {head[:12]}: aborted by gitsync rollout abort" in shown.stdout
    store = ConfigMapStateStore(KubeCluster(kubelab.kubeconfig))
    status = control.describe_rollout(store, AppEnv("podinfo", "staging"), namespace)
    assert (status["phase"], status["revision"]) == ("Progressing", head)
    assert status["history"][-1]["revision"] == head
