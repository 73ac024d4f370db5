"""promoted.yaml as gitsync rewrites it: a person's comments, order and other apps survive."""

from __future__ import annotations

import pytest
import yaml

from gitsync.promoted_file import HEADER, PromotedFileError, with_pin

A, B = "a" * 40, "b" * 40


def test_a_new_file_has_the_header_and_the_documented_shape() -> None:
    text = with_pin(None, "podinfo", A, "staging", {"image": {"tag": "6.7.0"}})
    assert text == HEADER + f'podinfo:\n  revision: {A}\n  from: staging\n  values:\n    image:\n      tag: "6.7.0"\n'


def test_a_repin_keeps_comments_order_and_other_apps() -> None:
    person = (
        "# prod pins; reviewed by the platform team\n"
        "web:\n  revision: " + A + "  # pinned by hand in PR #4\n  from: staging\n  values:\n    tag: 'on'\n"
        "podinfo:\n  revision: " + A + "\n  from: staging\n  values:\n    image: {tag: '6.6.0', pullPolicy: Always}\n"
    )
    text = with_pin(person, "podinfo", B, "staging", {"image": {"tag": "1.10"}})
    assert text.startswith("# prod pins; reviewed by the platform team\nweb:\n")
    assert "# pinned by hand in PR #4" in text and "tag: 'on'" in text
    assert yaml.safe_load(text) == {
        "web": {"revision": A, "from": "staging", "values": {"tag": "on"}},
        "podinfo": {"revision": B, "from": "staging", "values": {"image": {"tag": "1.10"}}},
    }, "strings stay strings for a YAML 1.1 reader too; stale promoted values are dropped"


@pytest.mark.parametrize("text", ["- podinfo\n", "just text\n"])
def test_a_file_that_is_not_a_mapping_is_refused(text: str) -> None:
    with pytest.raises(PromotedFileError, match="expected a mapping"):
        with_pin(text, "podinfo", A, "staging", {})
