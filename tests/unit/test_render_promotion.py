"""Promotion as the renderer sees it: env.yaml's ``promotion:``, ``promoted.yaml`` pins, and pinned rendering from
real Git history (repositories made here, trees read with ``git archive`` as the CLI does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gitsync.adapters.trees import LocalTrees
from gitsync.promoted_file import with_pin
from renderers import AwaitingPromotion, RenderedApp, RenderError, load_environment, render_app, render_env
from renderers.environment import Promotion, PromotionMode
from renderers.promotion import Pin, env_yaml_errors, load_pins, promoted_values, values_hash

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
GITSYNC = str(Path(sys.executable).parent / "gitsync")

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web
  labels: {{ include("common.labels") }}
data:
  image: {{ values.image.repository }}:{{ values.image.tag }}
  message: {{ values.message | quote }}
  revision: {{ release.revision | quote }}
  chart: {{ chart.version | quote }}
"""
PROD_ENV = """\
namespace: web-prod
apps: [web]
promotion:
  from: staging
  mode: auto
  soak: 30s
  values: [image.tag]
"""


class Repo:
    """A Git work tree holding a GitOps repository: chart ``web``, a head-following staging, a pinned prod."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")
        self.write(
            {
                "apps/web/chart.yaml": "name: web\nversion: 1.0.0\n",
                "apps/web/values.yaml": "image: {repository: registry/web, tag: '1.0'}\nmessage: hello\n",
                "apps/web/templates/configmap.yaml": CONFIGMAP,
                "lib/_common.j2": '{% macro labels() %}{tier: "v1"}{% endmacro %}\n',
                "environments/staging/env.yaml": "namespace: web-staging\napps: [web]\n",
                "environments/staging/values/web.yaml": "image: {tag: '1.1'}\n",
                "environments/prod/env.yaml": PROD_ENV,
                "environments/prod/values/web.yaml": "message: hello from prod\n",
            }
        )
        self.first = self.commit("first")
        self.trees = LocalTrees(root, cache_dir=root.parent / "trees")

    def git(self, *args: str) -> str:
        identity = {
            "GIT_AUTHOR_NAME": "A",
            "GIT_AUTHOR_EMAIL": "a@x",
            "GIT_COMMITTER_NAME": "A",
            "GIT_COMMITTER_EMAIL": "a@x",
        }
        env = {**os.environ, **identity, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(self.root)}
        done = subprocess.run(["git", *args], cwd=self.root, env=env, check=True, capture_output=True, text=True)
        return done.stdout.strip()

    def write(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def commit(self, message: str, files: dict[str, str] | None = None) -> str:
        self.write(files or {})
        self.git("add", "-A")
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def pin(self, revision: str, tag: str = "1.1") -> None:
        self.write(
            {"environments/prod/promoted.yaml": with_pin(None, "web", revision, "staging", {"image": {"tag": tag}})}
        )

    def prod(self) -> RenderedApp:
        return render_app(self.root, "prod", "web", trees=self.trees)


def data(rendered: RenderedApp) -> dict[str, Any]:
    (manifest,) = rendered.manifests
    return manifest.body["data"]  # type: ignore[no-any-return]


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


# ---- env.yaml ---------------------------------------------------------------------------------------------------


def test_promotion_is_parsed_with_defaults(repo: Repo) -> None:
    assert load_environment(repo.root, "prod").promotion == Promotion(
        from_env="staging", mode=PromotionMode.AUTO, soak_seconds=30.0, values=("image.tag",)
    )
    assert load_environment(repo.root, "staging").promotion is None
    repo.write({"environments/prod/env.yaml": "namespace: web-prod\napps: [web]\npromotion: {from: staging}\n"})
    assert load_environment(repo.root, "prod").promotion == Promotion("staging", PromotionMode.MANUAL, 0.0, ())
    assert PromotionMode("pull-request") is PromotionMode.PULL_REQUEST


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        (
            "namespace: a\napps: [web]\npromoteTo: prod\n",
            3,
            "promoteTo was replaced by `promotion:` in the receiving environment's env.yaml",
        ),
        (PROD_ENV.replace("  soak: 30s\n", "  soak: 30s\n  approvers: [me]\n"), 7, "unknown key promotion.approvers"),
        (PROD_ENV.replace("mode: auto", "mode: yolo"), 5, "promotion.mode must be one of auto, pull-request, manual"),
        (PROD_ENV.replace("soak: 30s", "soak: soon"), 6, "promotion.soak must be a duration like 30s, 10m or 1h"),
        (PROD_ENV.replace("from: staging", "from: prod"), 4, "promotion.from must name another environment"),
        (
            PROD_ENV.replace("from: staging", "from: qa"),
            4,
            "environment 'qa' does not exist (no environments/qa/env.yaml)",
        ),
        (PROD_ENV.replace("[image.tag]", "\n    - image.tag\n    - image"), 9, "image overlaps image.tag"),
        (PROD_ENV.replace("[image.tag]", "\n    - image..tag"), 8, "'image..tag' is not a dotted value path"),
    ],
)
def test_env_yaml_promotion_errors_point_at_their_line(repo: Repo, text: str, line: int, problem: str) -> None:
    repo.write({"environments/prod/env.yaml": text})
    with pytest.raises(RenderError) as e:
        load_environment(repo.root, "prod")
    assert str(e.value).startswith(f"environments/prod/env.yaml:{line}: ")
    assert problem in str(e.value)


# ---- promoted.yaml ----------------------------------------------------------------------------------------------


def test_pins_round_trip_and_an_absent_file_pins_nothing(repo: Repo) -> None:
    assert load_pins(repo.root, "prod") == {}
    repo.pin(repo.first, tag="1.1")
    text = (repo.root / "environments/prod/promoted.yaml").read_text()
    assert text.startswith("# written by gitsync; change it only in a reviewed pull request\nweb:\n")
    assert load_pins(repo.root, "prod") == {
        "web": Pin(app="web", revision=repo.first, from_env="staging", values={"image": {"tag": "1.1"}})
    }
    pinned = load_pins(repo.root, "prod")["web"].values
    assert values_hash(pinned) == values_hash({"image": {"tag": "1.1"}}), "a pin read back hashes as written"


@pytest.mark.parametrize(
    ("entry", "line", "problem"),
    [
        ("web:\n  revision: abc123\n  from: staging\n", 2, "web.revision must be a full 40-hex commit id"),
        ("web:\n  revision: {sha}\n  from: staging\n  note: hi\n", 4, "web: unknown key 'note'"),
        ("web:\n  revision: {sha}\n", 1, "web.from must name the environment it was promoted from"),
        (
            "web:\n  revision: {sha}\n  from: staging\n  values:\n    image:\n      tag: '2'\n    replicas: 9\n",
            7,
            "web.values.replicas is not a promoted value path (env.yaml promotion.values: image.tag)",
        ),
        ("web: [1]\n", 1, "web: expected a mapping"),
        ("web:\n  revision: {sha}\n  from: staging\n  from: qa\n", 4, "duplicate key 'from'"),
    ],
)
def test_promoted_yaml_errors_point_at_their_line(repo: Repo, entry: str, line: int, problem: str) -> None:
    repo.write({"environments/prod/promoted.yaml": entry.replace("{sha}", repo.first)})
    with pytest.raises(RenderError) as e:
        load_pins(repo.root, "prod")
    assert str(e.value).startswith(f"environments/prod/promoted.yaml:{line}: ")
    assert problem in str(e.value)


def test_the_pin_of_an_app_removed_from_env_yaml_is_left_out(repo: Repo) -> None:
    """Removing an app from prod's env.yaml while promoted.yaml still pins it must not stop prod's other apps."""
    pins = f"web:\n  revision: {repo.first}\n  from: staging\napi:\n  revision: not-even-a-sha\n"
    repo.write({"environments/prod/promoted.yaml": pins})
    assert list(load_pins(repo.root, "prod")) == ["web"]


def test_promoted_values_are_the_nested_subset_and_hash_canonically() -> None:
    merged = {"image": {"repository": "r", "tag": "1.1"}, "config": {"A": "1", "B": "2"}, "replicas": 2}
    assert promoted_values(merged, ["image.tag", "config"]) == {"image": {"tag": "1.1"}, "config": {"A": "1", "B": "2"}}
    # Each app carries what it has: a path its values do not set is not carried (nothing to promote there).
    assert promoted_values(merged, ["image.tag", "image.digest", "controller.image.tag"]) == {"image": {"tag": "1.1"}}
    assert promoted_values({}, ["image.tag"]) == {}, "a plain-manifests app has no values and promotes none"
    with pytest.raises(RenderError, match=r"replicas\.max: replicas is 2 in the values it is promoted from"):
        promoted_values(merged, ["replicas.max"])
    first = values_hash({"image": {"tag": "1.1"}, "a": 1})
    assert first == values_hash({"a": 1, "image": {"tag": "1.1"}})
    assert first.startswith("sha256:") and len(first) == len("sha256:") + 64
    assert first != values_hash({"a": 1, "image": {"tag": "1.2"}})


# ---- pinned rendering -------------------------------------------------------------------------------------------


def test_an_unpinned_app_awaits_promotion_and_staging_renders_as_ever(repo: Repo) -> None:
    with pytest.raises(AwaitingPromotion) as e:
        repo.prod()
    assert str(e.value) == "environments/prod/promoted.yaml: web awaits promotion from staging (no pin yet)"
    assert isinstance(e.value, RenderError)
    (staging,) = render_env(repo.root, "staging")
    assert data(staging)["image"] == "registry/web:1.1"
    assert staging.pin is None


def test_a_pinned_env_without_trees_is_a_clear_error(repo: Repo) -> None:
    repo.pin(repo.first)
    with pytest.raises(RenderError, match=r"web is pinned to [0-9a-f]{12}, and this render was given no way"):
        render_app(repo.root, "prod", "web")


def test_promoted_values_sit_between_the_chart_and_the_environment(repo: Repo) -> None:
    repo.pin(repo.first, tag="1.1")
    rendered = repo.prod()
    assert data(rendered) == {
        "image": "registry/web:1.1",  # the chart says 1.0, the pin 1.1
        "message": "hello from prod",  # the environment's own override file
        "revision": repo.first,  # templates see the pinned commit, so a head commit alone changes nothing
        "chart": "1.0.0",
    }
    assert rendered.pin == Pin("web", repo.first, "staging", {"image": {"tag": "1.1"}})
    assert rendered.values["image"] == {"repository": "registry/web", "tag": "1.1"}
    assert render_app(repo.root, "prod", "web", sets=["image.tag=v9"], trees=repo.trees).values["image"]["tag"] == "v9"


def test_a_chart_change_at_the_head_reaches_prod_only_by_promotion(repo: Repo) -> None:
    repo.pin(repo.first)
    repo.commit("pin web in prod")
    before = repo.prod()
    staging_before = render_app(repo.root, "staging", "web")
    head = repo.commit(
        "chart 2.0",
        {
            "apps/web/chart.yaml": "name: web\nversion: 2.0.0\n",
            "apps/web/values.yaml": "image: {repository: mirror/web, tag: '1.0'}\nmessage: hi\n",
            "apps/web/templates/configmap.yaml": CONFIGMAP + "  added: 'yes'\n",
            "lib/_common.j2": '{% macro labels() %}{tier: "v2"}{% endmacro %}\n',
        },
    )
    after = repo.prod()
    assert after.digest == before.digest, "prod renders the pinned chart, values.yaml and lib/"
    assert after.manifests == before.manifests
    staging_after = render_app(repo.root, "staging", "web")
    assert staging_after.digest != staging_before.digest
    assert data(staging_after)["image"] == "mirror/web:1.1"
    assert data(staging_after)["added"] == "yes"

    repo.pin(head)  # the promotion: prod now takes chart 2.0
    promoted = repo.prod()
    assert (data(promoted)["chart"], data(promoted)["added"], data(promoted)["revision"]) == ("2.0.0", "yes", head)
    assert promoted.manifests[0].body["metadata"]["labels"]["tier"] == "v2"


def test_a_proposed_pin_renders_in_memory_and_promoted_yaml_stays(repo: Repo) -> None:
    repo.pin(repo.first)
    repo.commit("pin web in prod")
    head = repo.commit("chart 2.0", {"apps/web/chart.yaml": "name: web\nversion: 2.0.0\n"})
    proposed = Pin("web", head, "staging", {"image": {"tag": "1.2"}})
    rendered = render_app(repo.root, "prod", "web", trees=repo.trees, pin=proposed)
    assert (data(rendered)["chart"], data(rendered)["image"], data(rendered)["revision"]) == (
        "2.0.0",
        "registry/web:1.2",
        head,
    )
    assert rendered.pin == proposed
    assert data(repo.prod())["chart"] == "1.0.0", "the file still pins the first commit"
    with pytest.raises(RenderError, match=r"^environments/staging/env.yaml: web: cannot render a pin: staging has no"):
        render_app(repo.root, "staging", "web", pin=proposed)


def test_the_environments_own_override_file_at_the_head_applies_directly(repo: Repo) -> None:
    repo.pin(repo.first)
    before = repo.prod()
    repo.commit("prod says hi", {"environments/prod/values/web.yaml": "message: a reviewed prod change\n"})
    after = repo.prod()
    assert after.digest != before.digest
    assert data(after)["message"] == "a reviewed prod change"
    assert after.pin == before.pin


@pytest.mark.parametrize(
    ("override", "line", "key"),
    [
        ("message: x\nimage:\n  repository: other\n  tag: '9'\n", 4, "image.tag"),
        ("message: x\nimage: null\n", 2, "image"),
    ],
)
def test_an_override_of_a_promoted_value_is_an_error_at_its_line(
    repo: Repo, override: str, line: int, key: str
) -> None:
    repo.write({"environments/prod/values/web.yaml": override})
    with pytest.raises(RenderError) as e:
        repo.prod()  # also before any pin: CI catches it before the first promotion
    assert str(e.value) == (
        f"environments/prod/values/web.yaml:{line}: {key} is promoted from staging "
        "(env.yaml promotion.values: image.tag), so this environment's values may not set it"
    )
    repo.write({"environments/prod/values/web.yaml": "image: {repository: other}\n"})
    repo.pin(repo.first)
    assert data(repo.prod())["image"] == "other:1.1", "a sibling of the promoted value may be set"


# ---- the command line -------------------------------------------------------------------------------------------


def gitsync(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    return subprocess.run([GITSYNC, *args], capture_output=True, text=True, timeout=60, env=env, check=False)


def test_cli_renders_a_pin_from_the_local_history_of_a_folder_in_a_checkout(tmp_path: Path) -> None:
    outer = Repo(tmp_path / "outer")  # the GitOps repository is a folder of a larger checkout, like example-repo
    nested = outer.root / "deploy"
    for path in [p for p in outer.root.rglob("*") if p.is_file() and ".git" not in p.parts]:
        target = nested / path.relative_to(outer.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    commit = outer.commit("move into deploy/")
    outer.write({"deploy/environments/prod/promoted.yaml": with_pin(None, "web", commit, "staging", {})})
    outer.commit("chart 2.0 at the head", {"deploy/apps/web/chart.yaml": "name: web\nversion: 2.0.0\n"})
    done = gitsync("render", "--repo", str(nested), "--env", "prod", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert "chart: 1.0.0" in done.stdout and f"revision: {commit}" in done.stdout
    assert list((tmp_path / "cache" / "gitsync" / "trees").iterdir()), "trees are cached outside the checkout"
    unknown = "0123456789abcdef0123456789abcdef01234567"
    outer.write({"deploy/environments/prod/promoted.yaml": with_pin(None, "web", unknown, "staging", {})})
    done = gitsync("render", "--repo", str(nested), "--env", "prod", cache=tmp_path / "cache")
    assert (done.returncode, done.stdout) == (1, "")
    assert (
        done.stderr == f"{nested}: commit 0123456789ab (or deploy/ in it) is not in this checkout; git fetch it first\n"
    )


def test_cli_says_an_unpromoted_environment_awaits_promotion(tmp_path: Path) -> None:
    done = gitsync("render", "--repo", str(EXAMPLE), "--env", "prod", cache=tmp_path)
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr == "environments/prod/promoted.yaml: podinfo awaits promotion from staging (no pin yet)\n"


def test_an_error_in_a_pinned_chart_names_the_pinned_commit(repo: Repo) -> None:
    repo.pin(repo.first)
    repo.write({"environments/prod/values/web.yaml": "image: {repository: null}\n"})  # the head breaks the pin's chart
    with pytest.raises(RenderError) as e:
        repo.prod()
    assert str(e.value) == (
        "apps/web/templates/configmap.yaml:7: undefined value values.image.repository "
        f"(chart as of {repo.first[:12]}, pinned in environments/prod/promoted.yaml)"
    )


def test_a_path_that_cannot_be_taken_is_an_error_at_its_env_yaml_line(tmp_path: Path) -> None:
    env_yaml = tmp_path / "environments" / "prod" / "env.yaml"
    env_yaml.parent.mkdir(parents=True)
    env_yaml.write_text(
        "namespace: prod\napps: [web]\npromotion:\n  from: staging\n  values:\n"
        "    - image.tag\n    - image.repository\n"
    )
    with pytest.raises(RenderError) as e:
        promoted_values({"image": "nginx:1.27"}, ["image.tag", "image.repository"], env_yaml_errors(tmp_path, "prod"))
    assert str(e.value) == (
        "environments/prod/env.yaml:6: promotion.values: image.tag: image is the string 'nginx:1.27' in the values"
        " it is promoted from, not a mapping"
    )
