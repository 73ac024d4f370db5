"""The render cache: a cached render is byte for byte the fresh one, any change of what a render reads renders
again, and a damaged entry is never believed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from test_render_promotion import PROD_ENV, Repo

from gitsync.adapters.render_cache import DiskBlobs
from gitsync.model import canonical
from gitsync.promoted_file import with_pin
from renderers import RenderedApp, RenderError, render_app, render_env
from renderers.cache import MemoryRenderCache, StoredRenderCache
from renderers.inputs import Unkeyable, content_id

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
GITSYNC = str(Path(sys.executable).parent / "gitsync")


class CountingBlobs(DiskBlobs):
    """The disk store, counting the reads that found an entry: a hit is a render that did not run."""

    hits = 0

    def read(self, key: str) -> bytes | None:
        found = super().read(key)
        self.hits += found is not None
        return found


def exact(rendered: RenderedApp) -> tuple[object, ...]:
    """Everything a render hands on, as text: bodies, sources, fingerprints, order, digest, values."""
    return (
        rendered.digest,
        canonical(rendered.values),
        tuple((str(m.id), m.source, m.fingerprint, canonical(m.body)) for m in rendered.manifests),
    )


def big_repo(root: Path, apps: int = 8) -> None:
    """Charts sharing lib/, per-environment values, a plain-manifests app and chart files: 3 environments."""
    files = {"lib/_common.j2": '{% macro labels(app) %}{part-of: shop, app: "{{ app }}"}{% endmacro %}\n'}
    for i in range(apps):
        app = f"app{i}"
        files[f"apps/{app}/chart.yaml"] = f"name: {app}\nversion: 1.{i}.0\n"
        files[f"apps/{app}/values.yaml"] = f"replicas: {i % 3 + 1}\nkeys: {list(range(i + 3))}\nratio: 0.{i}5\n"
        files[f"apps/{app}/files/app.conf"] = f"# {app}\nlisten = {8000 + i}\nunicode = é✓\n"
        files[f"apps/{app}/templates/objects.yaml"] = (
            "{% for k in values['keys'] %}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            "  name: {{ release.app }}-{{ k }}\n  labels: {{ include('common.labels', release.app) }}\n"
            'data:\n  conf: {{ file("app.conf") | quote }}\n  ratio: "{{ values.ratio }}"\n{% endfor %}\n'
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: {{ release.name }}}\nspec:\n"
            "  replicas: {{ values.replicas }}\n  selector: {matchLabels: {app: {{ release.app }}}}\n"
            "  template:\n    metadata: {labels: {app: {{ release.app }}}}\n"
            "    spec: {containers: [{name: main, image: 'r/{{ release.app }}:1'}]}\n"
        )
    files["apps/plain/manifests/crd-like.yaml"] = "".join(
        f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: plain-{i}}}\ndata: {{n: '{i}'}}\n" for i in range(50)
    )
    names = [f"app{i}" for i in range(apps)] + ["plain"]
    for env in ("dev", "staging", "prod"):
        files[f"environments/{env}/env.yaml"] = f"namespace: shop-{env}\napps: [{', '.join(names)}]\n"
        files[f"environments/{env}/values/app1.yaml"] = f"replicas: {len(env)}\n"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_a_cached_render_is_the_fresh_render_byte_for_byte(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    big_repo(repo)
    fresh = {env: [exact(r) for r in render_env(repo, env)] for env in ("dev", "staging", "prod")}
    blobs = CountingBlobs(tmp_path / "cache")
    for _ in range(2):  # the first fills the cache, the second reads only from it (a new process would too)
        cache = StoredRenderCache(blobs)
        assert {env: [exact(r) for r in render_env(repo, env, cache=cache)] for env in fresh} == fresh
    assert blobs.hits == 3 * 9
    memory = MemoryRenderCache()
    first = render_env(repo, "prod", cache=memory)
    again = render_env(repo, "prod", cache=memory)
    assert [exact(r) for r in again] == fresh["prod"]
    assert all(a.manifests is b.manifests for a, b in zip(first, again, strict=True))


def test_gitsync_render_prints_the_same_bytes_from_the_cache_and_without_it(
    tmp_path: Path, pinned_example: tuple[Path, Callable[[str], Path]]
) -> None:
    root, _ = pinned_example
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}

    def render(target: str, **extra: str) -> str:
        done = subprocess.run(
            [GITSYNC, "render", "--repo", str(root), "--env", target],
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stdout

    for target in ("staging", "prod"):
        uncached = render(target, GITSYNC_RENDER_CACHE="off")
        assert render(target) == uncached  # stored
        assert render(target) == uncached  # read back
    assert len(list((tmp_path / "xdg" / "gitsync" / "render").iterdir())) == 2


def test_a_change_to_chart_lib_values_or_pin_renders_again(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    repo.pin(repo.first)
    repo.commit("pin")
    cache = StoredRenderCache(DiskBlobs(tmp_path / "cache"))

    def both() -> tuple[RenderedApp, RenderedApp]:
        staging = render_app(repo.root, "staging", "web", revision=repo.git("rev-parse", "HEAD"), cache=cache)
        prod = render_app(repo.root, "prod", "web", trees=repo.trees, cache=cache)
        assert exact(staging) == exact(render_app(repo.root, "staging", "web", revision=staging.revision))
        assert exact(prod) == exact(repo.prod())
        return staging, prod

    staging, prod = both()  # staging's chart reads release.revision: each commit renders it again
    template = "apps/web/templates/configmap.yaml"
    changes: list[tuple[str, dict[str, str], bool, bool]] = [
        ("chart", {template: (repo.root / template).read_text() + "  extra: x\n"}, True, False),
        ("lib", {"lib/_common.j2": '{% macro labels() %}{tier: "v2"}{% endmacro %}\n'}, True, False),
        ("values", {"environments/prod/values/web.yaml": "message: changed\n"}, True, True),
        ("env", {"environments/prod/env.yaml": PROD_ENV + "labels: {a: b}\n"}, True, True),
    ]
    for what, files, staging_moves, prod_moves in changes:
        repo.commit(what, files)
        now_staging, now_prod = both()
        assert (now_staging.digest != staging.digest) is staging_moves, what
        assert (now_prod.digest != prod.digest) is prod_moves, what
        staging, prod = now_staging, now_prod
    # prod follows its pin: a new pin (revision and promoted value) renders the chart and lib of the new commit
    repo.pin(repo.git("rev-parse", "HEAD"), tag="2.0")
    repo.commit("promote")
    _, now_prod = both()
    assert now_prod.digest != prod.digest
    assert now_prod.manifests[0].body["data"]["image"] == "registry/web:2.0"
    assert now_prod.manifests[0].body["data"]["extra"] == "x"


def test_the_revision_is_an_input_only_of_a_chart_that_reads_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    big_repo(repo, apps=2)
    reads = repo / "apps/app0/templates/revision.yaml"
    reads.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: rev}\ndata: {r: '{{ release.revision }}'}\n")
    blobs = CountingBlobs(tmp_path / "cache")
    cache = StoredRenderCache(blobs)
    for revision in ("a" * 40, "b" * 40):
        for app in ("app0", "app1"):
            rendered = render_app(repo, "dev", app, revision=revision, cache=cache)
            assert rendered.revision == revision
            assert exact(rendered) == exact(render_app(repo, "dev", app, revision=revision))
    assert blobs.hits == 1  # app1 at the second revision; app0 reads the revision, so it rendered again


def test_a_damaged_entry_is_a_miss_and_is_replaced(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    big_repo(repo, apps=1)
    folder = tmp_path / "cache"
    cache = StoredRenderCache(DiskBlobs(folder))
    fresh = exact(render_app(repo, "dev", "app0"))
    render_app(repo, "dev", "app0", cache=cache)
    (entry,) = folder.iterdir()
    good = entry.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01
    damaged = [bytes(flipped), good[: len(good) // 2], b"", b"gitsync-render\n" + b"\0" * 32 + b"[]"]
    for data in damaged:
        entry.write_bytes(data)
        assert exact(render_app(repo, "dev", "app0", cache=cache)) == fresh
        assert entry.read_bytes() == good  # the damaged entry was dropped and stored again
    DiskBlobs(folder).write(entry.name, b'{"not": "a render"}')  # intact on disk, but not a render output
    assert exact(render_app(repo, "dev", "app0", cache=cache)) == fresh


def test_a_failed_render_is_not_cached(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    big_repo(repo, apps=1)
    folder = tmp_path / "cache"
    cache = StoredRenderCache(DiskBlobs(folder))
    (repo / "apps/app0/templates/broken.yaml").write_text("{{ values.missing.deeper }}\n")
    for _ in range(2):
        with pytest.raises(RenderError, match=r"broken\.yaml"):
            render_app(repo, "dev", "app0", cache=cache)
    assert not folder.exists() or not list(folder.iterdir())


def test_the_folder_stays_within_its_bound_and_concurrent_writers_leave_whole_entries(tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    blobs = DiskBlobs(folder, max_bytes=10_000)
    for i in range(30):
        blobs.write(f"k{i}", bytes([i]) * 1_000)
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 10_000
    assert blobs.read("k29") == bytes([29]) * 1_000 and blobs.read("k0") is None

    seen: list[bytes | None] = []

    def writer(n: int) -> None:
        for _ in range(50):
            blobs.write("shared", bytes([n]) * 2_000)
            seen.append(blobs.read("shared"))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(s is None or (len(s) == 2_000 and len(set(s)) == 1) for s in seen)


def test_content_ids_are_git_tree_ids(pinned_example: tuple[Path, Callable[[str], Path]]) -> None:
    root, _ = pinned_example
    for path in ("apps/podinfo", "environments/prod/values/podinfo.yaml", "environments"):
        expected = subprocess.run(
            ["git", "rev-parse", f"HEAD:{path}"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        assert content_id(root / path, root) == expected, path
    assert content_id(root / "no-such-folder", root) == ""
    # with_pin is what writes promoted.yaml: a changed pin is a changed blob
    before = content_id(root / "environments/prod/promoted.yaml", root)
    (root / "environments/prod/promoted.yaml").write_text(with_pin(None, "podinfo", "f" * 40, "staging", {}))
    assert content_id(root / "environments/prod/promoted.yaml", root) != before


def test_a_link_out_of_the_repository_is_never_walked_and_the_render_reports_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    big_repo(repo, apps=1)
    (repo / "apps/app0/templates/everything").symlink_to("/")  # hashing behind it would walk the whole disk
    with pytest.raises(Unkeyable, match="out of the repository"):
        content_id(repo / "apps/app0", repo)
    cache = StoredRenderCache(DiskBlobs(tmp_path / "cache"))
    # the renderer skips a linked folder: the render stands, uncached
    assert exact(render_app(repo, "dev", "app0", cache=cache)) == exact(render_app(repo, "dev", "app0"))
    assert not (tmp_path / "cache").exists()
    (repo / "apps/app0/templates/stolen.yaml").symlink_to("/etc/hostname")
    with pytest.raises(RenderError, match="symbolic link out of the repository"):
        render_app(repo, "dev", "app0", cache=cache)
