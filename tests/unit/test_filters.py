"""Helm's vocabulary in gitsync templates: each filter and function as a chart author sees it in the output."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
import yaml

from renderers import RenderError
from renderers.chart import load_chart
from renderers.sandbox import RenderTooSlow, Stream, time_limit
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


GROWS = "{% set s = 'a' * 2100 %}{% set t = '\\t' * 2100 %}"


@pytest.mark.parametrize(
    "template",
    [
        "{{ s.replace('a', s) }}",
        "{{ s.replace('', s) }}",
        "{{ s | replace('', s) }}",
        "{{ s.join(s) }}",
        "{{ s.join(s | list | map('upper')) }}",
        "{{ t.expandtabs(2100) }}",
        "{{ s.translate({97: s}) }}",
        "{{ s | wordwrap(1, true, s) }}",
        "{{ ('%(a)s' * 2100) | format(a=s) }}",
        "{{ ('%(a)s' * 2100) % {'a': s} }}",
        "{{ ('{0}' * 2100).format(s) }}",
        "{{ ('{a}' * 2100).format_map({'a': s}) }}",
        "{{ printf('%[1]s' * 2100, s) }}",
        "{{ regexReplaceAll('', s, s) }}",
        "{{ regexReplaceAllLiteral('', s, s) }}",
    ],
)
def test_a_string_call_that_would_grow_past_the_limit_is_refused_before_it_is_built(
    tmp_path: Path, template: str
) -> None:
    """Each of these builds its result in one C call (4.4 M characters here; 10 GB with 100,000 characters, past
    any memory the agent has): refused from the arguments ("width or count"), not after building it ("value")."""
    with pytest.raises(
        RenderError, match=r"^apps/demo/templates/out\.yaml:1: not allowed in templates: width or count"
    ):
        render_text(tmp_path, GROWS + template)


@pytest.mark.parametrize(
    "template",
    [
        "{{ until(300000) | length }}",
        "{{ splitList(',', 'a,' * 300000) | length }}",
        "{{ split(',', 'a,' * 300000) | length }}",
        "{{ regexFindAll('a', 'a' * 300000, -1) | length }}",
        "{{ regexSplit(',', 'a,' * 300000, -1) | length }}",
        "{{ ('a\\n' * 300000).splitlines() | length }}",
        "{{ ('a ' * 300000).split() | length }}",
        "{{ ('a,' * 300000).split(',') | length }}",
        "{{ ('a' * 300000) | list | length }}",
        "{{ ('a' * 300000) | batch(1) | list | length }}",
        "{{ ('a' * 300000) | list | map('upper') | list | length }}",
    ],
)
def test_a_list_of_more_items_than_any_chart_needs_is_refused_as_it_is_made(tmp_path: Path, template: str) -> None:
    """Small as text, large as objects: 4 M characters split or batched into items took 130-440 MiB before the
    size check saw the result, past the agent's 256Mi with two renders at once."""
    with pytest.raises(RenderError, match=r"^apps/demo/templates/out\.yaml:1: .*more than 200000 items"):
        render_text(tmp_path, template)
    assert render_text(tmp_path / "fine", template.replace("300000", "1000")) in ("1000", "1001")  # a,a,: 1001


def test_wordwrap_takes_texts_it_wraps_in_well_under_the_time_limit(tmp_path: Path) -> None:
    """A single long word is cut one line at a time, each cut copying the rest: 1 M characters took 23 s."""
    with pytest.raises(RenderError, match=r"^apps/demo/templates/out\.yaml:1: wordwrap: 300000 characters, more"):
        render_text(tmp_path, "{{ ('a' * 300000) | wordwrap(1) }}")
    assert render_text(tmp_path / "fine", "{{ 'aaaa bb' | wordwrap(3) }}") == "aaa\na\nbb"


@pytest.mark.timeout(30)
def test_lists_are_added_in_linear_time(tmp_path: Path) -> None:
    """Python's sum copies the total so far at every item, as concat measured it: 100,000 lists took 15 s and
    over a minute inside one call the time limit cannot see."""
    many = "{% set l = [[1]] * 100000 %}{{ l | sum(start=[]) | length }} {{ concat(*l) | length }}"
    assert render_text(tmp_path, many) == "100000 100000"
    assert render_text(tmp_path / "same", "{{ [[1], [2, 3]] | sum(start=[0]) }} {{ [1, 2] | sum }}") == "[0, 1, 2, 3] 3"
    with pytest.raises(RenderError, match=r'can only concatenate list \(not "int"\) to list'):
        render_text(tmp_path / "int", "{{ [[1], 2] | sum(start=[]) }}")


