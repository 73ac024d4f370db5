"""Reading many commits' metadata at once (for ``gitsync audit``): two git processes whatever the count.

Commits the repository does not hold (noted on a commit that a force-push dropped, or beyond a shallow clone)
are simply absent from the answer.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from gitsync.adapters.gitwrite import Run, parse_trailers
from gitsync.ports import CommitInfo

__all__ = ["read_commits"]

_FORMAT = "%H%x1f%P%x1f%an <%ae>%x1f%cn <%ce>%x1f%ct%x1f%(trailers:only,unfold)%x1f%B%x1e"


def read_commits(run: Run, shas: Iterable[str]) -> dict[str, CommitInfo]:
    wanted = sorted(set(shas))
    if not wanted:
        return {}
    with tempfile.TemporaryDirectory(prefix="gitsync-audit-") as scratch:
        request = Path(scratch) / "objects"
        request.write_text("".join(f"{sha}\n" for sha in wanted))
        with request.open("rb") as stdin:
            checked = run("cat-file", "--batch-check", istream=stdin)
    present = [line.split(" ")[0] for line in checked.splitlines() if line.split(" ")[1:2] == ["commit"]]
    if not present:
        return {}
    out = run("log", "--no-walk=unsorted", f"--format={_FORMAT}", *present)
    commits = {}
    for record in out.split("\x1e"):
        fields = record.strip("\n").split("\x1f")
        if len(fields) != 7:
            continue
        sha, parents, author, committer, when, trailers, message = fields
        pairs = tuple(parse_trailers(trailers))
        commits[sha] = CommitInfo(sha, tuple(parents.split()), author, committer, float(when), message.strip(), pairs)
    return commits
