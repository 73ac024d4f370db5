"""The command line's tree cache (``LocalTrees``): one extracted folder per tree read, bounded on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import git

from gitsync.adapters import trees as trees_module
from gitsync.adapters.trees import LocalTrees


def commits(root: Path, count: int) -> list[str]:
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    shas = []
    for i in range(count):
        (root / "values.yaml").write_text(f"release: {i}\n")
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", f"release {i}")
        shas.append(git(root, "rev-parse", "HEAD"))
    return shas


def test_the_tree_cache_keeps_the_most_recently_used_trees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trees_module, "MAX_TREES", 3)
    monkeypatch.setattr(trees_module, "IN_USE_SECONDS", 0.0)
    shas = commits(tmp_path / "repo", 5)
    trees = LocalTrees(tmp_path / "repo", cache_dir=tmp_path / "cache")
    first = trees(shas[0])
    for sha in shas[1:3]:
        trees(sha)
    assert trees(shas[0]) == first, "a tree already extracted is read again, not extracted again"
    kept = [trees(sha) for sha in shas[3:]]  # two more: the two least recently used (1 and 2) go
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(p.name for p in [first, *kept])
    assert (trees(shas[1]) / "values.yaml").read_text() == "release: 1\n", "a removed tree is extracted again"


def test_a_tree_used_lately_is_never_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trees_module, "MAX_TREES", 1)
    shas = commits(tmp_path / "repo", 3)
    trees = LocalTrees(tmp_path / "repo", cache_dir=tmp_path / "cache")
    read = [trees(sha) for sha in shas]  # another command may still be rendering from the older ones
    assert all((path / "values.yaml").is_file() for path in read)


def test_what_a_command_killed_mid_extraction_left_is_removed_but_not_an_extraction_under_way(tmp_path: Path) -> None:
    shas = commits(tmp_path / "repo", 1)
    cache = tmp_path / "cache"
    left, running, other = cache / ".tmp-killed", cache / ".tmp-running", cache / ".keep"
    for folder in (left, running, other):
        (folder / "tree").mkdir(parents=True)
    (left / "tree" / "demo.mp4").write_bytes(b"x" * 1000)
    for old in (left, other):
        os.utime(old, (0, 0))
    LocalTrees(tmp_path / "repo", cache_dir=cache)(shas[0])
    assert not left.exists()
    assert running.is_dir() and other.is_dir(), "a recent staging folder and folders not of ours stay"
