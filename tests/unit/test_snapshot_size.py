"""Snapshots stay small whatever the repository holds: a file past ``WHOLE_FILE_BYTES`` is kept cut to one byte
more, read as a stream (no tar on disk), and a member that may not be extracted still leaves nothing behind."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import git

from gitsync.adapters.git import GitError, GitRepository
from gitsync.adapters.trees import LocalTrees, extract_archive
from gitsync.errors import TerminalError
from gitsync.ports import WHOLE_FILE_BYTES
from renderers import RenderError, render_app
from renderers.limits import MAX_INPUT_BYTES

BIG = 20 * 1024 * 1024
KEPT = WHOLE_FILE_BYTES + 1
VIDEO, TEMPLATE = "docs/demo.mp4", "apps/big/templates/blob.yaml"
CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  app: {name}\n"


def write_big(path: Path) -> None:
    """``BIG`` bytes whose head differs from a cut copy of another commit's: the test sees which one it got."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        out.write(f"# {path.name}\n".encode())
        out.truncate(BIG)  # a sparse tail of zeros: quick to write and for git to compress


def make_repo(root: Path) -> str:
    """Two apps, ``web`` and ``big`` (whose one template is 20 MB), and a 20 MB video in ``docs/``: its commit."""
    for app in ("web", "big"):
        chart = root / "apps" / app
        (chart / "templates").mkdir(parents=True)
        (chart / "chart.yaml").write_text(f"name: {app}\nversion: 0.1.0\n")
        (chart / "values.yaml").write_text("{}\n")
        (chart / "templates" / "configmap.yaml").write_text(CONFIGMAP.format(name=app))
    env = root / "environments" / "dev"
    env.mkdir(parents=True)
    (env / "env.yaml").write_text("namespace: shop-dev\napps: [web, big]\n")
    write_big(root / VIDEO)
    write_big(root / TEMPLATE)
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a demo video in the docs")
    return git(root, "rev-parse", "HEAD")


def disk_use(folder: Path) -> int:
    """Bytes the files under ``folder`` take on disk (blocks, not apparent sizes)."""
    return sum(entry.lstat().st_blocks * 512 for entry in folder.rglob("*"))


def test_a_large_file_is_kept_cut_and_only_the_app_reading_it_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sha = make_repo(tmp_path / "work")
    repo = GitRepository(f"file://{tmp_path / 'work'}", "main", tmp_path / "cache")
    assert repo.fetch().sha == sha
    caplog.set_level("INFO")

    tree = repo.snapshot(sha)

    for path in (VIDEO, TEMPLATE):
        assert (tree / path).stat().st_size == KEPT == MAX_INPUT_BYTES + 1
        assert (tree / path).read_bytes().startswith(f"# {Path(path).name}\n".encode())
    assert (tree / "apps/web/templates/configmap.yaml").read_text() == CONFIGMAP.format(name="web")
    # The whole extraction happened in the snapshots folder (no tar beside it, no staging left): it holds the two
    # cut files and a few small ones, where the commit holds 40 MB.
    snapshots = tmp_path / "cache" / "snapshots"
    assert [p.name for p in snapshots.iterdir()] == [sha]
    assert disk_use(snapshots) < 2 * KEPT + 256 * 1024
    [event] = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "snapshot.truncated"]
    assert event["sizes"] == {VIDEO: BIG, TEMPLATE: BIG} and event["files"] == 2
    assert sha[:12] in event["tree"]

    (web,) = render_app(tree, "dev", "web").manifests
    assert web.body["data"] == {"app": "web"}
    with pytest.raises(RenderError) as failed:
        render_app(tree, "dev", "big")
    assert str(failed.value) == f"{TEMPLATE}:1: larger than 4 MiB, the most the renderer reads from a file"
    with pytest.raises(RenderError) as whole:
        render_app(tmp_path / "work", "dev", "big")
    assert str(whole.value) == str(failed.value), "the same error as on the checkout, where the file is whole"


def test_the_command_lines_pinned_trees_keep_large_files_cut_too(tmp_path: Path) -> None:
    sha = make_repo(tmp_path / "work")
    trees = LocalTrees(tmp_path / "work", cache_dir=tmp_path / "trees")
    tree = trees(sha)
    assert (tree / VIDEO).stat().st_size == (tree / TEMPLATE).stat().st_size == KEPT
    assert disk_use(tmp_path / "trees") < 2 * KEPT + 256 * 1024
    with pytest.raises(RenderError, match=r"blob\.yaml:1: larger than 4 MiB"):
        render_app(tree, "dev", "big")


