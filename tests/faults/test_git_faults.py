"""Git failures keep their reason (git's ``fatal:``/``error:``/``remote:`` lines, not only its last line), on one
line, with credentials scrubbed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitsync.adapters.git import GitError, GitRepository


def test_the_reason_is_kept_when_git_ends_with_advice(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.git"
    repository = GitRepository(f"file://{missing}", "main", tmp_path / "cache", timeout=20)
    with pytest.raises(GitError) as raised:
        repository.remote_head()
    message = str(raised.value)
    assert "\n" not in message
    assert f"fatal: '{missing}' does not appear to be a git repository" in message
    assert "fatal: Could not read from remote repository." in message


def test_credentials_in_the_url_never_appear(tmp_path: Path) -> None:
    repository = GitRepository("https://ada:hunter2-token@127.0.0.1:9/x.git", "main", tmp_path / "cache", timeout=20)
    with pytest.raises(GitError) as raised:
        repository.remote_head()
    message = str(raised.value)
    assert "hunter2-token" not in message
    assert message.startswith("https://***@127.0.0.1:9/x.git: git ")
    assert "fatal: unable to access 'https://127.0.0.1:9/x.git/'" in message
