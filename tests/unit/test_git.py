"""The Git adapter against real repositories made here: fetch, snapshots, force-pushes, signatures, hygiene."""

from __future__ import annotations

import http.server
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshserver import free_port

from gitsync.adapters.git import GC_EVERY, GC_SLACK, SNAPSHOTS_KEPT, GitError, GitRepository, SignatureError, scrub
from gitsync.ports import GitAuth, VerifyConfig, VerifyMode
from gitsync.source import RevisionRefused, Source

IDENTITY = {
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)}
    done = subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


class Upstream:
    """A bare repository plus a working clone that pushes to it, like a developer and a Git server."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "upstream.git"
        self.work = root / "work"
        self.work.mkdir(parents=True)
        git(root, "init", "--bare", "-b", "main", str(self.bare))
        git(self.work, "init", "-b", "main")
        git(self.work, "remote", "add", "origin", str(self.bare))

    def commit(self, files: dict[str, str], message: str, *extra: str) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(self.work, "add", "-A")
        git(self.work, *extra, "commit", "-m", message)
        return git(self.work, "rev-parse", "HEAD")

    def push(self, *flags: str) -> None:
        git(self.work, "push", *flags, "origin", "main")


@pytest.fixture
def upstream(tmp_path: Path) -> Upstream:
    return Upstream(tmp_path / "remote")


def reader(upstream: Upstream, tmp_path: Path, **kwargs: object) -> GitRepository:
    return GitRepository(f"file://{upstream.bare}", "main", tmp_path / "cache", **kwargs)  # type: ignore[arg-type]


def test_fetch_and_snapshot_the_branch_head(upstream: Upstream, tmp_path: Path) -> None:
    sha = upstream.commit({"apps/web/values.yaml": "replicas: 2\n"}, "Scale web to 2\n\nBecause traffic.")
    upstream.push()
    repo = reader(upstream, tmp_path)
    assert repo.remote_head() == sha
    commit = repo.fetch()
    assert commit.sha == sha
    assert commit.author == "Ada <ada@example.com>"
    assert commit.message == "Scale web to 2\n\nBecause traffic."
    assert commit.time > 0
    tree = repo.snapshot(sha)
    assert (tree / "apps/web/values.yaml").read_text() == "replicas: 2\n"
    assert repo.snapshot(sha) == tree, "a snapshot is made once per commit"


def test_new_commits_and_force_pushes_are_followed(upstream: Upstream, tmp_path: Path) -> None:
    first = upstream.commit({"a.txt": "1"}, "one")
    upstream.push()
    repo = reader(upstream, tmp_path)
    assert repo.fetch().sha == first
    second = upstream.commit({"a.txt": "2"}, "two")
    upstream.push()
    assert repo.remote_head() == second
    assert repo.fetch().sha == second
    git(upstream.work, "reset", "--hard", first)
    rewritten = upstream.commit({"a.txt": "rewritten"}, "history rewritten")
    upstream.push("--force")
    assert repo.fetch().sha == rewritten
    assert (repo.snapshot(rewritten) / "a.txt").read_text() == "rewritten"
    assert (repo.snapshot(second) / "a.txt").read_text() == "2", "older snapshots stay readable"


def stored_objects(bare: Path) -> int:
    counts = dict(line.partition(": ")[::2] for line in git(bare, "count-objects", "-v").splitlines())
    return int(counts["count"]) + int(counts["in-pack"])


def test_the_cache_stays_bounded_across_many_rewrites(upstream: Upstream, tmp_path: Path) -> None:
    files, rewrites = 50, 5 * GC_EVERY
    base = upstream.commit({"README": "base"}, "base")
    upstream.push()
    repo = reader(upstream, tmp_path)
    cache = tmp_path / "cache" / "repo.git"
    per_head = files + 2  # each rewrite: new blobs, one tree, one commit
    observed = []
    for n in range(rewrites):
        git(upstream.work, "reset", "-q", "--hard", base)
        head = upstream.commit({f"f{i}.txt": f"rewrite {n} file {i}" for i in range(files)}, f"rewrite {n}")
        upstream.push("--force")
        assert repo.fetch().sha == head
        observed.append(stored_objects(cache))
    grown = rewrites * per_head
    assert grown > 2 * GC_SLACK, "the run would outgrow the bound without maintenance"
    assert max(observed) <= GC_SLACK + (GC_EVERY + 2) * per_head + 50, observed
    assert len((cache / "shallow").read_text().splitlines()) <= GC_EVERY + 1, "old shallow roots are dropped"
    assert (repo.snapshot(head) / "f0.txt").read_text() == f"rewrite {rewrites - 1} file 0"


def test_missing_branch_is_a_clear_transient_error(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({"a": "1"}, "one")
    upstream.push()
    repo = GitRepository(f"file://{upstream.bare}", "release", tmp_path / "cache")
    with pytest.raises(GitError, match="branch release not found"):
        repo.remote_head()


def children() -> list[str]:
    """Live child processes of this test process (by /proc), as their command names."""
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            found.append(stat.parent.joinpath("comm").read_text().strip())
    return found


def test_two_hundred_polls_leave_no_git_processes(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({"a": "0"}, "zero")
    upstream.push()
    repo = reader(upstream, tmp_path)
    before = [c for c in children() if c.startswith("git")]
    for n in range(200):
        if n % 50 == 0:
            upstream.commit({"a": f"n={n}"}, f"commit {n}")
            upstream.push()
        head = repo.remote_head()
        commit = repo.fetch()
        assert commit.sha == head
        repo.snapshot(head)
    assert [c for c in children() if c.startswith("git")] == before


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:
        self.seen.append(self.headers.get("Authorization", ""))
        self.send_response(403)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_https_token_is_sent_as_a_header_and_never_shown(http_server: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-123-secret\n")
    repo = GitRepository(
        f"{http_server.replace('://', '://bob:hunter2@')}/org/repo.git",
        "main",
        tmp_path / "cache",
        auth=GitAuth(token_file=token_file),
        timeout=20,
    )
    _Recorder.seen.clear()
    with pytest.raises(GitError) as info:
        repo.remote_head()
    message = str(info.value)
    assert "tok-123-secret" not in message and "hunter2" not in message
    assert "://***@127.0.0.1" in message
    assert any(h.startswith("Basic ") for h in _Recorder.seen), "the token travels as an Authorization header"


def test_scrub_removes_url_credentials_and_secrets() -> None:
    assert scrub("fatal: https://u:p@host/x and tok", ("tok",)) == "fatal: https://***@host/x and ***"


@pytest.fixture
def signing(tmp_path: Path) -> tuple[Path, Path]:
    key = tmp_path / "signing_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"ada@example.com {key.with_suffix('.pub').read_text()}")
    return key, signers


def test_signed_head_verifies_and_unsigned_is_refused(
    upstream: Upstream, tmp_path: Path, signing: tuple[Path, Path]
) -> None:
    key, signers = signing
    sign = ("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "-c", "commit.gpgsign=true")
    signed = upstream.commit({"a": "1"}, "signed", *sign)
    upstream.push()
    repo = reader(upstream, tmp_path, verify=VerifyConfig(VerifyMode.SSH, allowed_signers_file=signers))
    repo.fetch()
    repo.verify(signed)
    unsigned = upstream.commit({"a": "2"}, "not signed")
    upstream.push()
    repo.fetch()
    with pytest.raises(SignatureError, match=rf"commit {unsigned[:12]}: signature not verified"):
        repo.verify(unsigned)


def test_source_refuses_an_unsigned_head_and_keeps_the_last_good_snapshot(
    upstream: Upstream, tmp_path: Path, signing: tuple[Path, Path]
) -> None:
    key, signers = signing
    sign = ("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}", "-c", "commit.gpgsign=true")
    good = upstream.commit({"a": "good"}, "signed", *sign)
    upstream.push()
    source = Source(reader(upstream, tmp_path, verify=VerifyConfig(VerifyMode.SSH, allowed_signers_file=signers)))
    assert source.resolve().revision == good
    bad = upstream.commit({"a": "evil"}, "unsigned")
    upstream.push()
    assert source.check() == bad
    with pytest.raises(RevisionRefused) as refused:
        source.resolve(bad)
    assert refused.value.revision == bad
    assert source.check() is None, "a refused head is not reported as new again"
    assert source.resolve().revision == good, "drift and retries keep using the last good snapshot"
    fixed = upstream.commit({"a": "fixed"}, "signed fix", *sign)
    upstream.push()
    assert source.resolve(fixed).revision == fixed


def test_source_deploys_the_head_even_when_a_webhook_names_an_older_commit(upstream: Upstream, tmp_path: Path) -> None:
    old = upstream.commit({"a": "1"}, "one")
    new = upstream.commit({"a": "2"}, "two")
    upstream.push()
    fetches: list[float] = []
    source = Source(reader(upstream, tmp_path), on_fetch=fetches.append)
    assert source.resolve(old).revision == new
    assert source.resolve(old).revision == new
    assert source.resolve().revision == new
    assert len(fetches) == 1, "no second fetch while the head did not move"


@pytest.fixture
def git_daemon(upstream: Upstream) -> Iterator[str]:
    """``git daemon`` serving the upstream's folder over git:// (protocol v2, as forges speak it)."""
    port = free_port()
    base = upstream.bare.parent
    daemon = subprocess.Popen(
        ["git", "daemon", "--export-all", f"--base-path={base}", "--listen=127.0.0.1", f"--port={port}", str(base)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"git://127.0.0.1:{port}/{upstream.bare.name}"
    try:
        for _ in range(100):
            if subprocess.run(["git", "ls-remote", url], capture_output=True, timeout=10).returncode == 0:
                break
            time.sleep(0.05)
        yield url
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


@pytest.mark.parametrize("served", ["path", "file-url", "git-daemon"])
def test_a_commit_behind_the_head_is_fetched_by_id_for_its_snapshot_and_tree_ids(
    served: str, upstream: Upstream, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pinned = upstream.commit({"apps/web/templates/a.yaml": "v1\n", "lib/_common.j2": "x\n"}, "chart v1")
    upstream.commit({"apps/web/templates/a.yaml": "v2\n"}, "chart v2")
    head = upstream.commit({"README": "later\n"}, "unrelated")
    upstream.push()
    url = {
        "path": str(upstream.bare),
        "file-url": f"file://{upstream.bare}",
        "git-daemon": request.getfixturevalue("git_daemon") if served == "git-daemon" else "",
    }[served]
    repo = GitRepository(url, "main", tmp_path / "cache")
    assert repo.fetch().sha == head
    tree = repo.snapshot(pinned)
    assert (tree / "apps/web/templates/a.yaml").read_text() == "v1\n"
    assert (repo.snapshot(head) / "apps/web/templates/a.yaml").read_text() == "v2\n"
    assert repo.tree_id(pinned, "apps/web") == git(upstream.work, "rev-parse", f"{pinned}:apps/web")
    assert repo.tree_id(head, "apps/web/") == git(upstream.work, "rev-parse", f"{head}:apps/web")
    assert repo.tree_id(head, "apps/web") != repo.tree_id(pinned, "apps/web")
    assert repo.tree_id(head, "lib") == repo.tree_id(pinned, "lib"), "an untouched folder keeps its id"
    assert repo.tree_id(pinned, "apps/none") == ""
    assert repo.tree_id(head, "") == git(upstream.work, "rev-parse", f"{head}^{{tree}}")
    assert repo.tree_id(head, "apps/web/templates/a.yaml") == git(
        upstream.work, "rev-parse", f"{head}:apps/web/templates/a.yaml"
    )
    assert repo.tree_id(head, "README") == git(upstream.work, "rev-parse", f"{head}:README"), "a top-level path"


def test_tree_ids_survive_the_cache_collecting_a_pinned_commit(upstream: Upstream, tmp_path: Path) -> None:
    pinned = upstream.commit({"apps/web/a.yaml": "v1\n"}, "v1")
    upstream.push()
    repo = reader(upstream, tmp_path)
    repo.fetch()
    expected = repo.tree_id(pinned, "apps/web")
    for n in range(GC_EVERY + 1):
        upstream.commit({"apps/web/a.yaml": f"n={n}\n"}, f"change {n}")
        upstream.push()
        repo.fetch()
    cache = tmp_path / "cache" / "repo.git"
    git(cache, "gc", "--prune=now", "--quiet")
    with pytest.raises(subprocess.CalledProcessError):
        git(cache, "cat-file", "-e", pinned)
    assert repo.tree_id(pinned, "apps/web") == expected, "ids of a commit are kept once listed"
    blob = git(upstream.work, "rev-parse", f"{pinned}:apps/web/a.yaml")
    assert repo.tree_id(pinned, "apps/web/a.yaml") == blob, "a folder not listed yet: fetched again by id"


def test_a_commit_the_remote_does_not_have_is_a_clear_error(upstream: Upstream, tmp_path: Path) -> None:
    upstream.commit({"a": "1"}, "one")
    upstream.push()
    repo = reader(upstream, tmp_path)
    repo.fetch()
    with pytest.raises(GitError, match=r"commit 0123456789ab: is it on the remote\?"):
        repo.snapshot("0123456789abcdef0123456789abcdef01234567")


def test_source_hands_the_renderer_the_head_and_pinned_trees(upstream: Upstream, tmp_path: Path) -> None:
    pinned = upstream.commit({"a": "pinned"}, "one")
    head = upstream.commit({"a": "head"}, "two")
    upstream.push()
    source = Source(reader(upstream, tmp_path))
    snapshot = source.resolve()
    assert snapshot.revision == head
    assert source.tree(head) == snapshot.path
    assert (source.tree(pinned) / "a").read_text() == "pinned"


def test_pinned_snapshots_never_prune_the_heads(upstream: Upstream, tmp_path: Path) -> None:
    pinned = [upstream.commit({"a": str(n)}, f"release {n}") for n in range(SNAPSHOTS_KEPT + 2)]
    head = upstream.commit({"a": "head"}, "head")
    upstream.push()
    repo = reader(upstream, tmp_path)
    repo.fetch()
    tree = repo.snapshot(head)
    hour_ago = time.time() - 3600
    os.utime(tree, (hour_ago, hour_ago))  # old enough to prune, were it not the head
    for sha in pinned:
        repo.snapshot(sha)
    assert (tree / "a").read_text() == "head"


def test_a_symlink_out_of_the_repository_stays_a_link_nothing_follows(upstream: Upstream, tmp_path: Path) -> None:
    """On every Python the agent runs on (tarfile's extraction filters only exist from 3.11.4; Debian 12 has
    3.11.2): the snapshot keeps such a link as a link, so the commit's other apps still deploy, and the renderer
    refuses to read through it (tests/faults); a member that is neither file, directory nor link is refused."""
    upstream.commit({"apps/web/values.yaml": "replicas: 2\n"}, "Web")
    (upstream.work / "apps/web/token").symlink_to("/var/run/secrets/kubernetes.io/serviceaccount/token")
    (upstream.work / "apps/web/inside").symlink_to("values.yaml")
    sha = upstream.commit({}, "Link the service account token into the repository")
    upstream.push()
    repo = reader(upstream, tmp_path)
    repo.fetch()
    tree = repo.snapshot(sha)
    link = tree / "apps/web/token"
    assert link.is_symlink() and os.readlink(link) == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert (tree / "apps/web/inside").read_text() == "replicas: 2\n", "links inside still work"


def test_a_branch_behind_its_base_is_merged_file_by_file_for_its_plan(upstream: Upstream, tmp_path: Path) -> None:
    """A pull request's branch forked before main changed the chart: its plan must be of the merge, which keeps
    main's chart change, not of the branch alone, which would seem to undo it."""
    fork = upstream.commit({"chart.yaml": "v1\n", "values.yaml": "tag: 1\n"}, "start")
    main = upstream.commit({"chart.yaml": "v2\n"}, "main changes the chart")
    upstream.push()
    git(upstream.work, "checkout", "-q", "-b", "feature", fork)
    branch = upstream.commit({"values.yaml": "tag: 2\n"}, "the branch changes a value")
    both = upstream.commit({"chart.yaml": "v3\n"}, "and the chart main changed")
    git(upstream.work, "push", "-q", "origin", "feature")
    repo = reader(upstream, tmp_path)

    merged = repo.merge_commit(main, branch, fork)

    tree = repo.snapshot(merged)
    assert (tree / "chart.yaml").read_text() == "v2\n" and (tree / "values.yaml").read_text() == "tag: 2\n"
    assert repo.merge_commit(main, both, fork) == "", "a file both sides changed is not picked from either"
