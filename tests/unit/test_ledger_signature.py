"""Signed ledger lines with real Git repositories and real ``ssh-keygen`` keys: the agent signs what it notes, and
an agent given allowed signers promotes and verifies pins only from lines an allowed key signed, so write access
to ``refs/notes/gitsync`` alone no longer gets a release to prod."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from gitrepos import Server, git
from test_ledger import entry
from test_promotion_cli import CHART, T0
from test_promotion_note import promotions

from gitsync.adapters.git import GitRepository
from gitsync.adapters.gitwrite import Identity
from gitsync.adapters.ledger_signature import SshLedgerVerifier, SshLineSigner
from gitsync.adapters.notes import NotesLedger
from gitsync.history import Status
from gitsync.ledger import LedgerEntry, ReleaseOutcome, Seal, parse_note, with_signature
from gitsync.model import AppEnv
from gitsync.promotion import PromotionAction, Upstream
from gitsync.record import LedgerSink
from renderers.promotion import Pin, promoted_values, values_hash

TAG = {"image": {"tag": "6.6.0"}}
PROD = Upstream("staging", "manual", 0.0, ("image.tag",), "podinfo-staging")


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)
    return path


class Lab:
    """A repository with podinfo's chart at ``sha``; the agent's key and the allowed signers file that names it
    (the agent's ``repo.verify.allowedSignersFile``), and mallory's key, which it does not name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = Server(root / "server")
        self.sha = self.server.commit(CHART, "podinfo 6.6.0")
        (root / "keys").mkdir()
        self.agent_key = keygen(root / "keys" / "agent")
        self.mallory_key = keygen(root / "keys" / "mallory")
        self.allowed = root / "keys" / "allowed_signers"
        self.allowed.write_text(f"gitsync@agent {(root / 'keys' / 'agent.pub').read_text()}")

    def ledger(self, name: str, key: Path | None = None) -> NotesLedger:
        cache = GitRepository(self.server.url, "main", self.root / "caches" / name).cache
        sign = SshLineSigner(key) if key else None
        return NotesLedger(cache, self.server.url, identity=Identity(name, f"{name}@example.com"), sign=sign)

    def release(self, outcome: ReleaseOutcome = ReleaseOutcome.SUCCEEDED, **changes: object) -> LedgerEntry:
        """Staging's release of ``sha`` as the agent notes it: what a pin of ``sha`` with ``TAG`` verifies."""
        tree = git(self.server.bare, "rev-parse", f"{self.sha}:apps/podinfo")
        fields: dict[str, object] = {
            "revision": self.sha,
            "outcome": outcome,
            "started_at": T0 - 60,
            "finished_at": T0,
            "chart_tree": tree,
            "values_hash": values_hash(promoted_values(TAG, ("image.tag",))),
        }
        return entry(**{**fields, **changes})

    def note(self) -> list[str]:
        return git(self.server.bare, "notes", "--ref", "gitsync", "show", self.sha).splitlines()

    def edit_note(self, old: str, new: str) -> None:
        """Mallory edits the note by hand, as anyone who may push the notes ref can."""
        clone = self.server.clone("mallory-edit")
        git(clone, "fetch", "-q", "origin", "refs/notes/gitsync:refs/notes/gitsync")
        text = git(clone, "notes", "--ref", "gitsync", "show", self.sha).replace(old, new)
        (self.root / "edited").write_text(text + "\n")
        git(clone, "notes", "--ref", "gitsync", "add", "-f", "-F", str(self.root / "edited"), self.sha)
        git(clone, "push", "-q", "--force", "origin", "refs/notes/gitsync")


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def test_a_signed_line_keeps_its_format_with_the_signature_last_and_verifies(lab: Lab) -> None:
    release = lab.release()
    lab.ledger("agent", lab.agent_key).append(lab.sha, release)
    [line] = lab.note()
    unsigned = release.to_line()
    assert line.startswith(unsigned[:-1] + ',"sig":"') and "\n" not in line
    assert list(json.loads(line)) == [*json.loads(unsigned), "sig"], "the documented key order, sig last"
    [read] = lab.ledger("reader").read()[lab.sha]
    assert read == release, "a reader that does not check signatures reads the line as before"
    assert SshLedgerVerifier(lab.allowed).seal(read) is Seal.VERIFIED


def test_a_release_noted_again_after_a_kill_keeps_one_line_signed_or_not(lab: Lab) -> None:
    lab.ledger("agent-0", lab.agent_key).append(lab.sha, lab.release(agent="gitsync-0/101"))
    lab.ledger("agent-1", lab.agent_key).append(lab.sha, lab.release(agent="gitsync-0/202", finished_at=T0 + 9))
    assert len(lab.note()) == 1, "a restarted signing agent notes the same ending again: one line"

    failed = lab.release(ReleaseOutcome.FAILED)
    lab.ledger("before-signing").append(lab.sha, failed)
    lab.ledger("after-signing", lab.agent_key).append(lab.sha, lab.release(ReleaseOutcome.FAILED, finished_at=T0 + 9))
    assert lab.note()[1:] == [failed.to_line()], "noted unsigned, then again once signing was on: the first stays"


@pytest.mark.parametrize(
    ("change", "seal"),
    [
        (lambda line: line, Seal.VERIFIED),
        (lambda line: line[:-1] + ',"outcome":"Succeeded"}', Seal.BAD),  # a key after the signature
        (lambda line: line.replace(',"agent":', ',"sig":"x","agent":'), Seal.BAD),  # a second signature inside
        (lambda line: line.replace('"Failed"', '"Succeeded"'), Seal.BAD),
        (lambda line: line.partition(',"sig":')[0] + "}", Seal.UNSIGNED),
    ],
)
def test_only_the_line_as_signed_verifies(lab: Lab, change: Callable[[str], str], seal: Seal) -> None:
    line = entry(outcome=ReleaseOutcome.FAILED).to_line()
    signed = with_signature(line, SshLineSigner(lab.agent_key)(line))
    [read] = parse_note(change(signed))
    assert SshLedgerVerifier(lab.allowed, report=None).seal(read) is seal


def forged(lab: Lab, how: str) -> None:
    """A "staging Succeeded" line that no agent with the allowed key wrote."""
    if how == "edited":  # the agent's own signed line of a failed release, its outcome changed by hand
        lab.ledger("agent", lab.agent_key).append(lab.sha, lab.release(ReleaseOutcome.FAILED))
        lab.edit_note('"outcome":"Failed"', '"outcome":"Succeeded"')
    elif how == "unsigned":  # added by hand
        lab.ledger("mallory").append(lab.sha, lab.release())
    else:  # signed, but with a key the allowed signers file does not name
        lab.ledger("mallory", lab.mallory_key).append(lab.sha, lab.release())


def decide(lab: Lab, **options: object) -> tuple[PromotionAction, str, str]:
    """What prod's agent makes of staging's ledger: the promote stage's action and message, and the guard's verdict
    on a pin of ``sha`` (a person's promotion commit)."""
    stage, _ = promotions(lab.server, lab.root, lab.ledger("prod-agent"), **options)
    step = stage.step(AppEnv("podinfo", "prod"), PROD, lab.root, None, None, None, T0 + 600)
    pinned = SimpleNamespace(pin=Pin("podinfo", lab.sha, "staging", TAG), app_env=AppEnv("podinfo", "prod"))
    return step.action, step.message, stage.guard(pinned)  # type: ignore[arg-type]


def test_a_signed_success_is_a_candidate_and_verifies_the_pin(lab: Lab) -> None:
    lab.ledger("agent", lab.agent_key).append(lab.sha, lab.release())
    action, message, blocked = decide(lab, verifier=SshLedgerVerifier(lab.allowed))
    assert action is PromotionAction.CANDIDATE, message
    assert blocked == ""


@pytest.mark.parametrize("how", ["edited", "unsigned", "other-key"])
def test_a_forged_success_is_no_candidate_and_verifies_no_pin(
    lab: Lab, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    forged(lab, how)
    caplog.set_level("WARNING")
    action, message, blocked = decide(lab, verifier=SshLedgerVerifier(lab.allowed))
    assert (action, message) == (PromotionAction.NONE, "no release of staging recorded yet"), "counted as absent"
    assert blocked.startswith(f"environments/prod/promoted.yaml: podinfo: pin {lab.sha[:12]} is not verified"), blocked
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "ledger.untrusted"]
    expected = "unsigned" if how == "unsigned" else "bad-signature"
    assert [(e["env"], e["app"], e["revision"], e["signature"]) for e in events] == [
        ("staging", "podinfo", lab.sha, expected)
    ], "one event per line, however often the ledger is read"


def test_an_agent_without_allowed_signers_trusts_every_line_as_before(lab: Lab) -> None:
    forged(lab, "unsigned")
    action, message, blocked = decide(lab)
    assert action is PromotionAction.CANDIDATE, message
    assert blocked == ""


def test_audit_marks_each_line_verified_unsigned_or_bad_and_warns_of_the_untrusted(lab: Lab) -> None:
    from click.testing import CliRunner

    from gitsync.cli import main

    agent = lab.ledger("agent", lab.agent_key)
    agent.append(lab.sha, lab.release())
    agent.append(lab.sha, lab.release(ReleaseOutcome.FAILED, env="dev", finished_at=T0 + 1))
    lab.edit_note('"outcome":"Failed"', '"outcome":"Succeeded"')
    lab.ledger("mallory").append(lab.sha, lab.release(env="prod", finished_at=T0 + 2))

    def audit(*args: str) -> tuple[str, str]:
        result = CliRunner().invoke(main, ["audit", "--repo", str(lab.server.work), *args])
        assert result.exit_code == 0, result.output
        return result.stdout, result.stderr

    out, err = audit("--allowed-signers", str(lab.allowed), "-o", "json")
    marks = {row["env"]: (row["outcome"], row["signature"]) for row in json.loads(out)}
    assert marks == {
        "staging": ("Succeeded", "verified"),
        "dev": ("Succeeded", "bad-signature"),
        "prod": ("Succeeded", "unsigned"),
    }
    at = lab.sha[:12]
    assert err.splitlines() == [  # newest first, as the rows
        f"ledger line not trusted: prod podinfo at {at} (Succeeded): unsigned",
        f"ledger line not trusted: dev podinfo at {at} (Succeeded): bad signature (not an allowed signer's, "
        "or the line changed after it was signed)",
    ]

    out, _ = audit("--allowed-signers", str(lab.allowed))
    assert "SIGNATURE" in out.splitlines()[0] and "bad-signature" in out and "unsigned" in out
    out, err = audit("-o", "json")
    assert {row["signature"] for row in json.loads(out)} == {None} and not err, "not checked unless asked"
    out, _ = audit()
    assert "SIGNATURE" not in out.splitlines()[0]


def test_an_agent_configured_with_both_files_signs_its_lines_and_promotes_from_them(lab: Lab) -> None:
    """What ``gitsync run`` composes from agent.yaml: the ledger signs with ``repo.write.signingKeyFile`` and the
    stage trusts ``repo.verify.allowedSignersFile``, so the agent promotes from its own signed lines."""
    from memstore import MemoryStore

    from gitsync.adapters.git import GitRepository
    from gitsync.cli.run import ledger_verifier
    from gitsync.cli.run import promotions as compose
    from gitsync.history import Result
    from gitsync.runtime.config import load

    agent_yaml = lab.root / "agent.yaml"
    agent_yaml.write_text(
        f"repo:\n  url: {lab.server.url}\n  verify: {{allowedSignersFile: {lab.allowed}}}\n"
        f"  write: {{signingKeyFile: {lab.agent_key}}}\n"
        "environments: [{name: prod}]\n"  # staging's health is another agent's: its ledger alone decides
    )
    config = load(agent_yaml, environ={})
    repo = GitRepository(config.repo.url, config.repo.branch, lab.root / "caches" / "run", verify=config.repo.verify)
    repo.fetch()
    stage = compose(config, repo, MemoryStore(), ledger_verifier(config))
    entry = stage.entry(
        AppEnv("podinfo", "staging"), lab.sha, "sha256:d", Result.SUCCEEDED, T0 - 60, T0,
        promoted_paths=("image.tag",), values=TAG,
    )  # fmt: skip
    assert entry is not None
    stage.append(entry)
    [line] = lab.note()
    assert '"sig":"' in line
    step = stage.step(AppEnv("podinfo", "prod"), PROD, lab.root, None, None, None, T0 + 600)
    assert step.action is PromotionAction.CANDIDATE, step.message


def refused_by_ssh_keygen(lab: Lab, text: str, line_number: int) -> str:
    """What ``ssh-keygen -Y find-principals`` says of line ``line_number`` of the file ``text`` when it looks for
    the signer of a ledger line (``<file>:<line>: <problem>``), "" when it says nothing of it."""
    line = entry().to_line()
    signed = lab.root / "line.sig"
    signed.write_text(
        f"-----BEGIN SSH SIGNATURE-----\n{SshLineSigner(lab.agent_key)(line)}\n-----END SSH SIGNATURE-----\n"
    )
    lab.allowed.write_text(text)
    found = subprocess.run(
        ["ssh-keygen", "-Y", "find-principals", "-f", str(lab.allowed), "-s", str(signed)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return next((said for said in found.stderr.splitlines() if said.startswith(f"{lab.allowed}:{line_number}:")), "")


def agent_line(lab: Lab) -> str:
    return " ".join((lab.root / "keys" / "agent.pub").read_text().split()[:2])


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("gitsync@agent {key}", ""),
        ("gitsync@agent,ada@example.com {key} a comment", ""),
        ('gitsync@agent namespaces="gitsync-ledger,git" {key}', ""),
        ('gitsync@agent\tcert-authority,valid-after="20240101",valid-before="203001011200Z" {key}', ""),
        ("{key}", "principals: missing (the line starts with the key type ssh-ed25519)"),
        ("gitsync@agent", "key: missing (expected: principals [options] keytype base64-key)"),
        ("gitsync@agent namespaces=gitsync-ledger {key}", "options: namespaces: the value must be in double quotes"),
        ("gitsync@agent trusted {key}", "options: unknown option 'trusted'"),
        ('gitsync@agent valid-after="2024" {key}', "options: valid-after: '2024' is not YYYYMMDD[Z]"),
        ("gitsync@agent cert-authority, {key}", "options: cannot read 'cert-authority,'"),
        ('gitsync@agent namespaces="gitsync-ledger {key}', "options: a double quote is not closed"),
        ("gitsync@agent ssh-ed25519 AAAA!!!", "key: not valid base64"),
        ("gitsync@agent ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ", "key: "),
        ("gitsync@agent {cut}", "key: the base64 ssh-ed25519 key is cut short"),
        ("gitsync@agent ssh-ed2519 AAAAC3NzaC1lZDI1NTE5", "keytype: no key type in 'ssh-ed2519 AAAAC3NzaC1lZDI1NTE5'"),
    ],
)
def test_the_allowed_signers_file_is_read_as_ssh_keygen_reads_it(lab: Lab, line: str, problem: str) -> None:
    """Each line is refused exactly when ``ssh-keygen`` refuses it (it then exits 255 as for a bad signature), and
    the error names the file, the line and the field to fix."""
    from gitsync.adapters.ledger_signature import check_allowed_signers
    from gitsync.ledger import SignersError

    key = agent_line(lab)
    text = "# the agent\n\n" + line.format(key=key, cut=key[:-8]) + "\n"
    refused = refused_by_ssh_keygen(lab, text, 3)
    if not problem:
        assert refused == ""
        check_allowed_signers(lab.allowed)
        return
    assert refused.startswith(f"{lab.allowed}:3: "), "ssh-keygen refuses the line too"
    with pytest.raises(SignersError) as raised:
        check_allowed_signers(lab.allowed)
    assert str(raised.value).startswith(f"{lab.allowed}:3: {problem}"), str(raised.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "cannot read the allowed signers file: No such file or directory"),
        ("# nobody yet\n", "no key in it (lines: principals [options] keytype base64-key)"),
    ],
)
def test_a_missing_or_empty_allowed_signers_file_is_named(lab: Lab, text: str | None, problem: str) -> None:
    from gitsync.adapters.ledger_signature import check_allowed_signers
    from gitsync.ledger import SignersError

    if text is None:
        lab.allowed.unlink()
    else:
        lab.allowed.write_text(text)
    with pytest.raises(SignersError) as raised:
        check_allowed_signers(lab.allowed)
    assert str(raised.value) == f"{lab.allowed}: {problem}"


