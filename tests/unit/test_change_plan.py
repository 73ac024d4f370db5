"""``gitsync plan`` on real Git history: what a reviewer reads on a pull request, no cluster.

example-repo committed with prod pinned (``pinned_example``), then changed the way people change it: a value,
a template, a Secret; each change planned with ``plan_change`` and with the command itself.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from gitrepos import git

from gitsync.change_plan import Change, Rollout, as_json, markdown, plan_change, text
from gitsync.cli import main
from gitsync.promoted_file import with_pin
from gitsync.runtime.plan_comments import comment_text

Trees = Callable[[str], Path]


def commit(root: Path, files: dict[str, str], message: str = "change") -> str:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def edit(root: Path, name: str, old: str, new: str) -> dict[str, str]:
    content = (root / name).read_text()
    assert old in content, f"{name} no longer holds {old!r}"
    return {name: content.replace(old, new)}


@pytest.fixture
def example(pinned_example: tuple[Path, Trees]) -> tuple[Path, Trees, str]:
    root, trees = pinned_example
    return root, trees, git(root, "rev-parse", "HEAD")


def test_a_values_change_shows_the_changed_objects_and_the_image(example: tuple[Path, Trees, str]) -> None:
    root, trees, base = example
    head = commit(root, edit(root, "environments/staging/values/podinfo.yaml", '"6.7.1"', '"6.8.0"'))

    plan = plan_change(trees, base, head)

    staging = next(a for a in plan.apps if a.key == "podinfo@staging")
    changed = [o.id for o in staging.objects if o.change is Change.CHANGED]
    assert "Deployment.apps/podinfo-staging/podinfo" in changed
    deployment = next(o for o in staging.objects if o.id == "Deployment.apps/podinfo-staging/podinfo")
    assert "-        image: ghcr.io/stefanprodan/podinfo:6.7.1" in deployment.diff
    assert "+        image: ghcr.io/stefanprodan/podinfo:6.8.0" in deployment.diff
    assert staging.images == (("ghcr.io/stefanprodan/podinfo:6.7.1", "ghcr.io/stefanprodan/podinfo:6.8.0"),)
    assert staging.rollout is Rollout.CANARY  # staging's values choose the canary
    comment = markdown(plan)
    assert comment.index("| staging | podinfo |") < comment.index("<details>")  # the table comes first
    assert "`ghcr.io/stefanprodan/podinfo:6.7.1` → `ghcr.io/stefanprodan/podinfo:6.8.0`" in comment
    assert "<summary><code>Deployment.apps/podinfo-staging/podinfo</code>: changed</summary>" in comment


def test_a_chart_change_reaches_the_pinned_env_only_by_promotion(example: tuple[Path, Trees, str]) -> None:
    root, trees, base = example
    head = commit(
        root, edit(root, "apps/podinfo/templates/deployment.yaml", "revisionHistoryLimit: 5", "revisionHistoryLimit: 7")
    )

    plan = plan_change(trees, base, head)

    staging = next(a for a in plan.apps if a.key == "podinfo@staging")
    prod = next(a for a in plan.apps if a.key == "podinfo@prod")
    assert [o.id for o in staging.objects] == ["Deployment.apps/podinfo-staging/podinfo"]
    assert staging.rollout is Rollout.NONE  # the pod template did not change: applied in place
    assert prod.objects == ()  # merging changes nothing in prod ...
    assert prod.waits_for_promotion and prod.promotion_from == "staging"  # ... until it is promoted
    assert [o.id for o in prod.pending] == ["Deployment.apps/podinfo-prod/podinfo"]
    assert "+  revisionHistoryLimit: 7" in prod.pending[0].diff
    assert "| prod | podinfo | 0 | 0 | 0 | — | none | waits for promotion from staging (1 object) |" in (markdown(plan))
    assert plan.apps.index(staging) < plan.apps.index(prod)  # upstream first


def test_a_pinned_envs_own_values_change_deploys_on_merge(example: tuple[Path, Trees, str]) -> None:
    root, trees, base = example
    head = commit(root, edit(root, "environments/prod/values/podinfo.yaml", "replicas: 3", "replicas: 4"))

    plan = plan_change(trees, base, head, "prod")

    (prod,) = plan.apps
    assert [o.id for o in prod.objects] == ["Deployment.apps/podinfo-prod/podinfo"]
    assert not prod.waits_for_promotion
    assert [a.key for a in plan.apps] + list(plan.unchanged) == ["podinfo@prod"]  # --env prod: staging not shown


def test_a_chart_that_stops_rendering_promises_prod_nothing(example: tuple[Path, Trees, str]) -> None:
    """A release that does not render in staging can never be promoted: prod's row must not show its objects
    removed "after promotion"."""
    root, trees, base = example
    head = commit(root, edit(root, "apps/podinfo/templates/configmap.yaml", '"helpers.name"', '"helpers.nme"'))

    plan = plan_change(trees, base, head)

    staging = next(a for a in plan.apps if a.key == "podinfo@staging")
    assert "apps/podinfo/templates/configmap.yaml:4" in staging.error
    assert "podinfo@prod" in plan.unchanged
    assert ": removed</summary>" not in markdown(plan)


def test_the_fix_of_a_broken_chart_shows_prod_what_it_brings_over_the_pin_it_runs(
    example: tuple[Path, Trees, str],
) -> None:
    root, trees, _ = example
    chart = "apps/podinfo/templates/configmap.yaml"
    base = commit(root, edit(root, chart, '"helpers.name"', '"helpers.nme"'))
    fixed = edit(root, chart, '"helpers.nme"', '"helpers.name"')
    deployment = "apps/podinfo/templates/deployment.yaml"
    head = commit(root, fixed | edit(root, deployment, "revisionHistoryLimit: 5", "revisionHistoryLimit: 7"))

    prod = next(a for a in plan_change(trees, base, head).apps if a.key == "podinfo@prod")

    # Compared with the pin prod runs (its older image tag included), as a broken base has no release to compare.
    deployment_diff = next(o.diff for o in prod.pending if o.id == "Deployment.apps/podinfo-prod/podinfo")
    assert "+  revisionHistoryLimit: 7" in deployment_diff and prod.promotion_from == "staging"


SECRET_TEMPLATE = """\
apiVersion: v1
kind: Secret
metadata:
  name: podinfo-db
