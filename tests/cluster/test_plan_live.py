"""``gitsync plan --live``: a change planned from Git and, for each head render, against the cluster by dry-run."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from test_diff_cli import gitsync, write_repo


def git(repo: Path, *args: str) -> None:
    who = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com", "GIT_COMMITTER_NAME": "Ada"}
    env = {**os.environ, **who, "GIT_COMMITTER_EMAIL": "ada@example.com", "GIT_CONFIG_NOSYSTEM": "1"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, timeout=30)


def test_plan_live_compares_the_head_with_what_runs(tmp_path: Path, namespace: str, kubelab: Any) -> None:
    repo = write_repo(tmp_path / "repo", namespace)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    assert gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig).returncode == 0
    write_repo(repo, namespace, color="green", password="s3cret-two")
    git(repo, "commit", "-q", "-am", "green, and a new password")
    plan_args = ("plan", "--repo", str(repo), "--base", "HEAD~1", "--live", "-o", "json")

    before = gitsync(*plan_args, kubeconfig=kubelab.kubeconfig)

    assert before.returncode == 1, before.stderr
    (app,) = json.loads(before.stdout)["apps"]
    changed = [f"Secret/{namespace}/shop-db", f"ConfigMap/{namespace}/shop"]  # in apply order
    assert [o["id"] for o in app["objects"]] == changed  # base -> head, from Git
    assert [(o["id"], o["change"]) for o in app["live"]] == [(i, "changed") for i in changed]  # cluster -> head
    assert f"--- live/ConfigMap/{namespace}/shop" in app["live"][1]["diff"]
    for value in ("s3cret-one", "s3cret-two", "czNjcmV0LW9uZ", "czNjcmV0LXR3b"):
        assert value not in before.stdout

    assert gitsync("sync", "--repo", str(repo), "--env", "test", kubeconfig=kubelab.kubeconfig).returncode == 0
    after = gitsync(*plan_args[:-2], "-o", "markdown", kubeconfig=kubelab.kubeconfig)
    assert after.returncode == 1, after.stderr  # the change is still a change between the two commits ...
    assert "| test | shop | 0 | 2 | 0 | — | none | — | in sync |" in after.stdout  # ... the cluster has it
