"""Every way a render fails reads as one line `path:line: problem`, and nothing is returned."""

from __future__ import annotations

from pathlib import Path

import pytest

from renderers import RenderError, load_environment, render_app
from renderers.environment import ClusterRef

DEPLOY_HEAD = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"


def make_repo(tmp_path: Path, templates: dict[str, str], values: str = "", env: str = "", env_values: str = "") -> Path:
    chart = tmp_path / "apps" / "web"
    (chart / "templates").mkdir(parents=True)
    (chart / "chart.yaml").write_text("name: web\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(values)
    for name, text in templates.items():
        (chart / "templates" / name).write_text(text)
    env_dir = tmp_path / "environments" / "dev"
    (env_dir / "values").mkdir(parents=True)
    (env_dir / "env.yaml").write_text(env or "namespace: web-dev\napps: [web]\n")
    (env_dir / "values" / "web.yaml").write_text(env_values)
    return tmp_path


def render_error(repo: Path, **kwargs: object) -> str:
    with pytest.raises(RenderError) as err:
        render_app(repo, "dev", "web", **kwargs)  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message
    return message


CASES = [
    pytest.param(
        {"d.yaml": DEPLOY_HEAD + "spec:\n  image: {{ values.image.tag }}\n"},
        "image: {}\n",
        "apps/web/templates/d.yaml:6: undefined value values.image.tag",
        id="undefined-value-with-path",
    ),
    pytest.param(
        {"d.yaml": DEPLOY_HEAD + "spec:\n{% for c in values.cs %}\n  - {{ c.port }}\n{% endfor %}\n"},
        "cs: [{name: a}]\n",
        "apps/web/templates/d.yaml:7: undefined value values.cs[0].port",
        id="undefined-in-loop",
    ),
    pytest.param(
        {"d.yaml": DEPLOY_HEAD + "spec:\n  tag: {{ values.tag | required('set values.tag to the image tag') }}\n"},
        "tag: ''\n",
        "apps/web/templates/d.yaml:6: required: set values.tag to the image tag",
        id="required",
    ),
    pytest.param(
        {"d.yaml": DEPLOY_HEAD + "{% if values.x %}\nspec: {}\n"},
        "",
        "apps/web/templates/d.yaml:6: template syntax: Unexpected end of template",
        id="syntax",
    ),
    pytest.param(
        {"d.yaml": DEPLOY_HEAD + "spec:\n  a: 1\n   b: 2\n"},
        "",
        "apps/web/templates/d.yaml:7: invalid YAML in rendered output (output line 7): mapping values are not allowed",
        id="invalid-yaml-literal",
    ),
    pytest.param(
        {
            "d.yaml": "{% for i in range(2) %}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{{ i }}\n"
            "data: {{ values.bad }}\n{% endfor %}\n"
        },
        "bad: 'x: y: z'\n",
        "apps/web/templates/d.yaml:7: invalid YAML in rendered output (output line ",
        id="invalid-yaml-from-expression",
    ),
    pytest.param(
        {"d.yaml": "kind: ConfigMap\nmetadata:\n  name: c\n"},
        "",
        "apps/web/templates/d.yaml:1: object has no apiVersion",
        id="no-apiversion",
    ),
    pytest.param(
        {"d.yaml": "apiVersion: v1\nmetadata:\n  name: c\n"},
        "",
        "apps/web/templates/d.yaml:1: object has no kind",
        id="no-kind",
    ),
    pytest.param(
        {
            "d.yaml": "apiVersion: v1\nkind: ConfigMap\ndata: {}\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {}\n"
        },
        "",
        "apps/web/templates/d.yaml:1: ConfigMap has no metadata.name",
        id="no-name",
    ),
    pytest.param(
        {"d.yaml": "- just\n- a list\n"},
        "",
        "apps/web/templates/d.yaml:1: a rendered document must be a Kubernetes object (a mapping), got list",
        id="not-a-mapping",
    ),
    pytest.param(
        {
            "a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
            "b.yaml": "# the same object again\n---\n"
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: web-dev\n",
        },
        "",
        "apps/web/templates/b.yaml:3: duplicate object ConfigMap/web-dev/c"
        " (first defined at apps/web/templates/a.yaml:1)",
        id="duplicate",
    ),
    pytest.param(
        {"d.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: kube-system\n"},
        "",
        "apps/web/templates/d.yaml:1: ConfigMap/c is in namespace 'kube-system',"
        " outside environment dev's namespace 'web-dev' (list it in env.yaml allowedNamespaces to allow it)",
        id="foreign-namespace",
    ),
    pytest.param(
        {"d.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: r\n"},
        "",
        "apps/web/templates/d.yaml:1: ClusterRole/r is cluster-scoped; environment dev does not allow cluster-scoped",
        id="cluster-scoped",
    ),
    pytest.param(
        {
            "d.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gitsync.other.dev.inventory\n"
            "  annotations: {gitsync.dev/force-conflicts: 'true'}\n"
            'data:\n  inventory.json: \'{"objects": ["Deployment.apps/prod/web"]}\'\n'
        },
        "",
        "apps/web/templates/d.yaml:1: ConfigMap/web-dev/gitsync.other.dev.inventory: ConfigMap names starting with"
        " 'gitsync.' are reserved for gitsync's own state records (status, inventory, history, rollout); rename it",
        id="forged-state-record",
    ),
    pytest.param(
        {"d.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\nstringData: {{ values.pw | quote }}\n"},
        "pw: hunter2-planted\n",
        "apps/web/templates/d.yaml:1: Secret/s: stringData must be a mapping of keys to values",
        id="secret-payload-not-a-mapping",
    ),
    pytest.param(
        {"d.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: {gitsync.dev/state: status}\n"},
        "",
        "apps/web/templates/d.yaml:1: ConfigMap/c: label gitsync.dev/state is reserved for gitsync's own state records",
        id="state-label",
    ),
    pytest.param(
        {
            "d.yaml": "# two\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n"
            "  metadata: {name: a}\n- {apiVersion: v1, kind: ConfigMap, metadata: {}}\n"
        },
        "",
        "apps/web/templates/d.yaml:3: items[1]: ConfigMap has no metadata.name",
        id="list-item-without-name",
    ),
    pytest.param(
        {"d.yaml": "apiVersion: v1\nkind: ConfigMapList\nitems: {a: 1}\n"},
        "",
        "apps/web/templates/d.yaml:1: ConfigMapList: items must be a list of objects",
        id="list-items-not-a-list",
    ),
    pytest.param(
        {"d.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  name: d\n"},
        "",
        "apps/web/templates/d.yaml:5: invalid YAML in rendered output (output line 5): duplicate key 'name'",
        id="duplicate-key",
    ),
    pytest.param(
        {"d.yaml": "{% include '_missing.yaml' %}\n"},
        "",
        "apps/web/templates/d.yaml:1: template not found: _missing.yaml",
        id="missing-include",
    ),
    pytest.param(
        {"d.yaml": "a: {{ include('helpers.nope') }}\n", "_helpers.j2": "{% macro yes() %}y{% endmacro %}"},
        "",
        "apps/web/templates/d.yaml:1: include: _helpers.j2 has no macro 'nope'",
        id="missing-helper",
    ),
    pytest.param(
        {
            "d.yaml": "a: {{ include('helpers.bad') }}\n",
            "_helpers.j2": "{% macro bad() %}\n{{ values.nope }}\n{% endmacro %}",
        },
        "",
        "apps/web/templates/_helpers.j2:2: undefined value values.nope",
        id="error-inside-helper",
    ),
    pytest.param(
        {"d.yaml": "a: 1\n"},
        "image:\n  tag: 1\n  tag: 2\n",
        "apps/web/values.yaml:3: invalid YAML: duplicate key 'tag'",
        id="values-duplicate-key",
    ),
    pytest.param(
        {"d.yaml": "a: 1\n"},
        "image: [1\n",
        "apps/web/values.yaml:2: invalid YAML",
        id="values-invalid-yaml",
    ),
    pytest.param(
        {
            "c.yaml": "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations:\n"
            "    gitsync.dev/wave: first\n"
        },
        "",
        'apps/web/templates/c.yaml:2: ConfigMap/c: annotation gitsync.dev/wave must be a quoted integer like "1", got '
        "'first'",
        id="wave-not-an-integer",
    ),
    pytest.param(
        {
            "c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations:\n"
            "    gitsync.dev/prune: 'no'\n"
        },
        "",
        'apps/web/templates/c.yaml:1: ConfigMap/c: annotation gitsync.dev/prune must be "true" or "false", got \'no\'',
        id="prune-neither-true-nor-false",
    ),
    pytest.param(
        {
            "c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  annotations:\n"
            "    gitsync.dev/ignore-differences: /data/a, .data.b\n"
        },
        "",
        "apps/web/templates/c.yaml:1: ConfigMap/c: annotation gitsync.dev/ignore-differences: '.data.b' is not a JSON "
        "pointer",
        id="ignore-differences-not-a-pointer",
    ),
]


@pytest.mark.parametrize(("templates", "values", "expected"), CASES)
def test_error_names_file_line_and_problem(
    tmp_path: Path, templates: dict[str, str], values: str, expected: str
) -> None:
    message = render_error(make_repo(tmp_path, templates, values))
    assert message.startswith(expected), message


@pytest.mark.parametrize("name", ["kube-system", "shop-prod"])
def test_an_environment_declares_only_namespaces_it_may_put_objects_in(tmp_path: Path, name: str) -> None:
    """Owning a Namespace is owning everything in it (prune deletes it when it leaves the render), so even with
    cluster-scoped objects allowed an environment declares only its own namespace and its allowedNamespaces."""
    templates = {"ns.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"}
    env = "namespace: web-dev\napps: [web]\nallowedNamespaces: [monitoring]\nallowClusterScoped: true\n"
    assert render_error(make_repo(tmp_path, templates, env=env)) == (
        f"apps/web/templates/ns.yaml:1: Namespace/{name} is not environment dev's: an environment declares only its"
        " namespace 'web-dev' or one of its allowedNamespaces"
    )
    for allowed in ("web-dev", "monitoring"):
        templates["ns.yaml"] = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {allowed}\n"
        rendered = render_app(make_repo(tmp_path / allowed, templates, env=env), "dev", "web")
        assert [str(m.id) for m in rendered.manifests] == [f"Namespace/{allowed}"]


def test_a_problem_megabytes_long_is_cut_to_a_line_fit_for_a_status(tmp_path: Path) -> None:
    """fail(), required() or a function quoting its input can carry megabytes; the agent writes the message to
    ConfigMaps of 1 MiB at most and to Events."""
    message = render_error(make_repo(tmp_path, {"d.yaml": "{{ fail('x' * 3000000) }}\n"}))
    assert message == "apps/web/templates/d.yaml:1: fail: " + "x" * 994 + "... (2999006 more characters)"


def test_environment_settings_allow_other_namespaces_and_cluster_scoped_objects(tmp_path: Path) -> None:
    templates = {
        "d.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  namespace: monitoring\n---\n"
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: r\n"
    }
    env = "namespace: web-dev\napps: [web]\nallowedNamespaces: [monitoring]\nallowClusterScoped: true\n"
    rendered = render_app(make_repo(tmp_path, templates, env=env), "dev", "web")
    assert [str(m.id) for m in rendered.manifests] == [
        "ConfigMap/monitoring/c",
        "ClusterRole.rbac.authorization.k8s.io/r",
    ]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            "namespace: web-dev\napps: [web]\nprune_alow_empty: true\n",
            "environments/dev/env.yaml:3: unknown key 'prune_alow_empty'",
        ),
        ("namespace: Web_Dev\napps: [web]\n", "environments/dev/env.yaml:1: namespace must be a DNS label"),
        ("namespace: web-dev\napps: web\n", "environments/dev/env.yaml:2: apps must be a list of names"),
        (
            "namespace: web-dev\napps: [web]\nselfHeal: yes\n",
            "environments/dev/env.yaml:3: selfHeal must be true or false, got 'yes'",
        ),
        ("namespace: web-dev\napps: [other]\n", "environments/dev/env.yaml: app 'web' is not in environment dev"),
        (
            "namespace: web-dev\napps: [web]\ncluster: {kubeconfigSecret: nokey}\n",
            "environments/dev/env.yaml:3: cluster.kubeconfigSecret must be <secret>/<key>, got 'nokey'",
        ),
        (
            "namespace: web-dev\napps: [web]\ncluster:\n  server: https://x\n",
            "environments/dev/env.yaml:4: unknown key cluster.server (known: name, kubeconfigSecret)",
        ),
        ("namespace: web-dev\napps: [web]\ncluster: Prod_EU\n", "environments/dev/env.yaml:3: cluster must be"),
        (
            "namespace: web-dev\napps:\n  - web\n  - ../shared\n",
            "environments/dev/env.yaml:2: apps: '../shared' is not a DNS label (the name of a folder under apps/)",
        ),
        (
            "namespace: web-dev\napps: [web]\nlabels: {gitsync.dev/state: inventory}\n",
            "environments/dev/env.yaml:3: labels: gitsync.dev/state is reserved for gitsync's own state records",
        ),
    ],
)
def test_env_file_problems(tmp_path: Path, env: str, expected: str) -> None:
    assert render_error(make_repo(tmp_path, {"d.yaml": "a: 1\n"}, env=env)).startswith(expected)