@pytest.mark.parametrize("broken", ["missing", "typo"])
def test_audit_with_a_broken_allowed_signers_file_says_so_in_one_line(lab: Lab, broken: str) -> None:
    """Before: every row read "bad-signature" and the file was never named."""
    from click.testing import CliRunner

    from gitsync.cli import main

    lab.ledger("agent", lab.agent_key).append(lab.sha, lab.release())
    allowed = lab.root / "keys" / "nowhere" if broken == "missing" else lab.allowed
    if broken == "typo":
        lab.allowed.write_text(f'# the agent\ngitsync@agent namespace="gitsync-ledger" {agent_line(lab)}\n')
    result = CliRunner().invoke(main, ["audit", "--repo", str(lab.server.work), "--allowed-signers", str(allowed)])
    expected = {
        "missing": f"error: {allowed}: cannot read the allowed signers file: No such file or directory",
        "typo": f"error: {allowed}:2: options: unknown option 'namespace=\"gitsync-ledger\"' (allowed: cert-authority, "
        'namespaces="...", valid-after="...", valid-before="...")',
    }[broken]
    assert (result.exit_code, result.stdout, result.stderr.splitlines()) == (2, "", [expected])


def test_an_agent_with_a_broken_allowed_signers_file_says_it_once_and_keeps_what_runs(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """The guard blocks the pin naming the file and line (nothing of the pin is applied, so what runs stays), the
    promote stage promotes nothing, one log event says it however often they read; once the file is fixed, the
    signed line counts again without a restart."""
    lab.ledger("agent", lab.agent_key).append(lab.sha, lab.release())
    good = lab.allowed.read_text()
    lab.allowed.write_text(f"# the agent\n{agent_line(lab)}\n")  # the principal forgotten
    verifier = SshLedgerVerifier(lab.allowed)
    caplog.set_level("WARNING")
    for _ in range(2):
        action, message, blocked = decide(lab, verifier=verifier)
        problem = f"{lab.allowed}:2: principals: missing (the line starts with the key type ssh-ed25519)"
        assert (action, message) == (PromotionAction.FAILED, problem)
        assert blocked == f"environments/prod/promoted.yaml: podinfo: cannot verify the pin: {problem}"
    events = [r.msg for r in caplog.records if isinstance(r.msg, dict)]
    assert [(e["event"], e["error"]) for e in events] == [("ledger.allowed_signers_invalid", problem)]

    lab.allowed.write_text(good)
    action, message, blocked = decide(lab, verifier=verifier)
    assert (action, blocked) == (PromotionAction.CANDIDATE, ""), message


def promote_cli(lab: Lab, *args: str) -> tuple[int, str]:
    """``gitsync promote`` of podinfo into prod in a person's clone (the notes fetched from origin)."""
    from click.testing import CliRunner

    from gitsync.cli import main

    git(lab.server.work, "pull", "-q", "origin", "main")
    result = CliRunner().invoke(
        main, ["promote", "--repo", str(lab.server.work), "--env", "prod", "--app", "podinfo", *args]
    )
    return result.exit_code, result.output


@pytest.mark.parametrize("how", ["edited", "unsigned", "other-key"])
def test_promote_in_a_clone_refuses_an_untrusted_line_as_the_agent_does(lab: Lab, how: str) -> None:
    """With the agent's allowed signers a forged "staging Succeeded" is no candidate and verifies no --revision in
    a person's clone either (before: the clone promoted what the agent's guard then blocked); the error says that
    a line was there and why it did not count. Without the file the clone trusts every line, as before."""
    forged(lab, how)
    signers = ("--allowed-signers", str(lab.allowed))
    seal = "unsigned" if how == "unsigned" else "bad-signature"
    untrusted = f"(staging's ledger lines of podinfo not trusted, as if absent: 1 {seal}; see gitsync audit)"

    code, out = promote_cli(lab, *signers)
    assert code == 2 and out.startswith("error: podinfo@prod: no candidate in staging: the ledger"), out
    assert out.rstrip().endswith(untrusted), out

    code, out = promote_cli(lab, *signers, "--revision", lab.sha)
    assert code == 2 and f"pin {lab.sha[:12]} is not verified" in out, out
    assert f"{untrusted}; use --force --reason TEXT to promote it anyway" in out, out

    code, out = promote_cli(lab)
    assert code == 0 and out.startswith(f"promote podinfo to prod (staging@{lab.sha[:7]}): committed"), out


def test_promote_in_a_clone_takes_a_signed_line_and_names_a_broken_allowed_signers_file(lab: Lab) -> None:
    lab.ledger("agent", lab.agent_key).append(lab.sha, lab.release())
    lab.allowed.write_text(f"gitsync@agent foo {agent_line(lab)}\n")
    code, out = promote_cli(lab, "--allowed-signers", str(lab.allowed))
    allowed = 'cert-authority, namespaces="...", valid-after="...", valid-before="..."'
    expected = f"error: {lab.allowed}:1: options: unknown option 'foo' (allowed: {allowed})"
    assert (code, out.splitlines()) == (2, [expected])
    lab.allowed.write_text(f"gitsync@agent {agent_line(lab)}\n")
    code, out = promote_cli(lab, "--allowed-signers", str(lab.allowed))
    assert code == 0 and out.startswith(f"promote podinfo to prod (staging@{lab.sha[:7]}): committed"), out


def test_the_dashboard_shows_each_ledger_lines_signature_state(lab: Lab) -> None:
    """The promotions page marks a verified line and an untrusted one (as ``gitsync audit --allowed-signers``); with
    a broken allowed signers file it names the file and line instead, and without one it shows no marks."""
    import re
    from functools import partial
    from typing import cast

    from gitsync.adapters.gitwrite import local_session
    from gitsync.adapters.kube import KubeCluster
    from gitsync.cli.audit import clone_ledger
    from gitsync.dashboard.read import Board, LedgerRows
    from gitsync.dashboard.server import Pages, Site

    lab.ledger("agent", lab.agent_key).append(lab.sha, lab.release())
    lab.ledger("mallory").append(lab.sha, lab.release(env="prod", finished_at=T0 + 5))

    def page(verifier: SshLedgerVerifier | None) -> str:
        rows = LedgerRows(
            clone_ledger(lab.server.work),
            partial(local_session, lab.server.work),
            verifier.seal if verifier is not None else None,
        )
        board = Board(cast(KubeCluster, None), env_order=("staging", "prod"), ledger=rows)
        return Pages(board, Site(str(lab.server.work), None, "local")).promotions()

    html = page(SshLedgerVerifier(lab.allowed, report=None))
    marks = re.findall(
        r'data-env="(\w+)">.*?data-signature="([\w-]+)".*?<span class="sr">ledger line: </span>([^<]+)<', html, re.S
    )
    assert marks == [("staging", "verified", "signature verified"), ("prod", "unsigned", "unsigned: not trusted")]
    assert "data-signature" not in page(None)

    lab.allowed.write_text("gitsync@agent\n")
    html = page(SshLedgerVerifier(lab.allowed, report=None))
    assert f"Ledger signatures not checked: {lab.allowed}:1: key: missing" in html and "data-signature" not in html


def audit_json(root: Path, *args: str) -> list[dict[str, object]]:
    from click.testing import CliRunner

    from gitsync.cli import main

    result = CliRunner().invoke(main, ["audit", "--repo", str(root), "-o", "json", *args])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def test_audit_at_with_allowed_signers_is_not_fooled_by_an_unsigned_removal(lab: Lab) -> None:
    """What ran at a time, as an auditor with the allowed signers asks it: a Removed line mallory added by hand
    (unsigned) does not make the signed release that ran disappear from the answer, as no untrusted line counts
    for the agent either; her line is not shown (it is no release), so nothing else would say it was ignored."""
    lab.ledger("agent", lab.agent_key).append(lab.sha, lab.release())
    lab.ledger("mallory").append(lab.sha, lab.release(ReleaseOutcome.REMOVED, finished_at=T0 + 5))
    at = "2023-11-14T22:13:30Z"  # T0 + 10
    rows = audit_json(lab.server.work, "--at", at, "--allowed-signers", str(lab.allowed))
    assert [(r["env"], r["outcome"], r["signature"]) for r in rows] == [("staging", "Succeeded", "verified")], rows
    assert audit_json(lab.server.work, "--at", at) == [], "without signatures checked every line counts, as before"


def test_audit_with_allowed_signers_joins_the_change_approvals_from_a_signed_upstream_line_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prod's signed row says who approved the change it runs, from staging's line of the promoted commit. A newer
    staging line mallory added unsigned, naming an approver who never approved, is not the one joined."""
    from test_promotion_cli import Scenario

    from gitsync.ledger import Approvals

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lab = Lab(tmp_path / "keys-lab")
    scenario = Scenario(tmp_path)
    server = scenario.server
    scenario.agent = NotesLedger(
        GitRepository(server.url, "main", tmp_path / "signing-cache").cache,
        server.url,
        identity=Identity("gitsync", "gitsync@example.com"),
        sign=SshLineSigner(lab.agent_key),
    )
    good = server.commit(CHART, "podinfo 6.6.0 (#4)")
    scenario.release(good, "staging", ReleaseOutcome.SUCCEEDED, T0, "6.6.0",
                     approvals=Approvals.KNOWN, approved_by=("bob",))  # fmt: skip
    code, out = scenario.cli("promote", "--env", "prod", "--app", "podinfo", "--revision", good)
    assert code == 0, out
    git(server.work, "push", "-q", "origin", "main")
    scenario.release(server.head(), "prod", ReleaseOutcome.SUCCEEDED, T0 + 100, "6.6.0", pinned=good)
    mallory = NotesLedger(
        GitRepository(server.url, "main", tmp_path / "mallory-cache").cache,
        server.url,
        identity=Identity("mallory", "mallory@example.com"),
    )
    forged = entry(env="staging", revision=good, outcome=ReleaseOutcome.SUCCEEDED, digest="sha256:0",
                   finished_at=T0 + 50, approvals=Approvals.KNOWN, approved_by=("security-lead",))  # fmt: skip
    mallory.append(good, forged)

    rows = audit_json(server.work, "--env", "prod", "--allowed-signers", str(lab.allowed))
    [prod] = rows
    assert prod["signature"] == "verified" and prod["promotedFrom"] == f"staging@{good}", prod
    assert (prod["changeApprovals"], prod["changeApprovedBy"]) == ("known", ["bob"]), prod


class Kept:
    """example-repo's podinfo released in staging, recorded by a ``LedgerSink`` whose ledger signs with the agent's
    key (or not: ``key`` None), the status in a store anyone editing ConfigMaps in podinfo-staging could edit."""

    def __init__(self, root: Path, key: Path | None) -> None:
        from memstore import MemoryStore
        from test_promotion_note import EXAMPLE

        from gitsync.history import History
        from renderers import render_app

        self.root, self.key = root, key
        self.server = Server(root / "repo")
        files = {str(p.relative_to(EXAMPLE)): p.read_text() for p in EXAMPLE.rglob("*") if p.is_file()}
        self.sha = self.server.commit(files, "podinfo 6.7.1")
        self.rendered = render_app(self.server.work, "staging", "podinfo", revision=self.sha)
        self.store = MemoryStore()
        self.history = History(self.store)

    def sink(self, name: str) -> LedgerSink:
        cache = GitRepository(self.server.url, "main", self.root / name).cache
        sign = SshLineSigner(self.key) if self.key else None
        ledger = NotesLedger(cache, self.server.url, identity=Identity("gitsync", "gitsync@example.com"), sign=sign)
        return LedgerSink(promotions(self.server, self.root, ledger)[0], self.history, self.store, retry_after=3600)

    def status(self) -> Status:
        return self.history.status(self.rendered.app_env, "podinfo-staging")

    def edit_status(self, *unnoted: str) -> None:
        """An app team edits its namespace's status ConfigMap: the release ran and is healthy, lines are kept."""
        from dataclasses import replace

        def change(s: Status) -> Status:
            return replace(s, result="Succeeded", health="Healthy", last_applied_digest=self.rendered.digest,
                           last_applied_revision=self.sha, release_revision=self.sha, unnoted=unnoted)  # fmt: skip

        self.history.set_status(self.rendered.app_env, "podinfo-staging", change)

    def reconcile(self, sink: LedgerSink) -> None:
        """A no-op reconcile of the release that runs (it ends nothing): only the kept lines are written."""
        from test_promotion_note import staging_release

        from gitsync.history import Result

        sink.write(staging_release(self.server.work, self.rendered, self.sha, Result.SUCCEEDED, previous=self.status()))

    def notes(self) -> list[str]:
        if not git(self.server.bare, "for-each-ref", "refs/notes/gitsync"):
            return []
        return git(self.server.bare, "notes", "--ref", "gitsync", "show", self.sha).splitlines()


def kept_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "ledger.unnoted_refused"]


