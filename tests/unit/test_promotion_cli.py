"""gitsync audit, promote and rollback on real clones: what an auditor and an operator see, no cluster."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from gitrepos import Server, git
from test_ledger import entry

from gitsync.adapters.git import GitRepository
from gitsync.adapters.gitwrite import Identity
from gitsync.adapters.notes import NotesLedger
from gitsync.cli import main
from gitsync.ledger import AnalysisResult, Approvals, ReleaseOutcome
from renderers.promotion import promoted_values, values_hash

CHART = {
    "apps/podinfo/chart.yaml": "name: podinfo\nversion: 1.0.0\n",
    "apps/podinfo/values.yaml": 'image:\n  tag: "6.6.0"\n',
    "apps/podinfo/templates/cm.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: podinfo\ndata:\n  tag: {{ values.image.tag | quote }}\n"
    ),
    "apps/podinfo/templates/deployment.yaml": (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: podinfo\nspec:\n"
        "  selector: {matchLabels: {app: podinfo}}\n  template:\n    metadata: {labels: {app: podinfo}}\n"
        "    spec:\n      containers:\n        - name: podinfo\n"
        '          image: "ghcr.io/stefanprodan/podinfo:{{ values.image.tag }}"\n'
    ),
    "environments/staging/env.yaml": "namespace: podinfo-staging\napps: [podinfo]\n",
    "environments/prod/env.yaml": (
        "namespace: podinfo-prod\napps: [podinfo]\n"
        "promotion: {from: staging, mode: manual, soak: 0s, values: [image.tag]}\n"
    ),
}
T0 = 1_700_000_000.0


class Scenario:
    """A repository with staging releases noted by an agent (its own cache) and an operator's clone."""

    def __init__(self, root: Path) -> None:
        self.server = Server(root / "server")
        self.root = root
        self.agent = NotesLedger(
            GitRepository(self.server.url, "main", root / "agent-cache").cache,
            self.server.url,
            identity=Identity("gitsync", "gitsync@example.com"),
        )

    def release(
        self, sha: str, env: str, outcome: ReleaseOutcome, at: float, tag: str, pinned: str = "", **changes: object
    ) -> None:
        """A release noted on ``sha``; a pinned app's chart tree is its ``pinned`` revision's, as the agent notes it."""
        tree = git(self.server.bare, "rev-parse", f"{pinned or sha}:apps/podinfo")
        self.agent.append(
            sha,
            entry(
                env=env,
                revision=sha,
                outcome=outcome,
                started_at=at - 60,
                finished_at=at,
                chart_tree=tree,
                values_hash=values_hash(promoted_values({"image": {"tag": tag}}, ("image.tag",))),
                **changes,
            ),
        )

    def cli(self, *args: str, clone: Path | None = None) -> tuple[int, str]:
        result = CliRunner().invoke(main, [*args[:1], "--repo", str(clone or self.server.work), *args[1:]])
        return result.exit_code, result.output


@pytest.fixture
def scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scenario:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # LocalTrees extracts pinned trees there
    return Scenario(tmp_path)


IMAGE = "ghcr.io/stefanprodan/podinfo"
OBJECTS = "ConfigMap/podinfo-prod/podinfo, Deployment.apps/podinfo-prod/podinfo"