def test_a_format_width_is_refused_in_str_format_too(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="format width is too large"):
        render_text(tmp_path, "{{ '{:09999999}'.format(1) }}")


@pytest.mark.timeout(30)
def test_uniq_and_without_run_in_linear_time_and_keep_their_results(tmp_path: Path) -> None:
    """Comparing every item with every other one took minutes for 300,000 items, inside one call the render's
    time limit cannot see."""
    many = "{% set l = range(100000) | list %}{{ uniq(l + l + l) | length }} {{ without(l + l, *l) | length }}"
    assert render_text(tmp_path, many) == "100000 0"
    kinds = (
        "{{ uniq([1, 1, 'a', {'b': [1]}, {'b': [1]}, [2], [2]]) | toJson }}"
        " {{ without([1, 2, {'a': 1}, [3]], 2, [3]) | toJson }}"
    )
    assert render_text(tmp_path / "kinds", kinds) == '[1,"a",{"b":[1]},[2]] [1,{"a":1}]'


@pytest.mark.timeout(30)
def test_patterns_run_in_time_linear_in_the_text_as_gos_regexp(tmp_path: Path) -> None:
    """A pattern that backtracks exponentially in Python's re (34 characters: minutes inside one C call that the
    render's time limit cannot interrupt, the whole agent frozen) answers at once, as in Helm (Go's RE2); so does a
    semver range over one long word (quadratic before)."""
    hostile = "{{ regexMatch('^(a+)+$', values.text) }} {{ regexReplaceAll('(a|aa)+$', values.text, '') | length }}"
    assert render_text(tmp_path, hostile, {"text": "a" * 50_000 + "b"}) == "false 50001"
    with pytest.raises(RenderError, match=r"semver: 'x+\.\.\. \(\d+ more characters\)$"):
        render_text(tmp_path / "range", "{{ semverCompare(values.c, '1.0.0') }}", {"c": ">=0.1 " + "x" * 200_000})


def test_patterns_go_refuses_are_refused_in_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(RenderError) as err:
        render_text(tmp_path, "{{ regexMatch('(a)\\\\1', 'aa') }}")
    assert str(err.value) == "apps/demo/templates/out.yaml:1: regex '(a)\\\\1': invalid escape sequence: \\1"
    assert capfd.readouterr().err == "", "a chart's bad pattern is not written to the agent's stderr"


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


