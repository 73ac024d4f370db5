"""A commit with a symbolic link out of the repository, as the agent and ``gitsync sync`` see it: from a real
Git repository, through the Git adapter's snapshot. The snapshot is made (every app of the commit shares it);
the app that reads through the link fails with one error at the link; the other app of the commit renders."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from corpus import CHART, ENV, Link, make_repo

from gitsync.adapters.git import GitRepository
from renderers import RenderError, render_app

IDENTITY = {"GIT_AUTHOR_NAME": "A", "GIT_AUTHOR_EMAIL": "a@x", "GIT_COMMITTER_NAME": "A", "GIT_COMMITTER_EMAIL": "a@x"}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../../outside/secret.yaml"])
def test_a_link_out_fails_only_the_app_that_reads_it(tmp_path: Path, target: str) -> None:
    work = make_repo(
        tmp_path,
        {
            f"{CHART}/values.yaml": Link(target),
            "apps/other/chart.yaml": "name: other\n",
            "apps/other/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n",
            f"{ENV}/env.yaml": "namespace: web-dev\napps: [web, other]\n",
        },
    )
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "a link out")
    repository = GitRepository(f"file://{work}", "main", tmp_path / "cache")
    snapshot = repository.snapshot(repository.fetch().sha)

    assert os.readlink(snapshot / CHART / "values.yaml") == target
    with pytest.raises(RenderError) as raised:
        render_app(snapshot, "dev", "web")
    assert str(raised.value) == f"{CHART}/values.yaml: symbolic link out of the repository (only its files are read)"
    assert [str(m.id) for m in render_app(snapshot, "dev", "other").manifests] == ["ConfigMap/web-dev/other"]
