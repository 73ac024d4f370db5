"""What a chart author and the rest of the agent rely on: layering, YAML 1.1 safety, ownership, order, digest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import renderers
from gitsync.model import ANNOTATION_CONFIG_HASH, LABEL_APP, LABEL_ENV, LABEL_MANAGED_BY, apply_order
from renderers import load_environment, render_app, render_env
from renderers.render import Trees

EXAMPLE = Path(__file__).resolve().parents[2] / "example-repo"
GITSYNC = [str(Path(sys.executable).parent / "gitsync")]

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
{% for key, value in values.data | dictsort %}
  {{ key }}: {{ value | quote }}
{% endfor %}
"""


def make_repo(root: Path, values: str, env_values: str = "", extra: dict[str, str] | None = None) -> Path:
    chart = root / "apps" / "web"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "chart.yaml").write_text("name: web\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(values)
    (chart / "templates" / "configmap.yaml").write_text(CONFIGMAP)
    for name, text in (extra or {}).items():
        (chart / "templates" / name).write_text(text)
    env = root / "environments" / "dev"
    (env / "values").mkdir(parents=True, exist_ok=True)
    (env / "env.yaml").write_text("namespace: web-dev\napps: [web]\nlabels: {team: core}\n")
    (env / "values" / "web.yaml").write_text(env_values)
    return root


def data_of(repo: Path, **kwargs: Any) -> dict[str, Any]:
    (manifest,) = render_app(repo, "dev", "web", **kwargs).manifests
    return manifest.body["data"]  # type: ignore[no-any-return]


def test_public_api_is_explicit() -> None:
    assert sorted(renderers.__all__) == [
        "AwaitingPromotion",
        "Environment",
        "RenderError",
        "RenderedApp",
        "load_environment",
        "render_app",
        "render_env",
    ]


def test_yaml_11_values_come_out_as_written(tmp_path: Path) -> None:
    values = (
        "data:\n  a: on\n  b: yes\n  c: no\n  d: y\n  e: 0644\n  f: 1.10\n  g: 12:30:00\n  h: 'on'\n"
        "  i: 2024-01-01\n  j: 1.5\n"
    )
    assert data_of(make_repo(tmp_path, values)) == {
        "a": "on",
        "b": "yes",
        "c": "no",
        "d": "y",
        "e": "0644",
        "f": "1.10",
        "g": "12:30:00",
        "h": "on",
        "i": "2024-01-01",
        "j": "1.5",
    }


def test_yaml_11_literals_in_templates_come_out_as_written_and_modes_stay_octal(tmp_path: Path) -> None:
    pod = (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels:\n    version: 1.10\n    debug: on\n"
        "spec:\n  volumes:\n    - name: v\n      configMap:\n        name: c\n        defaultMode: 0644\n"
        "  containers:\n    - name: c\n      env:\n"
        '        - {name: AT, value: 12:30:00}\n        - {name: Q, value: "no"}\n'
    )
    rendered = render_app(make_repo(tmp_path, "data: {}\n", extra={"pod.yaml": pod}), "dev", "web")
    body = next(m.body for m in rendered.manifests if m.id.kind == "Pod")
    assert body["metadata"]["labels"]["version"] == "1.10"
    assert body["metadata"]["labels"]["debug"] == "on"
    assert body["spec"]["volumes"][0]["configMap"]["defaultMode"] == 0o644  # as kubectl reads it
    assert body["spec"]["containers"][0]["env"] == [{"name": "AT", "value": "12:30:00"}, {"name": "Q", "value": "no"}]


def test_values_layer_chart_then_env_then_set(tmp_path: Path) -> None:
    values = "data:\n  keep: base\n  over: base\n  gone: base\nlist: [1, 2]\n"
    env_values = "data:\n  over: env\n  gone: null\n  added: env\n"
    repo = make_repo(tmp_path, values, env_values)
    assert data_of(repo) == {"keep": "base", "over": "env", "added": "env"}
    assert data_of(repo, sets=["data.over=cli", "data.tag=1.10", 'data.q="true"']) == {
        "keep": "base",
        "over": "cli",
        "added": "env",
        "tag": "1.10",
        "q": "true",
    }
    rendered = render_app(repo, "dev", "web", sets=["list=[9]", "n=3", "b=true"])
    assert rendered.values["list"] == "[9]"  # --set values are scalars
    assert (rendered.values["n"], rendered.values["b"]) == (3, True)


def test_lists_replace_rather_than_merge(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "data: {}\nports: [80, 443]\n", "ports: [8080]\n")
    assert render_app(repo, "dev", "web").values["ports"] == [8080]


def test_every_object_is_owned_labelled_and_placed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, "data: {}\n")
    (manifest,) = render_app(repo, "dev", "web").manifests
    meta = manifest.body["metadata"]
    assert meta["namespace"] == "web-dev"
    assert meta["labels"] == {"team": "core", LABEL_MANAGED_BY: "gitsync", LABEL_APP: "web", LABEL_ENV: "dev"}
    assert manifest.source == "apps/web/templates/configmap.yaml:1"