def test_an_environment_names_its_cluster(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"d.yaml": "a: 1\n"}, env="namespace: web-dev\napps: [web]\ncluster: prod-eu\n")
    assert load_environment(repo, "dev").cluster == ClusterRef("prod-eu")
    (repo / "environments" / "dev" / "env.yaml").write_text(
        "namespace: web-dev\napps: [web]\ncluster: {kubeconfigSecret: prod-kubeconfig/config}\n"
    )
    assert load_environment(repo, "dev").cluster == ClusterRef("prod-kubeconfig", "prod-kubeconfig/config")


def test_missing_files(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {})
    with pytest.raises(RenderError, match=r"^environments/nope/env\.yaml: environment file does not exist$"):
        render_app(repo, "nope", "web")
    (repo / "apps" / "web" / "chart.yaml").unlink()
    assert render_error(repo) == "apps/web/chart.yaml: chart file does not exist"


def test_bad_set_is_reported(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"d.yaml": "a: 1\n"})
    assert render_error(repo, sets=["novalue"]).startswith("--set: expected key.path=value")
    assert render_error(repo, sets=["env[0].name=x"]) == (
        "--set: env[0].name: list indexes like 'env[0]' are not supported; set the whole list in a values file"
    ), "Helm's list syntax is refused, not taken as a key nothing reads"


def test_a_failing_template_fails_the_whole_render(tmp_path: Path) -> None:
    good = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n"
    repo = make_repo(tmp_path, {"a.yaml": good, "z.yaml": good.replace("ok", "{{ values.nope }}")})
    assert render_error(repo).startswith("apps/web/templates/z.yaml:4: undefined value values.nope")


def test_bytes_that_are_not_utf8_are_named_at_their_line(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"c.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"})
    template = repo / "apps" / "web" / "templates" / "c.yaml"
    template.write_bytes(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  k: caf\xe9\n")
    assert render_error(repo) == (
        "apps/web/templates/c.yaml:6: not UTF-8 text: byte 0xe9 at column 9 (save the file as UTF-8)"
    )

    template.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n")
    (repo / "environments" / "dev" / "values" / "web.yaml").write_bytes(b"a: 1\nb: \xff\n")
    assert render_error(repo) == (
        "environments/dev/values/web.yaml:2: values file: not UTF-8 text: byte 0xff at column 4"
        " (save the file as UTF-8)"
    )
