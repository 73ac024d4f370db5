"""The dashboard's pure parts: forge links, what a grid cell says, thresholds, charts, the promotion chain, and the
``dashboard:`` setting of agent.yaml."""

from __future__ import annotations

import http.client
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from gitsync.audit import AuditRow
from gitsync.dashboard.access import Open
from gitsync.dashboard.charts import sparkline
from gitsync.dashboard.read import Board
from gitsync.dashboard.server import DashboardServer, Pages, Site
from gitsync.dashboard.view import Forge, Tone, build_cell, ledger_by_release, promotion_chains, threshold_of
from gitsync.errors import GitsyncError
from gitsync.history import Release, Status
from gitsync.ledger import Approvals, LedgerEntry, ReleaseOutcome
from gitsync.runtime.config import ConfigError, load


@pytest.mark.parametrize(
    ("url", "commit", "pull"),
    [
        ("https://github.com/org/deploy.git", "https://github.com/org/deploy/commit/abc", "https://github.com/org/deploy/pull/7"),
        ("git@gitea.example.com:org/deploy.git", "https://gitea.example.com/org/deploy/commit/abc", "https://gitea.example.com/org/deploy/pull/7"),
        ("https://x-access-token:s3cret@gitlab.com/org/deploy", "https://gitlab.com/org/deploy/-/commit/abc", "https://gitlab.com/org/deploy/-/merge_requests/7"),
    ],
)  # fmt: skip
def test_links_point_at_the_forge_and_never_carry_credentials(url: str, commit: str, pull: str) -> None:
    forge = Forge.of(url)
    assert forge is not None and (forge.commit("abc"), forge.pull(7)) == (commit, pull)
    assert "s3cret" not in forge.base


def test_a_repository_on_disk_has_no_forge() -> None:
    assert Forge.of("file:///srv/git/deploy.git") is None and Forge.of("/srv/git/deploy.git") is None


def _release(sha: str, message: str) -> Release:
    return Release(sha, "sha256:x", "Ada Lovelace <ada@example.com>", message, 1.0, 2.0, "Succeeded")


def test_a_cell_shows_the_running_release_and_says_in_words_what_its_colour_says() -> None:
    status = Status("podinfo", "staging", release_revision="a" * 40, result="Succeeded", health="Degraded",
                    health_reason="Deployment/ns/podinfo: 0/2 Ready", sync_state="Synced")  # fmt: skip
    releases = (_release("b" * 40, "promote podinfo to prod"), _release("a" * 40, "Merge pull request #12 from x/y"))
    cell = build_cell(
        status, "ns", releases, {"phase": "Progressing", "strategy": "canary", "step": 1, "steps": 4, "weight": 50}
    )
    assert (cell.short, cell.pull_request, cell.author) == ("aaaaaaa", 12, "Ada Lovelace")
    assert cell.tone is Tone.BAD and cell.health == "Degraded" and "0/2 Ready" in cell.reason
    assert cell.rollout == "canary Progressing, step 2/4, 50%"


def test_a_pinned_environment_without_a_pin_awaits_its_first_promotion() -> None:
    cell = build_cell(Status("podinfo", "prod", result="AwaitingPromotion"), "ns", (), {})
    assert cell.awaiting == "awaits its first promotion" and cell.tone is Tone.IDLE


@pytest.mark.parametrize(
    ("condition", "threshold"),
    [("fails when result[0] > 0.05", 0.05), ("passes when result < 250", 250.0), ("pods ready", None)],
)
def test_the_chart_line_is_the_number_the_condition_compares_with(condition: str, threshold: float | None) -> None:
    assert threshold_of(condition) == threshold


def test_a_chart_names_its_values_for_screen_readers_and_escapes_the_label() -> None:
    svg = sparkline([0.01, 0.02, 0.09], 0.05, "errors <script>", failed=True)
    assert svg.startswith('<svg class="spark failed"') and "<script>" not in svg and "errors &lt;script&gt;" in svg
    assert "polyline" in svg and 'class="threshold"' in svg


def _row(env: str, outcome: ReleaseOutcome, subject: str, promoted_from: str = "") -> AuditRow:
    entry = LedgerEntry(env, "podinfo", "c" * 40, "sha256:d", "tree1", "sha256:values", outcome, 1.0, 2.0)
    return AuditRow(entry, "c" * 40, subject, None, "Ada", "", promoted_from, "", "Succeeded")


