"""Fixtures for unit tests that need Git history: example-repo as a repository whose prod is pinned."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from gitsync.adapters.trees import LocalTrees
from gitsync.promoted_file import with_pin

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
PROD_TAG = "6.7.0"
"""The image tag prod was promoted with (staging has moved on to 6.7.1)."""


def git(root: Path, *args: str) -> str:
    """Run git in ``root`` as a fixed identity, with no system or user configuration."""
    identity = {
        "GIT_AUTHOR_NAME": "A",
        "GIT_AUTHOR_EMAIL": "a@x",
        "GIT_COMMITTER_NAME": "A",
        "GIT_COMMITTER_EMAIL": "a@x",
    }
    env = {**os.environ, **identity, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)}
    return subprocess.run(
        ["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True, timeout=30
    ).stdout.strip()


@pytest.fixture
def pinned_example(tmp_path: Path) -> tuple[Path, Callable[[str], Path]]:
    """A copy of example-repo committed to a fresh Git repository, with prod's podinfo pinned to that commit and
    image tag ``PROD_TAG``, as the first promotion writes it; and the ``trees`` to render it with."""
    root = tmp_path / "example"
    shutil.copytree(EXAMPLE, root)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "example-repo")
    first = git(root, "rev-parse", "HEAD")
    pinned = with_pin(None, "podinfo", first, "staging", {"image": {"tag": PROD_TAG}})
    (root / "environments/prod/promoted.yaml").write_text(pinned)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "promote podinfo to prod")
    return root, LocalTrees(root, cache_dir=tmp_path / "trees")