def test_audit_json_on_a_fresh_clone_lists_releases_with_pr_numbers_and_evidence(scenario: Scenario) -> None:
    server = scenario.server
    first = server.commit(CHART, "Merge pull request #12 from ada/podinfo\n\nAdd podinfo")
    squash = server.commit({"apps/podinfo/values.yaml": 'image:\n  tag: "6.7.0"\n'}, "Bump podinfo (#13)")
    gitlab = server.commit(
        {"README.md": "x\n"}, "Merge branch 'docs' into 'main'\n\nDocs\n\nSee merge request platform/deploy!14"
    )
    gitea = server.commit({"README.md": "y\n"}, "Merge pull request 'more docs' (#15) from docs into main")
    scenario.release(first, "staging", ReleaseOutcome.SUCCEEDED, T0, "6.6.0")
    analysis = (AnalysisResult("error-rate", 0.5, "result < 0.05", "Failed"),)
    scenario.release(squash, "staging", ReleaseOutcome.ROLLED_BACK, T0 + 100, "6.7.0", analysis=analysis)
    scenario.release(gitlab, "staging", ReleaseOutcome.SUCCEEDED, T0 + 200, "6.6.0")
    scenario.release(gitea, "staging", ReleaseOutcome.SUCCEEDED, T0 + 300, "6.6.0")

    fresh = scenario.root / "auditor"
    git(scenario.root, "clone", "-q", server.url, str(fresh))
    code, out = scenario.cli("audit", "-o", "json", clone=fresh)
    assert code == 0, out
    rows = json.loads(out)
    assert [(r["commit"], r["pullRequest"], r["outcome"]) for r in rows] == [
        (gitea, 15, "Succeeded"),
        (gitlab, 14, "Succeeded"),
        (squash, 13, "RolledBack"),
        (first, 12, "Succeeded"),
    ]
    assert rows[2]["evidence"] == "RolledBack; error-rate=0.5 (result < 0.05) Failed"
    assert rows[2]["subject"] == "Bump podinfo (#13)" and rows[2]["author"] == "Ada <ada@example.com>"
    assert rows[2]["mergedBy"] == "Ada <ada@example.com>", "a squashed pull request was merged by its committer"
    assert rows[3]["time"] == "2023-11-14T22:13:20Z" and rows[3]["analysis"][0]["name"] == "error-rate"

    code, out = scenario.cli("audit", "-o", "csv", "--since", "2023-11-14T22:15:00Z", clone=fresh)
    assert code == 0 and out.splitlines()[0].startswith("time,env,app,commit,subject,pullRequest")
    assert len(out.splitlines()) == 1 + 3


def test_audit_says_a_prod_release_was_forced_and_why_and_filters_a_time_window(
    scenario: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = scenario.server
    good = server.commit({**CHART, "apps/podinfo/values.yaml": 'image:\n  tag: "6.7.0"\n'}, "podinfo 6.7.0 (#21)")
    scenario.release(good, "staging", ReleaseOutcome.SUCCEEDED, T0, "6.7.0")
    bad = server.commit({"apps/podinfo/values.yaml": 'image:\n  tag: "6.8.0"\n'}, "podinfo 6.8.0")
    scenario.release(bad, "staging", ReleaseOutcome.ROLLED_BACK, T0 + 100, "6.8.0", reason="analysis failed: pods")
    for who in ("AUTHOR", "COMMITTER"):  # the operator's promote and rollback commits, not Ada's
        monkeypatch.setenv(f"GIT_{who}_NAME", "Olga")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "olga@example.com")
    forcing = ("--force", "--reason", "INC-7 hotfix")
    for revision, options, at, tag in ((good, (), T0 + 150, "6.7.0"), (bad, forcing, T0 + 200, "6.8.0")):
        code, out = scenario.cli(
            "promote", "--env", "prod", "--app", "podinfo", "--revision", revision, *options, "--push"
        )
        assert code == 0, out
        scenario.release(server.head(), "prod", ReleaseOutcome.SUCCEEDED, at, tag, pinned=revision)

    code, out = scenario.cli("audit", "--env", "prod", "-o", "json")
    assert code == 0, out
    forced, verified = json.loads(out)
    assert (forced["promotedFrom"], forced["override"]) == (f"staging@{bad}", "INC-7 hotfix")
    overridden = "none: forced; staging noted RolledBack: analysis failed: pods; error-rate=0.012"
    assert forced["evidence"].startswith(overridden), "what the override overrode"
    assert (verified["promotedFrom"], verified["override"]) == (f"staging@{good}", "")
    change = (verified["author"], verified["changeAuthor"], verified["changeMergedBy"], verified["changePullRequest"])
    assert change == ("Olga <olga@example.com>", "Ada <ada@example.com>", "Ada <ada@example.com>", 21)
    code, out = scenario.cli("audit", "--env", "prod")
    [forced_row] = [line for line in out.splitlines() if "forced: INC-7 hotfix; " in line]
    assert "Ada <ada@example.com>, promoted by Olga <olga@example.com>" in forced_row, "piped, a row is one line"
    code, out = scenario.cli("rollback", "--env", "prod", "--app", "podinfo", "--push")
    assert code == 0, out
    scenario.release(server.head(), "prod", ReleaseOutcome.SUCCEEDED, T0 + 300, "")
    code, out = scenario.cli("audit", "-o", "json")
    links = {(r["env"], r["commit"]): (r["promotionCommit"], r["rollbackCommit"]) for r in json.loads(out)}
    assert links[("staging", bad)] == (forced["commit"], ""), "the staging release links to what promoted it"
    assert links[("prod", forced["commit"])] == ("", server.head()), "and prod's to the commit that rolled it back"

    window = ("--since", "2023-11-14T22:14:00Z", "--until", "2023-11-14T22:15:00Z", "-o", "json")
    code, out = scenario.cli("audit", *window)
    assert code == 0 and [r["outcome"] for r in json.loads(out)] == ["RolledBack"], "only T0 + 100 is in the window"
    code, out = scenario.cli("audit", "--until", "yesterday")
    assert code == 2 and "--until: expected a date like 2025-01-31" in out, out