stringData:
  password: {{ values.dbPassword | quote }}
"""


def test_secret_values_are_masked_in_every_output(example: tuple[Path, Trees, str]) -> None:
    root, trees, _ = example
    values = "environments/staging/values/podinfo.yaml"
    base = commit(
        root,
        {
            "apps/podinfo/templates/secret.yaml": SECRET_TEMPLATE,
            values: (root / values).read_text() + "dbPassword: hunter2-before-change\n",
        },
    )
    head = commit(root, edit(root, values, "hunter2-before-change", "hunter2-after-change"))

    plan = plan_change(trees, base, head, "staging")

    (staging,) = plan.apps
    assert [(o.id, o.change) for o in staging.objects] == [("Secret/podinfo-staging/podinfo-db", Change.CHANGED)]
    assert "*** (masked)" in staging.objects[0].diff  # the change is visible, the value is not
    outputs = [markdown(plan), text(plan), json.dumps(as_json(plan))]
    for value in ("hunter2-before-change", "hunter2-after-change"):
        for shown in (value, base64.b64encode(value.encode()).decode()):
            assert not any(shown in output for output in outputs), shown


def test_the_comment_is_cut_to_the_limit_and_says_so(example: tuple[Path, Trees, str]) -> None:
    root, trees, base = example
    many = (
        "{% for i in range(60) %}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra-{{ i }}\n"
        "data:\n  tag: {{ values.image.tag | quote }}\n  filler: {{ 'x' * 2000 }}\n{% endfor %}\n"
    )
    head = commit(root, {"apps/podinfo/templates/many.yaml": many})

    plan = plan_change(trees, base, head, "staging")

    full = markdown(plan, limit=1_000_000)
    assert full.count("<details>") == 60 and "Cut to fit" not in full
    comment = markdown(plan)
    assert len(comment) <= 65_536
    shown = comment.count("<details>")
    assert 0 < shown < 60
    assert f"Cut to fit 65,536 characters: {60 - shown} of 60 object diffs are not shown" in comment
    assert comment.startswith("### gitsync plan") and "| staging | podinfo | 60 | 0 | 0 |" in comment
    assert comment.count("<details>") == comment.count("</details>")  # no block is cut in half


def test_the_command_exits_like_diff(
    example: tuple[Path, Trees, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root, _, base = example
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runner = CliRunner()

    same = runner.invoke(main, ["plan", "--repo", str(root), "--base", "HEAD", "--head", "HEAD"])
    assert (same.exit_code, same.output) == (
        0,
        f"plan {base[:12]}..{base[:12]}\nunchanged: podinfo@staging, podinfo@prod\nno changes\n",
    )

    commit(root, edit(root, "environments/staging/values/podinfo.yaml", '"6.7.1"', '"6.8.0"'))
    changed = runner.invoke(main, ["plan", "--repo", str(root), "--base", "HEAD~1", "-o", "json"])
    assert changed.exit_code == 1
    assert json.loads(changed.output)["apps"][0]["images"] == [
        {"before": "ghcr.io/stefanprodan/podinfo:6.7.1", "after": "ghcr.io/stefanprodan/podinfo:6.8.0"}
    ]

    commit(root, {"apps/podinfo/templates/broken.yaml": "kind: {{ values.nope }}\n"})
    broken = runner.invoke(main, ["plan", "--repo", str(root), "--base", "HEAD~1", "-o", "markdown"])
    assert broken.exit_code == 2
    assert "| staging | podinfo | 0 | 0 | 0 | — | :x: error | — |" in broken.stdout
    assert "apps/podinfo/templates/broken.yaml:1:" in broken.stderr

    unknown = runner.invoke(main, ["plan", "--repo", str(root), "--base", "no-such-branch"])
    assert unknown.exit_code == 2
    assert "'no-such-branch' is not a commit in this checkout" in unknown.stderr

    nowhere = tmp_path / "nowhere.kubeconfig"
    nowhere.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: x\n"
        "clusters: [{name: x, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: x, user: {token: not-a-real-token}}]\n"
        "contexts: [{name: x, context: {cluster: x, user: x}}]\n"
    )
    unreachable = runner.invoke(
        main, ["plan", "--repo", str(root), "--base", "HEAD~2", "--live", "--kubeconfig", str(nowhere)]
    )
    assert unreachable.exit_code == 3, unreachable.output  # worth retrying, as gitsync diff
    assert "not-a-real-token" not in unreachable.output


def test_a_promotion_pull_request_deploys_the_pin_on_merge(example: tuple[Path, Trees, str]) -> None:
    root, trees, _ = example
    chart = commit(
        root, edit(root, "apps/podinfo/templates/deployment.yaml", "revisionHistoryLimit: 5", "revisionHistoryLimit: 7")
    )
    pin = with_pin(
        (root / "environments/prod/promoted.yaml").read_text(), "podinfo", chart, "staging", {"image": {"tag": "6.7.1"}}
    )
    promotion = commit(root, {"environments/prod/promoted.yaml": pin}, "promote podinfo to prod")

    plan = plan_change(trees, chart, promotion)

    (prod,) = plan.apps
    assert prod.key == "podinfo@prod" and plan.unchanged == ("podinfo@staging",)
    assert prod.images == (("ghcr.io/stefanprodan/podinfo:6.7.0", "ghcr.io/stefanprodan/podinfo:6.7.1"),)
    assert prod.rollout is Rollout.BLUE_GREEN  # prod's own strategy runs when the pin lands
    assert not prod.waits_for_promotion  # the pin is the promotion


def test_an_app_awaiting_its_first_promotion_changes_nothing(example: tuple[Path, Trees, str]) -> None:
    root, trees, base = example
    (root / "environments/prod/promoted.yaml").unlink()
    head = commit(root, {}, "unpin prod")

    plan = plan_change(trees, base, head, "prod")

    (prod,) = plan.apps
    assert (prod.objects, prod.images, prod.error) == ((), (), "")
    assert prod.note == "podinfo awaits promotion from staging (no pin yet)"
    assert not plan.has_changes


def test_the_pull_request_comment_reads_well_as_markdown(example: tuple[Path, Trees, str]) -> None:
    """One heading (the comment's, naming the branch), and the unchanged app-envs as their own paragraph, not
    folded into the last note's bullet."""
    root, trees, base = example
    (root / "environments/prod/promoted.yaml").unlink()
    head = commit(root, edit(root, "environments/prod/values/podinfo.yaml", "replicas: 3", "replicas: 4"), "unpin")

    comment = comment_text(plan_change(trees, base, head), base, head, "main")

    assert comment.count("### gitsync plan") == 1 and f"`{head[:12]}` into `main` at `{base[:12]}`" in comment
    note = "- :information_source: `podinfo@prod`: podinfo awaits promotion from staging (no pin yet)"
    assert f"{note}\n\nUnchanged: `podinfo@staging`." in comment


def test_a_diff_too_large_for_any_comment_shows_its_beginning(example: tuple[Path, Trees, str]) -> None:
    """One ConfigMap of 3,000 keys: the reviewer sees its first lines and how many more, not nothing."""
    root, trees, base = example
    keys = "".join(f"  KEY_{i:04d}: {'x' * 40}\n" for i in range(3000))
    values = (root / "environments/staging/values/podinfo.yaml").read_text().replace("config:\n", f"config:\n{keys}")
    head = commit(root, {"environments/staging/values/podinfo.yaml": values})

    comment = markdown(plan_change(trees, base, head, "staging"))

    assert len(comment) <= 65_536 and comment.count("<details>") == comment.count("</details>") == 1
    assert "+  KEY_0000: " in comment and "more lines not shown\n```" in comment
    assert "Cut to fit 65,536 characters: 1 of 2 object diffs are not shown, 1 is cut short" in comment


def test_a_promoted_value_path_that_cannot_be_taken_names_its_env_yaml_line(example: tuple[Path, Trees, str]) -> None:
    """prod starts promoting ``port.number`` where staging's ``port`` is a number: the plan row says which line of
    which file to fix, as the agent and ``gitsync promote`` do (it named only ``promotion.values`` before)."""
    root, trees, base = example
    env_yaml = "environments/prod/env.yaml"
    head = commit(root, edit(root, env_yaml, "    - image.tag\n", "    - image.tag\n    - port.number\n"))
    line = (root / env_yaml).read_text().splitlines().index("    - port.number") + 1

    prod = next(a for a in plan_change(trees, base, head).apps if a.key == "podinfo@prod")

    problem = "promotion.values: port.number: port is 9898 in the values it is promoted from, not a mapping"
    assert f"after promotion from staging: {env_yaml}:{line}: {problem}" in prod.note, prod.note
