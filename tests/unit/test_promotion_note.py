"""The ledger line the promote stage notes for a release, against a real Git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from gitrepos import Server, git

from gitsync.adapters.git import GitRepository
from gitsync.adapters.gitwrite import Identity
from gitsync.adapters.notes import NotesLedger
from gitsync.health import Health
from gitsync.history import Result
from gitsync.ledger import LedgerEntry, ReleaseOutcome
from gitsync.model import AppEnv, HealthStatus
from gitsync.ports import Commit, RenderedApp, Snapshot
from gitsync.promote import evidence, pinned_release, verify_pin
from gitsync.promotion import Promotions
from gitsync.result import Kind, ReconcileResult, Target
from renderers.promotion import values_hash


class Notes:
    def __init__(self) -> None:
        self.notes: dict[str, tuple[LedgerEntry, ...]] = {}

    def sign(self, entry: LedgerEntry) -> LedgerEntry:
        return entry

    def append(self, sha: str, entry: LedgerEntry) -> None:
        self.notes[sha] = (*self.notes.get(sha, ()), entry)

    def read(self) -> dict[str, tuple[LedgerEntry, ...]]:
        return self.notes


def promotions(server: Server, tmp_path: Path, ledger: object = None, **options: object) -> tuple[Promotions, Notes]:
    """The stage on ``server``'s commits, noting to an in-memory ``Notes`` unless given a ``ledger``."""

    def tree_id(sha: str, path: str) -> str:
        listed = git(server.work, "ls-tree", "--full-tree", sha, "--", path)
        return listed.split()[2] if listed else ""

    def tree(sha: str) -> Path:
        out = tmp_path / "trees" / sha
        if not out.exists():
            out.mkdir(parents=True)
            archive = subprocess.run(["git", "archive", sha], cwd=server.work, capture_output=True, check=True)
            subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
        return out

    notes = Notes()
    stage = Promotions(
        ledger or notes,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        tree=tree,
        tree_id=tree_id,
        status=lambda *_: None,
        branch="main",
        **options,  # type: ignore[arg-type]
    )
    return stage, notes


def note(stage: Promotions, *args: Any, **kwargs: Any) -> None:
    """The line ``stage`` makes of a release (``Promotions.entry``), written to its ledger (``Promotions.append``)."""
    entry = stage.entry(*args, **kwargs)
    if entry is not None:
        stage.append(entry)


def test_a_superseded_release_is_noted_with_the_chart_tree_of_its_own_commit(tmp_path: Path) -> None:
    server = Server(tmp_path / "repo")
    old = server.commit({"apps/ingress/deploy.yaml": "kind: ConfigMap # 1\n"}, "one")
    new = server.commit({"apps/ingress/deploy.yaml": "kind: ConfigMap # 2\n"}, "two")
    stage, notes = promotions(server, tmp_path)
    key = AppEnv("ingress", "staging")
    # The reconcile that rendered NEW notes OLD as Superseded: the line is of OLD, read at OLD.
    note(stage, key, old, "sha256:d1", Result.SUPERSEDED, 0.0, 10.0, promoted_paths=(), values={})
    (line,) = notes.notes[old]
    assert line.chart_tree == git(server.work, "rev-parse", f"{old}:apps/ingress")
    assert line.chart_tree != git(server.work, "rev-parse", f"{new}:apps/ingress")