def test_audit_reports_what_an_edited_ledger_leaves_behind(scenario: Scenario) -> None:
    """Nothing signs the notes: a person can edit or remove a line and push. What cannot be hidden is a promotion
    that no Succeeded release upstream verifies any more, and an edited line beside the agent's own copy of it."""
    server = scenario.server
    good = server.commit(CHART, "podinfo 6.6.0")
    scenario.release(good, "staging", ReleaseOutcome.SUCCEEDED, T0, "6.6.0")
    code, out = scenario.cli("promote", "--env", "prod", "--app", "podinfo", "--revision", good, "--push")
    assert code == 0, out
    scenario.release(server.head(), "prod", ReleaseOutcome.SUPERSEDED, T0 + 50, "", pinned=good)
    code, out = scenario.cli("audit", "-o", "json")
    assert code == 0 and "inconsistent" not in out, "a Superseded line has no values hash to compare"
    scenario.release(server.head(), "prod", ReleaseOutcome.SUCCEEDED, T0 + 100, "6.6.0", pinned=good)
    code, out = scenario.cli("audit", "-o", "json")
    assert code == 0 and "inconsistent" not in out, out

    scenario.release(good, "staging", ReleaseOutcome.ROLLED_BACK, T0, "6.6.0")  # the agent's merge keeps both
    code, out = scenario.cli("audit", "-o", "json")
    assert f"ledger inconsistent: staging podinfo at {good[:12]}: one release noted as RolledBack and Succeeded" in out

    mallory = server.clone("mallory")
    git(mallory, "fetch", "-q", "origin", "refs/notes/gitsync:refs/notes/gitsync")
    git(mallory, "notes", "--ref", "gitsync", "remove", good)
    git(mallory, "push", "-q", "--force", "origin", "refs/notes/gitsync")
    fresh = scenario.root / "auditor"
    git(scenario.root, "clone", "-q", server.url, str(fresh))
    code, out = scenario.cli("audit", clone=fresh)
    assert (
        code == 0
        and (
            f"ledger inconsistent: prod podinfo at {server.head()[:12]}: promoted from staging@{good[:12]} unforced, "
            "but staging's ledger holds no Succeeded release of its content"
        )
        in out
    ), out


def promote_through_pull_request_5(scenario: Scenario, good: str) -> None:
    """``gitsync promote`` on the review branch, merged into main as pull request #5 (no trailers on the merge)."""
    server = scenario.server
    git(server.work, "checkout", "-q", "-b", "gitsync/promote/prod/podinfo")
    code, out = scenario.cli("promote", "--env", "prod", "--app", "podinfo", "--revision", good)
    assert code == 0, out
    git(server.work, "checkout", "-q", "main")
    git(server.work, "merge", "-q", "--no-ff", "-m", "Merge pull request #5 from gitsync/promote/prod/podinfo", "-")
    git(server.work, "push", "-q", "origin", "main")