def test_a_git_archive_that_fails_or_runs_too_long_leaves_no_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Git's own error, or its time bound, never a tree cut short: a stream that ends early is not a tree."""
    sha = make_repo(tmp_path / "work")
    GitRepository(f"file://{tmp_path / 'work'}", "main", tmp_path / "cache").fetch()
    hurried = GitRepository(f"file://{tmp_path / 'work'}", "main", tmp_path / "cache", timeout=0.001)
    with pytest.raises(GitError, match=r"git archive failed: git archive ran past 0.001 seconds$"):
        hurried.snapshot(sha)  # 40 MB to stream: git is still starting when its time is up
    repo = GitRepository(f"file://{tmp_path / 'work'}", "main", tmp_path / "cache")
    monkeypatch.setattr(repo, "_ensure", lambda *_: None)  # as if the commit had been fetched
    with pytest.raises(GitError, match=f"git archive failed: fatal: not a tree object: {'0' * 40}$"):
        repo.snapshot("0" * 40)
    assert list((tmp_path / "cache" / "snapshots").iterdir()) == []


def tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> Callable[[], io.BytesIO]:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for member, content in members:
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    return lambda: io.BytesIO(data.getvalue())


def member(name: str, kind: bytes = tarfile.REGTYPE, **fields: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info


GOOD = (member("apps/web/values.yaml"), b"replicas: 2\n")
BAD = {
    "a path outside": ((member("../escaped"), b"x"), "../escaped"),
    "an absolute path": ((member("/tmp/escaped"), b"x"), "/tmp/escaped"),
    "a device": ((member("apps/web/disk", tarfile.CHRTYPE, devmajor=1, devminor=3), b""), "apps/web/disk"),
    "a hard link": ((member("apps/web/again", tarfile.LNKTYPE, linkname="apps/web/values.yaml"), b""), "again"),
    "a fifo": ((member("apps/web/pipe", tarfile.FIFOTYPE), b""), "apps/web/pipe"),
}


@pytest.mark.parametrize("python", ["3.11.4 and later (extraction filters)", "3.11.2 (no filters)"])
@pytest.mark.parametrize("bad", list(BAD))
def test_a_member_that_may_not_be_extracted_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: str, python: str
) -> None:
    """Even after other members were written: the staging folder is removed and the snapshot never appears."""
    if python.startswith("3.11.2"):
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    (outside, name) = BAD[bad]
    parent = tmp_path / "snapshots"
    parent.mkdir()
    with pytest.raises(TerminalError, match=f"^commit abc: .*{name}.*: not a file, directory or link inside"):
        extract_archive(tar_of(GOOD, outside), parent / "abc", "commit abc")
    assert list(parent.iterdir()) == []
    assert not (tmp_path / "escaped").exists()


def test_a_member_written_through_a_link_it_follows_out_of_the_tree_is_refused(tmp_path: Path) -> None:
    """A link out of the tree is kept as a link, but nothing is ever written through it."""
    parent = tmp_path / "snapshots"
    parent.mkdir()
    link = member("apps/web/out", tarfile.SYMTYPE, linkname=str(tmp_path))
    with pytest.raises(TerminalError, match="apps/web/out/planted: not a file"):
        extract_archive(tar_of(GOOD, (link, b""), (member("apps/web/out/planted"), b"x")), parent / "abc", "abc")
    assert list(parent.iterdir()) == [] and not (tmp_path / "planted").exists()


def test_stale_staging_of_a_killed_extraction_is_removed(tmp_path: Path) -> None:
    sha = make_repo(tmp_path / "work")
    repo = GitRepository(f"file://{tmp_path / 'work'}", "main", tmp_path / "cache", timeout=30)
    repo.fetch()
    left = tmp_path / "cache" / "snapshots" / ".tmp-killed"
    (left / "tree" / "docs").mkdir(parents=True)
    (left / "tree" / "docs" / "demo.mp4").write_bytes(b"x" * 1000)
    os.utime(left, (0, 0))
    repo.snapshot(sha)
    assert not left.exists()