def test_promoted_values_that_cannot_be_taken_are_never_noted_as_no_values(tmp_path: Path) -> None:
    server = Server(tmp_path / "repo")
    sha = server.commit({"apps/web/values.yaml": "image: nginx\n"}, "one")
    stage, notes = promotions(server, tmp_path)
    key = AppEnv("web", "staging")
    note(
        stage,
        key,
        sha,
        "sha256:d",
        Result.SUCCEEDED,
        0.0,
        10.0,
        promoted_paths=("image.tag",),
        values={"image": "nginx"},
    )
    (line,) = notes.notes[sha]
    assert line.outcome is ReleaseOutcome.SUCCEEDED
    assert line.values_hash == "", "not known"
    assert line.values_hash != values_hash({})
    empty_pin = pinned_release(stage._tree_id, "web", sha, {})
    assert not hasattr(verify_pin(empty_pin, [(sha, line)]), "evidence"), "verifies no pin"


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_the_warning_of_values_that_cannot_be_taken_names_the_env_yaml_line_listing_the_path(
    tmp_path: Path, env: str, caplog: pytest.LogCaptureFixture
) -> None:
    """staging's release is noted with the paths prod promotes (prod's env.yaml lists them), prod's with its own:
    either way the warning points at prod's env.yaml line, as of the commit the reconcile rendered."""
    server = Server(tmp_path / "repo")
    prod = "namespace: prod\napps: [web]\npromotion:\n  from: staging\n  values:\n    - replicas\n    - image.tag\n"
    sha = server.commit(
        {
            "apps/web/values.yaml": "image: nginx\n",
            "environments/staging/env.yaml": "namespace: staging\napps: [web]\n",
            "environments/prod/env.yaml": prod,
        },
        "one",
    )
    stage, notes = promotions(server, tmp_path)
    caplog.set_level("WARNING")
    note(
        stage,
        AppEnv("web", env), sha, "sha256:d", Result.SUCCEEDED, 0.0, 10.0,
        promoted_paths=("replicas", "image.tag"), values={"image": "nginx"}, paths_at=sha,
    )  # fmt: skip
    assert notes.notes[sha][0].values_hash == ""
    [warning] = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg["event"] == "ledger.values_unknown"]
    assert warning["error"] == (
        "environments/prod/env.yaml:7: promotion.values: image.tag: image is the string 'nginx' in the values it is "
        "promoted from, not a mapping"
    )


def test_the_values_hash_noted_is_the_one_the_guard_computes_for_the_pin(tmp_path: Path) -> None:
    server = Server(tmp_path / "repo")
    sha = server.commit({"apps/web/values.yaml": "image: {tag: '1.1'}\n", "apps/ksm/deploy.yaml": "kind: x\n"}, "one")
    stage, notes = promotions(server, tmp_path)
    paths = ("image.tag", "controller.image.tag")
    for app, values in (("web", {"image": {"tag": "1.1"}, "replicas": 2}), ("ksm", {})):
        note(
            stage,
            AppEnv(app, "staging"),
            sha,
            "sha256:d",
            Result.SUCCEEDED,
            0.0,
            10.0,
            promoted_paths=paths,
            values=values,
        )
    web, ksm = notes.notes[sha]
    assert web.content == pinned_release(stage._tree_id, "web", sha, {"image": {"tag": "1.1"}}).content
    assert ksm.content == pinned_release(stage._tree_id, "ksm", sha, {}).content, "a plain app carries no values"


EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"