# Helm's wider vocabulary (Go template builtins and Sprig): each case quotes the result Helm or Sprig documents
# (https://masterminds.github.io/sprig/, https://helm.sh/docs/chart_template_guide/function_list/, Go's text/template
# and fmt). Functions take Helm's arguments in Helm's order; as filters the piped value comes last.
SPRIG_CASES = [
    # (template, expected output, the documented result)
    ('{{ printf("%s-%d", "web", 3) }}', "web-3", 'fmt: Sprintf("%s-%d", "web", 3) = "web-3"'),
    (
        '{{ printf("%v|%5s|%-4s|%q|%t|%.2f", list(1, 2), "ab", "x", "y", true, 3.14159) }}',
        '[1 2]|   ab|x   |"y"|true|3.14',
        "fmt: %v [1 2], %5s right-aligns, %-4s left-aligns, %q quotes, %.2f 3.14",
    ),
    ('{{ printf("%d %s", "x") }}', "%!d(string=x) %!s(MISSING)", "fmt: wrong type %!d(string=x); missing %!s(MISSING)"),
    ('{{ print("a", 1, 2, "b") }}', "a1 2b", "fmt.Sprint: spaces are added between operands when neither is a string"),
    ('{{ println("a", 1) }}', "a 1\n", "fmt.Sprintln: spaces between operands, a newline appended"),
    (
        "{{ toString(3) }} {{ toString(true) }} {{ toString(none) }} {{ toString(dict('a', 1)) }}",
        "3 true <nil> map[a:1]",
        "toString: convert to a string (Go's %v)",
    ),
    (
        '{{ contains("cat", "catch") }} {{ "catch" | contains("cat") }}',
        "true true",
        'contains "cat" "catch": returns true because catch contains cat',
    ),
    (
        '{{ hasPrefix("cat", "catch") }} {{ "catch" | hasSuffix("ch") }}',
        "true true",
        'hasPrefix "cat" "catch": returns true because catch has the prefix cat',
    ),
    ('{{ trim("   hello    ") }}', "hello", 'trim "   hello    ": produces hello'),
    ('{{ trimAll("$", "$5.00") }}', "5.00", 'trimAll "$" "$5.00": returns 5.00 (as a string)'),
    ('{{ upper("hello") }} {{ lower("HELLO") }}', "HELLO hello", 'upper "hello" returns HELLO; lower "HELLO" hello'),
    ('{{ substr(0, 5, "hello world") }}', "hello", 'substr 0 5 "hello world": returns hello'),
    (
        '{{ cat("hello", "beautiful", "world") }}',
        "hello beautiful world",
        'cat "hello" "beautiful" "world": produces hello beautiful world',
    ),
    (
        '{{ camelcase("http_server") }} {{ kebabcase("FirstName") }} {{ untitle("Hello World") }}',
        "HttpServer first-name hello world",
        'camelcase "http_server" produces HttpServer; kebabcase "FirstName" first-name;'
        ' untitle "Hello World" hello world',
    ),
    (
        '{{ splitList("$", "foo$bar$baz") | toString }}',
        "[foo bar baz]",
        'splitList "$" "foo$bar$baz": produces [foo bar baz]',
    ),
    (
        '{{ split("$", "foo$bar$baz") | toString }}',
        "map[_0:foo _1:bar _2:baz]",
        'split "$" "foo$bar$baz": produces map{_0: foo, _1: bar, _2: baz}',
    ),
    (
        '{{ splitn("$", 2, "foo$bar$baz") | toString }}',
        "map[_0:foo _1:bar$baz]",
        'splitn "$" 2 "foo$bar$baz": produces map{_0: foo, _1: bar$baz}',
    ),
    (
        '{{ sha1sum("Hello world!") }}',
        "d3486ae9136e7856bc42212385ea797094475802",
        'sha1sum "Hello world!": d3486ae9136e7856bc42212385ea797094475802 (SHA-1 of the text)',
    ),
    ('{{ base("foo/bar/baz") }}', "baz", 'base "foo/bar/baz": returns baz'),
    ('{{ urlquery("a b&c") }}', "a+b%26c", "text/template urlquery: the escaped value for a URL query"),
    (
        '{{ (urlParse("http://admin:secret@server.com:8080/api?list=false#anchor")).host }}',
        "server.com:8080",
        "urlParse: host server.com:8080, path /api, query list=false, userinfo admin:secret",
    ),
    (
        '{{ regexMatch("^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\\\.[A-Za-z]{2,}$", "test@acme.com") }}',
        "true",
        'regexMatch "^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}$" "test@acme.com": produces true',
    ),
    (
        '{{ regexFind("[a-zA-Z][1-9]", "abcd1234") }} {{ mustRegexFind("x", "abc") }}|',
        "d1 |",
        'regexFind "[a-zA-Z][1-9]" "abcd1234": produces d1',
    ),
    (
        '{{ regexReplaceAll("a(x*)b", "-ab-axxb-", "${1}W") }}',
        "-W-xxW-",
        'regexReplaceAll "a(x*)b" "-ab-axxb-" "${1}W": produces -W-xxW-',
    ),
    (
        '{{ regexReplaceAllLiteral("a(x*)b", "-ab-axxb-", "${1}") }}',
        "-${1}-${1}-",
        'regexReplaceAllLiteral "a(x*)b" "-ab-axxb-" "${1}": produces -${1}-${1}-',
    ),
    ('{{ regexSplit("z+", "pizza", -1) | toString }}', "[pi a]", 'regexSplit "z+" "pizza" -1: produces [pi a]'),
    # Go's regexp, not Python's: groups are not parts, an empty match right after a match does not count
    # (the results of Go's regexp.Split, FindAllString and ReplaceAllString for these arguments).
    ('{{ regexSplit("(,)", "a,b", -1) | toString }}', "[a b]", "regexSplit: a group's text is not a part"),
    (
        '{{ regexSplit("a*", "abaabaccadaaae", 5) | toJson }}',
        '["","b","b","c","cadaaae"]',
        'regexp.Split "a*" "abaabaccadaaae" 5 in Go\'s documentation',
    ),
    ('{{ regexFindAll("a*", "abaab", -1) | toJson }}', '["a","aa",""]', "regexFindAll: Go's empty matches"),
    ('{{ regexReplaceAll("x*", "abxd", "-") }}', "-a-b-d-", "regexReplaceAll: Go's empty matches"),
    (
        '{{ semverCompare("1.2.3", "1.2.3") }} {{ semverCompare("^1.2.0", "1.2.3") }}'
        ' {{ semverCompare("~1.2.0", "1.3.0") }}',
        "true true false",
        'semverCompare "1.2.3" "1.2.3" true; "^1.2.0" "1.2.3" true; ~1.2.0 is >= 1.2.0, < 1.3.0',
    ),
    (
        '{{ semverCompare(">=1.19-0", "v1.28.3-eks-4f4795d") }} {{ semverCompare(">=1.19", "v1.28.3-eks-4f4795d") }}',
        "true false",
        "semver: a prerelease (v1.28.3-eks-...) only matches constraints with one (>=1.19-0), Helm's -0 idiom",
    ),
    (
        '{{ semverCompare(">= 1.2 < 3.0.0 || >= 4.2.3", "4.5.0") }} {{ semverCompare("1.2.x", "1.3.0") }}'
        ' {{ semverCompare("1.2 - 1.4.5", "1.4.5") }} {{ semverCompare("^0.2.3", "0.3.0") }}',
        "true false true false",
        "semver: || is OR, 1.2.x is >= 1.2.0 < 1.3.0, 1.2 - 1.4.5 is >= 1.2 <= 1.4.5, ^0.2.3 is < 0.3.0",
    ),
    (
        '{{ (semver("1.2.3-alpha.1+123")).Prerelease }} {{ (semver("1.2.3")).Major }}',
        "alpha.1 1",
        'semver "1.2.3-alpha.1+123": Major 1, Prerelease alpha.1, Metadata 123',
    ),
    ("{{ list(1, 2, 3, 4, 5) | toString }}", "[1 2 3 4 5]", "list 1 2 3 4 5: creates a list of [1 2 3 4 5]"),
    (
        "{{ first(list(1, 2, 3)) }} {{ last(list(1, 2, 3)) }} {{ rest(list(1, 2, 3)) | toString }}"
        " {{ initial(list(1, 2, 3)) | toString }}",
        "1 3 [2 3] [1 2]",
        "first $myList returns 1; last 3; rest [2 3]; initial [1 2] (on [1 2 3])",
    ),
    (
        "{{ append(list(1, 2, 3, 4, 5), 6) | toString }} {{ prepend(list(1, 2, 3, 4, 5), 0) | toString }}",
        "[1 2 3 4 5 6] [0 1 2 3 4 5]",
        "append $myList 6 sets $new to [1 2 3 4 5 6]; prepend $myList 0 [0 1 2 3 4 5]",
    ),
    (
        "{{ concat(list(1, 2, 3, 4, 5), list(6, 7), list(8)) | toString }}",
        "[1 2 3 4 5 6 7 8]",
        "concat $myList ( list 6 7 ) ( list 8 ): [1 2 3 4 5 6 7 8]",
    ),
    (
        "{{ reverse(list(1, 2, 3, 4, 5)) | toString }} {{ list(1, 1, 1, 2) | uniq | toString }}",
        "[5 4 3 2 1] [1 2]",
        "reverse $myList: [5 4 3 2 1]; list 1 1 1 2 | uniq: [1 2]",
    ),
    (
        "{{ without(list(1, 2, 3, 4, 5), 3) | toString }} {{ has(4, list(1, 2, 3, 4, 5)) }}"
        " {{ has('hello', list(1)) }}",
        "[1 2 4 5] true false",
        'without $myList 3: [1 2 4 5]; has 4 $myList returns true, has "hello" false',
    ),
    (
        "{{ compact(list(1, '', 2, none, 0)) | toString }} {{ sortAlpha(list('c', 'a', 'b')) | toString }}",
        "[1 2] [a b c]",
        'compact (list 1 "" 2): [1 2] (empty items removed); sortAlpha sorts in lexical order',
    ),
    (
        "{{ until(5) | toString }} {{ tuple(1, 'a') | toString }}",
        "[0 1 2 3 4] [1 a]",
        "until 5: generates [0, 1, 2, 3, 4]; tuple is list",
    ),
    (
        "{{ slice(list(1, 2, 3, 4, 5), 1, 3) | toString }} {{ slice('hello', 1) }}",
        "[2 3] ello",
        "slice $myList 1 3 returns [2 3] (Go's slice: slice x 1 2 is x[1:2])",
    ),
    (
        "{{ dict('name1', 'value1', 'name2', 'value2', 'name3') | toString }}",
        "map[name1:value1 name2:value2 name3:]",
        'dict "name1" "value1" "name2" "value2" "name3": name3 gets the empty string',
    ),
    (
        "{{ get(dict('a', 1), 'a') }} {{ get(dict('a', 1), 'b') }}|",
        "1 |",
        'get $myDict "name1": value1, or "" if missing',
    ),
    (
        "{% set d = set(dict('a', 1), 'b', 2) %}{{ d | toString }} {{ unset(d, 'a') | toString }}",
        "map[a:1 b:2] map[b:2]",
        'set $myDict "name4" "value4" adds the key (a new dict here); unset removes it',
    ),
    (
        "{{ hasKey(dict('name1', 'value1'), 'name1') }} {{ hasKey(dict(), 'x') }}",
        "true false",
        'hasKey $myDict "name1": returns true if the dict contains the key',
    ),
    (
        "{{ pick(dict('name1', 1, 'name2', 2, 'name3', 3), 'name1', 'name2') | toString }}"
        " {{ omit(dict('name1', 1, 'name2', 2, 'name3', 3), 'name1', 'name3') | toString }}",
        "map[name1:1 name2:2] map[name2:2]",
        'pick $myDict "name1" "name2" returns {name1, name2}; omit $myDict "name1" "name3" returns {name2}',
    ),
    (
        "{{ keys(dict('b', 1, 'a', 2), dict('c', 3)) | toString }}",
        "[a b c]",
        "keys: a list of all keys of the dicts (sorted here, Go's order is random; docs: use sortAlpha)",
    ),
    (
        "{{ merge(dict('default', 'default', 'overwrite', 'me', 'key', true), dict('overwrite', 'overwritten',"
        " 'key', false)) | toString }}",
        "map[default:default key:true overwrite:me]",
        "merge $dest $source: precedence to the dest dictionary",
    ),
    (
        "{{ mergeOverwrite(dict('default', 'default', 'overwrite', 'me', 'key', true), dict('overwrite', 'overwritten',"
        " 'key', false)) | toString }}",
        "map[default:default key:false overwrite:overwritten]",
        "mergeOverwrite: newdict default: default, overwrite: overwritten, key: false",
    ),
    (
        "{{ merge(dict('a', dict('x', 1)), dict('a', dict('x', 2, 'y', 3))) | toString }}",
        "map[a:map[x:1 y:3]]",
        "merge: a deep merge operation",
    ),
    ("{{ deepCopy(dict('a', list(1))) | toString }}", "map[a:[1]]", 'deepCopy: dict "a" 1 | deepCopy gives a copy'),
    (
        "{{ dig('user', 'role', 'name', 'guest', values.d) }} {{ dig('user', 'x', 'guest', values.d) }}",
        "admin guest",
        'dig "user" "role" "name" "guest" $dict: the nested value, or the default "guest" when a key is missing',
    ),
    (
        "{{ index(values.d, 'user', 'role', 'name') }} {{ index(list(1, 2), 1) }} {{ len(list(1, 2, 3)) }}",
        "admin 2 3",
        'text/template: index $d "user" "role" "name" is d.user.role.name; len returns the length',
    ),
    (
        "{{ eq(2, 1, 2) }} {{ ne(1, 2) }} {{ lt(1, 2) }} {{ le(2, 2) }} {{ gt(1, 2) }} {{ ge(2, 3) }}",
        "true true true true false false",
        "text/template: eq arg1 arg2 arg3 is arg1==arg2 || arg1==arg3",
    ),
    (
        "{{ empty('') }} {{ empty(0) }} {{ empty(list()) }} {{ empty(values.nope) }} {{ empty('x') }}",
        "true true true true false",
        'empty: returns true if the given value is considered empty ("", 0, [], nil)',
    ),
    (
        "{{ coalesce(0, 1, 2) }} {{ coalesce(values.name, values.parent.name, 'Matt') }}",
        "1 Matt",
        'coalesce 0 1 2 returns 1; coalesce .name .parent.name "Matt" the first non-empty',
    ),
    (
        "{{ all(1, 'a') }} {{ all(1, '') }} {{ any(0, '', 'x') }}",
        "true false true",
        "all: true if all values are non-empty; any: true if any is non-empty",
    ),
    (
        '{{ ternary("foo", "bar", true) }} {{ false | ternary("foo", "bar") }}',
        "foo bar",
        'ternary "foo" "bar" true returns "foo"; false | ternary "foo" "bar" returns "bar"',
    ),
    (
        "{{ kindOf('hello') }} {{ kindIs('int', 123) }} {{ kindOf(list()) }} {{ kindOf(dict()) }}",
        "string true slice map",
        'kindOf "hello" is string; kindIs "int" 123 is true',
    ),
    (
        "{{ typeOf(1.5) }} {{ typeIs('string', 'x') }} {{ deepEqual(list(1, 2), list(1, 2)) }}",
        "float64 true true",
        "typeOf returns the Go type; deepEqual (list 1 2 3) (list 1 2 3) returns true",
    ),
    (
        "{{ int('12') }} {{ int64(3.7) }} {{ float64('1.5') }} {{ atoi('42') }} {{ int('0x1F') }}",
        "12 3 1.5 42 31",
        "int, int64, float64 convert; atoi converts a string to an integer",
    ),
    (
        "{{ add(1, 2, 3) }} {{ add1(4) }} {{ sub(5, 7) }} {{ mul(2, 3, 4) }} {{ div(7, 2) }} {{ div(-7, 2) }}"
        " {{ mod(-7, 3) }}",
        "6 5 -2 24 3 -3 -1",
        "math: add sums, sub subtracts, div performs integer division (Go: toward zero), mod modulo",
    ),
    (
        "{{ max(1, 2, 3) }} {{ min(1, 2, 3) }} {{ floor(123.9999) }} {{ mulf(1.5, 2, 2) }} {{ divf(10, 4) }}",
        "3 1 123 6 2.5",
        "max 1 2 3 returns 3; min 1; floor 123.9999 returns 123.0 (printed 123); mulf 1.5 2 2 returns 6",
    ),
    (
        "{{ dict('a', '<b>') | toPrettyJson }}",
        '{\n  "a": "\\u003cb\\u003e"\n}',
        "toPrettyJson: indented JSON (Go's encoder escapes <, >, & as \\u003c ...)",
    ),
    (
        "{{ dict('foo', '<bar>') | toRawJson }} {{ dict('a', 1) | mustToJson }}",
        '{"foo":"<bar>"} {"a":1}',
        'toRawJson .Item: {"foo":"<bar>"} (no HTML escaping)',
    ),
    (
        "{{ (fromJson('{\"a\": [1, 2]}')).a | toString }} {{ fromJsonArray('[1, \"b\"]') | toString }}"
        " {{ fromYamlArray('- a\n- b') | toString }}",
        "[1 2] [1 b] [a b]",
        "Helm: fromJson converts a JSON document into an object; fromJsonArray, fromYamlArray into a list",
    ),
    (
        "{{ toStrings(list(1, 2, 3)) | toString }} {{ (buildCustomCert(values.crt, values.key)).Cert }}",
        "[1 2 3] -----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----",
        "toStrings: a list of strings; buildCustomCert: base64 PEM cert and key in, object with Cert and Key out",
    ),
    (
        '{{ default("foo", values.nope) }} {{ trimPrefix("-", "-hello") }} {{ trunc(5, "hello world") }}'
        ' {{ required("set x", "ok") }} {{ join(",", list(1, 2)) }} {{ indent(2, "a") }}',
        "foo hello hello ok 1,2   a",
        'Helm order as functions: default "foo" .Bar; trimPrefix "-" "-hello" returns hello; trunc 5 "hello world"',
    ),
]