def test_metadata_the_server_writes_is_dropped_from_a_copied_manifest(tmp_path: Path) -> None:
    """What ``kubectl get -o yaml`` adds is not intent: a stale resourceVersion or a uid sent back is refused (409),
    managedFields too (400). The output and its digest are those of the object without it."""
    copied = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: web-dev
  resourceVersion: "4711"
  uid: 8a65bfec-4e62-404e-bc96-06b812bef02a
  creationTimestamp: "2026-01-02T03:04:05Z"
  generation: 3
  selfLink: /api/v1/namespaces/web-dev/configmaps/settings
  managedFields: [{manager: kubectl, operation: Update, apiVersion: v1}]
data: {a: "1"}
"""
    plain = make_repo(tmp_path / "plain", "data: {a: '1'}\n")
    copy = make_repo(tmp_path / "copy", "data: {}\n")
    (copy / "apps" / "web" / "templates" / "configmap.yaml").write_text(copied)
    expected, rendered = render_app(plain, "dev", "web"), render_app(copy, "dev", "web")
    assert [m.body for m in rendered.manifests] == [m.body for m in expected.manifests]
    assert set(rendered.manifests[0].body["metadata"]) == {"name", "namespace", "labels"}
    assert rendered.digest == expected.digest


def test_load_environment_reads_settings_with_defaults() -> None:
    env = load_environment(EXAMPLE, "staging")
    assert (env.name, env.namespace, env.apps) == ("staging", "podinfo-staging", ("podinfo",))
    assert env.promotion is None
    prod = load_environment(EXAMPLE, "prod").promotion
    assert prod is not None and (prod.from_env, prod.values) == ("staging", ("image.tag",))
    assert (env.allow_cluster_scoped, env.prune, env.prune_allow_empty, env.self_heal) == (False, True, False, True)


def test_example_repo_environments_differ_where_they_should(pinned_example: tuple[Path, Trees]) -> None:
    repo, trees = pinned_example
    staging, prod = (render_env(repo, env, trees=trees)[0] for env in ("staging", "prod"))
    assert [str(m.id) for m in staging.manifests] == [
        "ServiceAccount/podinfo-staging/podinfo",
        "ConfigMap/podinfo-staging/podinfo",
        "Service/podinfo-staging/podinfo",
        "Deployment.apps/podinfo-staging/podinfo",
    ]
    assert list(staging.manifests) == sorted(staging.manifests, key=lambda m: apply_order(m.id))

    def deployment(r: renderers.RenderedApp) -> dict[str, Any]:
        return next(m.body for m in r.manifests if m.id.kind == "Deployment")

    def config(r: renderers.RenderedApp) -> dict[str, Any]:
        return next(m.body for m in r.manifests if m.id.kind == "ConfigMap")["data"]

    assert (deployment(staging)["spec"]["replicas"], deployment(prod)["spec"]["replicas"]) == (2, 3)
    images = [deployment(r)["spec"]["template"]["spec"]["containers"][0]["image"] for r in (staging, prod)]
    assert images == ["ghcr.io/stefanprodan/podinfo:6.7.1", "ghcr.io/stefanprodan/podinfo:6.7.0"]
    assert (config(staging)["FEATURE_NEW_CHECKOUT"], config(prod)["FEATURE_NEW_CHECKOUT"]) == ("true", "false")
    hashes = [
        deployment(r)["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH] for r in (staging, prod)
    ]
    assert hashes[0] != hashes[1]
    assert staging.values["rollout"]["strategy"] == "canary"
    assert prod.values["rollout"]["strategy"] == "blueGreen"
    pod_labels = deployment(staging)["spec"]["template"]["metadata"]["labels"]
    assert pod_labels == deployment(staging)["spec"]["selector"]["matchLabels"]
    assert pod_labels["app.kubernetes.io/name"] == "podinfo"


def test_hpa_renders_only_when_enabled_and_then_replicas_are_left_to_it(pinned_example: tuple[Path, Trees]) -> None:
    repo, trees = pinned_example
    (rendered,) = render_env(repo, "prod", sets=["autoscaling.enabled=true"], trees=trees)
    kinds = [m.id.kind for m in rendered.manifests]
    assert "HorizontalPodAutoscaler" in kinds
    deployment = next(m.body for m in rendered.manifests if m.id.kind == "Deployment")
    assert "replicas" not in deployment["spec"]


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run([*GITSYNC, "render", *args], capture_output=True, timeout=60, env=env, check=False)


def test_cli_output_is_byte_identical_and_errors_exit_1(tmp_path: Path) -> None:
    first = _cli("--repo", str(EXAMPLE), "--env", "staging")
    second = _cli("--repo", str(EXAMPLE), "--env", "staging")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    docs = list(yaml.safe_load_all(first.stdout))
    assert [d["kind"] for d in docs] == ["ServiceAccount", "ConfigMap", "Service", "Deployment"]

    digest = _cli("--repo", str(EXAMPLE), "--env", "staging", "--digest")
    (rendered,) = render_env(EXAMPLE, "staging")
    assert digest.stdout.decode() == f"{rendered.digest} podinfo@staging\n"

    as_json = _cli("--repo", str(EXAMPLE), "--env", "staging", "--app", "podinfo", "-o", "json")
    assert yaml.safe_load(as_json.stdout)["items"] == docs

    failed = _cli("--repo", str(EXAMPLE), "--env", "staging", "--set", "image.tag=")
    assert failed.returncode == 1
    assert failed.stdout == b""
    template = EXAMPLE / "apps/podinfo/templates/deployment.yaml"
    line = next(n for n, text in enumerate(template.read_text().splitlines(), 1) if "required(" in text)
    expected = f"apps/podinfo/templates/deployment.yaml:{line}: required: values.image.tag is required\n"
    assert failed.stderr.decode() == expected


def test_cli_does_not_import_the_kubernetes_client() -> None:
    code = "import sys, gitsync.cli.render; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


# A property: the render is a function of its inputs, and the digest tracks the output exactly.
_scalar = st.one_of(
    st.sampled_from(["on", "no", "y", "0644", "1.10", "12:30:00", "true", "~", "", "a: b", "- x", "#c", "'q'"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
    st.integers(-(10**6), 10**6),
    st.booleans(),
)
_data = st.dictionaries(st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True), _scalar, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=_data, b=_data)
def test_render_is_deterministic_and_digest_changes_iff_output_changes(
    tmp_path_factory: Any, a: dict[str, Any], b: dict[str, Any]
) -> None:
    template = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
        "  annotations: {{ values.data | toYaml | nindent(4) }}\ndata: {{ values.data | toJson }}\n"
    )
    outputs = []
    for data in (a, a, b):
        repo = make_repo(
            tmp_path_factory.mktemp("r"), yaml.safe_dump({"data": data}), extra={"configmap.yaml": template}
        )
        rendered = render_app(repo, "dev", "web")
        body = rendered.manifests[0].body
        assert body["data"] == {k: v for k, v in data.items()}  # toJson round-trips every value as written
        outputs.append((rendered.digest, "".join(renderers.yamlio.dump(m.body) for m in rendered.manifests)))
    assert outputs[0] == outputs[1]
    assert (outputs[0][0] == outputs[2][0]) == (outputs[0][1] == outputs[2][1])


def test_an_environment_loaded_once_renders_every_app_as_loading_it_each_time() -> None:
    """The agent loads each env.yaml once per revision and passes it to every render of that snapshot."""
    staging = load_environment(EXAMPLE, "staging")
    for app in staging.apps:
        assert render_app(EXAMPLE, "staging", app, environment=staging) == render_app(EXAMPLE, "staging", app)
    with pytest.raises(renderers.AwaitingPromotion):  # prod's own env.yaml, which takes promotions, was read
        render_app(EXAMPLE, "prod", "podinfo", environment=staging, trees=lambda sha: EXAMPLE)