def test_audit_reads_a_promotion_merged_as_a_pull_request_from_its_merged_head(scenario: Scenario) -> None:
    """In pull-request mode prod's release is noted on the forge's merge commit, which carries no trailers."""
    server = scenario.server
    good = server.commit(CHART, "podinfo 6.6.0 (#4)")
    scenario.release(good, "staging", ReleaseOutcome.SUCCEEDED, T0, "6.6.0")
    promote_through_pull_request_5(scenario, good)
    scenario.release(server.head(), "prod", ReleaseOutcome.SUCCEEDED, T0 + 100, "6.6.0", pinned=good)
    code, out = scenario.cli("audit", "--env", "prod", "-o", "json")
    assert code == 0, out
    [row] = json.loads(out)
    assert (row["pullRequest"], row["promotedFrom"], row["changePullRequest"]) == (5, f"staging@{good}", 4), row
    assert row["evidence"].startswith("Succeeded") and row["promotionCommit"] == "", row


def test_audit_shows_who_approved_the_change_a_promotion_carried_beside_who_approved_the_promotion(
    scenario: Scenario,
) -> None:
    """Prod's line records who approved the promotion's pull request; who approved the change it carries is on
    staging's line of the promoted commit, joined when the ledger is read: who approved what runs in prod."""
    server = scenario.server
    good = server.commit(CHART, "podinfo 6.6.0 (#4)")
    scenario.release(good, "staging", ReleaseOutcome.SUCCEEDED, T0, "6.6.0",
                     approvals=Approvals.KNOWN, approved_by=("bob", "carol"))  # fmt: skip
    promote_through_pull_request_5(scenario, good)
    scenario.release(server.head(), "prod", ReleaseOutcome.SUCCEEDED, T0 + 100, "6.6.0", pinned=good,
                     approvals=Approvals.KNOWN, approved_by=("dave",))  # fmt: skip

    code, out = scenario.cli("audit", "-o", "json")
    prod, staging = json.loads(out)
    change = (prod["changeApprovals"], prod["changeApprovedBy"])
    assert (prod["approvedBy"], change) == (["dave"], ("known", ["bob", "carol"])), prod
    assert (staging["changeApprovals"], staging["changeApprovedBy"]) == ("known", ["bob", "carol"]), "its own"
    code, out = scenario.cli("audit", "--env", "prod")
    assert "change: bob, carol; promotion: dave" in " ".join(out.split()), out
    code, out = scenario.cli("audit", "--env", "prod", "-o", "csv")
    assert code == 0 and ",dave,promotion" not in out and ",known,bob; carol," in out, out


def test_audit_credits_a_merged_promotion_pull_request_with_its_evidence(scenario: Scenario) -> None:
    """Pull-request mode: the ledger notes the merge commit, whose own message has no trailers; the promotion
    commit it merged has them, and the audit row shows them with who merged."""
    server, work = scenario.server, scenario.server.work
    good = server.commit(CHART, "podinfo")
    scenario.release(good, "staging", ReleaseOutcome.SUCCEEDED, T0 - 100, "6.6.0")
    git(work, "checkout", "-q", "-b", "gitsync/promote/prod/podinfo")
    trailers = f"Gitsync-Promoted-From: staging@{good}\nGitsync-App: podinfo\nGitsync-Env: prod\nGitsync-Evidence: ok"
    server.commit({"environments/prod/promoted.yaml": "{}\n"}, f"promote podinfo to prod\n\n{trailers}", push=False)
    git(work, "checkout", "-q", "main")
    subject = "Merge pull request 'gitsync: promote podinfo to prod' (#8) from gitsync/promote/prod/podinfo into main"
    git(work, "merge", "-q", "--no-ff", "-m", subject, "gitsync/promote/prod/podinfo")
    git(work, "push", "-q", "origin", "main")
    merge = git(work, "rev-parse", "HEAD")
    # The release failed in prod and was rolled back by a commit of its own (a rollback pull request's branch).
    git(work, "checkout", "-q", "-b", "gitsync/rollback/prod/podinfo")
    rollback = server.commit(
        {"environments/prod/promoted.yaml": "{} # back\n"}, f"roll back\n\nGitsync-Rollback-Of: {merge}"
    )
    git(work, "checkout", "-q", "main")
    scenario.release(merge, "prod", ReleaseOutcome.ROLLED_BACK, T0 + 60, "6.6.0", pinned=good, rollback_commit=rollback)

    code, out = scenario.cli("audit", "--env", "prod", "-o", "json")

    assert code == 0, out
    [row] = json.loads(out)
    assert (row["pullRequest"], row["mergedBy"]) == (8, "Ada <ada@example.com>")
    assert (row["promotedFrom"], row["rollbackOf"]) == (f"staging@{good}", merge), "where it came from, what undid it"
    assert row["rollbackCommit"] == rollback and row["evidence"].startswith("RolledBack"), row


