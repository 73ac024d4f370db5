"""Real repositories for the Git-writing tests: a bare "server" and clones that push to it, like people do."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

IDENTITY = {
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
}


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    full = {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd), **(env or {})}
    done = subprocess.run(["git", *args], cwd=cwd, env=full, check=True, capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


class Server:
    """A bare repository (the forge) and a working clone of it (a person)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bare = root / "server.git"
        self.url = f"file://{self.bare}"
        root.mkdir(parents=True, exist_ok=True)
        git(root, "init", "--bare", "-b", "main", str(self.bare))
        self.work = self.clone("person")

    def clone(self, name: str) -> Path:
        path = self.root / name
        if (self.bare / "refs/heads/main").exists():
            git(self.root, "clone", "-q", self.url, str(path))
        else:
            path.mkdir()
            git(path, "init", "-q", "-b", "main")
            git(path, "remote", "add", "origin", self.url)
        return path

    def commit(self, files: dict[str, str], message: str, *, where: Path | None = None, push: bool = True) -> str:
        work = where or self.work
        if git(self.bare, "for-each-ref", "refs/heads/main"):
            git(work, "pull", "-q", "--rebase", "origin", "main")
        for name, text in files.items():
            path = work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", message)
        if push:
            git(work, "push", "-q", "origin", "HEAD:main")
        return git(work, "rev-parse", "HEAD")

    def head(self, branch: str = "main") -> str:
        return git(self.bare, "rev-parse", branch)

    def log(self, *args: str) -> str:
        return git(self.bare, "log", *args)
