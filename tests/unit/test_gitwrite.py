"""Commits written by gitsync against real repositories: exactly once, races rebuilt, never a force-push."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import yaml
from gitrepos import Server, git

from gitsync.adapters.git import GitRepository
from gitsync.adapters.gitwrite import CacheWriter, Identity, LocalWriter, Run, WriteAccessError
from gitsync.ports import CommitRequest, FileEdit, PathRestore, WriteResult
from gitsync.promoted_file import with_pin

AGENT = Identity("gitsync", "gitsync@example.com")
PROMOTED = "environments/prod/promoted.yaml"
STAGING = "staging@" + "5" * 40


def promotion(source: str = STAGING, tag: str = "6.7.0", branch: str = "") -> CommitRequest:
    sha = source.partition("@")[2]
    identity = (("Gitsync-Promoted-From", source), ("Gitsync-App", "podinfo"), ("Gitsync-Env", "prod"))
    message = f"promote podinfo to prod ({source[:15]})\n\n" + "".join(f"{k}: {v}\n" for k, v in identity)
    edit = FileEdit(
        PROMOTED, partial(with_pin, app="podinfo", revision=sha, from_env="staging", values={"image": {"tag": tag}})
    )
    return CommitRequest((edit,), message, identity, branch)


def writer(server: Server, cache: Path, **kwargs: object) -> CacheWriter:
    return CacheWriter(GitRepository(server.url, "main", cache), AGENT, **kwargs)  # type: ignore[arg-type]


def interrupted(writer_: CacheWriter, before_push: Callable[[], None]) -> CacheWriter:
    """``writer_`` whose first push is preceded by ``before_push`` (someone else pushing first, or a kill)."""
    repo = writer_._repo
    session = repo.cache
    fired: list[bool] = []

    @contextmanager
    def cache(**environment: str) -> Iterator[Run]:
        with session(**environment) as run:

            def run_(verb: str, *args: str, **options: object) -> str:
                if verb == "push" and not fired:
                    fired.append(True)
                    before_push()
                return run(verb, *args, **options)

            yield run_

    repo.cache = cache  # type: ignore[method-assign]
    return writer_


def promotions(server: Server, ref: str = "main") -> list[str]:
    return server.log("--format=%s", "--grep=^promote ", ref).splitlines()


@pytest.fixture
def server(tmp_path: Path) -> Server:
    server = Server(tmp_path / "server")
    server.commit(
        {"apps/podinfo/values.yaml": "replicas: 1\n", "environments/prod/env.yaml": "namespace: p\n"}, "first"
    )
    return server


def test_a_promotion_is_one_commit_on_the_tracked_branch(server: Server, tmp_path: Path) -> None:
    before = server.head()
    result = writer(server, tmp_path / "cache").write(promotion())
    assert result == WriteResult(server.head(), "main", written=True)
    assert server.log("--format=%P %an <%ae>", "-1") == f"{before} gitsync <gitsync@example.com>"
    pins = yaml.safe_load(git(server.bare, "show", f"main:{PROMOTED}"))
    assert pins == {"podinfo": {"revision": "5" * 40, "from": "staging", "values": {"image": {"tag": "6.7.0"}}}}
    assert git(server.bare, "show", "-s", "--format=%(trailers:key=Gitsync-Promoted-From,valueonly)", "main") == STAGING


def test_the_same_candidate_again_writes_nothing(server: Server, tmp_path: Path) -> None:
    first = writer(server, tmp_path / "cache").write(promotion())
    server.commit({"README.md": "a person's change after the promotion\n"}, "docs")
    again = writer(server, tmp_path / "other-cache").write(promotion())
    assert again == WriteResult(first.commit, "main", written=False)
    assert len(promotions(server)) == 1


def test_killed_before_the_push_then_retried_gives_one_commit(server: Server, tmp_path: Path) -> None:
    def killed() -> None:
        raise SystemExit("kill -9 after the commit, before the push")

    with pytest.raises(SystemExit):
        interrupted(writer(server, tmp_path / "cache"), killed).write(promotion())
    result = writer(server, tmp_path / "cache").write(promotion())
    assert result.written and promotions(server) == ["promote podinfo to prod (staging@5555555)"]


def test_a_persons_push_racing_the_promotion_is_kept(server: Server, tmp_path: Path) -> None:
    def person_pushes() -> None:
        server.commit({"environments/prod/values/podinfo.yaml": "replicas: 3\n"}, "prod: scale to 3")

    result = interrupted(writer(server, tmp_path / "cache"), person_pushes).write(promotion())
    assert result.written
    assert server.log("--format=%s", "-3").splitlines() == [
        "promote podinfo to prod (staging@5555555)",
        "prod: scale to 3",
        "first",
    ], "rebuilt on the person's commit, which stays: the branch was never force-pushed"
    assert git(server.bare, "show", "main:environments/prod/values/podinfo.yaml") == "replicas: 3"


def test_two_replicas_racing_write_one_commit(server: Server, tmp_path: Path) -> None:
    other = writer(server, tmp_path / "replica-b")
    results: list[WriteResult] = []
    loser = interrupted(writer(server, tmp_path / "replica-a"), lambda: results.append(other.write(promotion())))
    lost = loser.write(promotion())
    assert results[0].written and lost == WriteResult(results[0].commit, "main", written=False)
    assert len(promotions(server)) == 1


def test_pull_request_mode_writes_and_updates_its_branch_only(server: Server, tmp_path: Path) -> None:
    branch = "gitsync/promote/prod/podinfo"
    main_before = server.head()
    first = writer(server, tmp_path / "cache").write(promotion(branch=branch))
    assert first == WriteResult(server.head(branch), branch, written=True)
    assert writer(server, tmp_path / "cache").write(promotion(branch=branch)).written is False
    newer = writer(server, tmp_path / "cache").write(promotion("staging@" + "6" * 40, "6.8.0", branch=branch))
    assert newer.written and server.head(branch) == newer.commit
    assert server.log("--format=%s", f"main..{branch}").splitlines() == ["promote podinfo to prod (staging@6666666)"]
    assert server.head() == main_before, "the tracked branch is untouched until the pull request is merged"
    git(server.work, "pull", "-q", "origin", "main")
    git(server.work, "fetch", "-q", "origin")
    git(
        server.work,
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "Merge pull request #7 from gitsync/promote/prod/podinfo",
        f"origin/{branch}",
    )
    git(server.work, "push", "-q", "origin", "HEAD:main")
    merged = writer(server, tmp_path / "cache").write(promotion("staging@" + "6" * 40, "6.8.0", branch=branch))
    assert merged == WriteResult(newer.commit, "main", written=False), "merged: the promotion is on main now"


def test_missing_write_access_is_terminal_and_one_line(server: Server, tmp_path: Path) -> None:
    hook = server.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    with pytest.raises(WriteAccessError) as refused:
        writer(server, tmp_path / "cache").write(promotion())
    assert str(refused.value).startswith("main: push refused (no write access, a protected branch, or a hook")
    assert "\n" not in str(refused.value)


def test_signed_with_an_ssh_key(server: Server, tmp_path: Path) -> None:
    key = tmp_path / "signing"
    git(tmp_path, "-c", "x=y", "version")  # keeps the HOME-less helper happy
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gitsync", "-f", str(key)], check=True)
    writer(server, tmp_path / "cache", signing_key=key).write(promotion())
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"gitsync@example.com {key.with_suffix('.pub').read_text()}")
    git(server.bare, "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", "main")


def test_a_local_clone_gets_the_commit_in_its_work_tree_and_pushes(server: Server, tmp_path: Path) -> None:
    clone = server.clone("operator")
    result = LocalWriter(clone, push=True).write(promotion())
    assert result.written and server.head() == result.commit
    assert "6.7.0" in (clone / PROMOTED).read_text(), "fast-forwarded: the work tree shows the commit"
    assert LocalWriter(clone, push=True).write(promotion()).written is False


def test_a_local_clone_that_signs_its_commits_signs_the_promotion(server: Server, tmp_path: Path) -> None:
    """``git commit-tree`` ignores ``commit.gpgSign``: a person's ``gitsync promote`` was unsigned, and an agent
    verifying signatures refused it (and with it every later head) until someone signed a commit on top."""
    key = tmp_path / "ada"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ada", "-f", str(key)], check=True)
    clone = server.clone("operator")
    for name, value in (("gpg.format", "ssh"), ("user.signingKey", str(key)), ("commit.gpgSign", "true")):
        git(clone, "config", name, value)
    LocalWriter(clone, push=True).write(promotion())
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"ada@example.com {key.with_suffix('.pub').read_text()}")
    git(server.bare, "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", "main")


def test_restoring_a_directory_and_a_file_to_an_earlier_commit(server: Server, tmp_path: Path) -> None:
    good = server.head()
    server.commit({"apps/podinfo/values.yaml": "replicas: 9\n", "apps/podinfo/templates/new.yaml": "x: 1\n"}, "bad")
    request = CommitRequest(
        (PathRestore("apps/podinfo", good), PathRestore("environments/prod/values/podinfo.yaml", good)),
        "roll back\n\nGitsync-Rollback-Of: x\n",
        (("Gitsync-Rollback-Of", "x"),),
    )
    clone = server.clone("operator")
    LocalWriter(clone).write(request)
    assert git(clone, "diff", "--stat", good, "HEAD") == "", "the tree is the good commit's again"
