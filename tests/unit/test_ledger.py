"""Ledger lines: what a note holds, read back by any version, damaged lines skipped and reported."""

from __future__ import annotations

import json

import pytest

from gitsync.ledger import AnalysisResult, Approvals, LedgerEntry, ReleaseOutcome, parse_note

SHA = "a" * 40


def entry(**changes: object) -> LedgerEntry:
    fields: dict[str, object] = {
        "env": "staging",
        "app": "podinfo",
        "revision": SHA,
        "digest": "sha256:" + "d" * 64,
        "chart_tree": "c" * 40,
        "values_hash": "sha256:" + "v" * 64,
        "outcome": ReleaseOutcome.SUCCEEDED,
        "started_at": 1_700_000_000.0,
        "finished_at": 1_700_000_090.0,
        "steps": ("setWeight 25", "analysis", "setWeight 100"),
        "analysis": (AnalysisResult("error-rate", 0.012, "result < 0.05", "Successful"),),
        "agent": "gitsync-0/agent-7f9c",
    }
    fields.update(changes)
    return LedgerEntry(**fields)  # type: ignore[arg-type]


def test_a_line_is_compact_ordered_and_round_trips() -> None:
    line = entry().to_line()
    assert "\n" not in line and ", " not in line
    assert list(json.loads(line))[:3] == ["env", "app", "revision"]
    assert json.loads(line)["finishedAt"] == "2023-11-14T22:14:50Z"
    assert parse_note(line) == (entry(),)
    assert entry().to_line() == line, "the same release is the same line (so appending it twice is a no-op)"
    aborted = entry(outcome=ReleaseOutcome.ROLLED_BACK, reason="step analysis failed: error-rate")
    assert list(json.loads(aborted.to_line()))[-1] == "reason" and parse_note(aborted.to_line()) == (aborted,)


def test_only_the_ledger_fields_are_written() -> None:
    assert set(json.loads(entry().to_line())) == {
        "env", "app", "revision", "digest", "chartTree", "libTree", "valuesHash", "outcome", "startedAt",
        "finishedAt", "steps", "analysis", "agent", "promotionCommit", "rollbackCommit", "finishedAtMs",
    }  # fmt: skip


def test_unreadable_lines_are_skipped_and_reported() -> None:
    good = entry().to_line()
    future = json.dumps({**json.loads(good), "newField": 1})  # a newer agent's line: extra keys are ignored
    note = "\n".join(
        [good, "hand-written remark", '{"env": "prod"}', "", future, '{"env":"x","app":"y","outcome":"Exploded"}']
    )
    problems: list[str] = []
    assert parse_note(note, problems.append) == (entry(), entry())
    assert [p.split(":")[0] for p in problems] == ["line 2", "line 3", "line 6"]


@pytest.mark.parametrize("value", [True, "0.1", [1]])
def test_analysis_values_are_numbers_only(value: object) -> None:
    raw = json.loads(entry().to_line())
    raw["analysis"][0]["value"] = value
    assert parse_note(json.dumps(raw)) == ()


def test_finish_times_keep_milliseconds_and_old_whole_second_lines_still_read() -> None:
    line = entry(finished_at=1_700_000_000.25).to_line()
    raw = json.loads(line)
    assert raw["finishedAt"] == "2023-11-14T22:13:20Z", "finishedAt stays whole seconds for older readers"
    assert raw["finishedAtMs"] == 1_700_000_000_250
    assert LedgerEntry.from_json(raw).finished_at == 1_700_000_000.25
    del raw["finishedAtMs"]
    assert LedgerEntry.from_json(raw).finished_at == 1_700_000_000.0, "a line written before finishedAtMs"
    raw["finishedAtMs"] = 1_600_000_000_000
    assert LedgerEntry.from_json(raw).finished_at == 1_700_000_000.0, "a finishedAtMs of another second is ignored"


def test_a_removal_and_approvals_round_trip_and_a_line_without_them_says_nothing_of_them() -> None:
    removed = entry(outcome=ReleaseOutcome.REMOVED, removal_commit="b" * 40, steps=(), analysis=())
    approved = entry(approvals=Approvals.KNOWN, approved_by=("bob", "carol"))
    unknown = entry(approvals=Approvals.UNKNOWN)
    for line in (removed, approved, unknown):
        assert parse_note(line.to_line()) == (line,)
    assert json.loads(removed.to_line())["removalCommit"] == "b" * 40
    assert json.loads(approved.to_line())["approvedBy"] == ["bob", "carol"]
    assert json.loads(unknown.to_line())["approvals"] == "unknown", "unknown is said, never an empty approval list"
    assert not {"approvals", "approvedBy", "removalCommit"} & set(json.loads(entry().to_line()))
    assert approved.ending == entry().ending, "a repeat that learned the approvals since is still the same release"