def test_audit_of_an_empty_ledger_says_so(scenario: Scenario) -> None:
    scenario.server.commit(CHART, "podinfo")
    code, out = scenario.cli("audit")
    assert code == 0 and "no release in the ledger (refs/notes/gitsync" in out, out


def test_promote_without_a_candidate_says_why(scenario: Scenario) -> None:
    server = scenario.server
    soaking = {**CHART, "environments/prod/env.yaml": CHART["environments/prod/env.yaml"].replace("0s", "1h")}
    first = server.commit(soaking, "podinfo 6.6.0")
    code, out = scenario.cli("promote", "--env", "prod", "--app", "podinfo")
    assert code == 2 and "the ledger (refs/notes/gitsync) holds no release of the app there" in out, out
    assert "gitsync sync does not" in out, "a newcomer who synced staging by hand learns who writes the ledger"

    scenario.release(first, "staging", ReleaseOutcome.SUCCEEDED, time.time(), "6.6.0")
    code, out = scenario.cli("promote", "--env", "prod", "--app", "podinfo")
    assert code == 2 and f"no candidate in staging: staging@{first[:12]} soaks, " in out and "s left" in out, out


def test_promote_refuses_unverified_records_forced_and_writes_once(scenario: Scenario) -> None:
    server = scenario.server
    good = server.commit({**CHART, "apps/podinfo/values.yaml": 'image:\n  tag: "6.7.0"\n'}, "podinfo 6.7.0")
    scenario.release(good, "staging", ReleaseOutcome.SUCCEEDED, T0, "6.7.0")
    bad = server.commit({"apps/podinfo/values.yaml": 'image:\n  tag: "6.8.0"\n'}, "podinfo 6.8.0")
    scenario.release(bad, "staging", ReleaseOutcome.ROLLED_BACK, T0 + 100, "6.8.0")

    code, out = scenario.cli("promote", "--env", "prod", "--app", "podinfo")
    assert code == 2 and "no candidate in staging" in out, "the newest staging release failed: nothing to promote"

    code, out = scenario.cli("promote", "--env", "prod", "--app", "podinfo", "--revision", bad)
    assert code == 2 and f"pin {bad[:12]} is not verified" in out and "--force --reason" in out

    code, out = scenario.cli("promote", "--env", "prod", "--app", "podinfo", "--revision", good, "--push")
    assert code == 0 and out.startswith(f"promote podinfo to prod (staging@{good[:7]}): committed"), out
    pins = yaml.safe_load(git(server.bare, "show", "main:environments/prod/promoted.yaml"))
    assert pins == {"podinfo": {"revision": good, "from": "staging", "values": {"image": {"tag": "6.7.0"}}}}
    body = server.log("-1", "--format=%B")
    assert f"Rendered change in prod:\n  added: {OBJECTS}\n  image: (none) -> {IMAGE}:6.7.0\n" in body, body
    assert "  image.tag: (none) -> 6.7.0\n" in body
    code, out = scenario.cli("promote", "--env", "prod", "--app", "podinfo", "--revision", good, "--push")
    assert code == 0 and "nothing written" in out

    code, out = scenario.cli(
        "promote",
        "--env",
        "prod",
        "--app",
        "podinfo",
        "--revision",
        bad,
        "--force",
        "--reason",
        "INC-7 hotfix",
        "--push",
    )
    assert code == 0, out
    trailers = git(server.bare, "show", "-s", "--format=%(trailers:only,unfold)", "main").splitlines()
    assert "Gitsync-Override: INC-7 hotfix" in trailers and f"Gitsync-Promoted-From: staging@{bad}" in trailers
    assert len(server.log("--format=%s", "--grep=^promote ").splitlines()) == 2
    forced = yaml.safe_load(git(server.bare, "show", "main:environments/prod/promoted.yaml"))["podinfo"]
    assert (forced["revision"], forced["override"]) == (bad, "INC-7 hotfix"), "the agent's guard reads the reason"
    body = server.log("-1", "--format=%B")
    assert f"  changed: {OBJECTS}\n  image: {IMAGE}:6.7.0 -> {IMAGE}:6.8.0\n  image.tag: 6.7.0 -> 6.8.0\n" in body

    code, out = scenario.cli("rollback", "--env", "prod", "--app", "podinfo", "--push")
    assert code == 0 and out.startswith(f"roll back podinfo in prod to {good[:7]}: committed"), out
    pins = yaml.safe_load(git(server.bare, "show", "main:environments/prod/promoted.yaml"))
    assert pins["podinfo"]["revision"] == good
    assert f"  image: {IMAGE}:6.8.0 -> {IMAGE}:6.7.0\n" in server.log("-1", "--format=%B")
    assert git(server.bare, "show", "-s", "--format=%(trailers:key=Gitsync-Rollback-Of,valueonly)", "main") == git(
        server.bare, "rev-parse", "main~1"
    )