def test_a_line_kept_while_the_remote_was_away_is_signed_when_made_and_written_as_it_was(tmp_path: Path) -> None:
    """The status keeps the line as the agent signed it when the release ended; the restarted agent writes that
    very line, once, and an auditor with the allowed signers sees it verified."""
    from dataclasses import replace

    from test_promotion_note import staging_release

    from gitsync.history import Result

    lab = Lab(tmp_path / "keys-lab")
    kept = Kept(tmp_path, lab.agent_key)
    first = kept.sink("first")
    away = kept.server.bare.rename(tmp_path / "away")
    first.write(staging_release(kept.server.work, kept.rendered, kept.sha, Result.SUCCEEDED))
    first.retries.close(0)  # killed
    (line,) = kept.status().unnoted
    assert '"sig":"' in line, "signed when made, before it was kept in the status"
    away.rename(kept.server.bare)

    second = kept.sink("second")
    redone = replace(staging_release(kept.server.work, kept.rendered, kept.sha, Result.SUCCEEDED,
                                     previous=kept.status()), finished_at=99.0)  # fmt: skip
    second.write(redone)
    second.write(redone)
    assert kept.notes() == [line], "written once, byte for byte as it was signed"
    assert kept.status().unnoted == ()
    rows = audit_json(kept.server.work, "--allowed-signers", str(lab.allowed))
    assert [(r["env"], r["outcome"], r["signature"]) for r in rows] == [("staging", "Succeeded", "verified")], rows


