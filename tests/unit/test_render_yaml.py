"""gitsync's YAML writer and readers: whatever the writer emits reads back identically, in PyYAML and in ours."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from renderers.yamlio import dump, load_manifests, load_values

_text = st.one_of(
    st.sampled_from(
        [
            "on",
            "No",
            "y",
            "N",
            "0644",
            "0x1F",
            "1.10",
            "1e3",
            "12:30:00",
            "2024-01-01",
            "~",
            "null",
            "=",
            "<<",
            "- x",
            "a: b",
            "a #b",
            "#c",
            "'q'",
            '"q"',
            "|",
            ">",
            "@x",
            "%x",
            "`x",
            "--flag=1",
            "-",
            "x\n",
            "a\nb",
            " lead",
            "trail ",
            "\ttab",
            "x\n\n",
            "\n",
            "über",
            "\x7f",
            "\U0001f600",
            "",
        ]
    ),
    st.text(max_size=20),
)
_scalars = st.one_of(_text, st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none())
_json = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(_json)
def test_dump_reads_back_identically(data: Any) -> None:
    text = dump(data, explicit_start=True)
    assert yaml.safe_load(text) == data
    if isinstance(data, dict):
        ((_, ours),) = list(load_manifests(text))
        assert ours == data


def test_dump_layout_matches_kubectl_style() -> None:
    data = {"spec": {"containers": [{"name": "c", "args": ["--port=80", "y"]}], "empty": {}, "none": []}, "a": "x\ny\n"}
    assert dump(data) == (
        "a: |\n  x\n  y\n"
        "spec:\n  containers:\n  - args:\n    - --port=80\n    - 'y'\n    name: c\n  empty: {}\n  none: []\n"
    )


def test_values_keep_yaml_11_lookalikes_as_written() -> None:
    assert load_values("a: on\nb: 0644\nc: 1.10\nd: 1.5\ne: 7\nf: true\ng: ~\n") == {
        "a": "on",
        "b": "0644",
        "c": "1.10",
        "d": 1.5,
        "e": 7,
        "f": True,
        "g": None,
    }