@pytest.mark.parametrize(("template", "expected", "documented"), SPRIG_CASES)
def test_helm_function_gives_the_documented_result(
    tmp_path: Path, template: str, expected: str, documented: str
) -> None:
    cert = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"
    key = "-----BEGIN RSA PRIVATE KEY-----\ny\n-----END RSA PRIVATE KEY-----"
    values = {
        "d": {"user": {"role": {"name": "admin"}}},
        "name": "",
        "parent": {"name": None},
        "crt": base64.b64encode(cert.encode()).decode(),
        "key": base64.b64encode(key.encode()).decode(),
    }
    assert render_text(tmp_path, template, values) == expected, documented


@pytest.mark.parametrize(
    ("call", "why"),
    [
        ("randAlphaNum(8)", "it returns a new random value on every render"),
        ("now()", "it reads the clock"),
        ('now() | date("2006-01-02")', "it reads the clock"),
        ("uuidv4()", "it returns a new random value on every render"),
        ('genCA("ca", 365)', "it makes a new random key on every render; issue certificates with cert-manager"),
        ('"x" | htpasswd("y")', "it returns a new random value"),
    ],
)
def test_functions_that_are_not_a_function_of_the_commit_are_refused_saying_why(
    tmp_path: Path, call: str, why: str
) -> None:
    with pytest.raises(RenderError) as err:
        render_text(tmp_path, f"a: 1\nb: {{{{ {call} }}}}\n")
    name = call.split("(")[0].split("|")[-1].strip()
    if call.startswith("now"):
        name = "now"
    assert str(err.value).startswith(
        f"apps/demo/templates/out.yaml:2: not allowed in templates: {name} is not available: renders must be"
        f" deterministic (same commit, same manifests), and {why}"
    ), str(err.value)


