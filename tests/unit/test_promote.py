"""The promotion rule, the guard and the commit messages, row by row."""

from __future__ import annotations

import json
import subprocess

import pytest
from test_ledger import entry

from gitsync.ledger import AnalysisResult, LedgerEntry, ReleaseOutcome
from gitsync.promote import (
    Blocked,
    Candidate,
    PinnedRelease,
    RenderedChange,
    Verified,
    candidate,
    evidence,
    promotion_message,
    rollback_message,
    soak_left,
    verify_pin,
)

Ended = ReleaseOutcome

T0 = 1_700_000_000.0
SOAK = 600.0
OLD, NEW, FIX = "1" * 40, "2" * 40, "3" * 40


def release(
    sha: str, outcome: ReleaseOutcome, finished: float, tree: str = "t-new", values: str = "v1", lib: str = ""
) -> tuple[str, LedgerEntry]:
    return sha, entry(
        revision=sha,
        outcome=outcome,
        started_at=finished - 60,
        finished_at=finished,
        chart_tree=tree,
        values_hash=values,
        lib_tree=lib,
    )


OLD_OK = release(OLD, Ended.SUCCEEDED, T0, tree="t-old")
PIN_OLD = PinnedRelease(OLD, "t-old", "v1")


@pytest.mark.parametrize(
    ("upstream", "pin", "now", "expected"),
    [
        pytest.param([], None, T0, None, id="no releases"),
        pytest.param([OLD_OK], None, T0 + SOAK, OLD, id="first pin once soaked"),
        pytest.param([OLD_OK], None, T0 + SOAK - 1, None, id="still soaking"),
        pytest.param([OLD_OK], PIN_OLD, T0 + 10 * SOAK, None, id="already pinned"),
        pytest.param(
            [release(NEW, Ended.SUCCEEDED, T0 + 100), OLD_OK],
            PIN_OLD,
            T0 + 100 + SOAK,
            NEW,
            id="newer chart soaked",
        ),
        pytest.param(
            [OLD_OK, release(NEW, Ended.SUCCEEDED, T0 + 100)],
            PIN_OLD,
            T0 + 100 + SOAK,
            NEW,
            id="order of input",
        ),
        pytest.param(
            [release(NEW, Ended.FAILED, T0 + 100), OLD_OK],
            None,
            T0 + 10 * SOAK,
            None,
            id="newest failed: nothing",
        ),
        pytest.param([release(NEW, Ended.ROLLED_BACK, T0 + 100), OLD_OK], None, T0 + 9 * SOAK, None, id="rolled back"),
        pytest.param(
            [
                release(FIX, Ended.SUCCEEDED, T0 + 200, tree="t-fix"),
                release(NEW, Ended.FAILED, T0 + 100),
                OLD_OK,
            ],
            PIN_OLD,
            T0 + 200 + SOAK,
            FIX,
            id="a fix after a failure",
        ),
        pytest.param(
            [
                release(FIX, Ended.SUCCEEDED, T0 + 500),
                release(NEW, Ended.SUCCEEDED, T0 + 100),
                OLD_OK,
            ],
            PIN_OLD,
            T0 + 100 + SOAK,
            FIX,
            id="same content again does not restart the soak",
        ),
        pytest.param(
            [release(NEW, Ended.SUCCEEDED, T0 + 100, tree="t-old", values="v2"), OLD_OK],
            PIN_OLD,
            T0 + 100 + SOAK,
            NEW,
            id="only the promoted values changed",
        ),
        pytest.param([release(NEW, Ended.SUPERSEDED, T0 + 100), OLD_OK], PIN_OLD, T0 + 9 * SOAK, None, id="superseded"),
        pytest.param(
            [release(NEW, Ended.SUCCEEDED, T0 + 100, tree="t-old", lib="l-2")],
            PinnedRelease(OLD, "t-old", "v1", "l-1"),
            T0 + 100 + SOAK,
            NEW,
            id="only lib/ changed",
        ),
        pytest.param(
            [release(NEW, Ended.SUCCEEDED, T0 + 100, tree="t-old", lib="l-1")],
            PinnedRelease(OLD, "t-old", "v1", "l-1"),
            T0 + 100 + SOAK,
            None,
            id="same lib/: already pinned",
        ),
        pytest.param(
            [release(NEW, Ended.SUCCEEDED, T0 + 100, tree="t-old", lib="")],
            PinnedRelease(OLD, "t-old", "v1", "l-1"),
            T0 + 100 + SOAK,
            None,
            id="a line written before lib/ was noted matches any lib/",
        ),
    ],
)
def test_candidate(
    upstream: list[tuple[str, LedgerEntry]], pin: PinnedRelease | None, now: float, expected: str | None
) -> None:
    found = candidate(upstream, pin, SOAK, now)
    assert (found.revision if found else None) == expected


