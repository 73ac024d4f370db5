"""Render failures: one class, one line, the file first.

A render error is terminal (the same commit renders the same way), so it subclasses ``TerminalError``; the
agent waits for a new revision instead of retrying. ``str()`` is ``path:line: problem`` with the path relative
to the repository root, or ``path: problem`` when no line applies (a missing file).
"""

from __future__ import annotations

from gitsync.errors import TerminalError


class RenderError(TerminalError):
    """A chart, environment or template that cannot produce a valid set of manifests."""

    def __init__(self, path: str, problem: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.problem = " ".join(problem.split())  # one line, always
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {self.problem}")
