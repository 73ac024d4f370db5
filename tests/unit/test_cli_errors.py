"""What a user sees when a command cannot start: one readable line naming the file, the documented exit status,
never a Python traceback; and log lines about a crash never carry the values of local variables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
GITSYNC = str(Path(sys.executable).parent / "gitsync")

REPO_ARGS = ("--repo", str(EXAMPLE), "--env", "staging")
COMMANDS = [
    pytest.param(("diff", *REPO_ARGS), id="diff"),
    pytest.param(("sync", *REPO_ARGS), id="sync"),
    pytest.param(("status", *REPO_ARGS), id="status"),
    pytest.param(("rollout", "promote", *REPO_ARGS, "--app", "podinfo"), id="rollout-promote"),
    pytest.param(("abort", *REPO_ARGS, "--app", "podinfo"), id="abort"),
    pytest.param(("retry", *REPO_ARGS, "--app", "podinfo"), id="retry"),
    pytest.param(("history", "--env", "staging"), id="history"),
]
KUBECONFIGS = [
    pytest.param("clusters: [\n", ":2: cannot load cluster configuration: invalid YAML", id="not-yaml"),
    pytest.param("- a list\n", ": cannot load cluster configuration: not a kubeconfig", id="a-list"),
    pytest.param("clusters: 5\ncontexts: 3\n", ": cannot load cluster configuration: not a kubeconfig", id="bad-shape"),
]


def gitsync(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    return subprocess.run([GITSYNC, *args], capture_output=True, text=True, timeout=60, env=env, check=False)


@pytest.mark.parametrize("args", COMMANDS)
@pytest.mark.parametrize(("content", "problem"), KUBECONFIGS)
def test_a_broken_kubeconfig_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], content: str, problem: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(content)
    result = gitsync(*args, "--kubeconfig", str(kubeconfig))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: {kubeconfig}{problem}")


@pytest.mark.parametrize("args", COMMANDS)
def test_a_missing_kubeconfig_is_named(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = gitsync(*args, "--kubeconfig", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'nope'}: kubeconfig file does not exist\n"


@pytest.mark.parametrize("args", COMMANDS)
def test_no_kubeconfig_at_all_says_what_to_pass(tmp_path: Path, args: tuple[str, ...]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env["HOME"] = str(tmp_path)  # no ~/.kube/config: a newcomer's first command on a fresh machine
    result = subprocess.run([GITSYNC, *args], capture_output=True, text=True, timeout=60, env=env, check=False)
    assert result.returncode == 2
    assert result.stderr == (
        "error: kubeconfig: none found ($KUBECONFIG unset or naming no file, no ~/.kube/config, and not in a pod): "
        "pass --kubeconfig FILE or set KUBECONFIG\n"
    )


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_logged_crash_never_shows_local_variables(fmt: str) -> None:
    program = f"""
from gitsync import log
log.configure({fmt!r})
def fetch():
    header = "Basic bm90LWEtcmVhbC10b2tlbg=="
    raise RuntimeError("fetch failed")
try:
    fetch()
except RuntimeError:
    log.get().exception("reconcile.crashed")
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert "reconcile.crashed" in result.stderr and "fetch failed" in result.stderr
    assert "bm90LWEtcmVhbC10b2tlbg" not in result.stderr


def test_render_rejects_a_broken_rollout_block_with_file_and_line(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    values = repo / "apps" / "podinfo" / "values.yaml"
    lines = values.read_text().splitlines()
    at = next(n for n, text in enumerate(lines) if "pause: {duration: 10s}" in text)
    lines[at] = lines[at].replace("10s", "soon")
    values.write_text("\n".join(lines) + "\n")

    result = gitsync("render", "--repo", str(repo), "--env", "staging")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"apps/podinfo/values.yaml:{at + 1}: rollout.canary.steps[1].pause.duration: "
        "not a duration: 'soon' (want e.g. 10s, 2m, 500ms)\n"
    )