def test_rollback_of_a_pinned_environment_takes_its_own_last_succeeded_release(scenario: Scenario) -> None:
    """prod's ledger, not promoted.yaml's history: the pin before the current one was rolled back in prod."""
    server = scenario.server
    shas = {}
    for at, tag in enumerate(("6.7.0", "6.8.0", "6.9.0")):
        shas[tag] = server.commit({**CHART, "apps/podinfo/values.yaml": f'image:\n  tag: "{tag}"\n'}, tag)
        scenario.release(shas[tag], "staging", ReleaseOutcome.SUCCEEDED, T0 + at, tag)
    for at, (tag, outcome) in enumerate(
        (("6.7.0", ReleaseOutcome.SUCCEEDED), ("6.8.0", ReleaseOutcome.ROLLED_BACK), ("6.9.0", ReleaseOutcome.FAILED))
    ):
        code, out = scenario.cli("promote", "--env", "prod", "--app", "podinfo", "--revision", shas[tag], "--push")
        assert code == 0, out
        scenario.release(server.head(), "prod", outcome, T0 + 100 + at, tag)
    promoted_69 = server.head()

    code, out = scenario.cli("rollback", "--env", "prod", "--app", "podinfo", "--push")
    assert code == 0 and out.startswith(f"roll back podinfo in prod to {shas['6.7.0'][:7]}: committed"), out
    pins = yaml.safe_load(git(server.bare, "show", "main:environments/prod/promoted.yaml"))
    assert pins["podinfo"] == {"revision": shas["6.7.0"], "from": "staging", "values": {"image": {"tag": "6.7.0"}}}
    message = server.log("-1", "--format=%B")
    assert f"Gitsync-Rollback-Of: {promoted_69}" in message
    assert "Gitsync-Evidence: Failed" in message and f"  image: {IMAGE}:6.9.0 -> {IMAGE}:6.7.0\n" in message


def test_rollback_to_a_forced_pin_keeps_its_reason(scenario: Scenario) -> None:
    server = scenario.server
    good = server.commit({**CHART, "apps/podinfo/values.yaml": 'image:\n  tag: "6.7.0"\n'}, "6.7.0")
    scenario.release(good, "staging", ReleaseOutcome.SUCCEEDED, T0, "6.7.0")
    hotfix = server.commit({"apps/podinfo/values.yaml": 'image:\n  tag: "6.7.1"\n'}, "6.7.1, straight to prod")
    forced = ("--force", "--reason", "INC-9 outage")
    for at, (revision, options, outcome) in enumerate(
        ((hotfix, forced, ReleaseOutcome.SUCCEEDED), (good, (), ReleaseOutcome.ROLLED_BACK))
    ):
        code, out = scenario.cli(
            "promote", "--env", "prod", "--app", "podinfo", "--revision", revision, *options, "--push"
        )
        assert code == 0, out
        scenario.release(server.head(), "prod", outcome, T0 + 100 + at, "")

    code, out = scenario.cli("rollback", "--env", "prod", "--app", "podinfo", "--push")
    assert code == 0 and out.startswith(f"roll back podinfo in prod to {hotfix[:7]}: committed"), out
    pin = yaml.safe_load(git(server.bare, "show", "main:environments/prod/promoted.yaml"))["podinfo"]
    assert (pin["revision"], pin["override"]) == (hotfix, "INC-9 outage"), "the agent's guard still applies it"
    assert "Gitsync-Override: INC-9 outage" in server.log("-1", "--format=%B"), "the audit shows it forced again"


