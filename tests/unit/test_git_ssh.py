"""Git over SSH as deployed: the agent's reader and writers against Debian's OpenSSH server on 127.0.0.1, with a
key and a known_hosts file, the way ``repo.auth.sshKeyFile``/``knownHostsFile`` configure them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gitrepos import Server, git
from sshserver import SshServer, keygen, running_sshd
from test_ledger import entry

from gitsync.adapters.git import GitError, GitRepository
from gitsync.adapters.gitwrite import CacheWriter, Identity
from gitsync.adapters.notes import NotesLedger
from gitsync.ports import CommitRequest, FileEdit, GitAuth

AGENT = Identity("gitsync", "gitsync@example.com")


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    with running_sshd(tmp_path / "sshd") as server:
        yield server


@pytest.fixture
def server(tmp_path: Path) -> Server:
    server = Server(tmp_path / "server")
    server.commit({"apps/web/values.yaml": "replicas: 2\n"}, "first")
    return server


def over_ssh(server: Server, sshd: SshServer, cache: Path, **auth: Path) -> GitRepository:
    credentials = {"ssh_key_file": sshd.client_key, "known_hosts_file": sshd.known_hosts, **auth}
    return GitRepository(sshd.url(server.bare), "main", cache, auth=GitAuth(**credentials))


def test_fetch_over_ssh_with_a_key_and_known_hosts(server: Server, sshd: SshServer, tmp_path: Path) -> None:
    repo = over_ssh(server, sshd, tmp_path / "cache")
    assert repo.remote_head() == server.head()
    commit = repo.fetch()
    assert commit.sha == server.head()
    assert (repo.snapshot(commit.sha) / "apps/web/values.yaml").read_text() == "replicas: 2\n"
    pushed = server.commit({"apps/web/values.yaml": "replicas: 3\n"}, "scale")
    assert repo.fetch().sha == pushed


def test_a_wrong_host_key_is_refused_in_one_line(server: Server, sshd: SshServer, tmp_path: Path) -> None:
    impostor = keygen(tmp_path / "impostor")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {impostor.with_suffix('.pub').read_text()}")
    repo = over_ssh(server, sshd, tmp_path / "cache", known_hosts_file=known_hosts)
    with pytest.raises(GitError) as refused:
        repo.fetch()
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(f"{repo.display_url}: git fetch failed: ")
    assert f"Host key for [127.0.0.1]:{sshd.port} has changed" in message
    assert "Host key verification failed." in message
    assert f"checked against {known_hosts}" in message
    assert not (tmp_path / "cache/snapshots").exists(), "nothing was fetched from the impostor"


def test_a_host_missing_from_known_hosts_is_refused(server: Server, sshd: SshServer, tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    repo = over_ssh(server, sshd, tmp_path / "cache", known_hosts_file=known_hosts)
    with pytest.raises(GitError, match=r"No ED25519 host key is known for .*Host key verification failed"):
        repo.remote_head()


def test_a_key_the_server_does_not_accept_is_refused_in_one_line(
    server: Server, sshd: SshServer, tmp_path: Path
) -> None:
    stranger = keygen(tmp_path / "stranger")
    repo = over_ssh(server, sshd, tmp_path / "cache", ssh_key_file=stranger)
    with pytest.raises(GitError) as refused:
        repo.fetch()
    message = str(refused.value)
    assert "\n" not in message
    assert f"{sshd.user}@127.0.0.1: Permission denied (publickey)." in message
    assert f"the server does not accept the key {stranger}" in message
    assert "PRIVATE KEY" not in message


@pytest.mark.parametrize("missing", ["ssh_key_file", "known_hosts_file"])
def test_a_missing_key_or_known_hosts_file_is_named(
    missing: str, server: Server, sshd: SshServer, tmp_path: Path
) -> None:
    absent = tmp_path / "mounted-secret" / missing
    repo = over_ssh(server, sshd, tmp_path / "cache", **{missing: absent})
    what = "SSH key file" if missing == "ssh_key_file" else "known_hosts file"
    with pytest.raises(
        GitError, match=rf": cannot read {what} \(repo\.auth\.\w+\) {absent}: No such file or directory$"
    ):
        repo.fetch()


def test_the_ledger_and_a_promotion_commit_are_pushed_over_ssh(server: Server, sshd: SshServer, tmp_path: Path) -> None:
    repo = over_ssh(server, sshd, tmp_path / "cache")
    sha = repo.fetch().sha
    NotesLedger(repo.cache, repo.url, identity=AGENT).append(sha, entry(revision=sha))
    note = git(server.bare, "notes", "--ref", "gitsync", "show", sha)
    assert note == entry(revision=sha).to_line()
    request = CommitRequest(
        (FileEdit("environments/prod/promoted.yaml", lambda _: "podinfo: {revision: abc}\n"),),
        "promote podinfo to prod\n\nGitsync-App: podinfo\n",
        (("Gitsync-App", "podinfo"),),
        "",
    )
    written = CacheWriter(repo, AGENT).write(request)
    assert written.written
    assert server.head() == written.commit
    assert git(server.bare, "show", "main:environments/prod/promoted.yaml") == "podinfo: {revision: abc}"
    assert git(server.bare, "log", "-1", "--format=%an <%ae>") == "gitsync <gitsync@example.com>"
