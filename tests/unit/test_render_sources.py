"""Where an app's objects come from, as a user of kubectl or Helm expects it: List documents, plain-manifest
apps, templates in subfolders, files included verbatim, and content that merely looks like a template."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitsync.model import LABEL_APP, LABEL_ENV, LABEL_MANAGED_BY
from renderers import RenderError, render_app


def make_app(root: Path, files: dict[str, str], env: str = "namespace: web-dev\napps: [web]\n") -> Path:
    """An app ``web`` in environment ``dev`` made of ``files`` (paths relative to ``apps/web/``)."""
    app = root / "apps" / "web"
    for name, text in files.items():
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(text)
    (root / "environments" / "dev").mkdir(parents=True, exist_ok=True)
    (root / "environments" / "dev" / "env.yaml").write_text(env)
    return root


def ids(root: Path) -> list[str]:
    return [str(m.id) for m in render_app(root, "dev", "web").manifests]


def error(root: Path) -> str:
    with pytest.raises(RenderError) as err:
        render_app(root, "dev", "web")
    assert "\n" not in str(err.value)
    return str(err.value)


CHART = "name: web\n"


def test_a_v1_list_stands_for_its_items_as_kubectl_expands_them(tmp_path: Path) -> None:
    listing = (
        "apiVersion: v1\nkind: List\nmetadata: {}\nitems:\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
        "- apiVersion: v1\n  kind: ServiceList\n  items:\n"
        "  - {apiVersion: v1, kind: Service, metadata: {name: s}, spec: {ports: [{port: 80}]}}\n"
        "- {apiVersion: v1, kind: ConfigMap, metadata: {name: b, namespace: web-dev}}\n"
    )
    root = make_app(tmp_path, {"chart.yaml": CHART, "templates/all.yaml": listing})
    rendered = render_app(root, "dev", "web")
    assert [str(m.id) for m in rendered.manifests] == [
        "ConfigMap/web-dev/a",
        "ConfigMap/web-dev/b",
        "Service/web-dev/s",
    ]
    for manifest in rendered.manifests:
        labels = manifest.body["metadata"]["labels"]
        assert (labels[LABEL_MANAGED_BY], labels[LABEL_APP], labels[LABEL_ENV]) == ("gitsync", "web", "dev")
        assert manifest.source == "apps/web/templates/all.yaml:1"


RULE = """\
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: node
spec:
  groups:
  - name: node
    rules:
    - alert: NodeDown
      annotations:
        summary: '{{ $labels.instance }} is down {# not a comment #}'
