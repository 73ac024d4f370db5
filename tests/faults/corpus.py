"""The fault corpus's building blocks: a small valid repository, and cases that break one part of it.

A case names the files it changes (content, a ``Link`` to make a symlink, or ``None`` to delete) on top of
``BASE``, and the exact one-line error a user must see. Adding a case is adding one row to a table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHART = "apps/web"
ENV = "environments/dev"

BASE: Mapping[str, str] = {
    f"{CHART}/chart.yaml": "name: web\nversion: 0.1.0\n",
    f"{CHART}/values.yaml": "greeting: hello\n",
    f"{CHART}/templates/cm.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  greeting: {{ values.greeting | quote }}\n"
    ),
    f"{ENV}/env.yaml": "namespace: web-dev\napps: [web]\n",
    f"{ENV}/values/web.yaml": "",
}
"""Renders one ConfigMap ``web`` into namespace ``web-dev``."""


@dataclass(frozen=True, slots=True)
class Link:
    """A symbolic link to ``target`` (as written: relative to the link's folder, or absolute)."""

    target: str


Change = str | Link | None


@dataclass(frozen=True, slots=True)
class Fault:
    """One broken or hostile input and the exact error it must produce; ``{outside}`` in a change or the error is
    replaced by a folder outside the repository holding ``secret.yaml`` and a copy of the chart."""

    id: str
    changes: Mapping[str, Change]
    error: str
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())

    def param(self) -> object:
        return pytest.param(self, id=self.id, marks=self.marks)


def make_repo(root: Path, changes: Mapping[str, Change] = {}) -> Path:
    """``BASE`` with ``changes`` applied under ``root/repo``; ``root/outside`` is a folder a symlink may aim at."""
    repo, outside = root / "repo", root / "outside"
    chart = {path.removeprefix(CHART + "/"): text for path, text in BASE.items() if path.startswith(CHART)}
    write_tree(outside, {"secret.yaml": "token: s3cr3t-outside\n", "env/env.yaml": BASE[f"{ENV}/env.yaml"], **chart})
    files: dict[str, Change] = {**BASE}
    for path, change in changes.items():
        files = {p: c for p, c in files.items() if not p.startswith(path + "/")}  # a folder replaced by a link
        files[path] = change
    write_tree(repo, {p: c for p, c in files.items() if c is not None}, outside=str(outside))
    return repo


def write_tree(root: Path, files: Mapping[str, str | Link], outside: str = "") -> None:
    for path, content in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            target.symlink_to(content.target.replace("{outside}", outside))
        else:
            target.write_text(content.replace("{outside}", outside))
