"""Pull-request numbers and who merged, from each forge's merge and squash messages."""

from __future__ import annotations

import pytest
from test_ledger import entry

from gitsync.audit import COLUMNS, AuditRow, merged_by, pull_request
from gitsync.ports import CommitInfo


@pytest.mark.parametrize(
    ("message", "number"),
    [
        pytest.param("Merge pull request #12 from ada/podinfo\n\nBump", 12, id="github merge"),
        pytest.param("Bump podinfo to 6.7.0 (#12)\n\n* bump", 12, id="github squash"),
        pytest.param("Merge branch 'x' into 'main'\n\nBump\n\nSee merge request group/proj!12", 12, id="gitlab merge"),
        pytest.param("Merge pull request 'Bump podinfo' (#12) from x into main", 12, id="gitea merge"),
        pytest.param("Bump podinfo (#12)", 12, id="gitea squash"),
        pytest.param("Fix #12 in the chart", None, id="mention is not a merge"),
        pytest.param("promote podinfo to prod (staging@abc1234)", None, id="promotion"),
    ],
)
def test_pull_request(message: str, number: int | None) -> None:
    assert pull_request(message) == number


def commit(parents: int, committer: str, message: str = "Merge pull request #3 from a/b") -> CommitInfo:
    return CommitInfo("c" * 40, ("p",) * parents, "Ada <ada@example.com>", committer, 0.0, message, ())


def test_merged_by() -> None:
    assert merged_by(commit(2, "Bob <bob@example.com>")) == "Bob <bob@example.com>"
    assert merged_by(commit(2, "GitHub <noreply@github.com>")) == "Ada <ada@example.com>", "web merges: the author"
    assert merged_by(commit(1, "Bob <bob@example.com>", "a plain commit")) == ""


def test_columns_are_the_json_keys_in_order() -> None:
    row = AuditRow(entry(), "c" * 40, "subject", 3, "Ada", "", "", "", "Succeeded")
    assert tuple(row.to_json()) == COLUMNS