def test_soak_starts_at_the_first_success_of_that_content() -> None:
    found = candidate(
        [release(FIX, Ended.SUCCEEDED, T0 + 500), release(NEW, Ended.SUCCEEDED, T0 + 100)],
        None,
        SOAK,
        T0 + 700,
    )
    assert found is not None and found.soak_started_at == T0 + 100 and found.source == f"staging@{FIX}"


def test_the_countdown_counts_from_where_the_candidate_counts() -> None:
    """A commit that did not touch the app succeeds again 400 s into the soak: the countdown says what is left
    of the soak that started at the first success, and the candidate appears when it reaches 0 (before: the
    message counted from the newest success and showed 400 s more than there was)."""
    upstream = [release(FIX, Ended.SUCCEEDED, T0 + 400), release(NEW, Ended.SUCCEEDED, T0)]
    assert soak_left(upstream, PIN_OLD, SOAK, T0 + 500) == 100.0
    assert candidate(upstream, PIN_OLD, SOAK, T0 + 500) is None
    assert soak_left(upstream, PIN_OLD, SOAK, T0 + SOAK) == 0.0
    found = candidate(upstream, PIN_OLD, SOAK, T0 + SOAK)
    assert found is not None and found.revision == FIX


@pytest.mark.parametrize(
    ("pin", "upstream", "override", "expected"),
    [
        pytest.param(PinnedRelease(NEW, "t-new", "v1"), [release(FIX, Ended.SUCCEEDED, T0)], "", FIX, id="same tree"),
        pytest.param(PinnedRelease(NEW, "t-new", "v2"), [release(NEW, Ended.SUCCEEDED, T0)], "", None, id="values"),
        pytest.param(PinnedRelease(NEW, "t-new", "v1"), [release(NEW, Ended.FAILED, T0)], "", None, id="failed"),
        pytest.param(PinnedRelease(NEW, "t-bad", "v1"), [], "", None, id="nothing recorded"),
        pytest.param(PinnedRelease(NEW, "t-bad", "v1"), [], "hotfix, INC-12", "override", id="override"),
        pytest.param(
            PinnedRelease(NEW, "t-new", "v1", "l-2"),
            [release(FIX, Ended.SUCCEEDED, T0, lib="l-1")],
            "",
            None,
            id="lib/ staging never ran",
        ),
        pytest.param(
            PinnedRelease(NEW, "t-new", "v1", "l-2"),
            [release(FIX, Ended.SUCCEEDED, T0, lib="l-2"), release(OLD, Ended.SUCCEEDED, T0 - 60, lib="l-1")],
            "",
            FIX,
            id="same lib/",
        ),
        pytest.param(
            PinnedRelease(NEW, "t-new", "v1", "l-2"),
            [release(FIX, Ended.SUCCEEDED, T0)],
            "",
            FIX,
            id="noted before lib/ was",
        ),
    ],
)
def test_verify_pin(
    pin: PinnedRelease, upstream: list[tuple[str, LedgerEntry]], override: str, expected: str | None
) -> None:
    result = verify_pin(pin, upstream, override=override)
    if expected is None:
        assert isinstance(result, Blocked) and result.reason.startswith(f"pin {NEW[:12]} is not verified: ")
    elif expected == "override":
        assert result == Verified(None, override="hotfix, INC-12")
    else:
        assert isinstance(result, Verified) and result.evidence is not None and result.evidence[0] == expected