@pytest.mark.parametrize("how", ["unsigned", "signed by mallory", "changed after the agent signed it"])
def test_a_line_forged_into_the_status_is_never_signed_nor_written(
    tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Whoever may edit ConfigMaps in the environment's namespace puts a "staging Succeeded" line in the status:
    the signing agent does not sign it (its signature would make prod trust it), drops it and says so."""
    lab = Lab(tmp_path / "keys-lab")
    kept = Kept(tmp_path, lab.agent_key)
    forged = entry(revision=kept.sha, digest="sha256:forged", finished_at=T0).to_line()
    if how == "signed by mallory":
        forged = with_signature(forged, SshLineSigner(lab.mallory_key)(forged))
    elif how == "changed after the agent signed it":
        signed = with_signature(forged, SshLineSigner(lab.agent_key)(forged))
        forged = signed.replace('"sha256:forged"', '"sha256:forged2"')
    kept.edit_status(forged)
    caplog.set_level("WARNING")
    kept.reconcile(kept.sink("agent"))
    assert kept.notes() == [], "nothing written"
    assert kept.status().unnoted == (), "dropped from the status"
    [event] = kept_events(caplog)
    assert (event["app"], event["env"], event["revision"]) == ("podinfo", "staging", kept.sha), event


@pytest.mark.parametrize("signing", [True, False])
def test_a_kept_line_of_another_app_env_than_its_status_is_dropped(
    tmp_path: Path, signing: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A line in podinfo's staging status for another app or environment (even one the agent signed, copied from
    another status) is not written: it was never kept there by the agent."""
    lab = Lab(tmp_path / "keys-lab")
    kept = Kept(tmp_path, lab.agent_key if signing else None)
    lines = [entry(revision=kept.sha, app="billing").to_line(), entry(revision=kept.sha, env="prod").to_line()]
    if signing:
        lines = [with_signature(line, SshLineSigner(lab.agent_key)(line)) for line in lines]
    kept.edit_status(*lines)
    caplog.set_level("WARNING")
    kept.reconcile(kept.sink("agent"))
    assert kept.notes() == []
    assert kept.status().unnoted == ()
    assert len(kept_events(caplog)) == 2