"""


def test_a_plain_manifests_app_is_taken_verbatim_and_owned_placed_ordered_like_a_chart(tmp_path: Path) -> None:
    root = make_app(
        tmp_path,
        {
            "manifests/rules.yaml": RULE,
            "manifests/crds/dashboards.json": '{\n\t"apiVersion": "v1", "kind": "ConfigMap",\n\t"metadata": {"name":'
            ' "dash"},\n\t"data": {"d.json": "{\\"title\\": \\"{{ $cluster }}\\"}"}\n}\n',
            "manifests/base.yml": "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sa\n",
            "manifests/README.md": "not a manifest",
            "manifests/.hidden.yaml": "not: read",
        },
        env="namespace: web-dev\napps: [web]\nlabels: {team: core}\n",
    )
    rendered = render_app(root, "dev", "web")
    assert [str(m.id) for m in rendered.manifests] == [
        "ServiceAccount/web-dev/sa",
        "ConfigMap/web-dev/dash",
        "PrometheusRule.monitoring.coreos.com/web-dev/node",
    ]
    rule = rendered.manifests[2]
    assert rule.body["spec"]["groups"][0]["rules"][0]["annotations"]["summary"] == (
        "{{ $labels.instance }} is down {# not a comment #}"
    )
    assert rule.source == "apps/web/manifests/rules.yaml:1"
    assert rendered.manifests[1].body["data"] == {"d.json": '{"title": "{{ $cluster }}"}'}
    assert rule.body["metadata"]["labels"] == {
        "team": "core",
        LABEL_MANAGED_BY: "gitsync",
        LABEL_APP: "web",
        LABEL_ENV: "dev",
    }
    assert render_app(root, "dev", "web").digest == rendered.digest
    (root / "apps/web/manifests/base.yml").write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sb\n")
    assert render_app(root, "dev", "web").digest != rendered.digest


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"manifests/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  name: d\n"},
            "apps/web/manifests/a.yaml:5: invalid YAML: duplicate key 'name'",
            id="invalid-yaml",
        ),
        pytest.param(
            {
                "manifests/a.yaml": "# x\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
                "  namespace: kube-system\n"
            },
            "apps/web/manifests/a.yaml:3: ConfigMap/c is in namespace 'kube-system', outside environment dev's",
            id="foreign-namespace",
        ),
        pytest.param(
            {
                "manifests/a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
                "manifests/sub/b.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n",
            },
            "apps/web/manifests/sub/b.yaml:1: duplicate object ConfigMap/web-dev/c"
            " (first defined at apps/web/manifests/a.yaml:1)",
            id="duplicate",
        ),
        pytest.param(
            {"chart.yaml": CHART, "manifests/a.yaml": "a: 1\n", "templates/b.yaml": "b: 1\n"},
            "apps/web: has both templates/ (Jinja) and manifests/ (plain YAML)",
            id="both-folders",
        ),
        pytest.param(
            {"chart.yaml": CHART, "values.yaml": ""},
            "apps/web: no templates/ folder (Jinja templates) or manifests/ folder (plain YAML)",
            id="no-folder",
        ),
        pytest.param(
            {"manifests/a.yaml": "# " + "x" * (4 << 20) + "\n"},
            "apps/web/manifests/a.yaml: larger than 4 MiB, the most the renderer reads from a file",
            id="too-large",
        ),
    ],
)
def test_plain_manifest_errors_name_file_and_line(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    assert error(make_app(tmp_path, files)).startswith(expected)


def test_a_single_file_upstream_install_of_two_megabytes_renders(tmp_path: Path) -> None:
    """Projects publish their install as one file (Argo CD's install.yaml is about 1.9 MB); it renders whole."""
    document = "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{n}\ndata:\n  x: " + "y" * 5000 + "\n"
    install = "".join(document.format(n=n) for n in range(400))
    assert len(install) > 2_000_000
    root = make_app(tmp_path, {"manifests/install.yaml": install})
    assert len(ids(root)) == 400


def test_templates_in_subfolders_are_rendered_as_helm_does(tmp_path: Path) -> None:
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ include('names.cm') }}\n"
    root = make_app(
        tmp_path,
        {
            "chart.yaml": CHART,
            "templates/top.yaml": cm.replace("include('names.cm')", "'top'"),
            "templates/monitoring/rules.yaml": cm,
            "templates/monitoring/_names.j2": "{% macro cm() %}from-{{ chart.name }}{% endmacro %}",
            "templates/monitoring/deeper/x.yaml.j2": cm.replace("include('names.cm')", "'deep'"),
        },
    )
    assert ids(root) == ["ConfigMap/web-dev/deep", "ConfigMap/web-dev/from-web", "ConfigMap/web-dev/top"]
    (root / "apps/web/templates/monitoring/rules.yaml").write_text(cm + "  x: {{ values.nope }}\n")
    assert error(root) == "apps/web/templates/monitoring/rules.yaml:5: undefined value values.nope"


DASHBOARD = '{\n  "title": "Nodes {{ $cluster }}",\n  "panels": [{"legendFormat": "{{instance}} {# raw"}]\n}\n'