def notes_repository(tmp_path: Path) -> tuple[Server, str, NotesLedger]:
    """A remote holding the example repository in one commit, and the notes ledger of an agent's clone of it."""
    server = Server(tmp_path / "repo")
    files = {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*") if p.is_file()}
    sha = server.commit(files, "podinfo 6.7.1")
    cache = GitRepository(server.url, "main", tmp_path / "cache").cache
    return server, sha, NotesLedger(cache, server.url, identity=Identity("gitsync", "gitsync@example.com"))


def staging_release(work: Path, rendered: RenderedApp, sha: str, outcome: Result, **extra: Any) -> ReconcileResult:
    """A release of example-repo's podinfo in staging at ``sha``, as the reconcile hands it to the sinks."""
    return ReconcileResult(
        key=rendered.app_env,
        kind=Kind.RELEASE,
        reasons=("poll",),
        started_at=0.0,
        finished_at=10.0,
        snapshot=Snapshot(Commit(sha, "Dana", "podinfo 6.7.1", 0.0), work),
        target=Target("podinfo-staging", prune=True, self_heal=True, promoted_paths=("image.tag",)),
        outcome=outcome,
        rendered=rendered,
        health=Health(HealthStatus.HEALTHY),
        **extra,
    )


@pytest.mark.parametrize("outcome", [Result.SUCCEEDED, Result.ROLLED_BACK])
def test_a_canary_release_is_noted_with_the_canary_steps_though_the_chart_also_has_a_blue_green_block(
    tmp_path: Path, outcome: Result
) -> None:
    """example-repo's podinfo chart carries both blocks; staging picks canary, prod blue-green. The ledger line of
    staging's release lists the canary's steps and its analysis conditions, as `gitsync audit` shows them; a
    rolled-back one also why the rollout aborted (its line said only "RolledBack" before)."""
    from memstore import MemoryStore

    from gitsync.history import History
    from gitsync.reconcile import RolloutStep
    from gitsync.record import LedgerSink
    from gitsync.strategy.executor import PART, owned, policy_of
    from gitsync.strategy.state import RolloutState
    from renderers import render_app

    server = Server(tmp_path / "repo")
    files = {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*") if p.is_file()}
    sha = server.commit(files, "podinfo 6.7.1")
    stage, notes = promotions(server, tmp_path)
    rendered = render_app(server.work, "staging", "podinfo", revision=sha)
    canary = policy_of(rendered).canary.steps
    store = MemoryStore()
    aborted = RolloutState(abort_reason="new version's pods are failing", evidence=("podinfo-canary-x: CrashLoop",))
    store.save(rendered.app_env, "podinfo-staging", PART, {"state": aborted.to_json()}, "")
    result = staging_release(server.work, rendered, sha, outcome, rollout=RolloutStep(exclude=owned(rendered)))
    LedgerSink(stage, History(store), store).write(result)
    (line,) = notes.notes[sha]
    assert line.steps == tuple(step.describe() for step in canary)
    assert "preview" not in line.steps and "switch" not in line.steps
    if outcome is Result.ROLLED_BACK:
        assert evidence(line) == "RolledBack: new version's pods are failing", "the pod names stay in the cluster"
    else:
        assert line.reason == "" and "reason" not in line.to_json(), "a line that needs no reason is as before"


def test_a_ledger_line_the_remote_did_not_take_is_written_once_it_is_back(tmp_path: Path) -> None:
    """The forge is down for the moment a staging release ends: no reconcile follows a release that ended, so
    without a retry the release would never be noted, and prod would never be offered it."""
    from memstore import MemoryStore

    from gitsync.history import History
    from gitsync.record import LedgerSink
    from renderers import render_app

    server, sha, ledger = notes_repository(tmp_path)
    stage, _ = promotions(server, tmp_path, ledger)
    rendered = render_app(server.work, "staging", "podinfo", revision=sha)
    store = MemoryStore()
    sink = LedgerSink(stage, History(store), store, retry_after=0.05)
    away = server.bare.rename(tmp_path / "away")  # the remote is unreachable
    sink.write(staging_release(server.work, rendered, sha, Result.SUCCEEDED))
    assert not sink.retries.idle(0.2), "the line waits to be written again"
    away.rename(server.bare)  # back

    assert sink.retries.idle(30)
    noted = git(server.work, "fetch", "-q", "origin", "refs/notes/gitsync:refs/notes/gitsync") or git(
        server.work, "notes", "--ref", "gitsync", "show", sha
    )
    assert '"outcome":"Succeeded"' in noted and '"env":"staging"' in noted
    assert History(store).status(rendered.app_env, "podinfo-staging").unnoted == (), "no longer kept in the status"


def test_a_line_kept_for_a_remote_that_was_away_is_written_once_by_a_restarted_agent_as_it_was_made(
    tmp_path: Path,
) -> None:
    """The agent is killed while the remote is away, before its status said the release was done: the line is
    kept in the status (the cluster), and the new agent's reconcile, done again, writes that line (its times, not
    the redone reconcile's), once, however often it runs."""
    from dataclasses import replace

    from memstore import MemoryStore

    from gitsync.history import History
    from gitsync.record import LedgerSink
    from renderers import render_app

    server = Server(tmp_path / "repo")
    files = {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*") if p.is_file()}
    sha = server.commit(files, "podinfo 6.7.1")
    rendered = render_app(server.work, "staging", "podinfo", revision=sha)
    store = MemoryStore()
    history = History(store)

    def sink(name: str) -> LedgerSink:
        cache = GitRepository(server.url, "main", tmp_path / name).cache
        ledger = NotesLedger(cache, server.url, identity=Identity("gitsync", "gitsync@example.com"))
        return LedgerSink(promotions(server, tmp_path, ledger)[0], history, store, retry_after=3600)

    first = sink("first")
    away = server.bare.rename(tmp_path / "away")
    first.write(staging_release(server.work, rendered, sha, Result.SUCCEEDED))
    first.retries.close(0)  # killed: its background retry is gone with it
    (kept,) = history.status(rendered.app_env, "podinfo-staging").unnoted
    away.rename(server.bare)

    second = sink("second")
    previous = history.status(rendered.app_env, "podinfo-staging")
    redone = replace(staging_release(server.work, rendered, sha, Result.SUCCEEDED, previous=previous), finished_at=99.0)
    second.write(redone)
    second.write(redone)  # a status read before the line was written: the ledger keeps one line
    git(server.work, "fetch", "-q", "origin", "refs/notes/gitsync:refs/notes/gitsync")
    assert git(server.work, "notes", "--ref", "gitsync", "show", sha).splitlines() == [kept]
    assert history.status(rendered.app_env, "podinfo-staging").unnoted == ()


def test_a_chart_change_only_the_pinned_environment_renders_is_noted_so_it_can_be_promoted(tmp_path: Path) -> None:
    """A block only prod renders (``{% if release.env == "prod" %}``): staging renders the same, so its running
    release goes on, credited to its first commit; but prod would pin the new chart, which staging now runs: the
    commit is noted (once) with its own chart tree, or no promotion could ever carry it."""
    from memstore import MemoryStore

    from gitsync.history import History, Status
    from gitsync.record import LedgerSink
    from renderers import render_app

    server = Server(tmp_path / "repo")
    files = {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*") if p.is_file()}
    first = server.commit(files, "podinfo 6.7.1")
    template = "apps/podinfo/templates/deployment.yaml"
    prod_only = files[template].replace(
        "spec:\n", 'spec:\n{% if release.env == "prod" %}\n  minReadySeconds: 10\n{% endif %}\n', 1
    )
    second = server.commit({template: prod_only}, "prod waits 10 s for a ready pod")
    readme = server.commit({"README.md": "deploy\n"}, "README")
    stage, notes = promotions(server, tmp_path)
    store = MemoryStore()
    sink = LedgerSink(stage, History(store), store)

    def reconciled(sha: str, applied: str) -> ReconcileResult:
        rendered = render_app(server.work, "staging", "podinfo", revision=sha)
        running = Status("podinfo", "staging", last_applied_revision=applied, last_applied_digest=rendered.digest,
                         release_revision=first, health="Healthy", result="Succeeded")  # fmt: skip
        return staging_release(server.work, rendered, sha, Result.SUCCEEDED, previous=running)

    sink.write(reconciled(second, applied=first))
    sink.write(reconciled(second, applied=second))  # the next reconcile at the same commit notes nothing more
    sink.write(reconciled(readme, applied=second))  # a commit that leaves the chart alone is no new content

    (line,) = notes.notes[second]
    assert line.outcome is ReleaseOutcome.SUCCEEDED
    assert line.chart_tree == git(server.work, "rev-parse", f"{second}:apps/podinfo")
    assert readme not in notes.notes and first not in notes.notes


def test_a_kept_line_the_remote_refuses_once_back_is_let_go_not_kept_in_the_status_for_ever(tmp_path: Path) -> None:
    """The remote is away when the release ends, then comes back refusing the notes push (a hook, write access
    taken away): the background retry is refused. As for a line refused at once, it is logged and let go: the
    status stops keeping it (else every no-op reconcile of the app-env would record again, for ever, and a later
    reconcile would never write it either, as this agent believes its queue still holds it)."""
    from memstore import MemoryStore

    from gitsync.history import History
    from gitsync.record import LedgerSink
    from renderers import render_app

    server, sha, ledger = notes_repository(tmp_path)
    stage, _ = promotions(server, tmp_path, ledger)
    rendered = render_app(server.work, "staging", "podinfo", revision=sha)
    store = MemoryStore()
    history = History(store)
    sink = LedgerSink(stage, history, store, retry_after=0.05)
    away = server.bare.rename(tmp_path / "away")
    sink.write(staging_release(server.work, rendered, sha, Result.SUCCEEDED))
    assert len(history.status(rendered.app_env, "podinfo-staging").unnoted) == 1
    hook = away / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'notes are read-only here' >&2\nexit 1\n")
    hook.chmod(0o755)
    away.rename(server.bare)  # back, refusing

    assert sink.retries.idle(30)
    assert history.status(rendered.app_env, "podinfo-staging").unnoted == (), "refused: let go, as when refused at once"
