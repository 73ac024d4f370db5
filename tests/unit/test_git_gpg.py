"""GPG commit verification as deployed: commits signed with ``git commit -S`` by keys GnuPG generates here, checked
by the agent against a keyring directory holding only the trusted public key (agent.yaml ``repo.verify.gpgKeyring``)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gitrepos import Server, git

from gitsync.adapters.git import GitRepository, SignatureError
from gitsync.ports import VerifyConfig, VerifyMode
from gitsync.source import RevisionRefused, Source


def gpg(home: Path, *args: str) -> str:
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--quiet", *args], check=True, capture_output=True, text=True
    )
    return done.stdout


def fingerprint(home: Path) -> str:
    """The fingerprint of the one secret key in GnuPG home ``home``."""
    return next(line.split(":")[9] for line in gpg(home, "--with-colons", "-K").splitlines() if line[:4] == "fpr:")


@dataclass(frozen=True, slots=True)
class Keys:
    """Two people's GnuPG homes (each with a secret signing key) and the agent's keyring trusting only Ada."""

    ada: Path
    eve: Path
    keyring: Path


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    # Short paths: gpg-agent's sockets live in the home directory and a socket path is limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="gs-gpg-"))
    homes = Keys(root / "ada", root / "eve", root / "keyring")
    for home in (homes.ada, homes.eve, homes.keyring):
        home.mkdir(mode=0o700)
    try:
        for home, who in ((homes.ada, "Ada <ada@example.com>"), (homes.eve, "Eve <eve@example.com>")):
            gpg(home, "--passphrase", "", "--quick-gen-key", who, "ed25519", "sign", "never")
        (root / "ada.asc").write_text(gpg(homes.ada, "--armor", "--export", "ada@example.com"))
        gpg(homes.keyring, "--import", str(root / "ada.asc"))
        yield homes
    finally:
        for home in (homes.ada, homes.eve, homes.keyring):
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path / "server")


def commit(server: Server, files: dict[str, str], message: str, signer: Path | None = None) -> str:
    """A commit pushed to the server, signed with ``git commit -S`` by the key in GnuPG home ``signer``."""
    if signer is None:
        return server.commit(files, message)
    for name, text in files.items():
        (server.work / name).write_text(text)
    git(server.work, "add", "-A")
    git(
        server.work,
        "-c",
        f"user.signingkey={fingerprint(signer)}",
        "commit",
        "-q",
        "-S",
        "-m",
        message,
        env={"GNUPGHOME": str(signer)},
    )
    git(server.work, "push", "-q", "origin", "HEAD:main")
    return server.head()


def agent(server: Server, keys: Keys, tmp_path: Path) -> GitRepository:
    return GitRepository(
        server.url, "main", tmp_path / "cache", verify=VerifyConfig(VerifyMode.GPG, gpg_keyring=keys.keyring)
    )


def test_a_head_signed_by_a_key_in_the_keyring_is_accepted(server: Server, keys: Keys, tmp_path: Path) -> None:
    signed = commit(server, {"a": "1"}, "signed by Ada", keys.ada)
    repo = agent(server, keys, tmp_path)
    assert repo.fetch().sha == signed
    repo.verify(signed)


def test_an_unsigned_head_is_refused_in_one_line(server: Server, keys: Keys, tmp_path: Path) -> None:
    unsigned = commit(server, {"a": "1"}, "not signed")
    repo = agent(server, keys, tmp_path)
    repo.fetch()
    with pytest.raises(SignatureError) as refused:
        repo.verify(unsigned)
    assert str(refused.value) == (
        f"commit {unsigned[:12]}: signature not verified against the configured GPG keyring: the commit is not signed"
    )


def test_a_head_signed_by_another_key_is_refused(server: Server, keys: Keys, tmp_path: Path) -> None:
    forged = commit(server, {"a": "1"}, "signed by Eve", keys.eve)
    repo = agent(server, keys, tmp_path)
    repo.fetch()
    with pytest.raises(SignatureError) as refused:
        repo.verify(forged)
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"commit {forged[:12]}: signature not verified against the configured GPG keyring: ")
    assert "Can't check signature: No public key" in message
    assert f"using EDDSA key {fingerprint(keys.eve)}" in message, "the message says which key signed it"


def test_source_keeps_the_last_signed_snapshot_when_an_unsigned_head_arrives(
    server: Server, keys: Keys, tmp_path: Path
) -> None:
    good = commit(server, {"a": "good"}, "signed by Ada", keys.ada)
    source = Source(agent(server, keys, tmp_path))
    assert source.resolve().revision == good
    bad = commit(server, {"a": "evil"}, "signed by Eve", keys.eve)
    assert source.check() == bad
    with pytest.raises(RevisionRefused):
        source.resolve(bad)
    assert (source.resolve().path / "a").read_text() == "good", "the refused head's files are never rendered"
    fixed = commit(server, {"a": "fixed"}, "signed by Ada again", keys.ada)
    assert source.resolve(fixed).revision == fixed


def listing(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()} | {
        f"{p.relative_to(directory)} ->": str(p.readlink()).encode() for p in directory.rglob("*") if p.is_symlink()
    }


def test_the_keyring_is_only_read_as_a_read_only_secret_volume_allows(
    server: Server, keys: Keys, tmp_path: Path
) -> None:
    """gpg writes a trust database and locks into its home even to verify; a keyring mounted from a Secret is
    read-only, so the agent must verify without writing there (as root the test would not notice a refused write:
    it checks the directory instead)."""
    mounted = tmp_path / "gpg-keyring"  # laid out as the kubelet mounts a Secret: links into a hidden ..data
    (mounted / "..2026_12_04_04_00_00.1").mkdir(parents=True)
    shutil.copyfile(keys.keyring / "pubring.kbx", mounted / "..2026_12_04_04_00_00.1/pubring.kbx")
    (mounted / "..data").symlink_to("..2026_12_04_04_00_00.1")
    (mounted / "pubring.kbx").symlink_to("..data/pubring.kbx")
    before = listing(mounted)
    signed = commit(server, {"a": "1"}, "signed by Ada", keys.ada)
    repo = GitRepository(
        server.url, "main", tmp_path / "cache", verify=VerifyConfig(VerifyMode.GPG, gpg_keyring=mounted)
    )
    repo.fetch()
    repo.verify(signed)
    assert listing(mounted) == before


def test_a_missing_keyring_is_named(server: Server, keys: Keys, tmp_path: Path) -> None:
    signed = commit(server, {"a": "1"}, "signed by Ada", keys.ada)
    absent = tmp_path / "not-mounted"
    repo = GitRepository(
        server.url, "main", tmp_path / "cache", verify=VerifyConfig(VerifyMode.GPG, gpg_keyring=absent)
    )
    repo.fetch()
    with pytest.raises(
        SignatureError, match=rf"^cannot read the GPG keyring \(repo\.verify\.gpgKeyring\) {absent}: No such file"
    ):
        repo.verify(signed)


def test_with_allowed_signers_too_the_agents_ssh_signed_promotion_is_deployed(
    server: Server, keys: Keys, tmp_path: Path
) -> None:
    """A keyring alone refused every promotion and rollback commit the agent wrote (SSH-signed, or unsigned), and
    with it every later head; with both files a head signed either way is accepted, any other still refused."""
    key = tmp_path / "agent-key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"gitsync@example.com {key.with_suffix('.pub').read_text()}")
    verify = VerifyConfig(VerifyMode.SSH_OR_GPG, allowed_signers_file=signers, gpg_keyring=keys.keyring)
    repo = GitRepository(server.url, "main", tmp_path / "cache", verify=verify)
    commit(server, {"a": "1"}, "signed by Ada", keys.ada)
    repo.verify(repo.fetch().sha)
    sign = ("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "-c", "commit.gpgsign=true")
    (server.work / "a").write_text("2")
    git(server.work, *sign, "commit", "-q", "-am", "promote podinfo to prod (staging@abc1234)")
    git(server.work, "push", "-q", "origin", "HEAD:main")
    repo.verify(repo.fetch().sha)
    commit(server, {"a": "3"}, "signed by Eve", keys.eve)
    with pytest.raises(SignatureError, match="against the configured allowed signers or GPG keyring: "):
        repo.verify(repo.fetch().sha)