def trailers(message: str) -> list[tuple[str, str]]:
    out = subprocess.run(
        ["git", "interpret-trailers", "--parse"], input=message, capture_output=True, text=True, check=True
    ).stdout
    return [tuple(line.split(": ", 1)) for line in out.splitlines()]  # type: ignore[misc]


def test_promotion_message_reads_as_git_trailers() -> None:
    analysed = entry(
        revision=NEW,
        analysis=(
            AnalysisResult("error-rate", 0.012, "result < 0.05", "Successful"),
            AnalysisResult("latency", None, "result < 0.3", "Inconclusive"),
        ),
    )
    change = RenderedChange(changed=("Deployment/podinfo-prod/podinfo",), images=(("podinfo:6.6.0", "podinfo:6.7.0"),))
    found = Candidate(NEW, analysed, T0, 600)
    message = promotion_message(
        "podinfo",
        "prod",
        found.source,
        change,
        digest="sha256:abc",
        evidence=evidence(found.entry, found.soak_seconds),
        override="INC-12\nurgent",
    )
    subject, _, rest = message.partition("\n\n")
    assert subject == "promote podinfo to prod (staging@2222222)"
    assert "  changed: Deployment/podinfo-prod/podinfo\n  image: podinfo:6.6.0 -> podinfo:6.7.0" in rest
    assert trailers(message) == [
        ("Gitsync-Promoted-From", f"staging@{NEW}"),
        ("Gitsync-App", "podinfo"),
        ("Gitsync-Env", "prod"),
        ("Gitsync-Digest", "sha256:abc"),
        (
            "Gitsync-Evidence",
            "Succeeded; error-rate=0.012 (result < 0.05) Successful; latency=no data (result < 0.3) Inconclusive; "
            "soak 10m",
        ),
        ("Gitsync-Override", "INC-12 urgent"),
    ]


def test_rollback_message_names_what_it_undoes() -> None:
    failed = entry(env="prod", outcome=Ended.ROLLED_BACK, analysis=())
    message = rollback_message("podinfo", "prod", rollback_of=NEW, restored=OLD, change=RenderedChange(), failed=failed)
    assert message.splitlines()[0] == "roll back podinfo in prod to 1111111"
    assert trailers(message) == [
        ("Gitsync-Rollback-Of", NEW),
        ("Gitsync-App", "podinfo"),
        ("Gitsync-Env", "prod"),
        ("Gitsync-Evidence", "RolledBack"),
    ]


def test_evidence_of_a_check_judged_without_a_number_names_its_verdict() -> None:
    """A podHealth check has no value nor condition: the evidence says how it ended, not "no data ()"."""
    pods = entry(analysis=(AnalysisResult("pods", None, "", "Successful"),))
    assert evidence(pods, 15) == "Succeeded; pods Successful; soak 15s"


@pytest.mark.parametrize("reverse", [False, True], ids=["superseded line first", "succeeded line first"])
def test_a_superseded_release_noted_in_the_same_second_never_hides_the_candidate(reverse: bool) -> None:
    # One reconcile supersedes OLD and ends NEW: both lines carry the same finish time.
    superseded = release(OLD, Ended.SUPERSEDED, T0, tree="t-old")
    succeeded = release(NEW, Ended.SUCCEEDED, T0)
    upstream = [succeeded, superseded] if reverse else [superseded, succeeded]
    found = candidate(upstream, PIN_OLD, SOAK, T0 + SOAK)
    assert found is not None and found.revision == NEW


def test_sub_second_finish_times_order_releases_of_the_same_second() -> None:
    failed = release(OLD, Ended.FAILED, T0 + 0.2)
    fixed = release(NEW, Ended.SUCCEEDED, T0 + 0.7)
    read = [(sha, LedgerEntry.from_json(json.loads(e.to_line()))) for sha, e in (fixed, failed)]
    assert [e.finished_at for _, e in read] == [T0 + 0.7, T0 + 0.2], "finishedAtMs read back"
    for upstream in (read, read[::-1]):
        found = candidate(upstream, PIN_OLD, SOAK, T0 + 1 + SOAK)
        assert found is not None and found.revision == NEW
