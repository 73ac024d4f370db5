"""Render failures: one class, one line, the file first.

A render error is terminal (the same commit renders the same way), so it subclasses ``TerminalError``; the
agent waits for a new revision instead of retrying. ``str()`` is ``path:line: problem`` with the path relative
to the repository root, or ``path: problem`` when no line applies (a missing file).
"""

from __future__ import annotations

from pathlib import Path

from gitsync.errors import TerminalError
from renderers.limits import MAX_INPUT_BYTES

MAX_PROBLEM_CHARS = 1000
"""A problem longer than this is cut, saying how much was left out: a template's ``fail(s)`` or ``required``, or a
function quoting its input, can put megabytes into the message, which the agent writes to its status and history
ConfigMaps (1 MiB at most each) and to Events."""


class RenderError(TerminalError):
    """A chart, environment or template that cannot produce a valid set of manifests."""

    def __init__(self, path: str, problem: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        problem = " ".join(problem.split())  # one line, always
        if len(problem) > MAX_PROBLEM_CHARS:
            problem = f"{problem[:MAX_PROBLEM_CHARS]}... ({len(problem) - MAX_PROBLEM_CHARS} more characters)"
        self.problem = problem
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {self.problem}")


def read_utf8(path: Path) -> str:
    """A repository text file; bytes that are not UTF-8 are a ``NotUtf8`` naming the line, not a codec dump, and a
    file past ``MAX_INPUT_BYTES`` is ``UnreadableText`` (it is not read further: it may be a hostile one)."""
    with path.open("rb") as file:
        data = file.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise UnreadableText(
            f"larger than {MAX_INPUT_BYTES // 1024 // 1024} MiB, the most the renderer reads from a file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise NotUtf8(
            f"not UTF-8 text: byte 0x{data[exc.start]:02x} at column {column} (save the file as UTF-8)", line
        ) from None


class UnreadableText(ValueError):
    """A file the renderer will not read as text; ``line`` is 1-based when one applies. Callers add the path (they
    know it relative to the repo)."""

    def __init__(self, problem: str, line: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


class NotUtf8(UnreadableText):
    """A file that is not UTF-8; ``line`` is the line of the first bad byte."""


class AwaitingPromotion(RenderError):
    """An app of an environment that receives promotions has no pin yet: it is not deployed, and that is not a
    broken render (callers report it as awaiting promotion rather than failed)."""