def test_files_are_included_verbatim_with_file_and_files(tmp_path: Path) -> None:
    template = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dash\ndata:\n"
        '  one.json: |{{ file("dashboards/nodes.json") | nindent(4) }}\n'
        '  all: {{ files("dashboards/*.json") | toJson }}\n'
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: many\n"
        'data: {{ files("*.json") | toYaml | nindent(2) }}\n'
    )
    root = make_app(
        tmp_path,
        {
            "chart.yaml": CHART,
            "templates/cm.yaml": template,
            "files/dashboards/nodes.json": DASHBOARD,
            "files/dashboards/pods.json": '{"title": "{{ $pod }}"}',
            "files/rules.txt": "not json",
        },
    )
    dash, many = render_app(root, "dev", "web").manifests
    assert dash.body["data"]["one.json"] == DASHBOARD
    assert dash.body["data"]["all"] == {"nodes.json": DASHBOARD, "pods.json": '{"title": "{{ $pod }}"}'}
    assert many.body["data"] == {"nodes.json": DASHBOARD, "pods.json": '{"title": "{{ $pod }}"}'}


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        ('file("nope.json")', "apps/web/templates/cm.yaml:2: file: no file 'nope.json' in apps/web/files/"),
        ('file("../chart.yaml")', "apps/web/templates/cm.yaml:2: file: '../chart.yaml' is not a path inside"),
        ('file("/etc/passwd")', "apps/web/templates/cm.yaml:2: file: '/etc/passwd' is not a path inside"),
        ('file("link.txt")', "apps/web/templates/cm.yaml:2: file: no file 'link.txt' in apps/web/files/"),
    ],
)
def test_file_reads_only_the_charts_files_folder(tmp_path: Path, call: str, expected: str) -> None:
    root = make_app(tmp_path, {"chart.yaml": CHART, "templates/cm.yaml": f"a: 1\nb: {{{{ {call} }}}}\n"})
    (root / "apps/web/files").mkdir()
    (root / "apps/web/files/link.txt").symlink_to(root / "environments/dev/env.yaml")
    assert error(root).startswith(expected)


GO_RULE = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  summary: '{{ $labels.instance }} down'\n"
SCRIPT = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  run.sh: |\n    echo ${#ARGS[@]}\n"
FIX = "to keep such text as it is, wrap it in {% raw %}...{% endraw %}, move the file to the chart's files/ folder"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        pytest.param(
            GO_RULE,
            "apps/web/templates/t.yaml:6: template syntax: unexpected char '$' at column 16: this line holds a Go"
            " template ({{ $... }} or {{ .Values... }}); " + FIX,
            id="go-template-variable",
        ),
        pytest.param(
            "a: {{ .Values.image.tag }}\n",
            "apps/web/templates/t.yaml:1: template syntax: unexpected '.': this line holds a Go template",
            id="go-template-values",
        ),
        pytest.param(
            SCRIPT + "    echo done\n{# a real comment below #}\n",
            'apps/web/templates/t.yaml:7: template syntax: "${#" is shell syntax, but Jinja reads "{#" as the start'
            " of a comment; " + FIX,
            id="shell-length-swallowed-to-a-later-comment",
        ),
        pytest.param(
            SCRIPT,
            'apps/web/templates/t.yaml:7: template syntax: Missing end of comment tag: "{#" starts a Jinja comment; '
            + FIX,
            id="shell-length-unclosed",
        ),
        pytest.param(
            "a: 1\nb: x {# note\nc: 2\n#}\n",
            'apps/web/templates/t.yaml:2: template syntax: "{#" after other text starts a Jinja comment that runs'
            " past the line and drops the text; " + FIX,
            id="inline-comment-running-on",
        ),
        pytest.param(
            "{# outer\nb: {# inner #}\nc: 1 #}\n",
            'apps/web/templates/t.yaml:1: template syntax: "{#" inside a Jinja comment: comments do not nest',
            id="nested-comment",
        ),
    ],
)
def test_content_that_looks_like_a_template_fails_at_its_line_with_the_fix(
    tmp_path: Path, template: str, expected: str
) -> None:
    root = make_app(tmp_path, {"chart.yaml": CHART, "templates/t.yaml": template})
    assert error(root).startswith(expected)


def test_comments_on_their_own_lines_or_within_a_line_and_raw_blocks_still_work(tmp_path: Path) -> None:
    template = (
        "{# a comment\n   over lines #}\napiVersion: {# inline #} v1\nkind: ConfigMap\nmetadata:\n  name: c\n"
        "data:\n  run.sh: |{% raw %}\n    echo ${#ARGS[@]} {{ $x }}\n    {# kept #}\n{% endraw %}\n"
    )
    root = make_app(tmp_path, {"chart.yaml": CHART, "templates/t.yaml": template})
    (manifest,) = render_app(root, "dev", "web").manifests
    assert manifest.body["data"] == {"run.sh": "echo ${#ARGS[@]} {{ $x }}\n{# kept #}\n"}
