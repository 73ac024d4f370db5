"""Helm's vocabulary in gitsync templates: each filter and function as a chart author sees it in the output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from renderers import RenderError
from renderers.chart import load_chart
from renderers.templating import TemplateRun


def render_text(tmp_path: Path, template: str, values: dict[str, Any] | None = None, **files: str) -> str:
    """Render one template of a throwaway chart and return its text (helpers passed as ``_name_j2=...``)."""
    chart = tmp_path / "apps" / "demo"
    (chart / "templates").mkdir(parents=True, exist_ok=True)
    (chart / "chart.yaml").write_text("name: demo\nversion: 1.0.0\n")
    (chart / "templates" / "out.yaml").write_text(template)
    for name, text in files.items():
        (chart / "templates" / name.replace("_j2", ".j2")).write_text(text)
    variables = {
        "values": values or {},
        "release": {"app": "demo", "name": "demo", "env": "dev", "namespace": "demo-dev", "revision": "abc123"},
        "chart": {"name": "demo", "version": "1.0.0"},
        "env": {"name": "dev", "namespace": "demo-dev", "labels": {}},
    }
    return TemplateRun(tmp_path, load_chart(tmp_path, "demo"), variables).render("out.yaml").text


CASES = [
    # (template, values, expected output)
    ("{{ values.m | toYaml }}", {"m": {"b": [1, 2], "a": "x"}}, "a: x\nb:\n- 1\n- 2"),
    ("{{ values.s | toYaml }}", {"s": "plain"}, "plain"),
    ("{{ values.m | toJson }}", {"m": {"b": "<&>", "a": [1, None]}}, '{"a":[1,null],"b":"<&>"}'),
    ("{{ (values.t | fromYaml).a.b }}", {"t": "a: {b: on}"}, "on"),
    ("{{ 'a\nb' | indent(2) }}", {}, "  a\n  b"),
    ("x:{{ 'a\nb' | nindent(2) }}", {}, "x:\n  a\n  b"),
    ("{{ values.v | quote }}", {"v": 'say "hi"'}, '"say \\"hi\\""'),
    ("{{ values.v | quote }}", {"v": True}, '"true"'),
    ("{{ values.v | squote }}", {"v": "it's"}, "'it''s'"),
    ("{{ 'hello' | b64enc }}", {}, "aGVsbG8="),
    ("{{ 'aGVsbG8=' | b64dec }}", {}, "hello"),
    ("{{ values.missing | default('d') }}", {}, "d"),
    ("{{ values.a.b.c | default('d') }}", {}, "d"),
    ("{{ values.zero | default(3) }}", {"zero": 0}, "3"),
    ("{{ values.empty | default('d') }}", {"empty": ""}, "d"),
    ("{{ values.set | default('d') }}", {"set": "x"}, "x"),
    ("{{ values.v | required('need v') }}", {"v": "ok"}, "ok"),
    ("{{ 'MiXed' | lower }}-{{ 'MiXed' | upper }}", {}, "mixed-MIXED"),
    ("{{ 'hello wORLD-foo' | title }}", {}, "Hello WORLD-Foo"),
    ("{{ 'abcdef' | trunc(3) }}/{{ 'abcdef' | trunc(-2) }}/{{ 'ab' | trunc(5) }}", {}, "abc/ef/ab"),
    ("{{ 'v1.2' | trimPrefix('v') }}/{{ 'a.yaml' | trimSuffix('.yaml') }}", {}, "1.2/a"),
    ("{{ 'a b c' | replace(' ', '-') }}", {}, "a-b-c"),
    ("{{ 'abc' | sha256sum }}", {}, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ("{{ tpl(values.msg) }}", {"msg": "hi {{ release.env }}", "x": 1}, "hi dev"),
    ("{{ values.flag }} {{ values.none }}|", {"flag": True, "none": None}, "true |"),
]


@pytest.mark.parametrize(("template", "values", "expected"), CASES)
def test_filter_output(tmp_path: Path, template: str, values: dict[str, Any], expected: str) -> None:
    assert render_text(tmp_path, template, values) == expected


def test_include_calls_a_helper_macro_by_file_and_name_and_pipes_into_nindent(tmp_path: Path) -> None:
    helpers = "{% macro labels(extra='') %}\napp: {{ chart.name }}\nenv: {{ release.env }}{{ extra }}\n{% endmacro %}\n"
    out = render_text(tmp_path, "labels:{{ include('helpers.labels') | nindent(2) }}", _helpers_j2=helpers)
    assert yaml.safe_load(out) == {"labels": {"app": "demo", "env": "dev"}}
    assert render_text(tmp_path, "{{ include('helpers.labels', '!') }}", _helpers_j2=helpers) == "app: demo\nenv: dev!"


def test_include_reaches_the_shared_lib_folder(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "_common.j2").write_text("{% macro team() %}web{% endmacro %}")
    assert render_text(tmp_path, "{{ include('common.team') }}") == "web"


def test_to_yaml_quotes_strings_that_would_change_type_when_read_back(tmp_path: Path) -> None:
    tricky = ["on", "no", "yes", "y", "N", "0644", "1.10", "12:30:00", "1e3", "123e4", "~", "null", "true", ""]
    out = render_text(tmp_path, "{{ values.t | toYaml }}", {"t": {s or "empty": s for s in tricky}})
    assert yaml.safe_load(out) == {s or "empty": s for s in tricky}
    for s in ("y", "N", "1e3", "123e4"):  # PyYAML reads these as strings, goyaml (kubectl, Helm) does not
        assert f": '{s}'" in out


def test_config_hash_changes_with_config_data_only(tmp_path: Path) -> None:
    cm = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n  labels: {x: '{{ values.label }}'}\n"
        "data:\n  K: {{ values.k | quote }}\n"
    )
    (tmp_path / "apps" / "demo" / "templates").mkdir(parents=True)
    (tmp_path / "apps" / "demo" / "templates" / "cm.yaml").write_text(cm)

    def hash_for(**values: str) -> str:
        return render_text(tmp_path, "{{ config_hash('cm.yaml') }}", values)

    base = hash_for(k="1", label="a")
    assert len(base) == 64
    assert hash_for(k="1", label="b") == base
    assert hash_for(k="2", label="a") != base


def test_lookup_is_refused_because_renders_must_be_deterministic(tmp_path: Path) -> None:
    with pytest.raises(
        RenderError, match=r"^apps/demo/templates/out\.yaml:2: .*lookup is not available: renders must be deterministic"
    ):
        render_text(tmp_path, "a: 1\n{{ lookup('v1', 'Secret', 'ns', 'name') }}\n")


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ 'a' * 100000000 }}", "too large"),
        ("{% set s = 'x' * 1000000 %}{{ s ~ s ~ s ~ s ~ s }}", "too large"),
        ("{{ 'x' | center(1000000000) }}", "too large"),
        ("{{ '%0999999999d' % 1 }}", "too large"),
        ("{{ 2 ** 100000000 }}", "too large"),
        ("{% set s = 'x' * 3000000 %}{% for i in range(10) %}{{ s }}{% endfor %}", "exceeds"),
        (
            "{{ values.__class__ }}",
            "not allowed in templates: access to attribute '__class__' of 'dict' object is unsafe",
        ),
        (
            "{{ values.items.append(2) }}",
            "not allowed in templates: access to attribute 'append' of 'list' object is unsafe",
        ),
    ],
)
def test_sandbox_bounds_memory_and_blocks_escapes(tmp_path: Path, template: str, problem: str) -> None:
    with pytest.raises(RenderError, match=r"^apps/demo/templates/out\.yaml:1: ") as err:
        render_text(tmp_path, template, {"items": [1]})
    assert problem in str(err.value)


@pytest.mark.parametrize("name", ["../chart.yaml", "/etc/passwd", "lib/../../x", "./out.yaml"])
def test_templates_cannot_reach_outside_the_chart(tmp_path: Path, name: str) -> None:
    with pytest.raises(RenderError, match=r"^apps/demo/templates/out\.yaml:1: template not found"):
        render_text(tmp_path, "{% include '" + name + "' %}")


def test_nondeterministic_builtins_are_gone(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="template syntax: No filter named 'random'"):
        render_text(tmp_path, "{{ [1, 2] | random }}")
    with pytest.raises(RenderError, match="undefined value lipsum"):
        render_text(tmp_path, "{{ lipsum() }}")


def test_a_key_named_like_a_dict_method_is_the_key(tmp_path: Path) -> None:
    assert (
        render_text(tmp_path, "{{ values.items }} {{ values.values | join(',') }}", {"items": 3, "values": [1, 2]})
        == "3 1,2"
    )