def test_functions_that_change_a_dict_in_helm_leave_values_unchanged(tmp_path: Path) -> None:
    template = (
        "{% set d = set(values.m, 'b', 2) %}{% set e = merge(values.m, dict('c', 3)) %}"
        "{{ values.m | toString }} {{ d | toString }} {{ e | toString }}"
    )
    assert render_text(tmp_path, template, {"m": {"a": 1}}) == "map[a:1] map[a:1 b:2] map[a:1 c:3]"


def test_the_time_limit_holds_inside_one_long_call(tmp_path: Path) -> None:
    """Wrapping one long word at width 1 is a single filter call, running in Python, with no charge of the
    template in it: without the watchdog it ran to its end however long it took."""
    with time_limit(0.05), pytest.raises(RenderError) as err:
        render_text(tmp_path, "{% set s = 'a' * 100000 %}\n{{ s | wordwrap(1) }}{{ s | wordwrap(1) }}")
    assert str(err.value) == "apps/demo/templates/out.yaml:2: render took longer than 0.05 s"
    with time_limit(5.0):
        assert render_text(tmp_path / "quick", "{{ 'aaa' | wordwrap(1) }}") == "a\na\na"


def test_a_time_limit_reached_between_two_chunks_is_reported_at_the_template_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watchdog's error can land while the template is paused between two chunks of output, outside every
    template frame (it did in CI): it is still reported at the line that produced the last chunk."""

    class StallsAfterTheThirdChunk(Stream):
        def __iter__(self) -> Iterator[tuple[str, CodeType | None, int]]:
            for count, item in enumerate(super().__iter__(), start=1):
                yield item
                if count == 3:  # "a: 1\n" (line 1), "\nk" (line 2), "1" (line 3)
                    raise RenderTooSlow("render took longer than 0.05 s")

    monkeypatch.setattr("renderers.templating.Stream", StallsAfterTheThirdChunk)
    with pytest.raises(RenderError) as err:
        render_text(tmp_path, "a: 1\n{% for i in [1, 2] %}\nk{{ i }}: x\n{% endfor %}\n")
    assert str(err.value) == "apps/demo/templates/out.yaml:3: render took longer than 0.05 s"