def test_the_chain_follows_one_version_from_staging_to_prod() -> None:
    rows = [_row("prod", ReleaseOutcome.SUCCEEDED, "promote", "staging@" + "c" * 40),
            _row("staging", ReleaseOutcome.SUCCEEDED, "podinfo 6.7.2")]  # fmt: skip
    [chain] = promotion_chains(rows, ("staging", "prod"))
    assert chain.subject == "podinfo 6.7.2" and [env for env, _ in chain.stages] == ["staging", "prod"]
    assert chain.reached == 2


def test_the_dashboard_setting_is_off_unless_asked_for(tmp_path: Path) -> None:
    base = "repo: {url: https://git.example.com/deploy.git}\nenvironments: [staging]\n"
    (tmp_path / "a.yaml").write_text(base)
    (tmp_path / "b.yaml").write_text(base + "dashboard: {listen: 127.0.0.1:3100}\n")
    (tmp_path / "c.yaml").write_text(base + "dashboard: {listen: everywhere}\n")
    assert load(tmp_path / "a.yaml", environ={}).dashboard_listen == ""
    assert load(tmp_path / "b.yaml", environ={}).dashboard_listen == "127.0.0.1:3100"
    with pytest.raises(ConfigError, match=r"c.yaml:3: listen: expected host:port like 0.0.0.0:3100"):
        load(tmp_path / "c.yaml", environ={})


class _NoCluster:
    """A board whose every read fails as an unreachable cluster would (the server's warm-up read logs it)."""

    def __getattr__(self, name: str) -> object:
        raise GitsyncError("no cluster in this test")


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:{port}", 200),
        ("localhost:{port}", 200),
        ("LOCALHOST", 200),
        ("attacker.example:{port}", 403),
        ("127.0.0.1.attacker.example", 403),
        ("", 403),
    ],
)
def test_the_local_dashboard_refuses_a_page_that_rebinds_its_own_name_to_127_0_0_1(host: str, status: int) -> None:
    """DNS rebinding: a web page whose name resolves to 127.0.0.1 would otherwise read the board with the user's
    kubeconfig; only the loopback names are served (the stylesheet needs no cluster, so no board is read)."""
    server = DashboardServer("127.0.0.1", 0, cast(Board, _NoCluster()), Site(".", None, "local"), Open())
    server.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        connection.putrequest("GET", "/static/dashboard.css", skip_host=True)
        if host:
            connection.putheader("Host", host.format(port=server.port))
        connection.endheaders()
        assert connection.getresponse().status == status
    finally:
        server.stop()


class _Ledger:
    """A board that has only the ledger (the promotions page reads nothing else)."""

    env_order = ("staging", "prod")

    def __init__(self, rows: list[AuditRow]) -> None:
        self.rows = rows

    def ledger(self) -> list[AuditRow]:
        return self.rows

    def ledger_problem(self) -> str:
        return ""


def test_who_approved_shows_beside_the_pull_request_and_a_removal_is_no_version() -> None:
    approved = replace(
        _row("staging", ReleaseOutcome.SUCCEEDED, "podinfo 6.7.2"),
        pull_request=7,
        entry=replace(_row("staging", ReleaseOutcome.SUCCEEDED, "").entry, approvals=Approvals.KNOWN,
                      approved_by=("bob", "carol")),
    )  # fmt: skip
    unknown = replace(_row("prod", ReleaseOutcome.SUCCEEDED, "promote", "staging@" + "c" * 40), pull_request=8)
    removal = "e" * 40
    removed = _row("staging", ReleaseOutcome.REMOVED, "podinfo 6.7.2")
    removed = replace(removed, entry=replace(removed.entry, removal_commit=removal, chart_tree="", values_hash=""))
    rows = [removed, unknown, approved]  # newest first
    [chain] = promotion_chains(rows, ("staging", "prod"))
    assert [row.entry.outcome for _, row in chain.stages if row] == [ReleaseOutcome.SUCCEEDED] * 2
    page = Pages(cast(Board, _Ledger(rows)), Site(".", None, "local")).promotions()
    assert "approved by bob, carol" in page and "approvals unknown" in page
    assert ledger_by_release(rows) == {"c" * 40: unknown, removal: removed}, "the removal at its own commit"
    carried = replace(unknown, upstream=approved.entry, change=None)
    page = Pages(cast(Board, _Ledger([carried, approved])), Site(".", None, "local")).promotions()
    assert "change approved by bob, carol; promotion approvals unknown" in page, "who approved what runs in prod"