@pytest.mark.parametrize(
    ("newest", "evidence"),
    [(ReleaseOutcome.ROLLED_BACK, "Gitsync-Evidence: RolledBack"), (ReleaseOutcome.REMOVED, None)],
    ids=["cites the failed release", "a removal is no failure to cite"],
)
def test_rollback_of_a_head_following_environment_restores_chart_and_values(
    scenario: Scenario, newest: ReleaseOutcome, evidence: str | None
) -> None:
    server = scenario.server
    good = server.commit({**CHART, "environments/staging/values/podinfo.yaml": "replicas: 2\n"}, "podinfo")
    scenario.release(good, "staging", ReleaseOutcome.SUCCEEDED, T0, "6.6.0")
    bad = server.commit(
        {"apps/podinfo/values.yaml": 'image:\n  tag: "6.9.9"\n', "environments/staging/values/podinfo.yaml": "x: 1\n"},
        "podinfo 6.9.9",
    )
    scenario.release(bad, "staging", newest, T0 + 100, "6.9.9")
    code, out = scenario.cli("rollback", "--env", "staging", "--app", "podinfo", "--push")
    assert code == 0 and out.startswith(f"roll back podinfo in staging to {good[:7]}: committed"), out
    assert git(server.bare, "diff", "--stat", good, "main", "--", "apps", "environments") == ""
    message = server.log("-1", "--format=%B")
    assert f"Gitsync-Rollback-Of: {bad}" in message
    cited = [line for line in message.splitlines() if line.startswith("Gitsync-Evidence: ")]
    assert [line.split(";")[0] for line in cited] == ([evidence] if evidence else []), message


def test_audit_at_a_time_lists_what_ran_then_and_approvals_beside_the_pull_request(scenario: Scenario) -> None:
    server = scenario.server
    first = server.commit(CHART, "Merge pull request 'Add podinfo' (#12) from ada/podinfo into main")
    second = server.commit({"apps/podinfo/values.yaml": 'image:\n  tag: "6.7.0"\n'}, "Bump podinfo (#13)")
    removal = server.commit({"environments/staging/env.yaml": "namespace: podinfo-staging\napps: []\n"}, "Drop it")
    scenario.release(first, "staging", ReleaseOutcome.SUCCEEDED, T0, "6.6.0",
                     approvals=Approvals.KNOWN, approved_by=("bob", "carol"))  # fmt: skip
    scenario.release(second, "staging", ReleaseOutcome.SUCCEEDED, T0 + 100, "6.7.0", approvals=Approvals.UNKNOWN)
    scenario.release(second, "staging", ReleaseOutcome.REMOVED, T0 + 200, "6.7.0", removal_commit=removal)

    def at(moment: str) -> list[dict[str, Any]]:
        code, out = scenario.cli("audit", "--at", moment, "-o", "json")
        assert code == 0, out
        return list(json.loads(out))

    assert [(r["commit"], r["approvedBy"]) for r in at("2023-11-14T22:14:00Z")] == [(first, ["bob", "carol"])]
    assert [(r["commit"], r["approvals"]) for r in at("2023-11-14T22:15:00Z")] == [(second, "unknown")]
    assert at("2023-11-14T22:16:40Z") == [], "removed by then: the app ran no more"

    code, out = scenario.cli("audit")
    table = {line.split()[3]: line for line in out.splitlines()[1:] if line.strip()}
    assert "bob, carol" in table[first[:12]] and "unknown" in table[second[:12]], out
    code, out = scenario.cli("audit", "-o", "csv")
    assert f"{first}," in out and ",bob; carol," in out, out
    code, out = scenario.cli("audit", "--at", "2023-11-14", "--until", "2023-11-15")
    assert code == 2 and "--at: give it alone" in out
